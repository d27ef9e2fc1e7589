"""End-to-end fixtures: a real `roomcast serve` process and real python-socketio clients.

Starting servers and redis-servers, tokens and waits are the shared harness's
(tests/harness/python/roomcast_harness.py); what is this suite's own is here: its keys,
HTTP helpers, recording clients and fixtures.

Every wait here has a deadline. Non-delivery is asserted with a *barrier*: after
publishing the event that must not arrive, publish a marker to a room the socket
is in; Roomcast delivers a socket's events in publish order, so once the marker
has arrived the forbidden event would already have arrived too.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness" / "python"))
import roomcast_harness as harness  # noqa: E402
from roomcast_harness import (  # noqa: E402,F401 - re-exported to the test modules
    EVENT_TIMEOUT_S,
    free_port,
    start_redis,
    unique,
    wait_for,
)

JWT_SECRET = "test-secret-0123456789abcdef0123456789"
NODE_ID = "test-node"
API_KEY = "test-key"  # scopes publish + read, any tenant
ACME_KEY = "acme-key"  # bound to tenant acme, scope publish
READ_ONLY_KEY = "read-only-key"  # scope read only

RFC3339_MILLIS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# --------------------------------------------------------------------------- formats


def assert_rfc3339_millis_now(value: Any, tolerance_s: float = 120.0) -> None:
    """RFC 3339 UTC with exactly three fractional digits and a Z, close to now."""
    assert isinstance(value, str), f"timestamp is not a string: {value!r}"
    assert RFC3339_MILLIS_Z.match(value), f"not RFC 3339 UTC millis with Z: {value!r}"
    parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    drift = abs((dt.datetime.now(dt.timezone.utc) - parsed).total_seconds())
    assert drift < tolerance_s, f"timestamp {value} is {drift:.0f}s away from now"


def uuid7_millis(value: str) -> int:
    """Unix milliseconds embedded in a UUIDv7 (first 48 bits)."""
    return uuid.UUID(value).int >> 80


def assert_uuid7(value: Any) -> None:
    assert isinstance(value, str), f"id is not a string: {value!r}"
    parsed = uuid.UUID(value)
    assert parsed.version == 7, f"id {value} is UUID version {parsed.version}, expected 7"
    assert str(parsed) == value, f"id {value!r} is not the canonical lowercase hyphenated form"
    drift_ms = abs(time.time() * 1000 - uuid7_millis(value))
    assert drift_ms < 120_000, f"UUIDv7 {value} carries a time {drift_ms} ms away from now"


def assert_envelope(env: Any, *, type_: str, room: str, data: Any) -> None:
    """The full delivered envelope: {id, type, room, timestamp, data}, plus {seq, epoch}
    (and `also` for an event in several rooms) when the node keeps history."""
    assert isinstance(env, dict), f"payload is not an object: {env!r}"
    core = set(env) - {"seq", "epoch", "also"}
    assert core == {"id", "type", "room", "timestamp", "data"}, f"envelope keys: {sorted(env)}"
    assert ("seq" in env) == ("epoch" in env), "seq and epoch come together"
    if "seq" in env:
        assert isinstance(env["seq"], int) and env["seq"] >= 1, env["seq"]
        assert isinstance(env["epoch"], str) and env["epoch"], env["epoch"]
    assert_uuid7(env["id"])
    assert env["type"] == type_
    assert env["room"] == room
    assert_rfc3339_millis_now(env["timestamp"])
    assert env["data"] == data


def without_positions(ack: Any) -> Any:
    """A subscribe ack without its `positions`, once they are checked (one per room)."""
    if not isinstance(ack, dict) or ack.get("ok") is not True:
        return ack
    rest = dict(ack)
    positions = rest.pop("positions", None)
    assert isinstance(positions, dict) and sorted(positions) == sorted(ack["rooms"]), ack
    for p in positions.values():
        assert isinstance(p["epoch"], str) and isinstance(p["seq"], int) and p["seq"] >= 0, ack
    return rest


# --------------------------------------------------------------------------- server


def render_config(port: int, max_rooms: int = 100, max_body: int = 262144,
                  node_id: str = NODE_ID, cluster: dict | None = None,
                  client_events: dict | None = None, limits: dict | None = None) -> str:
    """The node's config.toml. `cluster` ({"redis_url", "key_prefix"}) adds a [cluster] table,
    `client_events` a [client_events] one; `limits` adds [limits] keys (events_per_sec, …)."""
    return harness.config_toml(
        port,
        node_id=node_id,
        jwt_secret=JWT_SECRET,
        leeway_secs=0,
        # One server per module connects the same few users far more often than a person would.
        limits={"max_rooms_per_socket": max_rooms, "max_http_body_bytes": max_body,
                "handshakes_per_user_per_sec": 0, **(limits or {})},
        api_keys=[
            {"name": "backend", "key": API_KEY, "scopes": ["publish", "read"]},
            {"name": "acme-only", "key": ACME_KEY, "tenant": "acme", "scopes": ["publish"]},
            {"name": "reader", "key": READ_ONLY_KEY, "scopes": ["read"]},
        ],
        cluster=None if cluster is None else {
            "redis_url": cluster["redis_url"], "key_prefix": cluster["key_prefix"],
            "node_ttl_secs": 3, "presence_grace_secs": 1,
        },
        client_events=client_events,
    )


class Server(harness.ServerProcess):
    """A running `roomcast serve` child process plus helpers that speak to it."""

    def __init__(self, proc, url: str, workdir: Path, log_path: Path):
        super().__init__(proc, url, workdir, log_path)
        self.api_key = API_KEY
        self.jwt_secret = JWT_SECRET
        self.node_id = NODE_ID
        self.http = requests.Session()

    # -- tokens
    def mint_token(self, secret: str | None = None, algorithm: str = "HS256",
                   exp_in: int = 3600, **claims: Any) -> str:
        """HS256 JWT signed with the configured secret; `exp` defaults to now + 1 h.

        Pass exp=None to leave `exp` out entirely.
        """
        return harness.mint_token(secret or self.jwt_secret, algorithm=algorithm, exp_in=exp_in, **claims)

    # -- HTTP
    def headers(self, key: str | None = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def post(self, path: str, body: Any = None, key: str | None = API_KEY,
             headers: dict[str, str] | None = None, raw: bytes | str | None = None) -> requests.Response:
        h = self.headers(key) if headers is None else headers
        if raw is not None:
            h = {**h, "Content-Type": "application/json"}
            return self.http.post(self.url + path, data=raw, headers=h, timeout=10)
        return self.http.post(self.url + path, json=body, headers=h, timeout=10)

    def get(self, path: str, key: str | None = None) -> requests.Response:
        return self.http.get(self.url + path, headers=self.headers(key), timeout=10)

    def publish(self, type_: str, data: Any, tenant: str | None = None,
                key: str | None = API_KEY) -> requests.Response:
        body: dict[str, Any] = {"type": type_, "data": data}
        if tenant is not None:
            body["tenant"] = tenant
        return self.post("/api/v1/events", body, key=key)

    def publish_ok(self, type_: str, data: Any, tenant: str | None = None) -> dict:
        r = self.publish(type_, data, tenant)
        assert r.status_code == 202, f"publish {type_} -> {r.status_code} {r.text}"
        return r.json()

    def broadcast(self, event: str, data: Any = None, room: str | None = None,
                  rooms: list[str] | None = None, tenant: str | None = None,
                  key: str | None = API_KEY) -> requests.Response:
        body: dict[str, Any] = {"event": event, "data": data}
        if room is not None:
            body["room"] = room
        if rooms is not None:
            body["rooms"] = rooms
        if tenant is not None:
            body["tenant"] = tenant
        return self.post("/api/v1/broadcast", body, key=key)

    def stop(self) -> None:
        self.http.close()
        super().stop()


def start_server(node_id: str = NODE_ID, cluster: dict | None = None, port: int | None = None,
                 **limits: Any) -> Server:
    """Starts `roomcast serve` on `port` (default: a free one) and waits for /ready. `cluster`
    ({"redis_url", "key_prefix"}) makes it a node of that cluster."""
    server = harness.start_server(
        lambda p: render_config(p, node_id=node_id, cluster=cluster, **limits),
        port=port, server_class=Server, prefix="roomcast-e2e-")
    server.node_id = node_id
    return server


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server_factory():
    """Start extra servers (fresh counters, other limits); all stopped at teardown."""
    started: list[Server] = []

    def make(**limits: Any) -> Server:
        srv = start_server(**limits)
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.stop()


# --------------------------------------------------------------------------- cluster


class Cluster:
    """A redis-server and Roomcast nodes sharing its URL and a key prefix."""

    def __init__(self, redis: harness.RedisServer, key_prefix: str):
        self.redis = redis
        self.key_prefix = key_prefix
        self.nodes: list[Server] = []

    def add_node(self, node_id: str, **limits: Any) -> Server:
        srv = start_server(node_id=node_id,
                           cluster={"redis_url": self.redis.url, "key_prefix": self.key_prefix},
                           **limits)
        self.nodes.append(srv)
        return srv

    def wait_for_nodes(self, timeout: float = 10.0) -> None:
        """Until every node lists every node in stats.cluster.nodes."""
        want = sorted(n.node_id for n in self.nodes)

        def seen(srv: Server) -> list[str]:
            try:
                r = srv.get("/api/v1/websocket/stats", key=API_KEY)
                return sorted(n["node_id"] for n in r.json()["cluster"]["nodes"])
            except (requests.RequestException, ValueError, KeyError, TypeError):
                return []

        for srv in self.nodes:
            wait_for(lambda srv=srv: seen(srv) == want, timeout, interval=0.1,
                     message=f"stats.cluster.nodes at {srv.node_id} == {want}")

    def stop(self) -> None:
        for srv in self.nodes:
            srv.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster():
    """A redis-server and two nodes, `py-a` and `py-b` (cluster.nodes), of one cluster."""
    c = Cluster(start_redis(), f"rc-py-{uuid.uuid4().hex[:8]}")
    try:
        c.add_node("py-a")
        c.add_node("py-b")
        c.wait_for_nodes()
        yield c
    finally:
        c.stop()


# --------------------------------------------------------------------------- clients


class RecordingClient:
    """A connected socketio.Client that records every event per namespace."""

    def __init__(self, server: Server, sio: socketio.Client, sub: str | None,
                 tenant: str, namespaces: list[str]):
        self.server = server
        self.sio = sio
        self.sub = sub
        self.tenant = tenant
        self.namespaces = namespaces
        self._lock = threading.Lock()
        self._events: list[tuple[str, str, tuple]] = []  # (namespace, event, args)
        self.connect_errors: list[tuple[str, Any]] = []

    # called from the client's reader thread
    def _record(self, namespace: str, event: str, args: tuple) -> None:
        with self._lock:
            self._events.append((namespace, event, args))

    def events(self, name: str | None = None, namespace: str | None = None) -> list[Any]:
        """Payloads (first argument) of the recorded events, optionally filtered."""
        with self._lock:
            snapshot = list(self._events)
        return [args[0] if args else None for ns, ev, args in snapshot
                if (name is None or ev == name) and (namespace is None or ns == namespace)]

    def matching(self, name: str, pred: Callable[[Any], bool] = lambda _p: True,
                 namespace: str | None = None) -> list[Any]:
        out = []
        for payload in self.events(name, namespace):
            try:
                if pred(payload):
                    out.append(payload)
            except (KeyError, TypeError, AttributeError):
                pass
        return out

    def wait_event(self, name: str, pred: Callable[[Any], bool] = lambda _p: True,
                   namespace: str | None = None, timeout: float = EVENT_TIMEOUT_S) -> Any:
        found = wait_for(lambda: self.matching(name, pred, namespace), timeout,
                         message=f"event {name!r} on {self.sub or '?'} (got {self.event_names()})")
        return found[0]

    def event_names(self) -> list[str]:
        with self._lock:
            return [ev for _ns, ev, _a in self._events]

    def established(self, namespace: str = "/") -> dict:
        return self.wait_event("connection.established", namespace=namespace)

    def call(self, command: str, data: Any = None, namespace: str | None = None,
             timeout: float = EVENT_TIMEOUT_S) -> Any:
        return self.sio.call(command, data, namespace=namespace, timeout=timeout)

    def subscribe(self, *rooms: str, namespace: str | None = None) -> None:
        """Subscribe and insist it succeeded (a precondition, not the behaviour under test)."""
        ack = self.call("subscribe", {"rooms": list(rooms)}, namespace=namespace)
        assert without_positions(ack) == {"ok": True, "rooms": list(rooms)}, f"subscribe {rooms} -> {ack}"

    def barrier(self, namespace: str | None = None) -> None:
        """Publish a marker to this socket's own user room and wait until it arrives.

        Anything published before this call that was going to reach the socket has
        reached it once this returns.
        """
        assert self.sub, "barrier needs a client connected with a known sub"
        marker = uuid.uuid4().hex
        r = self.server.broadcast("test.marker", {"marker": marker}, room=f"user:{self.sub}",
                                  tenant=self.tenant)
        assert r.status_code == 202, f"barrier marker publish -> {r.status_code} {r.text}"
        self.wait_event("test.marker", lambda env: env["data"]["marker"] == marker,
                        namespace=namespace or self.namespaces[0])

    def disconnect(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:  # noqa: BLE001 - teardown must not mask the test's result
            pass


def _new_sio() -> socketio.Client:
    return socketio.Client(reconnection=False, handle_sigint=False)


def _attach(rc: RecordingClient, sio: socketio.Client, namespaces: list[str]) -> None:
    for ns in namespaces:
        def on_any(event, *args, _ns=ns):
            rc._record(_ns, event, args)

        def on_connect_error(data=None, _ns=ns):
            rc.connect_errors.append((_ns, data))

        sio.on("*", on_any, namespace=ns)
        sio.on("connect_error", on_connect_error, namespace=ns)


def open_client(server: Server, *, token: str | None = None, claims: dict | None = None,
                via: str = "auth", transports: list[str] | None = None,
                namespaces: list[str] | None = None, auth: Any = None,
                headers: dict[str, str] | None = None, query: str | None = None,
                ) -> tuple[RecordingClient, Exception | None]:
    """Connect; returns (client, exception-or-None). `via`: auth | header | query | none."""
    namespaces = namespaces or ["/"]
    claims = dict(claims or {})
    if token is None and via != "none":
        claims.setdefault("sub", unique("u"))
        token = server.mint_token(**claims)
    sio = _new_sio()
    rc = RecordingClient(server, sio, claims.get("sub"), claims.get("tenant", "default"), namespaces)
    _attach(rc, sio, namespaces)
    url = server.url
    hdrs = dict(headers or {})
    if via == "auth":
        auth = {"token": token} if auth is None else auth
    elif via == "header":
        hdrs["Authorization"] = f"Bearer {token}"
    elif via == "query":
        url = f"{url}/?token={token}"
    if query:
        url = f"{url}{'&' if '?' in url else '/?'}{query}"
    if transports is None and os.environ.get("TEST_WEBSOCKET_PATH") == "lean":
        # The suite's run against the lean path: a websocket from the start.
        transports = ["websocket"]
    try:
        sio.connect(url, headers=hdrs, auth=auth, transports=transports,
                    namespaces=namespaces, wait_timeout=EVENT_TIMEOUT_S)
    except socketio.exceptions.ConnectionError as exc:
        return rc, exc
    return rc, None


@pytest.fixture
def connect(server):
    """Factory: connected RecordingClient (asserts the connect succeeded); all
    clients are disconnected at teardown."""
    opened: list[RecordingClient] = []

    def make(claims: dict | None = None, srv: Server | None = None, **kw: Any) -> RecordingClient:
        rc, exc = open_client(srv or server, claims=claims, **kw)
        opened.append(rc)
        assert exc is None, f"connect failed: {exc!r}; connect_error payloads: {rc.connect_errors}"
        return rc

    try:
        yield make
    finally:
        for rc in opened:
            rc.disconnect()


@pytest.fixture
def refused(server):
    """Factory: attempt a connect that must be refused; returns the connect_error
    message string the server sent (python-socketio 5.x raises a generic
    ConnectionError and hands the server's payload to the `connect_error` handler)."""
    opened: list[RecordingClient] = []

    def attempt(srv: Server | None = None, **kw: Any) -> str:
        rc, exc = open_client(srv or server, **kw)
        opened.append(rc)
        assert exc is not None, "connect unexpectedly succeeded"
        assert isinstance(exc, socketio.exceptions.ConnectionError)
        assert rc.connect_errors, f"no connect_error packet received (exception: {exc!r})"
        _ns, data = rc.connect_errors[0]
        # Socket.IO v5 CONNECT_ERROR payload: {"message": "...", "data"?: ...}
        assert isinstance(data, dict) and "message" in data, f"connect_error payload: {data!r}"
        return data["message"]

    try:
        yield attempt
    finally:
        for rc in opened:
            rc.disconnect()
