"""Hub URLs: what a user types, and the WebSocket endpoints derived from it."""

from __future__ import annotations

import pytest

from kleinmaelzung.transport import (
    AGENT_PATH,
    CLIENT_PATH,
    DEFAULT_HUB_URL,
    base_url,
    default_hub_url,
    websocket_url,
)


@pytest.mark.parametrize(
    ("typed", "base"),
    [
        ("127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://hub.lab:8765/", "http://hub.lab:8765"),
        ("ws://hub.lab:8765", "http://hub.lab:8765"),
        ("wss://hub.lab", "https://hub.lab"),
        ("ws://hub.lab:8765/ws/agent", "http://hub.lab:8765"),
        ("http://hub.lab/kmz/ws/client", "http://hub.lab/kmz"),
        ("https://hub.lab/kmz/?x=1#top", "https://hub.lab/kmz"),
    ],
)
def test_base_url_accepts_what_a_user_types(typed: str, base: str) -> None:
    assert base_url(typed) == base


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [("ftp://hub.lab", "must start with"), ("http://", "no host"), ("http:///ws", "no host")],
)
def test_base_url_says_what_is_wrong(typed: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        base_url(typed)


def test_websocket_url_keeps_tls_and_a_path_prefix() -> None:
    assert websocket_url("http://hub.lab:8765", AGENT_PATH) == "ws://hub.lab:8765/ws/agent"
    assert websocket_url("https://hub.lab/kmz", CLIENT_PATH) == "wss://hub.lab/kmz/ws/client"
    assert websocket_url("ws://hub.lab/ws/agent", CLIENT_PATH) == "ws://hub.lab/ws/client"


def test_default_hub_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMZ_HUB", raising=False)
    assert default_hub_url() == DEFAULT_HUB_URL
    monkeypatch.setenv("KMZ_HUB", "http://hub.lab:9000")
    assert default_hub_url() == "http://hub.lab:9000"
