"""What each route of the hub's REST API takes and answers: the table `openapi` makes a document of.

Typed bodies are named by their msgspec Structs (the generator asks msgspec
for their schemas); what the code builds as dicts, and the query parameters
(read by hand in `params`), are written here. A route the app serves under
``/api`` that is missing here, or one listed here the app does not serve,
fails tests/hub/test_openapi.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..calibration import Correction, Instrument, Laboratory, Procedure, ReferenceStandard
from ..calibration.api import (
    Adjustment,
    ApproveRequest,
    Capture,
    DueEntry,
    EnvironmentEntry,
    ManualReading,
    ReasonRequest,
    RecordView,
    SignRequest,
    StartRun,
)
from ..protocol import (
    ID_REGEX,
    PATTERN_REGEX,
    AgentConfigView,
    AgentRecord,
    ConfigChange,
    ConfigOutcome,
    History,
    InstrumentMetadata,
    InstrumentRecord,
    LogPage,
    MetadataView,
)
from ..protocol.log import LogEntry
from .auth.permissions import Role
from .calibrations import RecordSummary
from .timeline import Timeline

JSON = "application/json"
NDJSON = "application/x-ndjson"
#: Where a schema's components are, for `$ref`.
REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Body:
    """A request's or an answer's body: a type (its msgspec schema) or a schema; its media type."""

    shape: Any
    media: str = JSON
    description: str = ""


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    description: str
    schema: dict[str, Any]
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One documented operation: method and path as the router has them, and what it takes."""

    method: str
    path: str
    summary: str
    tag: str
    #: The least role that may call it; None: no credentials needed.
    role: Role | None
    answers: tuple[Body, ...]
    status: int = 200
    query: tuple[Param, ...] = ()
    body: Body | None = None
    #: Error answers besides 401 and 403 (which every route with a role has), as `PROBLEM`.
    errors: dict[int, str] | None = None
    #: Other answers with a body of their own, by status.
    others: dict[int, Body] | None = None
    description: str = ""


# --- hand-written schemas: answers built as dicts ----------------------------------

PROBLEM = {
    "title": "Problem",
    "description": "Every refusal of the HTTP API: a snake_case code a program can act on, "
    "and a message for a person.",
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "message"],
    "additionalProperties": False,
}
_LOG_STATE = {"enum": ["ok", "degraded"]}
HEALTH = {
    "title": "Health",
    "type": "object",
    "properties": {
        "status": _LOG_STATE,
        "hub": {"type": "string"},
        "version": {"type": "string"},
        "uptime_s": {"type": "number"},
        "agents": {"type": "integer"},
        "clients": {"type": "integer"},
        "instruments": {"type": "integer"},
        "log_backlog": {"type": "integer", "description": "log entries not yet committed"},
        "log": {
            "type": "object",
            "properties": {"state": _LOG_STATE, "reason": {"type": ["string", "null"]}},
            "required": ["state", "reason"],
            "additionalProperties": False,
        },
    },
    "required": ["status", "hub", "version", "uptime_s", "agents", "clients", "instruments"],
    "additionalProperties": False,
}
READY = {
    "title": "Readiness",
    "type": "object",
    "properties": {
        "ready": {"type": "boolean"},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["ready", "reasons"],
    "additionalProperties": False,
}
SESSION = {
    "title": "Session",
    "description": "Who is signed in, as the dashboard needs to know.",
    "type": "object",
    "properties": {
        "auth": {"type": "boolean", "description": "whether this hub requires credentials"},
        "user": {"type": "string"},
        "role": {"enum": [str(r) for r in Role if r is not Role.AGENT]},
        "instruments": {"type": "array", "items": {"type": "string"}},
        "commands": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["auth", "user", "role", "instruments", "commands"],
    "additionalProperties": False,
}
_SIGN_IN = {
    "type": "object",
    "properties": {"token": {"type": "string", "description": "a personal API token"}},
    "required": ["token"],
}
_DOCUMENT = {"type": "object", "description": "a JSON document"}
_FORGOTTEN = {
    "type": "object",
    "properties": {"forgotten": {"type": "string", "pattern": ID_REGEX}},
    "required": ["forgotten"],
    "additionalProperties": False,
}


def log_stats_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    """`LogStats` and the retention's last pass (None before the first)."""
    stats = dict(schemas["LogStats"])
    stats["properties"] = {
        **stats["properties"],
        "last_pass": {"anyOf": [{"$ref": REF.format(name="PruneReport")}, {"type": "null"}]},
    }
    stats["required"] = [*stats.get("required", []), "last_pass"]
    return stats


# --- parameters --------------------------------------------------------------------

_TIME = {
    "type": "string",
    "description": "UNIX seconds, relative to the hub's clock (-1h, -30m) or ISO 8601 "
    "(UTC unless it names a zone)",
    "examples": ["1767225600", "-1h", "2026-01-01T00:00:00"],
}
_SINCE = Param("since", "from this time on", _TIME)
_UNTIL = Param("until", "before this time (default: now)", _TIME)
_PATTERN = {"type": "string", "pattern": PATTERN_REGEX}
_CHANNEL = Param(
    "channel",
    "a channel's name; repeated or comma-separated for several (default: every channel)",
    {"type": "string"},
)
_REVISION = Param("revision", "a revision of the record (default: the latest)", {"type": "integer"})
PATH_PARAMS = {
    "instrument": ("an instrument id", {"type": "string", "pattern": ID_REGEX}),
    "agent": ("an agent id", {"type": "string", "pattern": ID_REGEX}),
    "number": (
        "a certificate number (KMZ-2026-1)",
        {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9]*-[0-9]{4}-[0-9]+$"},
    ),
}
_LOG_QUERY = (
    Param("instrument", "an instrument id or glob (without one: admin only)", _PATTERN),
    Param(
        "kind",
        "a message type (sample, command, status...), or command (commands with their "
        "replies) or refused (refused input)",
        {"type": "string"},
    ),
    Param("direction", "in (to the hub) or out", {"enum": ["in", "out"]}),
    Param("peer", "a glob over the peer's name", {"type": "string", "maxLength": 200}),
    Param("text", "text the message contains", {"type": "string", "maxLength": 200}),
    Param("since", "from this time on", _TIME),
    _UNTIL,
    Param("order", "newest first (default) or oldest first", {"enum": ["newest", "oldest"]}),
    Param("limit", "entries at most (json: 1..10000, default 100)", {"type": "integer"}),
    Param("cursor", "next_cursor of the previous page", {"type": "string", "pattern": "^[0-9]+$"}),
    Param("format", "a page (json, default) or every entry (ndjson)", {"enum": ["json", "ndjson"]}),
)

# --- the routes ----------------------------------------------------------------------

_CAL = "/api/calibrations"
_NUMBER = _CAL + "/{number}"
_RECORD = Body(RecordView, description="the record and its state")
_CAL_ERRORS = {
    400: "a body or parameter the route cannot use",
    404: "no such record",
    409: "the record's state does not allow it (record_locked, not_stable, ...)",
}


def _step(
    step: str, body: type[Any] | None, summary: str, role: Role = Role.OPERATOR, status: int = 200
) -> Route:
    """``POST /api/calibrations/{number}/STEP``: answers with the record."""
    return Route(
        "POST",
        f"{_NUMBER}/{step}",
        summary,
        "calibration",
        role,
        (_RECORD,),
        status=status,
        body=None if body is None else Body(body),
        errors=_CAL_ERRORS,
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/health",
        "Is the hub up, how busy, does its log keep up",
        "status",
        None,
        (Body(HEALTH),),
    ),
    Route(
        "GET",
        "/api/ready",
        "May this hub take traffic now (503 with reasons if not)",
        "status",
        None,
        (Body(READY),),
        others={503: Body(READY, description="not ready")},
        description="For a load balancer's or orchestrator's readiness probe.",
    ),
    Route(
        "GET",
        "/api/asyncapi.json",
        "The WebSocket protocol as an AsyncAPI 3.0 document",
        "documents",
        None,
        (Body(_DOCUMENT),),
    ),
    Route("GET", "/api/openapi.json", "This document", "documents", None, (Body(_DOCUMENT),)),
    Route(
        "GET",
        "/api/session",
        "Who is signed in (a token or the session cookie)",
        "session",
        Role.VIEWER,
        (Body(SESSION),),
    ),
    Route(
        "POST",
        "/api/session",
        "Sign in with a token: opens a session, sets its cookie",
        "session",
        None,
        (Body(SESSION),),
        body=Body(_SIGN_IN),
        errors={400: "not a sign-in", 401: "the token was refused", 413: "too large"},
    ),
    Route(
        "DELETE",
        "/api/session",
        "Sign out: end this browser's session",
        "session",
        None,
        (),
        status=204,
    ),
    Route(
        "GET",
        "/api/instruments",
        "Every known instrument the caller may watch, with its state",
        "instruments",
        Role.VIEWER,
        (Body(list[InstrumentRecord]),),
    ),
    Route(
        "DELETE",
        "/api/instruments/{instrument}",
        "Stop listing an instrument whose agent is gone",
        "instruments",
        Role.ADMIN,
        (Body(_FORGOTTEN),),
        errors={400: "not an instrument id", 404: "not known", 409: "its agent serves it"},
    ),
    Route(
        "GET",
        "/api/instruments/{instrument}/metadata",
        "What the hub holds of an instrument: description, location, group, owner, interval",
        "instruments",
        Role.ADMIN,
        (Body(MetadataView),),
        errors={400: "not an instrument id"},
        description="Everyone sees the metadata in the instrument records; this shows who set "
        "it last and the description the agent's file gives.",
    ),
    Route(
        "PUT",
        "/api/instruments/{instrument}/metadata",
        "Set an instrument's metadata (all of it; an empty field is not set)",
        "instruments",
        Role.ADMIN,
        (Body(MetadataView),),
        body=Body(InstrumentMetadata),
        errors={400: "not an instrument id, or a body it cannot use", 413: "the body is too large"},
        description="Logged as an instrument_metadata entry with the old and new values. A "
        "changed calibration interval moves a registered instrument's next due date.",
    ),
    Route(
        "GET",
        "/api/agents",
        "Every agent seen, online or not: spools, clocks, configuration revision",
        "instruments",
        Role.VIEWER,
        (Body(list[AgentRecord]),),
        description="A viewer sees the agents serving instruments of its grant, and those only.",
    ),
    Route(
        "GET",
        "/api/agents/{agent}/config",
        "The instrument configuration an agent runs, and the revisions held",
        "instruments",
        Role.ADMIN,
        (Body(AgentConfigView),),
        errors={400: "not an agent id", 404: "no such agent has connected"},
    ),
    Route(
        "PUT",
        "/api/agents/{agent}/config",
        "Send an agent an instrument configuration; answered with its outcome",
        "instruments",
        Role.ADMIN,
        (Body(ConfigOutcome),),
        body=Body(ConfigChange),
        errors={
            400: "not an agent id, or a body it cannot use",
            404: "no such agent has connected",
            409: "offline, protocol 3, refusing remote configuration, or busy",
            413: "the body is too large",
            422: "not valid TOML, or the agent refused it (invalid_config: the located error)",
            502: "the agent failed to apply it",
            504: "the agent did not answer in time, or left before it did",
        },
        description="The agent checks the configuration as it checks its own file, and runs it "
        "live or refuses it and changes nothing; the answer says per instrument what happened.",
    ),
    Route(
        "POST",
        "/api/agents/{agent}/config/rollback",
        "Run an agent's previous configuration revision again",
        "instruments",
        Role.ADMIN,
        (Body(ConfigOutcome),),
        errors={
            400: "not an agent id",
            404: "no such agent has connected",
            409: "no previous revision, offline, or busy",
            422: "the agent refused it",
            502: "the agent failed to apply it",
            504: "the agent did not answer in time, or left before it did",
        },
    ),
    Route(
        "GET",
        "/api/log",
        "The traffic log, filtered: a page, or every entry as NDJSON",
        "data",
        Role.VIEWER,
        (Body(LogPage), Body(LogEntry, NDJSON, "one log entry per line")),
        query=_LOG_QUERY,
        errors={400: "a parameter it cannot use"},
        description="A viewer may read the log of the instruments of its grant; the whole log "
        "(no instrument) needs admin. A page holds at most 1 MiB; pass next_cursor as cursor "
        "for the next.",
    ),
    Route(
        "GET",
        "/api/log/stats",
        "Rows, sizes and the oldest entry of the log per kind",
        "data",
        Role.ADMIN,
        (Body("LogStatsAnswer"),),
        errors={501: "this hub's log keeps no statistics"},
    ),
    Route(
        "GET",
        "/api/history/{instrument}",
        "An instrument's channels over a time range: count, min, max, mean per bucket",
        "data",
        Role.VIEWER,
        (Body(History),),
        query=(
            Param("since", "from this time on (default: an hour before until)", _TIME),
            _UNTIL,
            Param("every", "a bucket's width (1m, 10s, 0.5)", {"type": "string"}),
            Param("points", "buckets (default 1000, at most 10000)", {"type": "integer"}),
            _CHANNEL,
        ),
        errors={
            400: "a parameter it cannot use, or too many buckets",
            503: "the log cannot be read now",
        },
        description="Needs watching the instrument.",
    ),
    Route(
        "GET",
        "/api/export",
        "Logged samples, streamed as CSV or NDJSON",
        "data",
        Role.VIEWER,
        (
            Body(
                {"type": "string"}, "text/csv", "UTF-8 with a BOM, a header row, one row per sample"
            ),
            Body({"type": "string"}, NDJSON, "one sample per line"),
        ),
        query=(
            Param("instrument", "an instrument id or glob (default *)", _PATTERN),
            Param("since", "from this time on (default: the beginning)", _TIME),
            _UNTIL,
            _CHANNEL,
            Param("format", "csv (default) or ndjson", {"enum": ["csv", "ndjson"]}),
        ),
        errors={400: "a parameter it cannot use", 429: "too many exports at once"},
        description="Needs watching the instruments. X-Kmz-Rows-Expected tells the rows to expect.",
    ),
    Route(
        "GET",
        "/api/timeline/{instrument}",
        "When an instrument was online, offline or faulted, and why",
        "data",
        Role.VIEWER,
        (Body(Timeline),),
        query=(_SINCE, _UNTIL),
        errors={400: "a parameter it cannot use"},
        description="Needs watching the instrument.",
    ),
    Route(
        "GET",
        "/api/timeline",
        "When an agent was connected, and why not",
        "data",
        Role.ADMIN,
        (Body(Timeline),),
        query=(Param("agent", "the agent's id", {"type": "string"}, required=True), _SINCE, _UNTIL),
        errors={400: "no agent named, or a parameter it cannot use"},
    ),
    # Calibration (`calibration_routes`): each route checks its role and the grant.
    Route(
        "GET",
        _CAL,
        "The latest revision of each calibration",
        "calibration",
        Role.VIEWER,
        (Body(list[RecordSummary]),),
        query=(Param("instrument", "only this instrument's", {"type": "string"}),),
    ),
    Route(
        "POST",
        _CAL,
        "Start a calibration run: the draft and its number",
        "calibration",
        Role.OPERATOR,
        (_RECORD,),
        status=201,
        body=Body(StartRun),
        errors=_CAL_ERRORS,
    ),
    Route(
        "GET",
        f"{_CAL}/due",
        "Instruments overdue or due for calibration within N days",
        "calibration",
        Role.VIEWER,
        (Body(list[DueEntry]),),
        query=(Param("days", "0..3660 (default 0)", {"type": "integer"}),),
        errors={400: "days out of range"},
    ),
    Route(
        "GET",
        f"{_CAL}/corrections",
        "Every correction version, applied and withdrawn",
        "calibration",
        Role.VIEWER,
        (Body(list[Correction]),),
    ),
    Route(
        "GET",
        f"{_CAL}/standards",
        "The reference standards",
        "calibration",
        Role.VIEWER,
        (Body(list[ReferenceStandard]),),
    ),
    Route(
        "PUT",
        f"{_CAL}/standards",
        "Register or update a reference standard",
        "calibration",
        Role.ADMIN,
        (Body(ReferenceStandard),),
        body=Body(ReferenceStandard),
        errors=_CAL_ERRORS,
    ),
    Route(
        "GET",
        f"{_CAL}/instruments",
        "The instruments' calibration metadata",
        "calibration",
        Role.VIEWER,
        (Body(list[Instrument]),),
    ),
    Route(
        "PUT",
        f"{_CAL}/instruments",
        "Register or update an instrument's metadata",
        "calibration",
        Role.ADMIN,
        (Body(Instrument),),
        body=Body(Instrument),
        errors=_CAL_ERRORS,
    ),
    Route(
        "GET",
        f"{_CAL}/procedures",
        "The highest version of each procedure",
        "calibration",
        Role.VIEWER,
        (Body(list[Procedure]),),
    ),
    Route(
        "PUT",
        f"{_CAL}/procedures",
        "Register a procedure from its TOML text",
        "calibration",
        Role.ADMIN,
        (Body(Procedure),),
        body=Body({"type": "string"}, "text/plain"),
        query=(Param("source", "the file it came from, for messages", {"type": "string"}),),
        errors=_CAL_ERRORS,
    ),
    Route(
        "GET",
        f"{_CAL}/laboratory",
        "The laboratory that issues certificates",
        "calibration",
        Role.VIEWER,
        (Body(Laboratory),),
        errors={404: "no laboratory is registered yet"},
    ),
    Route(
        "PUT",
        f"{_CAL}/laboratory",
        "Set the laboratory that issues certificates",
        "calibration",
        Role.ADMIN,
        (Body(Laboratory),),
        body=Body(Laboratory),
        errors=_CAL_ERRORS,
    ),
    Route(
        "GET",
        _NUMBER + ".pdf",
        "The certificate as PDF",
        "calibration",
        Role.VIEWER,
        (Body({"type": "string", "contentMediaType": "application/pdf"}, "application/pdf"),),
        query=(_REVISION,),
        errors={**_CAL_ERRORS, 500: "the PDF could not be made"},
    ),
    Route(
        "GET",
        _NUMBER,
        "A record with its hash, figures and correction",
        "calibration",
        Role.VIEWER,
        (_RECORD,),
        query=(_REVISION,),
        errors=_CAL_ERRORS,
    ),
    Route(
        "GET",
        f"{_NUMBER}/revisions",
        "Every revision of a record, oldest first",
        "calibration",
        Role.VIEWER,
        (Body(list[RecordSummary]),),
        errors=_CAL_ERRORS,
    ),
    _step("capture", Capture, "The next reading of a point, from the live samples, if stable"),
    _step("readings", ManualReading, "A reading entered by hand"),
    _step("environment", EnvironmentEntry, "A condition entered by hand"),
    _step("adjustment", Adjustment, "The adjustment made between as-found and as-left"),
    _step("sign", SignRequest, "The performer's signature, as the authenticated person"),
    _step("reopen", None, "Withdraw the performer's signature of a draft"),
    _step("correct", ReasonRequest, "A new revision of an approved record", status=201),
    _step(
        "approve",
        ApproveRequest,
        "The approver's signature: the record is final, and applied unless told not to",
        Role.ADMIN,
    ),
    Route(
        "POST",
        f"{_NUMBER}/withdraw",
        "Stop applying the calibration's correction from now on",
        "calibration",
        Role.ADMIN,
        (Body(Correction),),
        body=Body(ReasonRequest),
        errors=_CAL_ERRORS,
    ),
)

TAGS = {
    "status": "Health and readiness, for probes and people",
    "documents": "This API and the WebSocket protocol, described",
    "session": "The dashboard's sign-in",
    "instruments": "Instruments and agents as the hub knows them",
    "data": "Getting data out: the traffic log, history, export, timelines",
    "calibration": "Calibration records, certificates, corrections and their registries",
}
