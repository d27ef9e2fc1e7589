"""Fixtures: a real `roomcast serve` process (as tests/python/conftest.py starts it) and
RoomcastClients connected to it.

Every wait has a deadline. Non-delivery is asserted with a barrier: after the event that
must not arrive, publish a marker to a room the client is in; a socket's events arrive in
publish order, so once the marker is there the other event would have been too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import aiohttp
import jwt
import pytest

from roomcast_client import RoomcastClient

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "roomcast"

JWT_SECRET = "py-client-secret-0123456789abcdef0123"
API_KEY = "py-client-key"
READY_DEADLINE_S = 20.0
EVENT_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- waiting


async def eventually(predicate: Callable[[], Any], timeout: float = EVENT_TIMEOUT_S,
                     what: str = "condition") -> Any:
    """Polls `predicate` until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def unique(prefix: str = "t") -> str:
    """An id valid as a room id / sub: [A-Za-z0-9_.-]."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_config(port: int, *, history_size: Optional[int] = None,
                  expiry_warning_secs: Optional[int] = None, max_rooms: int = 100) -> str:
    history = f"\n[history]\nsize = {history_size}\n" if history_size is not None else ""
    warning = f"expiry_warning_secs = {expiry_warning_secs}\n" if expiry_warning_secs is not None else ""
    return f"""
[server]
bind = "127.0.0.1:{port}"
node_id = "py-client"

[auth]
jwt_secret = "{JWT_SECRET}"
leeway_secs = 0
{warning}
[limits]
max_rooms_per_socket = {max_rooms}

[[api_keys]]
name = "backend"
key = "{API_KEY}"
scopes = ["publish", "read"]

[log]
level = "warn"
{history}"""


class Server:
    """A running `roomcast serve` child process plus helpers that speak to it."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def mint_token(self, exp_in: float = 3600, **claims: Any) -> str:
        """HS256 JWT for the configured secret; `exp` is now + `exp_in` seconds."""
        payload = {"exp": int(time.time() + exp_in), **claims}
        return jwt.encode(payload, JWT_SECRET, algorithm="HS256")

    async def _post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url + path, json=body,
                                 headers={"Authorization": f"Bearer {API_KEY}"},
                                 timeout=aiohttp.ClientTimeout(total=10)) as r:
                text = await r.text()
                assert r.status == 202, f"POST {path} {body} -> {r.status} {text}"
                return await r.json()

    async def publish(self, type_: str, data: Dict[str, Any]) -> Dict[str, Any]:
        """POST /api/v1/events; returns the 202 body ({id, type, room, rooms, tenant})."""
        return await self._post("/api/v1/events", {"type": type_, "data": data})

    async def broadcast(self, event: str, room: str, data: Any = None) -> Dict[str, Any]:
        """POST /api/v1/broadcast (a custom event)."""
        return await self._post("/api/v1/broadcast", {"event": event, "room": room, "data": data})

    async def get_json(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.url + path, timeout=aiohttp.ClientTimeout(total=10)) as r:
                assert r.status == 200, f"GET {path} -> {r.status}"
                return await r.json()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(port: Optional[int] = None, **config: Any) -> Server:
    """Starts `roomcast serve` on `port` (default: a free one) with a temp config and waits
    for /ready."""
    binary = Path(os.environ.get("ROOMCAST_BIN") or DEFAULT_BIN)
    if not binary.exists():
        pytest.fail(f"roomcast binary not found at {binary}; run `cargo build` or set ROOMCAST_BIN")
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-pyclient-"))
    port = port or free_port()
    config_path = workdir / "config.toml"
    config_path.write_text(render_config(port, **config))
    log_path = workdir / "server.log"
    # The child must read only our file: drop any ROOMCAST_* overrides from the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.pop("RUST_LOG", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary), "serve", "--config", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=workdir)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        if proc.poll() is not None:
            tail = server.log_tail()
            pytest.fail(f"roomcast exited with {proc.returncode} before ready\n{tail}")
        try:
            with urllib.request.urlopen(server.url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            server.stop()
            pytest.fail(f"/ready not 200 within {READY_DEADLINE_S}s\n{server.log_tail()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory():
    """Starts servers with a special config ([history] size, expiry warning, room limit)."""
    started: List[Server] = []

    def make(**config: Any) -> Server:
        srv = start_server(**config)
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()


# --------------------------------------------------------------------------- clients


class Recorder:
    """Records what a client's handlers were given, per event name, in order."""

    def __init__(self, client: RoomcastClient, *names: str):
        self.seen: Dict[str, List[Any]] = {name: [] for name in names}
        for name in names:
            client.on(name, self.seen[name].append)

    def __getitem__(self, name: str) -> List[Any]:
        return self.seen[name]


class Gate:
    """Holds a client's next handshake until `open()`: an async get_token that waits."""

    def __init__(self, server: Server, **claims: Any):
        self.server = server
        self.claims = claims
        self.calls = 0
        self._open = asyncio.Event()
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def __call__(self) -> str:
        await asyncio.wait_for(self._open.wait(), 30)
        self.calls += 1
        return self.server.mint_token(**self.claims)


async def drop_transport(client: RoomcastClient) -> None:
    """Kills the Engine.IO transport under the client, as a network failure would:
    python-socketio sees a transport error and reconnects by itself."""
    ws = client.socket.eio.ws
    assert ws is not None, "no websocket transport to drop"
    transport = ws._response.connection.transport  # noqa: SLF001 - the TCP socket itself
    transport.abort()


@pytest.fixture
async def make_client(server):
    """Factory: RoomcastClient(url, ...) for `server` (or `srv=`); all closed at teardown."""
    made: List[RoomcastClient] = []

    def make(srv: Optional[Server] = None, **kwargs: Any) -> RoomcastClient:
        kwargs.setdefault("reconnection_delay", 0.2)
        kwargs.setdefault("reconnection_delay_max", 1.0)
        kwargs.setdefault("randomization_factor", 0.1)
        kwargs.setdefault("ack_timeout", EVENT_TIMEOUT_S)
        client = RoomcastClient((srv or server).url, **kwargs)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            await client.close()


async def barrier(server: Server, client: RoomcastClient, sub: str) -> None:
    """Publishes a marker to `user:<sub>` and waits until the client's handlers got it."""
    marker = uuid.uuid4().hex
    got: List[Any] = []

    def on_marker(env: Any) -> None:
        if env.data == {"marker": marker}:
            got.append(env)

    client.on_custom("test.marker", on_marker)
    try:
        await server.broadcast("test.marker", f"user:{sub}", {"marker": marker})
        await eventually(lambda: got, what="the barrier marker")
    finally:
        client.off("test.marker", on_marker)

