"""Config errors name the file, the key and what was expected, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from kleinmaelzung.agent import ConfigError, load_config
from kleinmaelzung.agent.config import hub_urls

GOOD = """
hub = "http://127.0.0.1:8765"
agent_id = "malthouse-pi-1"

[[instruments]]
id = "kiln-air"
profile = "kmz-kiln"
port = "/dev/ttyUSB0"
poll_interval_s = 0.5

[[instruments]]
id = "balance"
profile = "mt-sics-balance"
port = "/dev/ttyUSB1"
baudrate = 19200
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert [i.id for i in config.instruments] == ["kiln-air", "balance"]
    assert config.instruments[1].baudrate == 19200
    assert config.instruments[0].driver == "serial_line"


def test_example_config_in_the_repository_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "malting-lab.toml"
    assert len(load_config(example).instruments) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("baudrate = 19200", 'baudrate = "fast"'),
            'instruments[1].baudrate: expected an integer such as 9600, got "fast"',
        ),
        (
            ("poll_interval_s = 0.5", "poll_interval_s = -1"),
            "instruments[0].poll_interval_s: expected a number of seconds greater than 0",
        ),
        (
            ('id = "balance"', 'id = "Balance Nr 1"'),
            'instruments[1].id: expected a lower-case id such as "kiln-air"',
        ),
        (
            ('id = "balance"', 'id = "kiln-air"'),
            "instruments[1].id: 'kiln-air' is already used by instruments[0]",
        ),
        (
            ('profile = "kmz-kiln"', 'profile = "kmz-klin"'),
            "instruments[0].profile: unknown profile 'kmz-klin'; built in: kmz-hygrometer",
        ),
        (
            ('port = "/dev/ttyUSB1"', 'port = "/dev/ttyUSB1"\nspeed = 1'),
            "instruments[1].speed: unknown key (a typo?)",
        ),
        (
            ('port = "/dev/ttyUSB0"\n', ""),
            "instruments[0].port: the serial_line driver needs a port",
        ),
        (('hub = "http://127.0.0.1:8765"', 'hub = "ftp://hub"'), "hub: hub URL must start with"),
        (
            ('hub = "http://127.0.0.1:8765"', 'hub = ["http://a:8765", "ftp://b"]'),
            "hub[1]: hub URL must start with",
        ),
        (
            ('hub = "http://127.0.0.1:8765"', 'hub = ["http://a:8765", 8765]'),
            'hub[1]: expected a URL such as "http://hub.lab:8765", or a list of them, got 8765',
        ),
        (('hub = "http://127.0.0.1:8765"', "hub = []"), "hub: expected at least one URL"),
        (
            (
                '[[instruments]]\nid = "kiln-air"',
                '[[instruments]]\ndriver = "gpib"\nid = "kiln-air"',
            ),
            "instruments[0].driver: unknown driver 'gpib'; installed: i2c, modbus, serial_line,",
        ),
        (("agent_id = ", "agent_id = 7 #"), "agent_id: expected a lower-case id"),
        (('port = "/dev/ttyUSB0"', "port = /dev/ttyUSB0"), "not valid TOML"),
    ],
)
def test_bad_config_says_file_key_and_expectation(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(str(path) + ": "), text
    assert message in text, text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.toml")


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'hub = "http://hub.lab:8765"\nagent_id = "pi"\n\n[[instruments]]\n'
        'id = "kiln-air"\nport = "/dev/ttyUSB0"\nprofile = "kmz-kiln"\n'
    )
    env = {"KMZ_AGENT_HUB": "https://hub.example:443", "KMZ_AGENT_SPOOL__PATH": "/data/s.sqlite"}
    config = load_config(path, env=env)
    assert config.hub == "https://hub.example:443"
    assert config.spool.path == "/data/s.sqlite"
    with pytest.raises(ConfigError, match=r"with KMZ_AGENT_SPOOL\)\: spool\.max_samples"):
        load_config(path, env={"KMZ_AGENT_SPOOL__MAX_SAMPLES": "-1"})


def test_several_hubs_are_tried_in_the_order_given(tmp_path: Path) -> None:
    text = GOOD.replace(
        'hub = "http://127.0.0.1:8765"', 'hub = ["http://a.lab:8765", "http://b.lab:8765"]'
    )
    config = load_config(write(tmp_path, text))
    assert hub_urls(config) == ["http://a.lab:8765", "http://b.lab:8765"]
