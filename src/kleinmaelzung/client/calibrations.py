"""The hub's calibration API for scripts and `kmz calibration`: `Calibrations`.

Each method is one HTTP request to ``/api/calibrations``; a refusal raises
`RequestError` with the hub's code (``reference_standard_not_usable``,
``record_locked``, ``not_stable``, ``forbidden``, ...) and its message.
"""

from __future__ import annotations

from typing import Any, TypeVar

import aiohttp
import msgspec

from ..calibration import (
    Correction,
    Instrument,
    Laboratory,
    Procedure,
    ReferenceStandard,
)
from ..calibration.api import (
    Adjustment,
    ApproveRequest,
    Capture,
    DueEntry,
    EnvironmentEntry,
    ManualReading,
    ReasonRequest,
    RecordSummaryView,
    RecordView,
    SignRequest,
    StartRun,
)
from ..calibration.model import Phase
from ..protocol import ErrorCode, ProtocolError
from ..transport import base_url
from .credentials import token_for
from .errors import RequestError, reaching

T = TypeVar("T")

__all__ = ["Calibrations"]


class _Problem(msgspec.Struct, frozen=True):
    code: str
    message: str


class Calibrations:
    """Calibration records, certificates, registries and due dates at the hub at `url`."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = base_url(url)
        #: None: the token `credentials.token_for` finds for the hub; "": none.
        self._token = token_for(self.url) if token is None else token
        self.timeout_s = timeout_s

    # --- reading ---------------------------------------------------------------------

    async def records(self, instrument: str | None = None) -> list[RecordSummaryView]:
        """The latest revision of each calibration (of one instrument)."""
        params = {"instrument": instrument} if instrument else None
        return await self._call("GET", "", list[RecordSummaryView], params=params)

    async def get(self, number: str, revision: int | None = None) -> RecordView:
        """One record (the latest revision by default) with its hash, figures and correction."""
        params = {"revision": str(revision)} if revision is not None else None
        return await self._call("GET", f"/{number}", RecordView, params=params)

    async def revisions(self, number: str) -> list[RecordSummaryView]:
        """Every revision of a calibration, oldest first."""
        return await self._call("GET", f"/{number}/revisions", list[RecordSummaryView])

    async def pdf(self, number: str, revision: int | None = None) -> bytes:
        """The certificate as PDF bytes."""
        params = {"revision": str(revision)} if revision is not None else None
        return await self._raw("GET", f"/{number}.pdf", params=params)

    async def due(self, days: int = 0) -> list[DueEntry]:
        """Instruments overdue or due within `days`, soonest first."""
        return await self._call("GET", "/due", list[DueEntry], params={"days": str(days)})

    async def corrections(self) -> list[Correction]:
        """Every correction version the hub applied, withdrawn ones too."""
        return await self._call("GET", "/corrections", list[Correction])

    # --- registries ----------------------------------------------------------------------

    async def register_laboratory(self, laboratory: Laboratory) -> Laboratory:
        """Set the laboratory that issues certificates (admin)."""
        return await self._call("PUT", "/laboratory", Laboratory, body=laboratory)

    async def register_standard(self, standard: ReferenceStandard) -> ReferenceStandard:
        """Register or update a reference standard (admin)."""
        return await self._call("PUT", "/standards", ReferenceStandard, body=standard)

    async def register_instrument(self, instrument: Instrument) -> Instrument:
        """Register or update an instrument's calibration metadata (admin)."""
        return await self._call("PUT", "/instruments", Instrument, body=instrument)

    async def register_procedure(self, text: str, source: str = "procedure") -> Procedure:
        """Load a procedure from its TOML text (admin); a stored version never changes."""
        raw = await self._raw("PUT", "/procedures", data=text.encode(), params={"source": source})
        return self._decode(raw, Procedure, "/procedures")

    # --- a run ------------------------------------------------------------------------------

    async def start(
        self,
        instrument: str,
        procedure: str,
        *,
        standards: tuple[str, ...] = (),
        version: int | None = None,
        performed_at: str = "",
        remarks: str = "",
    ) -> RecordView:
        """Start a calibration: a draft record with a new certificate number."""
        request = StartRun(
            instrument=instrument,
            procedure=procedure,
            version=version,
            standards=standards,
            performed_at=performed_at,
            remarks=remarks,
        )
        return await self._call("POST", "", RecordView, body=request)

    async def capture(
        self,
        number: str,
        phase: Phase,
        index: int,
        *,
        reference_value: float | None = None,
        standards: tuple[str, ...] | None = None,
        not_before: float | None = None,
    ) -> RecordView:
        """Take the next reading of a point from the live samples (`not_stable` if not yet).

        `not_before`: only samples taken from then on count (when the load was applied).
        """
        request = Capture(
            phase=phase,
            index=index,
            reference_value=reference_value,
            standards=standards,
            not_before=not_before,
        )
        return await self._call("POST", f"/{number}/capture", RecordView, body=request)

    async def enter_reading(
        self,
        number: str,
        phase: Phase,
        index: int,
        value: float,
        *,
        reference_value: float | None = None,
        note: str = "",
    ) -> RecordView:
        """A reading entered by hand (marked so on the certificate)."""
        request = ManualReading(
            phase=phase, index=index, value=value, reference_value=reference_value, note=note
        )
        return await self._call("POST", f"/{number}/readings", RecordView, body=request)

    async def enter_environment(
        self, number: str, name: str, minimum: float, maximum: float
    ) -> RecordView:
        """An environmental condition entered by hand."""
        request = EnvironmentEntry(name=name, minimum=minimum, maximum=maximum)
        return await self._call("POST", f"/{number}/environment", RecordView, body=request)

    async def adjust(self, number: str, text: str) -> RecordView:
        """Describe the adjustment between as-found and as-left."""
        body = Adjustment(text=text)
        return await self._call("POST", f"/{number}/adjustment", RecordView, body=body)

    async def sign(self, number: str, full_name: str = "") -> RecordView:
        """Sign as the person who performed the calibration."""
        body = SignRequest(full_name=full_name)
        return await self._call("POST", f"/{number}/sign", RecordView, body=body)

    async def reopen(self, number: str) -> RecordView:
        """Withdraw the performer's signature of a draft, to change it."""
        return await self._call("POST", f"/{number}/reopen", RecordView)

    async def approve(
        self, number: str, full_name: str = "", *, apply_correction: bool = True
    ) -> RecordView:
        """Approve (admin, not the performer): immutable from now on, and applied to the stream.

        A failed calibration is refused (``calibration_failed``) unless
        `apply_correction` is False: then it is approved as a failure, applied to nothing.
        """
        body = ApproveRequest(full_name=full_name, apply_correction=apply_correction)
        return await self._call("POST", f"/{number}/approve", RecordView, body=body)

    async def correct(self, number: str, reason: str) -> RecordView:
        """Start a new revision of an approved calibration."""
        body = ReasonRequest(reason=reason)
        return await self._call("POST", f"/{number}/correct", RecordView, body=body)

    async def withdraw(self, number: str, reason: str) -> Correction:
        """Stop applying the calibration's correction to the stream from now on (admin)."""
        body = ReasonRequest(reason=reason)
        return await self._call("POST", f"/{number}/withdraw", Correction, body=body)

    # --- plumbing ------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, str] | None = None,
    ) -> T:
        data = msgspec.json.encode(body) if body is not None else None
        raw = await self._raw(method, path, data=data, params=params)
        return self._decode(raw, kind, path)

    def _decode(self, raw: bytes, kind: type[T], path: str) -> T:
        try:
            return msgspec.json.decode(raw, type=kind)
        except msgspec.DecodeError as exc:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"unexpected answer from {self.url}/api/calibrations{path}: {exc}",
            ) from None

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> bytes:
        endpoint = f"{self.url}/api/calibrations{path}"
        headers: dict[str, Any] = {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        with reaching(endpoint, self.timeout_s):
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s)
                ) as session,
                session.request(
                    method, endpoint, params=params, headers=headers, data=data
                ) as response,
            ):
                status, body = response.status, await response.read()
        if status not in (200, 201):
            try:
                problem = msgspec.json.decode(body, type=_Problem)
            except msgspec.DecodeError:
                problem = _Problem(f"http_{status}", body[:200].decode(errors="replace"))
            raise RequestError(problem.code, problem.message)
        return body
