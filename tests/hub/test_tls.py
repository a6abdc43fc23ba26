"""TLS (issue 11, item 6): the hub serves https/wss; clients verify its certificate, a lab CA
or a pin, and refuse anything else before the hello (and its token) is sent."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from kleinmaelzung.client import Client, HubUnreachable, SyncClient, fetch_log
from kleinmaelzung.hub import HubConfig, HubStartError, RunningHub, start_hub
from kleinmaelzung.hub.admission import AdmittingSite
from kleinmaelzung.protocol import PROTOCOL_VERSION, Timeouts
from kleinmaelzung.transport import Healing, TrustError

from .certificates import Certificates, make_certificates
from .peers import data, instrument

DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


async def tls_hub_at(tmp_path: Path, certs: Certificates, **config: object) -> RunningHub:
    return await start_hub(
        HubConfig(
            port=0,
            data_dir=tmp_path / "hub-data",
            tls_cert=certs.cert,
            tls_key=certs.key,
            **config,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
async def tls_hub(tmp_path: Path, certs: Certificates) -> AsyncIterator[RunningHub]:
    running = await tls_hub_at(tmp_path, certs)
    try:
        yield running
    finally:
        await running.stop()


def _site(running: RunningHub) -> AdmittingSite:
    (site,) = running.runner.sites
    assert isinstance(site, AdmittingSite)
    return site


async def _tls_agent(url: str, certs: Certificates, session: aiohttp.ClientSession) -> object:
    context = ssl.create_default_context(cafile=str(certs.ca))
    ws = await session.ws_connect(url.replace("https", "wss", 1) + "/ws/agent", ssl=context)
    hello = {
        "type": "agent_hello",
        "protocol": PROTOCOL_VERSION,
        "agent_id": "pi-1",
        "instruments": [instrument("balance")],
        "run": "r1",
    }
    await ws.send_str(msgspec.json.encode(hello).decode())
    welcome = await ws.receive_json(timeout=DEADLINE_S)
    assert welcome["type"] == "welcome", welcome
    return ws


async def test_a_client_trusting_the_lab_ca_watches_over_wss(
    tls_hub: RunningHub, certs: Certificates
) -> None:
    assert tls_hub.url.startswith("https://127.0.0.1:")
    async with aiohttp.ClientSession() as session:
        agent = await _tls_agent(tls_hub.url, certs, session)
        assert isinstance(agent, aiohttp.ClientWebSocketResponse)
        wss = tls_hub.url.replace("https", "wss", 1) + "/ws/client"
        async with Client(wss, ca_file=certs.ca, pin_sha256=certs.pin) as client:
            assert [r.id for r in await client.instruments()] == ["balance"]
            samples = client.subscribe("balance")
            await samples.start()
            await agent.send_str(msgspec.json.encode(data("balance", 1)).decode())
            sample = await asyncio.wait_for(anext(aiter(samples)), DEADLINE_S)
            assert sample.values == {"mass": 1.0}  # type: ignore[union-attr]
        # The HTTP API over https, with the same trust.
        entries = await fetch_log(tls_hub.url, ca_file=certs.ca, limit=5)
        assert entries
        await agent.close()


async def test_the_sync_client_verifies_too(tls_hub: RunningHub, certs: Certificates) -> None:
    def use() -> None:  # in a thread: the hub runs on this test's loop
        with SyncClient(tls_hub.url, ca_file=str(certs.ca)) as client:
            assert client.instruments() == []
        with (
            pytest.raises(HubUnreachable, match="not trusted"),
            SyncClient(tls_hub.url) as client,
        ):
            pass

    await asyncio.to_thread(use)


@pytest.mark.parametrize(
    ("trust", "said"),
    [
        ({}, "its certificate is not trusted (unable to get local issuer certificate)"),
        ({"ca_file": "other"}, "its certificate is not trusted"),
        ({"ca_file": "lab", "pin_sha256": "ab" * 32}, "its certificate is not the pinned one"),
        ({"pin_sha256": "pin"}, "its certificate is not trusted"),  # a pin adds to the CA
    ],
    ids=["system-cas", "another-ca", "wrong-pin", "pin-without-ca"],
)
async def test_a_certificate_not_trusted_is_refused_with_a_clear_error(
    tls_hub: RunningHub, certs: Certificates, trust: dict[str, str], said: str
) -> None:
    chosen = {
        "ca_file": {"lab": certs.ca, "other": certs.other_ca}.get(trust.get("ca_file", "")),
        "pin_sha256": certs.pin if trust.get("pin_sha256") == "pin" else trust.get("pin_sha256"),
    }
    with pytest.raises(HubUnreachable) as raised:
        async with Client(tls_hub.url, **chosen):  # type: ignore[arg-type]
            pass
    assert said in str(raised.value)
    assert "nothing was sent" in str(raised.value)
    assert raised.value.healing is Healing.PERMANENT  # an operator must act: retried slowly
    with pytest.raises(HubUnreachable) as raised:
        await fetch_log(tls_hub.url, **chosen)  # type: ignore[arg-type]
    assert said in str(raised.value)
    assert tls_hub.hub.peers == set() or not list(tls_hub.hub.peers)


async def test_bad_trust_settings_are_named_at_once(certs: Certificates, tmp_path: Path) -> None:
    with pytest.raises(TrustError, match=r"CA file .*missing\.pem: no such file"):
        Client("https://127.0.0.1:1", ca_file=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TrustError, match=r"junk\.pem: not a PEM certificate file"):
        Client("https://127.0.0.1:1", ca_file=tmp_path / "junk.pem")
    with pytest.raises(TrustError, match="expected 64 hex digits"):
        Client("https://127.0.0.1:1", pin_sha256="12:34")
    # The forms people copy: openssl's, plain hex, with a prefix.
    for pin in (certs.pin, certs.pin.replace(":", "").lower(), "sha256:" + certs.pin):
        Client("https://127.0.0.1:1", ca_file=certs.ca, pin_sha256=pin)


async def test_a_plain_client_gets_no_answer_and_the_hub_serves_on(
    tls_hub: RunningHub, certs: Certificates
) -> None:
    with pytest.raises((HubUnreachable, aiohttp.ClientError, ConnectionError)):
        async with Client(tls_hub.url.replace("https", "http", 1)):
            pass
    async with Client(tls_hub.url, ca_file=certs.ca) as client:
        assert await client.instruments() == []


async def test_sockets_that_never_finish_a_handshake_are_cut_at_its_deadline(
    tmp_path: Path, certs: Certificates
) -> None:
    # TLS slowloris: connections that send nothing, or half a ClientHello.
    running = await tls_hub_at(tmp_path, certs, timeouts=Timeouts(handshake_s=1.0))
    try:
        admission = _site(running).admission
        port = int(running.url.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        sockets = []
        for n in range(50):
            sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
            sock.setblocking(False)
            if n % 2:
                await loop.sock_sendall(sock, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            sockets.append(sock)
        started = loop.time()

        async def closed_by_hub(sock: socket.socket) -> float:
            while await loop.sock_recv(sock, 4096):
                pass
            return loop.time() - started

        took = await asyncio.wait_for(
            asyncio.gather(*(closed_by_hub(s) for s in sockets)), DEADLINE_S
        )
        assert max(took) < 1.0 + 1.5, f"held {max(took):.1f} s past a 1 s handshake deadline"
        for sock in sockets:
            sock.close()
        assert admission.total == 0
        async with Client(running.url, ca_file=certs.ca) as client:  # and it serves on
            assert await client.instruments() == []
    finally:
        await running.stop()


async def test_connections_over_the_cap_cost_no_handshake(
    tmp_path: Path, certs: Certificates
) -> None:
    from kleinmaelzung.protocol import Limits

    running = await tls_hub_at(tmp_path, certs, limits=Limits(max_connections=2))
    try:
        async with (
            Client(running.url, ca_file=certs.ca) as first,
            Client(running.url, ca_file=certs.ca),
        ):
            with pytest.raises((HubUnreachable, aiohttp.ClientError, ConnectionError)):
                async with Client(running.url, ca_file=certs.ca):
                    pass
            assert _site(running).admission.refused >= 1
            assert await first.instruments() == []
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("which", "said"),
    [
        ("no-key", "TLS needs a certificate and its key: tls_key (--tls-key) is not set"),
        ("missing", "TLS certificate {dir}/missing.crt: no such file"),
        ("mismatch", "TLS: the key {dir}/other-ca.key does not belong to the certificate"),
        ("not-pem", "TLS: cannot load the certificate {dir}/hub.ext"),
    ],
)
async def test_tls_files_that_cannot_be_used_stop_the_hub_with_their_names(
    tmp_path: Path, certs: Certificates, which: str, said: str
) -> None:
    folder = certs.cert.parent
    cert, key = {
        "no-key": (certs.cert, None),
        "missing": (folder / "missing.crt", certs.key),
        "mismatch": (certs.cert, folder / "other-ca.key"),
        "not-pem": (folder / "hub.ext", certs.key),
    }[which]
    with pytest.raises(HubStartError) as raised:
        await start_hub(
            HubConfig(port=0, data_dir=tmp_path / "hub-data", tls_cert=cert, tls_key=key)
        )
    assert said.format(dir=folder) in str(raised.value)
