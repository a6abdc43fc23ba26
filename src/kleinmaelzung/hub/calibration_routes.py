"""``/api/calibrations``: the calibration service over HTTP, with who may do what.

Reading (lists, records, PDFs, due dates, registries) needs the viewer role,
and a record or PDF needs watching its instrument. Running a calibration
(start, capture, readings, conditions, adjustment, the performer's
signature, reopening, a correction) needs the operator role and a grant on
the instrument. Approving, withdrawing a correction and changing the
registries (laboratory, standards, instruments, procedures) need admin; the
approver must not be the performer (checked by the record itself).

Errors are JSON ``{"code", "message"}`` with the calibration package's codes
(``reference_standard_not_usable``, ``record_locked``, ``not_stable``, ...);
each refusal is logged as a ``refused`` entry of the traffic log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ..calibration import (
    CalibrationError,
    Instrument,
    Laboratory,
    ReferenceStandard,
)
from ..calibration.api import (
    Adjustment,
    ApproveRequest,
    Capture,
    EnvironmentEntry,
    ManualReading,
    ReasonRequest,
    SignRequest,
    StartRun,
)
from ..protocol import Error, ErrorCode
from .auth import Principal, Role
from .auth.web import principal_of
from .calibration_service import CalibrationService, Forbidden
from .calibrations import SqliteCalibrationStore
from .instrument_metadata import install as install_metadata
from .services import HUB_KEY, Hub

_log = logging.getLogger(__name__)

CALIBRATIONS_KEY = web.AppKey("kmz_calibrations", CalibrationService)
#: Where the calibration records live, in the hub's data folder.
DB_NAME = "calibrations.sqlite3"
#: Largest request body: a procedure file, a record step.
MAX_BODY_BYTES = 256 * 1024

_NUMBER = r"{number:[A-Za-z][A-Za-z0-9]*-[0-9]{4}-[0-9]+}"
_STATUS = {
    "not_found": 404,
    "forbidden": 403,
    "invalid_procedure": 400,
    "invalid_arguments": 400,
    "render_failed": 500,
}

T = TypeVar("T")
_Route = Callable[[web.Request, CalibrationService, Principal], Awaitable[web.StreamResponse]]


def install(app: web.Application, hub: Hub) -> None:
    """Add the calibration service and its routes to the hub's app."""
    service = CalibrationService(SqliteCalibrationStore(hub.config.data_dir / DB_NAME), hub)
    app[CALIBRATIONS_KEY] = service
    app.cleanup_ctx.append(_lifecycle)
    install_metadata(app, service.metadata)
    base = "/api/calibrations"
    add = app.router
    add.add_get(base, _route(list_records))
    add.add_post(base, _route(start, Role.OPERATOR))
    add.add_get(f"{base}/due", _route(due))
    add.add_get(f"{base}/corrections", _route(corrections))
    add.add_get(f"{base}/standards", _route(standards))
    add.add_put(f"{base}/standards", _route(put_standard, Role.ADMIN))
    add.add_get(f"{base}/instruments", _route(instruments))
    add.add_put(f"{base}/instruments", _route(put_instrument, Role.ADMIN))
    add.add_get(f"{base}/procedures", _route(procedures))
    add.add_put(f"{base}/procedures", _route(put_procedure, Role.ADMIN))
    add.add_get(f"{base}/laboratory", _route(laboratory))
    add.add_put(f"{base}/laboratory", _route(put_laboratory, Role.ADMIN))
    add.add_get(f"{base}/{_NUMBER}.pdf", _route(pdf))
    add.add_get(f"{base}/{_NUMBER}", _route(show))
    add.add_get(f"{base}/{_NUMBER}/revisions", _route(revisions))
    for step in ("capture", "readings", "environment", "adjustment", "sign", "reopen", "correct"):
        add.add_post(f"{base}/{_NUMBER}/{step}", _route(_STEPS[step], Role.OPERATOR))
    add.add_post(f"{base}/{_NUMBER}/approve", _route(approve, Role.ADMIN))
    add.add_post(f"{base}/{_NUMBER}/withdraw", _route(withdraw, Role.ADMIN))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    service = app[CALIBRATIONS_KEY]
    await service.open()
    await service.metadata.load()
    app[HUB_KEY].tasks.spawn(service.watch_expiry(), "kmz-calibration-expiry")
    yield
    await service.close()


def _route(handler: _Route, role: Role = Role.VIEWER) -> Callable[[web.Request], Any]:
    """Check the role, run the handler, turn calibration errors into coded answers."""

    async def route(request: web.Request) -> web.StreamResponse:
        principal = principal_of(request)
        service = request.app[CALIBRATIONS_KEY]
        if not principal.at_least(role):
            return _refuse(request, principal, 403, "forbidden", f"this needs the {role} role")
        try:
            await service.ready()
            return await handler(request, service, principal)
        except CalibrationError as exc:
            code = exc.code
            return _refuse(request, principal, _STATUS.get(code, 409), code, str(exc))
        except _BadRequest as exc:
            return _refuse(request, principal, 400, ErrorCode.INVALID_ARGUMENTS, str(exc))

    return route


class _BadRequest(Exception):
    """A body that is not what the route takes; the message names the field."""


def _refuse(
    request: web.Request, principal: Principal, status: int, code: str, message: str
) -> web.Response:
    hub = request.app[HUB_KEY]
    hub.traffic.refused(
        principal.name,
        Error(code=code, message=message),
        f"{request.method} {request.path_qs}".encode(),
    )
    return _json({"code": code, "message": message}, status)


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )


async def _body(request: web.Request, kind: type[T]) -> T:
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _BadRequest(f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise _BadRequest(f"{request.path}: {exc}") from None


def _may_watch(principal: Principal, instrument_id: str) -> None:
    if not principal.may_watch(instrument_id):
        raise Forbidden(f"{principal.name} may not see instrument {instrument_id!r}")


async def _checked(request: web.Request, service: CalibrationService, principal: Principal) -> str:
    """The record's number, once the principal may act on (or see) its instrument."""
    number = request.match_info["number"]
    view = await service.record(number)
    _may_watch(principal, view.record.instrument.id)
    return number


def _revision(request: web.Request) -> int | None:
    text = request.query.get("revision")
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise _BadRequest(f"revision must be an integer, got {text!r}") from None


# --- reading ------------------------------------------------------------------------


async def list_records(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations?instrument=ID`: the latest revision of each calibration."""
    summaries = await service.records(request.query.get("instrument"))
    return _json([s for s in summaries if principal.may_watch(s.instrument_id)])


async def show(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/{id}?revision=N`: the record, its hash, figures and correction."""
    view = await service.record(request.match_info["number"], _revision(request))
    _may_watch(principal, view.record.instrument.id)
    return _json(view)


async def revisions(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/{id}/revisions`: every revision, oldest first."""
    number = await _checked(request, service, principal)
    return _json(await service.calibrations.revisions(number))


async def pdf(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/{id}.pdf?revision=N`: the certificate."""
    number = await _checked(request, service, principal)
    body = await service.pdf(number, _revision(request))
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{number}.pdf"'},
    )


async def due(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/due?days=N`: instruments overdue or due within N days."""
    text = request.query.get("days", "0")
    try:
        days = int(text)
    except ValueError:
        raise _BadRequest(f"days must be an integer, got {text!r}") from None
    if not 0 <= days <= 3660:
        raise _BadRequest(f"days must be 0..3660, got {days}")
    entries = await service.due(days)
    return _json([e for e in entries if principal.may_watch(e.instrument.id)])


async def corrections(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/corrections`: every correction version, applied and withdrawn."""
    every = await service.calibrations.corrections()
    return _json([c for c in every if principal.may_watch(c.instrument_id)])


async def standards(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/standards`."""
    return _json(await service.calibrations.standards())


async def instruments(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/instruments`."""
    return _json([i for i in await service.calibrations.instruments() if principal.may_watch(i.id)])


async def procedures(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/procedures`: the highest version of each."""
    return _json(await service.calibrations.procedures())


async def laboratory(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`GET /api/calibrations/laboratory`."""
    return _json(await service.calibrations.laboratory())


# --- registries (admin) --------------------------------------------------------------


async def put_standard(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`PUT /api/calibrations/standards`: register or update a reference standard."""
    standard = await _body(request, ReferenceStandard)
    await service.register_standard(principal, standard)
    return _json(standard)


async def put_instrument(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`PUT /api/calibrations/instruments`: register or update an instrument's metadata."""
    instrument = await _body(request, Instrument)
    await service.register_instrument(principal, instrument)
    return _json(instrument)


async def put_procedure(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`PUT /api/calibrations/procedures`: a procedure's TOML text (``text/plain``)."""
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _BadRequest(f"the procedure is over {MAX_BODY_BYTES} bytes")
    source = request.query.get("source", "procedure")
    procedure = await service.register_procedure(
        principal, raw.decode("utf-8", errors="replace"), source
    )
    return _json(procedure)


async def put_laboratory(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`PUT /api/calibrations/laboratory`: the laboratory that issues certificates."""
    lab = await _body(request, Laboratory)
    await service.register_laboratory(principal, lab)
    return _json(lab)


# --- steps -------------------------------------------------------------------------------


async def start(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST /api/calibrations`: start a run; answers with the draft and its number."""
    body = await _body(request, StartRun)
    _may_watch(principal, body.instrument)
    return _json(await service.start(principal, body), 201)


async def capture(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../capture`: the next reading of a point, from the live samples, if stable."""
    number = await _checked(request, service, principal)
    return _json(await service.capture(principal, number, await _body(request, Capture)))


async def readings(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../readings`: a reading entered by hand."""
    number = await _checked(request, service, principal)
    body = await _body(request, ManualReading)
    return _json(await service.enter_reading(principal, number, body))


async def environment(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../environment`: a condition entered by hand."""
    number = await _checked(request, service, principal)
    body = await _body(request, EnvironmentEntry)
    return _json(await service.enter_environment(principal, number, body))


async def adjustment(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../adjustment`: the adjustment made between as-found and as-left."""
    number = await _checked(request, service, principal)
    body = await _body(request, Adjustment)
    return _json(await service.adjust(principal, number, body.text))


async def sign(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../sign`: the performer's signature, as the authenticated person."""
    number = await _checked(request, service, principal)
    body = await _body(request, SignRequest)
    return _json(await service.sign(principal, number, body.full_name))


async def reopen(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../reopen`: withdraw the performer's signature of a draft."""
    number = await _checked(request, service, principal)
    return _json(await service.reopen(principal, number))


async def correct(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../correct`: a new revision of an approved record."""
    number = await _checked(request, service, principal)
    body = await _body(request, ReasonRequest)
    return _json(await service.correct(principal, number, body.reason), 201)


async def approve(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../approve`: the approver's signature; then the record is immutable and applied."""
    number = await _checked(request, service, principal)
    body = await _body(request, ApproveRequest)
    return _json(
        await service.approve(
            principal, number, body.full_name, apply_correction=body.apply_correction
        )
    )


async def withdraw(
    request: web.Request, service: CalibrationService, principal: Principal
) -> web.Response:
    """`POST .../withdraw`: stop applying the calibration's correction from now on."""
    number = await _checked(request, service, principal)
    body = await _body(request, ReasonRequest)
    return _json(await service.withdraw(principal, number, body.reason))


_STEPS: dict[str, _Route] = {
    "capture": capture,
    "readings": readings,
    "environment": environment,
    "adjustment": adjustment,
    "sign": sign,
    "reopen": reopen,
    "correct": correct,
}
