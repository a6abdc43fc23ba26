"""Instrument metadata held at the hub: description, location, group, owner, calibration interval.

`MetadataService` changes the calibration store's ``instrument_metadata``
table (`calibrations`; registering an instrument for calibration goes
through it too, `absorb`): the calibration registry reads its description,
location and interval from there, so a certificate and the dashboard show
the same facts, kept once. It hands the registry what it holds
(`Registry.set_metadata`), so instrument records carry it.

Precedence: what an admin set here wins; until then the description the
agent's file gives is shown (`InstrumentEntry.record`). An empty field is
"not set", so clearing it at the hub shows the agent's again.

Every change is in the traffic log as an ``instrument_metadata`` entry: who,
when (the entry's time), the instrument, the old and the new values.
Only admins change metadata (`auth.web` closes these routes to others).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from ..protocol import ErrorCode, InstrumentMetadata, MetadataView, is_instrument_id
from .auth.web import principal_of
from .calibrations import HeldMetadata
from .services import HUB_KEY

if TYPE_CHECKING:
    from ..calibration import Instrument
    from .auth import Principal
    from .calibration_service import CalibrationService
    from .services import Hub

_log = logging.getLogger(__name__)

#: The log entry type of a change (`kmz log --kind instrument_metadata`).
AUDIT_TYPE = "instrument_metadata"
#: A metadata body at most (a description is 2000 characters).
MAX_BODY_BYTES = 16_384
EMPTY = InstrumentMetadata()
FIELDS = tuple(f.name for f in msgspec.structs.fields(InstrumentMetadata))


class MetadataService:
    """Instrument metadata for the REST API and the calibration registry (module docstring)."""

    def __init__(self, calibrations: CalibrationService, hub: Hub) -> None:
        self._calibrations = calibrations
        self._hub = hub
        self._held: dict[str, HeldMetadata] = {}
        # One change at a time: a change reads the old value to log beside the new.
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read what the store holds (once it exists) and hand it to the registry."""
        if self._calibrations.calibrations.exists():
            await self._calibrations.ready()
            self._held = {h.instrument: h for h in await self._calibrations.calibrations.metadata()}
        self._publish()

    def view(self, instrument_id: str) -> MetadataView:
        """What the hub holds of one instrument, and the description shown."""
        held = self._held.get(instrument_id)
        entry = self._hub.registry.instruments.get(instrument_id)
        announced = entry.info.description if entry is not None else ""
        metadata = held.metadata if held is not None else EMPTY
        return MetadataView(
            instrument=instrument_id,
            metadata=metadata,
            announced_description=announced,
            description=metadata.description or announced,
            updated_by=held.updated_by if held is not None else None,
            updated_at=held.updated_at if held is not None else None,
        )

    async def set(
        self, who: Principal, instrument_id: str, new: InstrumentMetadata, *, follow: bool = True
    ) -> MetadataView:
        """Replace one instrument's metadata; log what changed; move its due date with the interval.

        `follow` False keeps the due date (a registration gives its own).
        """
        async with self._lock:
            held = self._held.get(instrument_id)
            old = held.metadata if held is not None else EMPTY
            if new != old:
                await self._calibrations.ready()
                now = self._hub.clock()
                stored = HeldMetadata(instrument_id, new, who.name, now)
                await self._calibrations.calibrations.save_metadata(stored)
                if new == EMPTY:
                    self._held.pop(instrument_id, None)
                else:
                    self._held[instrument_id] = stored
                self._publish()
                self._hub.traffic.event(
                    who.name,
                    AUDIT_TYPE,
                    audit_entry(instrument_id, who.name, old, new),
                    instrument_id,
                )
                _log.info(
                    "instrument metadata changed",
                    extra={
                        "instrument": instrument_id,
                        "by": who.name,
                        "fields": changed(old, new),
                    },
                )
        if follow and new.calibration_interval_days != old.calibration_interval_days:
            await self._calibrations.follow_interval(
                who, instrument_id, old.calibration_interval_days
            )
        return self.view(instrument_id)

    async def absorb(self, who: Principal, instrument: Instrument) -> None:
        """Take what a calibration registration says of the shared facts (given ones only)."""
        held = self._held.get(instrument.id)
        old = held.metadata if held is not None else EMPTY
        new = msgspec.structs.replace(
            old,
            description=instrument.description or old.description,
            location=instrument.location or old.location,
            calibration_interval_days=instrument.calibration_interval_days
            or old.calibration_interval_days,
        )
        await self.set(who, instrument.id, new, follow=False)

    def _publish(self) -> None:
        self._hub.registry.set_metadata({i: h.metadata for i, h in self._held.items()})


METADATA_KEY = web.AppKey("kmz_instrument_metadata", MetadataService)


def changed(old: InstrumentMetadata, new: InstrumentMetadata) -> list[str]:
    """The names of the fields that differ."""
    return [f for f in FIELDS if getattr(old, f) != getattr(new, f)]


def audit_entry(
    instrument_id: str, by: str, old: InstrumentMetadata, new: InstrumentMetadata
) -> bytes:
    """The traffic-log entry of a change: who, which instrument, each changed field, old and new."""
    return json.dumps(
        {
            "type": AUDIT_TYPE,
            "instrument": instrument_id,
            "by": by,
            "changed": {
                f: {"old": getattr(old, f), "new": getattr(new, f)} for f in changed(old, new)
            },
            "old": msgspec.to_builtins(old),
            "new": msgspec.to_builtins(new),
        }
    ).encode()


# --- REST ------------------------------------------------------------------------------


def install(app: web.Application, service: MetadataService) -> None:
    """Serve ``/api/instruments/{instrument}/metadata``; load what is held when the hub starts."""
    app[METADATA_KEY] = service
    app.router.add_get("/api/instruments/{instrument}/metadata", get_metadata)
    app.router.add_put("/api/instruments/{instrument}/metadata", put_metadata)


def _problem(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        body=msgspec.json.encode({"code": code, "message": message}),
        status=status,
        content_type="application/json",
    )


def _refuse(request: web.Request, status: int, code: str, message: str) -> web.Response:
    from ..protocol import Error

    request.app[HUB_KEY].traffic.refused(
        principal_of(request).name,
        Error(code=code, message=message),
        f"{request.method} {request.path_qs}".encode(),
    )
    return _problem(status, code, message)


async def get_metadata(request: web.Request) -> web.Response:
    """`GET /api/instruments/{instrument}/metadata`: what the hub holds of it (admin)."""
    instrument_id = request.match_info["instrument"]
    if not is_instrument_id(instrument_id):
        return _problem(
            400, ErrorCode.INVALID_INSTRUMENT_ID, f"not an instrument id: {instrument_id!r}"
        )
    view = request.app[METADATA_KEY].view(instrument_id)
    return web.Response(body=msgspec.json.encode(view), content_type="application/json")


class _BadBody(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _body(request: web.Request, kind: type[InstrumentMetadata]) -> InstrumentMetadata:
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise _BadBody(413, ErrorCode.MESSAGE_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        raise _BadBody(400, ErrorCode.INVALID_ARGUMENTS, f"{request.path}: {exc}") from None


async def put_metadata(request: web.Request) -> web.Response:
    """`PUT /api/instruments/{instrument}/metadata`: replace it (admin); logged with old and new."""
    instrument_id = request.match_info["instrument"]
    if not is_instrument_id(instrument_id):
        return _refuse(
            request,
            400,
            ErrorCode.INVALID_INSTRUMENT_ID,
            f"not an instrument id: {instrument_id!r}",
        )
    try:
        metadata = await _body(request, InstrumentMetadata)
    except _BadBody as exc:
        return _refuse(request, exc.status, exc.code, exc.message)
    view = await request.app[METADATA_KEY].set(principal_of(request), instrument_id, metadata)
    return web.Response(body=msgspec.json.encode(view), content_type="application/json")
