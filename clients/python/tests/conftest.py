"""Fixtures: a real `roomcast serve` process, started by the shared harness
(tests/harness/python/roomcast_harness.py) as tests/python starts it, and RoomcastClients
connected to it.

Every wait has a deadline. Non-delivery is asserted with a barrier: after the event that
must not arrive, publish a marker to a room the client is in; a socket's events arrive in
publish order, so once the marker is there the other event would have been too.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import aiohttp
import pytest

from roomcast_client import RoomcastClient

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "harness" / "python"))
import roomcast_harness as harness  # noqa: E402
from roomcast_harness import EVENT_TIMEOUT_S, eventually, unique  # noqa: E402,F401 - re-exported

JWT_SECRET = "py-client-secret-0123456789abcdef0123"
API_KEY = "py-client-key"


# --------------------------------------------------------------------------- server


def render_config(port: int, *, history_size: Optional[int] = None,
                  expiry_warning_secs: Optional[int] = None, max_rooms: int = 100,
                  client_events: Optional[Dict[str, Any]] = None,
                  extra_toml: str = "", node_id: str = "py-client",
                  cluster: Optional[Dict[str, Any]] = None) -> str:
    """The test config; `extra_toml` (more sections) comes first, verbatim; `cluster`
    ({"redis_url", "key_prefix"}) makes the server a node of that cluster."""
    return extra_toml + "\n" + harness.config_toml(
        port,
        node_id=node_id,
        cluster=cluster,
        jwt_secret=JWT_SECRET,
        leeway_secs=0,
        expiry_warning_secs=expiry_warning_secs,
        limits={"max_rooms_per_socket": max_rooms},
        api_keys=[{"name": "backend", "key": API_KEY, "scopes": ["publish", "read"]}],
        history_size=history_size,
        client_events=client_events,
    )


class Server(harness.ServerProcess):
    """A running `roomcast serve` child process plus helpers that speak to it."""

    def mint_token(self, exp_in: float = 3600, **claims: Any) -> str:
        """HS256 JWT for the configured secret; `exp` is now + `exp_in` seconds."""
        return harness.mint_token(JWT_SECRET, exp_in=exp_in, **claims)

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

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Any API call with the test key: (status, JSON body or None)."""
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.url + path, json=body,
                                    headers={"Authorization": f"Bearer {API_KEY}"},
                                    timeout=aiohttp.ClientTimeout(total=10)) as r:
                text = await r.text()
                return r.status, (await r.json() if text else None)

    async def create_stream(self, room: str, **body: Any) -> str:
        """POST /api/v1/streams; returns the stream id."""
        status, answer = await self.api("POST", "/api/v1/streams", {"room": room, **body})
        assert status == 201, answer
        return answer["stream_id"]

    async def append(self, stream_id: str, *pieces: str) -> None:
        """POST …/append, one request per piece, each answered 202."""
        for piece in pieces:
            status, answer = await self.api("POST", f"/api/v1/streams/{stream_id}/append",
                                            {"text": piece})
            assert status == 202, answer

    async def get_json(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http:
            async with http.get(self.url + path, timeout=aiohttp.ClientTimeout(total=10)) as r:
                assert r.status == 200, f"GET {path} -> {r.status}"
                return await r.json()


def start_server(port: Optional[int] = None, **config: Any) -> Server:
    """Starts `roomcast serve` on `port` (default: a free one) with a temp config and waits
    for /ready."""
    return harness.start_server(lambda p: render_config(p, **config), port=port,
                                server_class=Server, prefix="roomcast-pyclient-")


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cluster_nodes():
    """A redis-server and two nodes of one cluster on it: (node A, node B)."""
    redis = harness.start_redis()
    prefix = f"rc-pyclient-{uuid.uuid4().hex[:8]}"
    nodes: List[Server] = []
    try:
        for node_id in ("py-client-a", "py-client-b"):
            nodes.append(start_server(node_id=node_id,
                                      cluster={"redis_url": redis.url, "key_prefix": prefix}))
        yield nodes[0], nodes[1]
    finally:
        for srv in nodes:
            srv.stop()
        redis.stop()


@pytest.fixture
def server_factory():
    """Starts servers with a special config ([history] size, expiry warning, room limit,
    [client_events], extra_toml)."""
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

