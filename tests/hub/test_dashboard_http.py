"""The dashboard's routes over HTTP: sign-in, the session cookie, logout, login links, headers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from kleinmaelzung.hub.auth import SqliteCredentials

from .auth_setup import agent_hello, auth_lab, closed_with, greeted, socket

CLIENT, AGENT = "/ws/client", "/ws/agent"


@asynccontextmanager
async def browser(url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that keeps cookies like a browser and names the page's origin."""
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar, headers={"Origin": url}) as session:
        yield session


async def sign_in(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any, str]:
    async with http.post(url + "/api/session", json={"token": token}) as response:
        return response.status, await response.json(), response.headers.get("Set-Cookie", "")


async def test_sign_in_sets_a_strict_httponly_cookie_that_stands_for_the_token(
    tmp_path: Path,
) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        async with http.get(lab.url + "/api/session") as response:
            assert response.status == 401
        status, body, cookie = await sign_in(http, lab.url, lab.tokens["olga"])
        assert status == 200
        assert (body["user"], body["role"], body["instruments"]) == ("olga", "operator", ["kiln-*"])
        assert body["commands"] == ["set_setpoint"]
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert cookie.startswith("kmz_session=kmzs_")
        assert {"httponly", "samesite", "path", "max-age"} <= flags
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in flags  # plain http here; Secure over TLS
        async with http.get(lab.url + "/api/session") as response:
            assert (await response.json())["user"] == "olga"
        async with http.get(lab.url + "/api/instruments") as response:
            assert response.status == 200  # the cookie works for the REST API too
        # The hub keeps no session secret, only digests.
        secret = cookie.split(";")[0].split("=", 1)[1]
        assert secret not in repr(lab.hub.hub.auth.sessions.__dict__)


async def test_bad_sign_ins_are_refused(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        for token in ("kmz_nope", lab.tokens["revoked"], lab.tokens["pi-1"], lab.tokens["dan"]):
            status, body, cookie = await sign_in(http, lab.url, token)
            assert (status, body["code"], cookie) == (401, "unauthorized", ""), token
        async with http.post(lab.url + "/api/session", data=b"not json") as response:
            assert response.status == 400


async def test_logout_ends_the_session_and_its_websocket(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        await sign_in(http, lab.url, lab.tokens["oscar"])
        ws_url = lab.url.replace("http", "ws", 1) + CLIENT
        async with http.ws_connect(ws_url) as ws:
            await ws.send_json({"type": "client_hello", "protocol": 3, "token": None})
            welcome = await ws.receive_json(timeout=5)
            assert welcome["type"] == "welcome"
            async with http.delete(lab.url + "/api/session") as response:
                assert response.status == 204
                assert "kmz_session=" in response.headers.get("Set-Cookie", "")
            ended = time.monotonic()
            error = await ws.receive_json(timeout=2)
            assert error["code"] == "unauthorized"
            closing = await ws.receive(timeout=2)
            assert closing.data == 4001
            assert time.monotonic() - ended < 1.0
        async with http.get(lab.url + "/api/session") as response:
            assert response.status == 401


async def test_a_revoked_token_ends_its_sessions(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        await sign_in(http, lab.url, lab.tokens["oscar"])
        ws_url = lab.url.replace("http", "ws", 1) + CLIENT
        async with http.ws_connect(ws_url) as ws:
            await ws.send_json({"type": "client_hello", "protocol": 3, "token": None})
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            SqliteCredentials(lab.store.data_dir).revoke_token(lab.token_id("oscar"))
            assert (await ws.receive_json(timeout=2))["code"] == "unauthorized"
        async with http.get(lab.url + "/api/session") as response:
            assert response.status == 401
        assert len(lab.hub.hub.auth.sessions) == 0


async def test_the_cookie_does_not_stand_in_for_unsafe_requests_without_an_origin(
    tmp_path: Path,
) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        _, _, cookie = await sign_in(http, lab.url, lab.tokens["ada"])
        secret = cookie.split(";")[0].split("=", 1)[1]
        async with (
            aiohttp.ClientSession() as plain,
            plain.delete(
                lab.url + "/api/instruments/kiln-air", headers={"Cookie": f"kmz_session={secret}"}
            ) as response,
        ):
            assert response.status == 401
        # From another site's page: refused before anything else.
        async with (
            aiohttp.ClientSession() as evil,
            evil.get(
                lab.url + "/api/instruments",
                headers={"Cookie": f"kmz_session={secret}", "Origin": "https://evil.example"},
            ) as response,
        ):
            assert response.status == 403


async def test_a_login_link_signs_in_once(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        code = lab.hub.hub.auth.login_code(lab.tokens["ada"])
        assert code is not None
        async with http.get(lab.url + f"/login?code={code}", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (303, "/")
            assert "HttpOnly" in response.headers["Set-Cookie"]
        async with http.get(lab.url + "/api/session") as response:
            assert (await response.json())["user"] == "ada"
        async with (
            browser(lab.url) as other,
            other.get(lab.url + f"/login?code={code}", allow_redirects=False) as response,
        ):
            assert response.headers["Location"] == "/?signin=link-used"
            assert "Set-Cookie" not in response.headers
        assert lab.hub.hub.auth.login_code(lab.tokens["pi-1"]) is None


async def test_the_page_is_served_with_a_strict_policy(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, aiohttp.ClientSession() as http:
        async with http.get(lab.url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
            headers = response.headers
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "<script" in page and "<style" not in page and " style=" not in page
        async with http.get(lab.url + "/static/js/app.js") as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert response.headers["Content-Encoding"] == "gzip"
            etag = response.headers["ETag"]
        async with http.get(
            lab.url + "/static/js/app.js", headers={"If-None-Match": etag}
        ) as response:
            assert response.status == 304
        for path in ("/static/../dashboard.py", "/static/nope.js", "/static/.hidden"):
            async with http.get(lab.url + path) as response:
                assert response.status == 404, path


async def test_an_open_hub_needs_no_sign_in(hub: Any) -> None:
    async with browser(hub.url) as http:
        async with http.get(hub.url + "/api/session") as response:
            body = await response.json()
        assert (body["auth"], body["user"], body["role"]) == (False, "anonymous", "admin")
        status, body, _ = await sign_in(http, hub.url, "kmz_whatever")
        assert status == 401


async def test_an_agent_cannot_use_a_session_secret(tmp_path: Path) -> None:
    async with auth_lab(tmp_path) as lab, browser(lab.url) as http:
        _, _, cookie = await sign_in(http, lab.url, lab.tokens["ada"])
        secret = cookie.split(";")[0].split("=", 1)[1]
        async with greeted(
            lab.url, CLIENT, {"type": "client_hello", "protocol": 3, "token": secret}
        ):
            pass  # a session works in a hello, as a token does
        async with socket(lab.url, AGENT) as agent:
            await agent.send(agent_hello("pi-1", ("kiln-air",), secret))
            _, code = await closed_with(agent)
        assert code == 4001
