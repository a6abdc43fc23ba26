"""The dashboard: its page and assets from the package, sign-in and sign-out, security headers.

The dashboard is a client like any other: its JavaScript (``static/``) uses
the public WebSocket protocol (``/ws/client``) and REST API, nothing else.
What it needs of the hub is here:

- ``GET /`` and ``GET /static/...``: the page and its assets, read once from
  the package and kept in memory, gzip-compressed when the browser accepts
  it, revalidated by ETag;
- ``POST /api/session`` (``{"token": ...}``): sign in with a personal API
  token; the answer sets the session cookie (see `auth.sessions`);
  ``GET /login?code=...``: a one-time login link (`kmz demo` prints one)
  that does the same and goes on to ``/``;
- ``GET /api/session``: who is signed in, with the role and grant, so that
  the page offers only what the user may do (the hub checks every message
  anyway); ``DELETE /api/session``: sign out (the session ends at once, and
  the WebSockets it opened within a second).

Every answer carries a strict Content-Security-Policy (scripts, styles and
connections from the hub itself only; no inline script or style; no framing),
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
The cookie is HttpOnly, SameSite=Strict, Path=/, and Secure when the request
came over TLS.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import msgspec
from aiohttp import web

from ..protocol import ErrorCode
from .auth.permissions import Principal, Role
from .auth.sessions import MAX_AGE_S
from .auth.web import SESSION_COOKIE, request_principal, session_secret
from .services import HUB_KEY

_log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The policy of every answer: nothing from elsewhere, nothing inline.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Assets smaller than this are sent as they are (gzip would not pay).
_COMPRESS_FROM = 512
#: JSON answers from this size on are gzipped for clients that accept it.
_COMPRESS_JSON_FROM = 2048
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}
#: The sign-in form sends at most this much.
_MAX_SIGN_IN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the dashboard, as served."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


class Assets:
    """The dashboard's files from the package's ``static`` folder, read once each."""

    def __init__(self, root: Traversable | None = None) -> None:
        self._root = root or resources.files("kleinmaelzung.hub") / "static"
        self._cache: dict[str, Asset | None] = {}

    async def get(self, path: str) -> Asset | None:
        """The asset at `path` (``js/app.js``), or None if there is none."""
        if path in self._cache:
            return self._cache[path]
        # Read and gzipped once, off the event loop (uPlot: ~10 ms here, more on a Pi).
        asset = await asyncio.to_thread(self._load, path)
        if len(self._cache) < 256:  # a bound even for a stream of odd names
            self._cache[path] = asset
        return asset

    def _load(self, path: str) -> Asset | None:
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        node = self._root
        for part in parts:
            node = node / part
        if not node.is_file():
            return None
        body = node.read_bytes()
        suffix = "." + parts[-1].rpartition(".")[2]
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(parts[-1])[0]
        content_type = content_type or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith(("json", "svg+xml")):
            content_type += "; charset=utf-8"
        gzipped = gzip.compress(body, mtime=0) if len(body) >= _COMPRESS_FROM else None
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        return Asset(body, gzipped, content_type, etag)


ASSETS_KEY = web.AppKey("kmz_dashboard_assets", Assets)


def install(app: web.Application) -> None:
    """Add the dashboard's routes, and its headers to every answer."""
    app[ASSETS_KEY] = Assets()
    app.on_response_prepare.append(_prepare)
    app.middlewares.append(_compressing)
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
    app.router.add_get("/login", login_link)
    app.router.add_get("/api/session", whoami)
    app.router.add_post("/api/session", sign_in)
    app.router.add_delete("/api/session", sign_out)


async def _prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: the security headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


@web.middleware
async def _compressing(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A JSON answer to the dashboard worth it: gzip, if accepted.

    The list of 50 instruments is ~13 KB of JSON, 2 KB gzipped: the
    dashboard's first load halves. Only for the dashboard's own calls
    (scripts' answers stay as they were); streamed answers are left alone.
    """
    response = await handler(request)
    if (
        (SESSION_COOKIE in request.cookies or request.headers.get("Origin"))
        and isinstance(response, web.Response)
        and response.content_type == "application/json"
        and isinstance(response.body, bytes)
        and len(response.body) >= _COMPRESS_JSON_FROM
        and "Content-Encoding" not in response.headers
        and "gzip" in request.headers.get("Accept-Encoding", "")
    ):
        response.enable_compression(web.ContentCoding.gzip)
    return response


def _serve(request: web.Request, asset: Asset) -> web.Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


async def index(request: web.Request) -> web.Response:
    """`GET /`: the dashboard's page (it signs in and loads its data itself)."""
    asset = await request.app[ASSETS_KEY].get("index.html")
    if asset is None:
        raise web.HTTPNotFound(text="the dashboard is not installed (no hub/static/index.html)")
    return _serve(request, asset)


async def static(request: web.Request) -> web.Response:
    """`GET /static/PATH`: one of the dashboard's files."""
    asset = await request.app[ASSETS_KEY].get(request.match_info["path"])
    if asset is None:
        raise web.HTTPNotFound(text="no such file")
    return _serve(request, asset)


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )


def _problem(status: int, code: str, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=status)


def describe(principal: Principal, auth: bool) -> dict[str, object]:
    """What the page needs to know of who is signed in."""
    return {
        "auth": auth,
        "user": principal.name,
        "role": str(principal.role),
        "instruments": list(principal.instruments),
        "commands": list(principal.commands),
    }


def _with_cookie(request: web.Request, response: web.Response, secret: str) -> web.Response:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(MAX_AGE_S),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def whoami(request: web.Request) -> web.Response:
    """`GET /api/session`: who is signed in (401 if nobody)."""
    hub = request.app[HUB_KEY]
    principal = request_principal(request, hub)
    if isinstance(principal, str):
        return _problem(401, ErrorCode.UNAUTHORIZED, principal)
    if principal.role is Role.AGENT:
        return _problem(403, ErrorCode.FORBIDDEN, "an agent token cannot use the dashboard")
    return _json(describe(principal, hub.auth.required))


async def sign_in(request: web.Request) -> web.Response:
    """`POST /api/session` with ``{"token": "kmz_..."}``: open a session, set its cookie."""
    hub = request.app[HUB_KEY]
    if request.content_length is not None and request.content_length > _MAX_SIGN_IN_BYTES:
        return _problem(413, ErrorCode.MESSAGE_TOO_LARGE, "a sign-in is a token, nothing more")
    raw = await request.content.read(_MAX_SIGN_IN_BYTES + 1)
    try:
        token = msgspec.json.decode(raw, type=dict[str, str])["token"].strip()
    except (msgspec.DecodeError, KeyError):
        return _problem(400, ErrorCode.INVALID_ARGUMENTS, 'expected {"token": "kmz_..."}')
    opened = hub.auth.sign_in(token)
    if isinstance(opened, str):
        _log.warning("sign-in refused", extra={"remote": request.remote, "reason": opened})
        return _problem(401, ErrorCode.UNAUTHORIZED, opened)
    secret, principal = opened
    _log.info("signed in", extra={"user": principal.name, "remote": request.remote})
    return _with_cookie(request, _json(describe(principal, True)), secret)


async def login_link(request: web.Request) -> web.Response:
    """`GET /login?code=...`: sign in with a one-time code, then go to the dashboard."""
    hub = request.app[HUB_KEY]
    opened = hub.auth.redeem(request.query.get("code", ""))
    if isinstance(opened, str):
        _log.warning("login link refused", extra={"remote": request.remote, "reason": opened})
        raise web.HTTPSeeOther("/?signin=link-used")
    secret, principal = opened
    _log.info("signed in by link", extra={"user": principal.name, "remote": request.remote})
    response = web.Response(status=303, headers={"Location": "/"})
    return _with_cookie(request, response, secret)


async def sign_out(request: web.Request) -> web.Response:
    """`DELETE /api/session`: end this browser's session and forget its cookie."""
    hub = request.app[HUB_KEY]
    secret = session_secret(request)
    if secret is not None and hub.auth.sign_out(secret):
        _log.info("signed out", extra={"remote": request.remote})
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
