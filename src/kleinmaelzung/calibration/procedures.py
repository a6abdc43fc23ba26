"""Procedures as versioned TOML files; errors name the file, the key and what was expected.

A procedure file looks like this (see ``tests/calibration/data/balance-linearity.toml``)::

    name = "balance-linearity"
    version = 2
    title = "Linearity of an electronic balance, 0 g to 200 g"
    quantity = "mass"
    unit = "g"
    repetitions = 5
    tolerance = { absolute = 0.002 }
    fit = { kind = "linear" }
    stability = { flag = "stable" }
    decision_rule = { kind = "guard_banded" }
    coverage = { method = "fixed", k = 2.0 }

    [[points]]
    nominal = 100.0
    apply = "100 g weight W-100"

    [[environment]]
    name = "temperature"
    unit = "°C"
    source = "germination-chamber.temperature"
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from .errors import ProcedureError
from .model import Procedure

_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def load_procedure(path: str | os.PathLike[str]) -> Procedure:
    """Read and check a procedure file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProcedureError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    return parse_procedure(text, source=str(path))


def parse_procedure(text: str, *, source: str = "procedure") -> Procedure:
    """Check a procedure's TOML text; raise `ProcedureError` naming ``source`` and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProcedureError(f"{source}: not valid TOML: {exc}") from None
    return procedure_from_mapping(raw, source=source)


def procedure_from_mapping(raw: dict[str, Any], *, source: str = "procedure") -> Procedure:
    """Check a decoded procedure mapping."""
    try:
        procedure = msgspec.convert(raw, Procedure)
    except msgspec.ValidationError as exc:
        match = _PATH.match(str(exc))
        assert match is not None  # the pattern matches any text
        where = (match["path"] or "").lstrip(".") or "(top level)"
        raise ProcedureError(f"{source}: {where}: {match['message']}") from None
    check_procedure(procedure, source=source)
    return procedure


def check_procedure(procedure: Procedure, *, source: str = "procedure") -> None:
    """The checks beyond shape: points, fit degree against points, stability, tolerances."""
    if not procedure.points:
        raise ProcedureError(f"{source}: points: at least one [[points]] table is needed")
    nominals = [p.nominal for p in procedure.points]
    if len(set(nominals)) != len(nominals):
        raise ProcedureError(f"{source}: points: each nominal value may appear only once")
    for index, point in enumerate(procedure.points):
        if point.repetitions is not None and point.repetitions < 1:
            raise ProcedureError(
                f"{source}: points[{index}].repetitions: expected 1 or more, "
                f"got {point.repetitions}"
            )
    fit = procedure.fit
    if fit.kind == "polynomial" and (fit.degree is None or fit.degree < 1):
        raise ProcedureError(
            f"{source}: fit.degree: a polynomial fit needs a degree of 1 or more, got {fit.degree}"
        )
    if fit.kind != "polynomial" and fit.degree is not None:
        raise ProcedureError(f"{source}: fit.degree: only a polynomial fit takes a degree")
    degree = fit.polynomial_degree
    if degree is not None and len(procedure.points) < degree + 1:
        raise ProcedureError(
            f"{source}: fit: a degree-{degree} fit needs at least {degree + 1} points, "
            f"the procedure has {len(procedure.points)}"
        )
    stability = procedure.stability
    by_window = stability.window is not None or stability.max_spread is not None
    if by_window and (stability.window is None or stability.max_spread is None):
        raise ProcedureError(
            f"{source}: stability: give both window and max_spread, or flag, or neither"
        )
    if by_window and stability.flag is not None:
        raise ProcedureError(f"{source}: stability: choose window and max_spread, or flag")
    if stability.window is not None and stability.window < 2:
        raise ProcedureError(
            f"{source}: stability.window: expected 2 samples or more, got {stability.window}"
        )
    if procedure.coverage.method == "welch_satterthwaite" and procedure.coverage.k != 2.0:
        raise ProcedureError(
            f"{source}: coverage.k: the Welch-Satterthwaite method computes k; leave k out"
        )


def procedure_toml_key(procedure: Procedure) -> str:
    """The key a procedure is stored and looked up under: ``name@version``."""
    return f"{procedure.name}@{procedure.version}"
