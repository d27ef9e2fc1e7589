"""`client.rpc(method, data)` against a real server whose [rpc] points at a real HTTP
receiver (http.server in a thread): the call arrives signed (checked with the snippet of
WEBSOCKET_API.md 4.3c) with the token's identity, and each failure raises its code."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import unique
from roomcast_client import RoomcastError

RPC_SECRET = "py-rpc-secret-0123456789abcdef"
API_DOC = Path(__file__).resolve().parents[3] / "WEBSOCKET_API.md"


def documented_check():
    """The documented signature check, as a reader would paste it into a backend."""
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    code = next((b for b in blocks if "def roomcast_signed(" in b), None)
    assert code, "WEBSOCKET_API.md has the Python signature check"
    scope: Dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 - the documentation's own snippet
    return scope["roomcast_signed"]


class Receiver:
    """Records each request (path, headers, raw body) and answers by path, like tests/rpc.rs."""

    def __init__(self) -> None:
        self.seen: List[Dict[str, Any]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                seen.append({"path": self.path, "headers": self.headers, "raw": raw})
                if self.path.startswith("/status/"):
                    self.answer(int(self.path[8:]), {"error": "scripted"})
                elif self.path == "/slow":
                    time.sleep(8)
                    self.answer(200, {})
                else:
                    self.answer(200, {"path": self.path, "data": json.loads(raw)["data"]})

            def answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def rpc_server(server_factory, receiver):
    return server_factory(extra_toml="\n".join([
        "[rpc]",
        f'url = "{receiver.url("/main")}"',
        f'secret = "{RPC_SECRET}"',
        "timeout_ms = 500",
        "[rpc.methods]",
        f'"fail.*" = "{receiver.url("/status/503")}"',
        f'"slow" = "{receiver.url("/slow")}"',
    ]))


async def test_rpc_returns_the_answer_and_the_backend_gets_a_signed_call_with_the_tokens_identity(
        rpc_server, receiver, make_client):
    sub = unique("u")
    client = make_client(srv=rpc_server, token=rpc_server.mint_token(sub=sub, tenant="acme"))
    await client.connect()
    data = {"sku": "A-1", "user_id": "mallory", "tenant": "evil", "sid": "not-mine"}
    assert await client.rpc("cart.add", data) == {"path": "/main", "data": data}

    call = receiver.seen[-1]
    signed = documented_check()
    assert signed(RPC_SECRET.encode(), call["raw"], call["headers"].get("X-Roomcast-Signature"))
    assert not signed(b"another-secret-0123456789", call["raw"],
                      call["headers"].get("X-Roomcast-Signature"))
    assert re.fullmatch(r"[0-9a-f-]{36}", call["headers"].get("X-Roomcast-Delivery", ""))
    assert json.loads(call["raw"]) == {"method": "cart.add", "data": data, "user_id": sub,
                                       "tenant": "acme", "sid": client.info.sid}
    assert await client.rpc("cart.clear") == {"path": "/main", "data": None}


async def test_rpc_failures_raise_the_servers_code(rpc_server, receiver, make_client):
    client = make_client(srv=rpc_server, token=rpc_server.mint_token(sub=unique("u")))
    await client.connect()
    with pytest.raises(RoomcastError) as exc:
        await client.rpc("fail.charge", {})
    assert (exc.value.code, exc.value.status) == ("rpc_failed", 503)

    started = time.monotonic()
    with pytest.raises(RoomcastError) as exc:
        await client.rpc("slow")
    assert exc.value.code == "rpc_timeout"
    assert time.monotonic() - started < 4

    calls = len(receiver.seen)
    with pytest.raises(RoomcastError) as exc:
        await client.rpc("not a method")
    assert exc.value.code == "invalid_payload"
    assert len(receiver.seen) == calls


async def test_rpc_without_rpc_configured_is_rpc_unavailable(server, make_client):
    client = make_client(token=server.mint_token(sub=unique("u")))
    await client.connect()
    with pytest.raises(RoomcastError) as exc:
        await client.rpc("cart.add", {})
    assert (exc.value.code, exc.value.status) == ("rpc_unavailable", None)
