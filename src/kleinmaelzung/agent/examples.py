"""`kmz agent --example`: commented agent configs to start from, one instrument per shipped driver.

Each text is a whole config that `load_config` accepts as it stands (a test
writes each one to a file and loads it), so a lab engineer can redirect it
to `agent.toml` and change only the port and the names.
"""

from __future__ import annotations

_HEADER = """\
# Kleinmaelzung agent config: `kmz agent --check agent.toml` tries every
# instrument once without a hub; `kmz agent agent.toml` runs the agent.

# The hub this agent sends its readings to.
hub = "http://hub.lab:8765"
# This Pi's name at the hub: lower case, a-z 0-9 - _ .
agent_id = "malthouse-pi-1"
# token = "..."   # if the hub asks agents for one
# For an https:// hub whose certificate a lab CA signed (else the system's CAs
# vouch for it), and optionally its SHA-256 fingerprint, to accept only it:
# ca_file = "/etc/kleinmaelzung/lab-ca.pem"
# pin_sha256 = "AB:CD:..."   # openssl x509 -noout -fingerprint -sha256 -in hub.crt
"""

#: One commented [[instruments]] table per shipped driver, by driver name.
INSTRUMENT_EXAMPLES: dict[str, str] = {
    "serial_line": """\
# A line-based ASCII instrument on a serial port (here an MT-SICS balance).
[[instruments]]
id = "balance"
driver = "serial_line"
description = "Balance at the steeping tanks"
# Built-in profiles: mt-sics-balance (asked once per poll), mt-sics-balance-stream
# (continuous: every weight it sends), kmz-thermometer, kmz-hygrometer,
# kmz-hygrometer-stream, kmz-kiln, scpi-dmm-serial; or the path of your own .toml.
profile = "mt-sics-balance"
# Where it is: `kmz ports` lists the serial ports and what to write here. Prefer
# the /dev/serial/by-id/... path, which stays with the adapter when it is plugged
# into another USB socket; /dev/ttyUSB0 goes to whichever adapter came first.
port = "/dev/ttyUSB0"
# A streaming profile: set poll_interval_s below the instrument's own interval
# (0.05, say) and every line it sends becomes a sample; slower, each sample is
# the newest line and the ones between are dropped.
poll_interval_s = 1.0
# baudrate = 9600          # default: the profile's
# reply_timeout_s = 1.0    # default: the profile's

# [instruments.settings]
# usb = "0403:6001:A50285BI"  # instead of port: the USB adapter's VID:PID[:SERIAL]
# identity = "B123456789"     # a regex the identify answer must also match (its serial)
# bytesize = 7                # the frame, when not the profile's: 5 to 8 data bits,
# parity = "O"                # N, E, O, M or S,
# stopbits = 1                # 1, 1.5 or 2,
# flow = "none"               # none, xonxoff, rtscts or dsrdtr
""",
    "visa": """\
# A SCPI bench instrument through VISA (needs: pip install 'kleinmaelzung[visa]').
[[instruments]]
id = "bench-dmm"
driver = "visa"
description = "Bench multimeter"
poll_interval_s = 1.0

[instruments.settings]
# TCPIP::<address>::INSTR, USB0::<vid>::<pid>::<serial>::INSTR or ASRL/dev/ttyUSB1::INSTR
resource = "TCPIP::192.168.1.60::INSTR"
# Built-in SCPI profile, or the path of your own .toml profile.
profile = "scpi-dmm"
# backend = "@py"          # pyvisa-py; "@ivi" for a vendor VISA
# identity = "MY12345"     # refuse any other meter: a regex its *IDN? answer must match
""",
    "modbus": """\
# A controller over Modbus RTU on an RS-485 adapter (needs: pip install 'kleinmaelzung[modbus]').
# Several controllers on the same line share `bus` (and serial_port) and take turns.
[[instruments]]
id = "kiln"
driver = "modbus"
description = "Kiln air controller"
bus = "/dev/ttyUSB1"
poll_interval_s = 1.0

[instruments.settings]
transport = "rtu"           # or "tcp", with host = "192.168.1.50" and port = 502
serial_port = "/dev/ttyUSB1"
baudrate = 19200
parity = "N"                # "N", "E" or "O"
unit = 3                    # the controller's slave id
# A built-in register map, or the path of your own .toml map; registers below add to it.
map = "kmz-kiln-modbus"

# [[instruments.settings.registers]]
# channel = "exhaust_temperature"
# kind = "input"            # input, holding, coil or discrete
# address = 10              # 0-based protocol address
# type = "int16"            # int16, uint16, int32, uint32, float32
# scale = 0.1
# unit = "°C"
""",
    "i2c": """\
# A temperature/humidity sensor on the Pi's I2C pins (needs: pip install 'kleinmaelzung[i2c]').
# Sensors on one adapter share the instrument-level `bus`, so they take turns.
[[instruments]]
id = "germ-air"
driver = "i2c"
description = "Germination chamber air"
bus = "i2c-1"
poll_interval_s = 1.0

[instruments.settings]
sensor = "sht3x"            # or "bme280" (address 0x76 or 0x77; adds pressure in hPa)
address = 0x44              # 7-bit
bus = 1                     # adapter number, or a path such as "/dev/i2c-1"
# simulated = true          # the built-in simulated sensor, no I2C bus needed
""",
}


def example_config(driver: str | None = None) -> str:
    """A commented agent config with one instrument of `driver`, or one of each shipped driver.

    KeyError (naming the drivers there are examples for) if there is none for `driver`.
    """
    if driver is None:
        blocks = list(INSTRUMENT_EXAMPLES.values())
    else:
        try:
            blocks = [INSTRUMENT_EXAMPLES[driver]]
        except KeyError:
            raise KeyError(
                f"no example for driver {driver!r}; examples: {', '.join(INSTRUMENT_EXAMPLES)}"
            ) from None
    return "\n".join([_HEADER, *blocks])
