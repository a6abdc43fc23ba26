"""Auth at the HTTP layer: the Origin check of every request, and who may call each REST route.

Origin: a browser names the page that opened a connection in ``Origin``;
scripts send none and are not affected. A request with an Origin is served
only if the origin is allow-listed (``--allow-origin``) or is the hub's own
(same scheme, host and port as the request's ``Host``), and then, on a hub
without auth, only for a loopback host: a page on ``evil.example`` that
re-binds its DNS name to 127.0.0.1 is same-origin by Host, and it must not
reach an open hub. ``Origin: null`` (sandboxed frames, files) is never
allowed. Refused: 403 ``forbidden``, before any WebSocket upgrade.

REST: ``Authorization: Bearer <token>`` on every ``/api/`` route but
``/api/health`` and ``/api/ready`` (probes that name no instrument), checked with the
same `Principal` methods as the WebSocket handlers: listing needs viewer and
shows only the instruments the grant covers; the log and the export of one
instrument (or of a pattern the grant holds) and its history need watching
it; the whole log (any ``kind``) and forgetting an instrument need admin.
No token: 401 ``unauthorized``; not allowed: 403 ``forbidden``.

Sessions: the dashboard's session cookie (`sessions`, set by `dashboard`)
stands in for a token on the REST routes and on the ``/ws/client`` upgrade;
an unsafe method (POST, DELETE) with the cookie must also carry an Origin,
which every browser sends and the check above has vetted. The dashboard's
page and assets, ``/login`` and ``/api/session`` check nothing here: the page
holds no data, and the session routes check credentials themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from ...protocol import AgentRecord, Error, ErrorCode, is_name
from ...protocol.log import REFUSED
from ..peers import Peer
from ..services import HUB_KEY, Hub
from .guard import bearer, enforce, expire_leases
from .permissions import ANONYMOUS, Principal, Role
from .service import Authenticator, check_startup, is_loopback

_log = logging.getLogger(__name__)

PRINCIPAL_KEY = web.RequestKey("kmz_principal", Principal)

#: How often expired leases are ended and announced.
LEASE_CHECK_S = 0.5

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, hub: Hub) -> None:
    """Give the app its auth: the store (loaded at start), the middleware, the revocation watch.

    Raises `HubStartError` for a hub that would serve the network without
    auth (not `--insecure`), or whose credentials cannot be read.
    """
    config = hub.config
    hub.auth = Authenticator.for_data_dir(config.data_dir, hub.clock)
    check_startup(config.host, hub.auth.required, config.insecure)
    hub.auth.open()
    app.middlewares.append(_middleware)
    app.cleanup_ctx.append(_watching)


async def _watching(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]

    def changed(peer: object, change: Principal | str) -> None:
        if isinstance(peer, Peer) and peer in hub.peers:
            enforce(hub, peer, change)

    async def expire() -> None:
        while True:
            await asyncio.sleep(LEASE_CHECK_S)
            expire_leases(hub)

    hub.tasks.spawn(hub.auth.watch(changed), "kmz-auth-watch")
    hub.tasks.spawn(expire(), "kmz-lease-expiry")
    yield
    hub.auth.close()


@web.middleware
async def _middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    why = origin_refusal(request, hub)
    if why is not None:
        hub.traffic.refused(
            f"?{request.remote}",
            Error(code=ErrorCode.FORBIDDEN, message=why),
            f"{request.method} {request.path_qs}".encode(),
        )
        return _problem(403, ErrorCode.FORBIDDEN, why)
    path = request.path
    if path == "/ws/client" and hub.auth.required:
        return await handler(_with_session_credentials(request))
    if not path.startswith("/api/") or path in _PUBLIC_API:
        # The dashboard's page and assets hold no data; it signs in itself.
        return await handler(request)
    principal = _principal(request, hub)
    if isinstance(principal, web.Response):
        return principal
    needed = _needed(request, principal)
    if needed is not None:
        hub.traffic.refused(
            principal.name,
            Error(code=ErrorCode.FORBIDDEN, message=needed),
            f"{request.method} {request.path_qs}".encode(),
        )
        return _problem(403, ErrorCode.FORBIDDEN, needed)
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


#: The name of the dashboard's session cookie (`auth.sessions`).
SESSION_COOKIE = "kmz_session"
#: API routes that check credentials themselves (or need none).
_PUBLIC_API = frozenset(
    {"/api/health", "/api/ready", "/api/session", "/api/asyncapi.json", "/api/openapi.json"}
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_secret(request: web.Request) -> str | None:
    """The session secret of this request's cookie, if it has one."""
    secret = request.cookies.get(SESSION_COOKIE)
    return secret or None


def _with_session_credentials(request: web.Request) -> web.Request:
    """A browser's WebSocket upgrade with its session: the session's secret as its credentials.

    Browsers cannot set headers on a WebSocket; they send the cookie (only
    on same-site requests: SameSite=Strict), and the Origin check above has
    refused other sites' pages already. A token in the Authorization header
    wins over the cookie; one in the hello besides the cookie is refused as
    two different tokens.
    """
    secret = session_secret(request)
    if secret is None or "Authorization" in request.headers:
        return request
    headers = request.headers.copy()
    headers["Authorization"] = f"Bearer {secret}"
    return request.clone(headers=headers)


def request_principal(request: web.Request, hub: Hub) -> Principal | str:
    """Who makes this request (a bearer token, else the session cookie), or why nobody."""
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        token = session_secret(request)
        if (
            token is not None
            and request.method not in _SAFE_METHODS
            and "Origin" not in request.headers
        ):
            # Browsers name the page's origin on every unsafe request (checked
            # above); a cookie without one is not from the dashboard.
            return "a request with the session cookie must come from the dashboard"
    return hub.auth.authenticate(token)


def principal_of(request: web.Request) -> Principal:
    """Who made this request (`ANONYMOUS` on a hub without auth)."""
    principal: Principal = request.get(PRINCIPAL_KEY, ANONYMOUS)
    return principal


def _principal(request: web.Request, hub: Hub) -> Principal | web.Response:
    principal = request_principal(request, hub)
    if isinstance(principal, str):
        hub.traffic.refused(
            f"?{request.remote}",
            Error(code=ErrorCode.UNAUTHORIZED, message=principal),
            f"{request.method} {request.path_qs}".encode(),
        )
        _log.warning(
            "credentials refused",
            extra={"remote": request.remote, "code": ErrorCode.UNAUTHORIZED, "reason": principal},
        )
        response = _problem(401, ErrorCode.UNAUTHORIZED, principal)
        response.headers["WWW-Authenticate"] = 'Bearer realm="kmz"'
        return response
    if principal.role is Role.AGENT:
        return _problem(403, ErrorCode.FORBIDDEN, "an agent token cannot call the HTTP API")
    return principal


#: REST routes any viewer may call (their answers are filtered by the grant).
_VIEWER_ROUTES = frozenset({"/api/instruments", "/api/agents"})


def _needed(request: web.Request, principal: Principal) -> str | None:
    """Why `principal` may not make this request, or None.

    A route not named here needs admin: a new route is closed until someone
    decides who may call it.
    """
    path = request.path
    if request.method == "GET" and path in _VIEWER_ROUTES:
        return None if principal.at_least(Role.VIEWER) else "needs the viewer role"
    if path == "/api/calibrations" or path.startswith("/api/calibrations/"):
        # Each calibration route checks its own role and grant (`calibration_routes`).
        return None if principal.at_least(Role.VIEWER) else "needs the viewer role"
    if request.method == "GET" and path in ("/api/log", "/api/export"):
        # An instrument id, or a pattern the grant holds as such (`may_subscribe`).
        instrument = request.query.get("instrument")
        if instrument is None and path == "/api/log":
            return None if principal.is_admin else "the whole log needs admin; name an instrument"
        if not principal.may_subscribe(instrument or "*"):
            return f"{principal.name} may not read the log of {instrument or '*'!r}"
        return None
    if request.method == "GET" and path.startswith("/api/history/"):
        instrument = path.removeprefix("/api/history/")
        if not principal.may_watch(instrument):
            return f"{principal.name} may not read the history of {instrument!r}"
        return None
    if request.method == "GET" and path.startswith("/api/timeline/"):
        # An instrument's timeline: whoever may watch it (an agent's: admin).
        instrument = path.removeprefix("/api/timeline/")
        if not principal.may_watch(instrument):
            return f"{principal.name} may not read the timeline of {instrument!r}"
        return None
    if principal.is_admin:
        return None
    return f"{request.method} {path} needs the admin role"


def origin_refusal(request: web.Request, hub: Hub) -> str | None:
    """Why a browser's request from its `Origin` is refused, or None."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin in hub.config.allowed_origins:
        return None
    own = f"{request.scheme}://{request.host}".lower()
    if origin.lower() == own and origin != "null":
        host = urlsplit(own).hostname or ""
        if hub.auth.required or is_loopback(host):
            return None
    return (
        f"origin {origin!r} may not use this hub (allowed: its own pages"
        + "".join(f", {o}" for o in hub.config.allowed_origins)
        + "; kmz hub --allow-origin adds one)"
    )


def _problem(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        body=msgspec.json.encode({"code": code, "message": message}),
        status=status,
        content_type="application/json",
    )


#: `kind` of `GET /api/log` (and `kmz log --kind`) beyond a message type:
#: commands with their outcomes, and refused input (auth failures, limit
#: breaches, malformed frames) with its code.
LOG_KINDS: dict[str, tuple[str, ...]] = {
    "command": ("command", "reply"),
    "refused": (REFUSED,),
}


def log_types(kind: str) -> tuple[str, ...] | None:
    """The log entry types a `kind` stands for; None if it names none."""
    if kind in LOG_KINDS:
        return LOG_KINDS[kind]
    return (kind,) if is_name(kind) else None


def visible_agents(principal: Principal, records: list[AgentRecord]) -> list[AgentRecord]:
    """The agents serving instruments `principal` may watch, showing only those instruments."""
    if principal.is_admin:
        return records
    shown = []
    for record in records:
        mine = [i for i in record.instruments if principal.may_watch(i)]
        if mine:
            seqs = {i: s for i, s in record.logged_seqs.items() if i in mine}
            shown.append(msgspec.structs.replace(record, instruments=mine, logged_seqs=seqs))
    return shown
