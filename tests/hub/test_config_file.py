"""The hub's config file, environment and flags: every setting reachable, every mistake named."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from kleinmaelzung.configfile import ConfigFileError
from kleinmaelzung.hub import HubConfig
from kleinmaelzung.hub.config import example_config, load_hub_config
from kleinmaelzung.hub.store.retention import RetentionPolicy
from kleinmaelzung.protocol import Limits, Timeouts


def test_the_example_shows_every_setting_with_its_true_default(tmp_path: Path) -> None:
    text = example_config()
    shown = set(re.findall(r"^# (\w+) = ", text, re.M))
    fields = {f.name for f in msgspec.structs.fields(HubConfig)} - {
        "limits",
        "timeouts",
        "retention",
    }
    fields |= {f.name for f in msgspec.structs.fields(Limits)}
    fields |= {f.name for f in msgspec.structs.fields(Timeouts)}
    fields |= {f.name for f in msgspec.structs.fields(RetentionPolicy)}
    assert fields <= shown, f"not in the example: {sorted(fields - shown)}"
    # Uncommented, every shown value is the default (the log URL is an example).
    lines = [
        re.sub(r"^# (\w+ = )", r"\1", line)
        for line in text.splitlines()
        if not line.startswith(("# log_url", "# tls_", "# bus = "))  # examples, not defaults
    ]
    path = tmp_path / "hub.toml"
    path.write_text("\n".join(lines))
    assert load_hub_config(path, env={}) == HubConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "eighty"', 'hub.toml: port: expected a TCP port such as 8765, got "eighty"'),
        ("prot = 8765", "hub.toml: prot: unknown key (a typo?)"),
        ("[limits]\nmax_conections = 5", "hub.toml: limits.max_conections: unknown key"),
        ("[timeouts]\nheartbeat_s = true", "hub.toml: timeouts.heartbeat_s: expected `float`"),
        ("port = [", "hub.toml: not valid TOML"),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as raised:
        load_hub_config(path, env={})
    assert message in str(raised.value)


def test_the_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        'port = 9000\nhost = "0.0.0.0"\ndata_dir = "/srv/kmz"\n[limits]\nmax_connections = 50\n'
    )
    env = {"KMZ_HUB_PORT": "9100", "KMZ_HUB_TIMEOUTS__HEARTBEAT_S": "6", "KMZ_HUB": "ignored"}
    config = load_hub_config(path, env=env, overrides={"host": "127.0.0.1"})
    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 9100, Path("/srv/kmz"))
    assert config.limits.max_connections == 50 and config.timeouts.heartbeat_s == 6.0
    with pytest.raises(ConfigFileError, match=r"KMZ_HUB_\* environment variables: port"):
        load_hub_config(path, env={"KMZ_HUB_PORT": "many"})


def test_kmz_hub_refuses_a_bad_config_with_its_reason_and_exit_status_2(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("[limits]\nmax_conections = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", "hub", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"kmz hub: {path}: limits.max_conections: unknown key (a typo?)" in result.stderr
    example = subprocess.run(
        [sys.executable, "-m", "kleinmaelzung.cli", "hub", "--example-config"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert example.stdout == example_config()


def test_a_degraded_time_that_is_not_positive_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigFileError, match=r"log_degraded_after_s.*got -1"):
        load_hub_config(env={"KMZ_HUB_LOG_DEGRADED_AFTER_S": "-1"})
