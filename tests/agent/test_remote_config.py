"""A configuration from the hub: checked as a local file is, written back as TOML, kept on disk."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kleinmaelzung.agent.config import AgentConfig, parse_config, parse_remote_config
from kleinmaelzung.agent.config_toml import dump_instruments
from kleinmaelzung.agent.errors import ConfigError
from kleinmaelzung.agent.remote_config import (
    AppliedRevision,
    RevisionFile,
    effective_config,
    instruments_digest,
)

THERMOMETER = '[[instruments]]\nid = "t-1"\nport = "/dev/ttyUSB0"\nprofile = "kmz-thermometer"\n'


def base(tmp_path: Path, **extra: object) -> AgentConfig:
    return parse_config(
        {
            "hub": "http://hub.lab:8765",
            "agent_id": "pi-1",
            "spool": {"path": str(tmp_path / "spool.sqlite")},
            "instruments": [{"id": "t-1", "port": "/dev/ttyUSB0", "profile": "kmz-thermometer"}],
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            THERMOMETER + "poll_interval_s = 0\n",
            "lab.toml: instruments[0].poll_interval_s: expected a number of seconds greater "
            "than 0, such as 1.0",
        ),
        (THERMOMETER + THERMOMETER, "lab.toml: instruments[1].id: 't-1' is already used"),
        (THERMOMETER + 'colour = "red"\n', "lab.toml: instruments[0].colour: unknown key"),
        ('token = "kmz_x"\n' + THERMOMETER, "lab.toml: token: set in the agent's own file only"),
        ("[[instruments]\n", "lab.toml: not valid TOML"),
        ("", "lab.toml: instruments"),
        (THERMOMETER.replace("kmz-thermometer", "nope"), "lab.toml: instruments[0].profile"),
    ],
)
def test_a_config_from_the_hub_is_refused_with_the_located_error_of_a_local_file(
    tmp_path: Path, text: str, error: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_remote_config(text, base(tmp_path), source="lab.toml")
    assert str(refused.value).startswith(error), str(refused.value)


def test_the_instruments_written_as_toml_read_back_the_same(tmp_path: Path) -> None:
    config = parse_remote_config(
        THERMOMETER
        + 'description = "steep \\"A\\"\\nline 2"\npoll_interval_s = 0.25\n'
        + '[[instruments]]\nid = "kiln"\ndriver = "modbus"\nbus = "rs485"\n'
        + '[instruments.settings]\nhost = "127.0.0.1"\nport = 5020\nunit = 1\n'
        + 'map = "kmz-kiln-modbus"\n',
        base(tmp_path),
        source="lab.toml",
    )
    text = dump_instruments(config.instruments)
    assert tomllib.loads(text)  # plain TOML
    again = parse_remote_config(text, base(tmp_path), source="again")
    assert again.instruments == config.instruments
    assert "driver = " not in text.split("[[instruments]]")[1]  # defaults left out


def test_the_kept_revision_is_run_unless_refused_or_the_local_file_changed(
    tmp_path: Path,
) -> None:
    local = base(tmp_path)
    kept = RevisionFile(tmp_path / "config-pi-1.json")
    remote = THERMOMETER.replace("t-1", "t-2")
    kept.save(AppliedRevision(4, remote, instruments_digest(local.instruments), "lab.toml"))

    config, revision = effective_config(local, kept)
    assert revision == 4 and [i.id for i in config.instruments] == ["t-2"]
    # The operator at the Pi says its file is the only source.
    assert effective_config(base(tmp_path, remote_config="refuse"), kept)[1] == 0
    # Someone edited the file's instruments since: the newer decision wins.
    edited = parse_config(
        {
            "hub": "http://hub.lab:8765",
            "agent_id": "pi-1",
            "instruments": [{"id": "t-9", "port": "/dev/ttyUSB1", "profile": "kmz-thermometer"}],
        }
    )
    config, revision = effective_config(edited, kept)
    assert revision == 0 and [i.id for i in config.instruments] == ["t-9"]
    # A kept file that cannot be read is not run.
    kept.path.write_text("{not json")
    assert effective_config(local, kept) == (local, 0)
