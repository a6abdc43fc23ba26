"""Instrument declarations in TOML (serial and SCPI profiles, register maps): built in or a file.

Each driver names a folder of built-in declarations and its own Struct; this
module finds, reads and decodes one, and says what is wrong in one line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from ...protocol import Channel, CommandSpec, InstrumentInfo

if TYPE_CHECKING:
    from ..config import InstrumentConfig

T = TypeVar("T")


class Declared(Protocol):
    """What every profile declares about its instrument (serial and SCPI profiles alike)."""

    @property
    def kind(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def channels(self) -> Sequence[Any]: ...
    @property
    def commands(self) -> Sequence[Any]: ...


def declared_info(config: InstrumentConfig, profile: Declared) -> InstrumentInfo:
    """An instrument's channels and commands as its profile declares them."""
    return InstrumentInfo(
        id=config.id,
        kind=profile.kind,
        description=config.description or profile.description,
        channels=[
            Channel(name=c.name, unit=c.unit, description=c.description) for c in profile.channels
        ],
        commands=[
            CommandSpec(name=c.name, description=c.description, args=c.args, dangerous=c.dangerous)
            for c in profile.commands
        ],
        poll_interval_s=config.poll_interval_s,
    )


def builtin_names(folder: str) -> list[str]:
    """The names of the declarations that ship in `folder` of this package."""
    files = resources.files(__package__).joinpath(folder)
    return sorted(p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml"))


def load_declaration(
    name_or_path: str,
    folder: str,
    kind: type[T],
    what: str,
    check: Callable[[T, str], None] | None = None,
) -> T:
    """A built-in declaration by name, or one from a file by path.

    `what` names the kind for messages ("profile", "register map"); `check`
    looks deeper (regexes compile, names agree), given the declaration and
    where it came from. ValueError says what is wrong and where.
    """
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        source = name_or_path
        try:
            text = Path(name_or_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {what} file {name_or_path!r}: {exc.strerror}") from None
    else:
        resource = resources.files(__package__).joinpath(folder, f"{name_or_path}.toml")
        if not resource.is_file():
            raise ValueError(
                f"unknown {what} {name_or_path!r}; built in: {', '.join(builtin_names(folder))}"
                f" (or give the path of a .toml {what.split()[-1]})"
            )
        source, text = f"{what} {name_or_path}", resource.read_text(encoding="utf-8")
    try:
        declaration = msgspec.convert(tomllib.loads(text), kind)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{source}: {exc}") from None
    if check is not None:
        check(declaration, source)
    return declaration
