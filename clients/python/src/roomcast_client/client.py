"""`RoomcastClient`: python-socketio's AsyncClient plus Roomcast's contract.

What it adds to a bare socket (WEBSOCKET_API.md): typed envelopes, subscribe/unsubscribe
acks turned into return values or `RoomcastError`, no-event-lost recovery (`auth.since` on
every reconnect, duplicates dropped by seq, `gap` surfaced), token refresh on
`auth.expiring`, and a connection state. Behaviour and names follow clients/js.

Threading model: python-socketio runs each incoming packet in its own task, in arrival
order. The handlers registered on the socket are synchronous, so cursors are updated in
arrival order; the application's handlers are then called one at a time, in that same
order, by a single dispatcher task (they may be sync or async).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import urlsplit, urlunsplit

import socketio
from pydantic import ValidationError

from .errors import RoomcastError
from .stream import RoomcastStream
from .models import (
    EVENT_MODELS,
    AuthExpired,
    AuthExpiring,
    ConnectionEstablished,
    Envelope,
    Gap,
    HistoryReply,
    LockGrant,
    Pong,
    PresenceReply,
    PublishAck,
    RefreshReply,
    RoomLost,
    ServerShutdown,
    parse_envelope,
)

logger = logging.getLogger("roomcast_client")

ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]
TokenSource = Callable[[], Union[str, Awaitable[str]]]
Handler = Callable[[Any], Union[None, Awaitable[None]]]
H = TypeVar("H", bound=Handler)

#: Meta events for `on`, besides the typed event types (argument type in brackets):
#: `*` every envelope that passed duplicate detection [Envelope], `gap` [Gap],
#: `room_lost` [RoomLost], `established` [ConnectionEstablished], `error` [RoomcastError],
#: `expiring` [AuthExpiring], `expired` [AuthExpired], `refreshed` [RefreshReply],
#: `shutdown` [ServerShutdown].
META_EVENTS = frozenset(
    {"*", "gap", "room_lost", "established", "error", "expiring", "expired", "refreshed", "shutdown"}
)

#: Server events that are not envelopes; each has its own handler.
_CONTROL_EVENTS = frozenset(
    {"connection.established", "auth.expiring", "auth.expired", "server.shutdown", "error"}
)

#: `connect_error` messages of a refused handshake: retrying with the same token is futile.
_TOKEN_REFUSALS = frozenset({"token_missing", "token_invalid", "token_expired"})

#: How long after `auth.expired` a server disconnect counts as "the token ran out".
_EXPIRED_RECENTLY_S = 5.0


@dataclass(frozen=True)
class Cursor:
    """The last event processed in a room."""

    epoch: str
    seq: int


def _split_namespace(url: str) -> Tuple[str, str]:
    """`http://host:8000/ws` -> (`http://host:8000`, `/ws`), as socket.io-client does."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    return base, path or "/"


def _as_list(rooms: Union[str, Iterable[str]]) -> List[str]:
    return [rooms] if isinstance(rooms, str) else list(rooms)


async def _call_token_source(source: TokenSource) -> str:
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str) or not token:
        raise TypeError(f"get_token returned {type(token).__name__}, expected a non-empty str")
    return token


class RoomcastClient:
    """A Roomcast connection.

    ```python
    client = RoomcastClient("http://127.0.0.1:8000", get_token=fetch_jwt, rooms=["project:42"])

    @client.on("workflow.progress")
    async def progress(env):  # Envelope[WorkflowProgress]
        print(env.room, env.data.progress)

    await client.connect()
    ```

    `token` is a fixed JWT; `get_token` (sync or async, returning a JWT) is called on every
    (re)connect and on `auth.expiring`, so only it allows refresh and reconnect after expiry.

    Reconnection is python-socketio's: after a transport loss it waits `reconnection_delay`
    seconds, doubling per attempt up to `reconnection_delay_max`, each delay moved by a
    random amount in ± `randomization_factor` *seconds* (python-socketio's jitter is
    absolute, unlike socket.io-client's proportional one); `reconnection_attempts=0` retries
    forever.
    """

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        get_token: Optional[TokenSource] = None,
        rooms: Iterable[str] = (),
        transports: Iterable[str] = ("websocket",),
        reconnection_delay: float = 1.0,
        reconnection_delay_max: float = 5.0,
        randomization_factor: float = 0.5,
        reconnection_attempts: int = 0,
        ack_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        on_state_change: Optional[Callable[[ConnectionState], Any]] = None,
        socketio_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        if not token and get_token is None:
            raise TypeError("RoomcastClient needs token or get_token")
        self._url, self._namespace = _split_namespace(url)
        self._token = token
        self._get_token = get_token
        self._transports = list(transports)
        self._ack_timeout = ack_timeout
        self._connect_timeout = connect_timeout

        self._state: ConnectionState = "disconnected"
        self._state_listeners: List[Callable[[ConnectionState], Any]] = []
        if on_state_change is not None:
            self._state_listeners.append(on_state_change)
        self._handlers: Dict[str, List[Handler]] = {}
        self._custom: Dict[str, List[Handler]] = {}

        #: Rooms the application subscribed (and that the server granted).
        self._subscribed: Set[str] = set(rooms)
        #: Rooms the server joined by itself on the last connection (`global`, `user:<sub>`).
        self._default_rooms: Set[str] = set()
        self._cursors: Dict[str, Cursor] = {}
        #: Rooms with a subscribe in flight (their events already count for cursors).
        self._pending: Set[str] = set()
        #: Per-room chain of subscribe/unsubscribe commands, so they reach the server in order.
        self._room_queue: Dict[str, "asyncio.Future[None]"] = {}
        #: Rooms to join again once the next connection is established.
        self._to_restore: Set[str] = set(self._subscribed)
        self._info: Optional[ConnectionEstablished] = None
        self._ever_connected = False
        self._closed = False
        self._expired_at = float("-inf")
        #: True while `connect()` runs: a refusal is raised there, not handled in the background.
        self._in_connect = False
        #: True while reconnecting by hand after the token expired.
        self._renewing = False
        self._refusal: Optional[str] = None
        self._established = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._restore_task: Optional["asyncio.Task[None]"] = None
        self._tasks: Set["asyncio.Task[Any]"] = set()
        #: The streams followed through `stream()`, by stream id.
        self._streams: Dict[str, List[RoomcastStream]] = {}
        self._queue: "Optional[asyncio.Queue[Optional[Tuple[List[Callable[[Any], Any]], Any]]]]" = None
        self._dispatcher: Optional["asyncio.Task[None]"] = None

        options: Dict[str, Any] = {
            "reconnection": True,
            "reconnection_attempts": reconnection_attempts,
            "reconnection_delay": reconnection_delay,
            "reconnection_delay_max": reconnection_delay_max,
            "randomization_factor": randomization_factor,
            "handle_sigint": False,
        }
        options.update(socketio_options or {})
        self._sio = socketio.AsyncClient(**options)
        ns = self._namespace
        self._sio.on("*", self._on_any, namespace=ns)
        self._sio.on("connection.established", self._on_established, namespace=ns)
        self._sio.on("auth.expiring", self._on_expiring, namespace=ns)
        self._sio.on("auth.expired", self._on_expired, namespace=ns)
        self._sio.on("server.shutdown", self._on_shutdown, namespace=ns)
        self._sio.on("error", self._on_server_error, namespace=ns)
        self._sio.on("disconnect", self._on_disconnect, namespace=ns)
        self._sio.on("connect_error", self._on_connect_error, namespace=ns)
        self._sio.on("__disconnect_final", self._on_disconnect_final, namespace=ns)

    # ------------------------------------------------------------------------------ state

    @property
    def state(self) -> ConnectionState:
        """`connecting`, `connected`, `reconnecting` or `disconnected`."""
        return self._state

    @property
    def info(self) -> Optional[ConnectionEstablished]:
        """The last `connection.established`, once connected."""
        return self._info

    @property
    def socket(self) -> socketio.AsyncClient:
        """The underlying python-socketio client (for tests and advanced use)."""
        return self._sio

    def on_state_change(self, callback: Callable[[ConnectionState], Any]) -> Callable[[], None]:
        """Calls `callback(state)` on every change of `state`; returns the remove function."""
        self._state_listeners.append(callback)

        def remove() -> None:
            if callback in self._state_listeners:
                self._state_listeners.remove(callback)

        return remove

    async def wait(self) -> None:
        """Returns once the client is disconnected for good: `close()`, a refused handshake,
        a server disconnect, or python-socketio giving up. Reconnects do not end it."""
        await self._down.wait()

    def _set_state(self, state: ConnectionState) -> None:
        if self._state == state:
            return
        self._state = state
        if state == "disconnected":
            self._down.set()
        else:
            self._down.clear()
        self._schedule(list(self._state_listeners), state)

    # ----------------------------------------------------------------------------- events

    def on(self, event_type: str, handler: Optional[H] = None) -> Any:
        """Registers `handler` for a typed event type (it gets an `Envelope` whose `data` is
        that type's model) or a meta event (see META_EVENTS). Returns the handler, so it also
        works as a decorator: `@client.on("pr.created")`. Custom events: `on_custom`."""
        if event_type not in EVENT_MODELS and event_type not in META_EVENTS:
            raise ValueError(
                f"unknown event type {event_type!r}; custom events (POST /api/v1/broadcast) "
                "are registered with on_custom"
            )
        return self._register(self._handlers, event_type, handler)

    def on_custom(self, name: str, handler: Optional[H] = None) -> Any:
        """Registers `handler` for a custom event (`POST /api/v1/broadcast`) by name;
        it gets an `Envelope` with raw JSON `data`. Also works as a decorator."""
        return self._register(self._custom, name, handler)

    def off(self, event_type: str, handler: Handler) -> None:
        for table in (self._handlers, self._custom):
            if handler in table.get(event_type, []):
                table[event_type].remove(handler)

    @staticmethod
    def _register(table: Dict[str, List[Handler]], name: str, handler: Optional[H]) -> Any:
        def add(fn: H) -> H:
            table.setdefault(name, []).append(fn)
            return fn

        return add if handler is None else add(handler)

    def _emit(self, name: str, arg: Any) -> None:
        handlers = self._handlers.get(name)
        if handlers:
            self._schedule(list(handlers), arg)

    def _schedule(self, handlers: List[Callable[[Any], Any]], arg: Any) -> None:
        """Queues the handlers for the dispatcher (no-op without a running event loop)."""
        if not handlers:
            return
        if self._queue is None or self._dispatcher is None or self._dispatcher.done():
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self._queue = asyncio.Queue()
            self._dispatcher = asyncio.ensure_future(self._dispatch(self._queue))
        self._queue.put_nowait((handlers, arg))

    @staticmethod
    async def _dispatch(queue: "asyncio.Queue[Optional[Tuple[List[Callable[[Any], Any]], Any]]]") -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            handlers, arg = item
            for handler in handlers:
                try:
                    result = handler(arg)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # noqa: BLE001 - one bad handler must not stop delivery
                    logger.exception("roomcast_client: handler %r failed", handler)

    # ------------------------------------------------------------------------------ rooms

    @property
    def rooms(self) -> List[str]:
        """Rooms subscribed through this client (kept across reconnects)."""
        return sorted(self._subscribed)

    def cursor(self, room: str) -> Optional[Cursor]:
        """The `{epoch, seq}` of the last event processed in `room` (at first, its position when joined)."""
        return self._cursors.get(room)

    async def subscribe(self, rooms: Union[str, Iterable[str]]) -> List[str]:
        """Joins rooms, all or none; returns the joined rooms. Raises `RoomcastError` with the
        server's code (`forbidden`, `invalid_room`, `too_many_rooms`, `invalid_payload`) and
        `room`, or `timeout` / `not_connected`."""
        wanted = _as_list(rooms)

        async def op() -> List[str]:
            self._pending.update(wanted)
            try:
                ack = await self._command("subscribe", {"rooms": wanted})
                joined = [str(r) for r in ack.get("rooms", [])]
                self._subscribed.update(joined)
                # Where each room is: a quiet room gets a cursor too, so a reconnect recovers it.
                positions = ack.get("positions")
                for room, p in (positions.items() if isinstance(positions, dict) else ()):
                    epoch, seq = (p.get("epoch"), p.get("seq")) if isinstance(p, dict) else (None, None)
                    if isinstance(epoch, str) and isinstance(seq, int):
                        self._advance(str(room), Cursor(epoch=epoch, seq=seq))
                return joined
            finally:
                for room in wanted:
                    self._pending.discard(room)
                    if not self._tracked(room):
                        self._cursors.pop(room, None)

        return await self._enqueue(wanted, op)

    async def unsubscribe(self, rooms: Union[str, Iterable[str]]) -> List[str]:
        """Leaves rooms and forgets their cursors; returns the rooms left."""
        leaving = _as_list(rooms)

        async def op() -> List[str]:
            for room in leaving:
                self._subscribed.discard(room)
                self._default_rooms.discard(room)
                self._cursors.pop(room, None)
            # Offline there is nothing to leave: the next connection will not re-join them.
            if not self._sio.connected:
                return leaving
            ack = await self._command("unsubscribe", {"rooms": leaving})
            return [str(r) for r in ack.get("rooms", [])]

        return await self._enqueue(leaving, op)

    async def _enqueue(self, rooms: List[str], op: Callable[[], Awaitable[Any]]) -> Any:
        """Runs `op` after the earlier commands on any of `rooms` have settled."""
        before = {id(f): f for f in (self._room_queue.get(r) for r in rooms) if f is not None}
        mine: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        for room in rooms:
            self._room_queue[room] = mine
        try:
            if before:
                await asyncio.gather(*before.values(), return_exceptions=True)
            return await op()
        finally:
            mine.set_result(None)
            for room in rooms:
                if self._room_queue.get(room) is mine:
                    del self._room_queue[room]

    def _tracked(self, room: str) -> bool:
        return room in self._subscribed or room in self._default_rooms or room in self._pending

    def _since(self) -> Dict[str, Dict[str, Any]]:
        """Cursors of every room this client is in, for `auth.since`."""
        return {
            room: {"epoch": c.epoch, "seq": c.seq}
            for room, c in self._cursors.items()
            if room in self._subscribed or room in self._default_rooms
        }

    # --------------------------------------------------------------------- other commands

    async def ping(self) -> Pong:
        return Pong.model_validate(await self._command("ping", {}))

    async def presence(self, room: str) -> PresenceReply:
        return PresenceReply.model_validate(await self._command("presence", {"room": room}))

    async def history(self, room: str, since_seq: int = 0, limit: int = 100) -> HistoryReply:
        """Kept events of a subscribed room with `seq > since_seq`, oldest first."""
        ack = await self._command("history", {"room": room, "since_seq": since_seq, "limit": limit})
        return HistoryReply.model_validate(ack)

    async def rpc(self, method: str, data: Any = None) -> Any:
        """Calls your backend through the socket (the server's `[rpc]`, WEBSOCKET_API.md
        4.3c) and returns its JSON answer. Raises `RoomcastError`: `rpc_failed` (with
        `status`, the backend's HTTP status), `rpc_timeout`, `rpc_unavailable`,
        `invalid_payload`, `payload_too_large`, `rate_limited`, or `timeout` (no ack within
        `ack_timeout`: keep it above the server's `rpc.timeout_ms`). Sent once, never
        retried."""
        ack = await self._command("rpc", {"method": method, "data": data})
        return ack.get("result")

    async def lock(self, resource: str, ttl_ms: Optional[int] = None) -> LockGrant:
        """Takes the lock `resource` (`<room>/<name>`, e.g. `project:42/deploy`; the token
        must grant the room) for `ttl_ms` (the server's `locks.default_ttl_ms` when None).
        Returns its fencing token and expiry. Raises `RoomcastError`: `locked` (with `holder`
        and `expires_at`; your own lock too: renew it), `forbidden`, `invalid_resource`,
        `invalid_payload`, `too_many_locks`. The lock ends with `release`, this client's
        disconnect, or its TTL (WEBSOCKET_API.md section 15)."""
        payload: Dict[str, Any] = {"resource": resource}
        if ttl_ms is not None:
            payload["ttl_ms"] = ttl_ms
        return LockGrant.model_validate(await self._command("lock.acquire", payload))

    async def renew(self, resource: str, token: int, ttl_ms: Optional[int] = None) -> LockGrant:
        """Moves the expiry of the lock this client holds with `token` to `ttl_ms` from now.
        Raises `RoomcastError` `lock_lost` once the lock has ended (take it again)."""
        payload: Dict[str, Any] = {"resource": resource, "token": token}
        if ttl_ms is not None:
            payload["ttl_ms"] = ttl_ms
        return LockGrant.model_validate(await self._command("lock.renew", payload))

    async def release(self, resource: str, token: int) -> None:
        """Releases the lock this client holds with `token`. Raises `RoomcastError`
        `not_holder` (a token that is not the lock's: nothing changed) or `lock_lost`."""
        await self._command("lock.release", {"resource": resource, "token": token})

    async def publish(self, room: str, event: str, data: Any = None, *,
                      volatile: bool = False, echo: bool = False) -> PublishAck:
        """Publishes a client event into `room` (subscribed; `[client_events]` and the token
        must allow it, WEBSOCKET_API.md 4.3b). Returns the ack (`id`, and `seq` unless
        `volatile`); raises RoomcastError with the server's code (`forbidden`,
        `not_subscribed`, `event_not_allowed`, `payload_too_large`, `invalid_payload` with
        `field`, `rate_limited`). The others in the room receive it with `from` set; this
        client too only with `echo`."""
        payload: Dict[str, Any] = {"room": room, "event": event, "data": data}
        if volatile:
            payload["volatile"] = True
        if echo:
            payload["echo"] = True
        return PublishAck.model_validate(await self._command("publish", payload))

    async def refresh(self, token: Optional[str] = None) -> RefreshReply:
        """Sends `auth.refresh` with `token`, or one from `get_token`. Rooms the new token no
        longer grants are emitted as `room_lost` (code `token_refresh`)."""
        if token is None:
            if self._get_token is None:
                raise RoomcastError("token_unavailable", "no get_token to refresh with")
            token = await _call_token_source(self._get_token)
        reply = RefreshReply.model_validate(await self._command("auth.refresh", {"token": token}))
        if self._get_token is None:
            self._token = token  # the next reconnect must not present the old token
        for room in reply.left_rooms:
            self._subscribed.discard(room)
            self._cursors.pop(room, None)
            self._emit("room_lost", RoomLost(room=room, code="token_refresh"))
        self._emit("refreshed", reply)
        return reply

    # ------------------------------------------------------------------------- AI streams

    def stream(self, stream_id: str, *, room: Optional[str] = None) -> RoomcastStream:
        """Follows one AI stream (WEBSOCKET_API.md section 13): an async iterator over its
        text as it grows, exact, resumed by itself (now, after every reconnect, on a gap);
        `cancel()` stops it. The socket must be in the stream's room: give `room` to have the
        stream subscribe it (and leave it when done), or subscribe it yourself. Call from a
        running event loop."""
        stream = RoomcastStream(self, stream_id, room)
        self._streams.setdefault(stream_id, []).append(stream)
        return stream

    def _detach_stream(self, stream: RoomcastStream) -> None:
        followers = self._streams.get(stream.id, [])
        if stream in followers:
            followers.remove(stream)
        if not followers:
            self._streams.pop(stream.id, None)

    def _all_streams(self) -> List[RoomcastStream]:
        return [s for followers in self._streams.values() for s in followers]

    def _send(self, name: str, payload: Any,
              done: Callable[[Optional[RoomcastError], Optional[Dict[str, Any]]], None]) -> None:
        """Sends a command whose ack `done` gets as its packet is read, in order with the
        events around it (an awaited `call` would let the events that follow run first).
        Without an ack within `ack_timeout` (e.g. the connection dropped meanwhile), `done`
        gets `timeout`, and a late ack is ignored."""
        answered = False

        def expire() -> None:
            nonlocal answered
            if not answered:
                answered = True
                done(RoomcastError("timeout", f"no ack for {name!r} within {self._ack_timeout} s"), None)

        timer = asyncio.get_running_loop().call_later(self._ack_timeout, expire)

        def on_ack(ack: Any = None, *_rest: Any) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            timer.cancel()
            if not isinstance(ack, dict):
                done(RoomcastError("invalid_reply", f"bad ack for {name!r}: {ack!r}"), None)
            elif ack.get("ok") is False:
                done(RoomcastError.from_wire(ack.get("error")), None)
            else:
                done(None, ack)

        async def emit() -> None:
            nonlocal answered
            try:
                await self._sio.emit(name, payload, namespace=self._namespace, callback=on_ack)
            except socketio.exceptions.SocketIOError as exc:
                if not answered:
                    answered = True
                    timer.cancel()
                    done(RoomcastError("not_connected", f"cannot send {name!r}: {exc}"), None)

        self._spawn(emit())

    async def _command(self, name: str, payload: Any) -> Dict[str, Any]:
        if not self._sio.connected or self._namespace not in self._sio.namespaces:
            raise RoomcastError("not_connected", f"cannot send {name!r}: not connected")
        try:
            ack = await self._sio.call(name, payload, namespace=self._namespace, timeout=self._ack_timeout)
        except socketio.exceptions.TimeoutError:
            raise RoomcastError("timeout", f"no ack for {name!r} within {self._ack_timeout} s") from None
        except socketio.exceptions.BadNamespaceError:
            raise RoomcastError("not_connected", f"cannot send {name!r}: not connected") from None
        if not isinstance(ack, dict):
            raise RoomcastError("invalid_reply", f"bad ack for {name!r}: {ack!r}")
        if ack.get("ok") is False:
            raise RoomcastError.from_wire(ack.get("error"))
        return ack

    # -------------------------------------------------------------------------- lifecycle

    async def connect(self) -> ConnectionEstablished:
        """Connects, waits for `connection.established` and for the rooms given to the
        constructor (or subscribed before a `close()`) to be joined again; returns the
        `connection.established` info. A refused handshake raises `RoomcastError` with the
        server's code (`token_missing`, `token_invalid`, `token_expired`); an unreachable
        server raises `connect_failed`. Rooms the server refuses to re-join are reported as
        `room_lost` and `error` events, not raised."""
        if self._sio.connected and self._info is not None and self._state == "connected":
            return self._info
        self._closed = False
        self._set_state("reconnecting" if self._ever_connected else "connecting")
        self._established.clear()
        self._refusal = None
        self._in_connect = True
        try:
            await self._open()
            try:
                await asyncio.wait_for(self._established.wait(), self._connect_timeout)
            except asyncio.TimeoutError:
                raise RoomcastError(
                    "timeout", f"no connection.established within {self._connect_timeout} s"
                ) from None
        except RoomcastError:
            await self._sio.disconnect()
            self._set_state("disconnected")
            raise
        finally:
            self._in_connect = False
        if self._restore_task is not None:
            await asyncio.shield(self._restore_task)
        assert self._info is not None
        return self._info

    async def _open(self, retry: bool = False) -> None:
        try:
            await self._sio.connect(
                self._url,
                auth=self._auth,
                transports=self._transports,
                namespaces=[self._namespace],
                wait_timeout=self._connect_timeout,
                retry=retry,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                raise RoomcastError(self._refusal, f"connection refused: {self._refusal}") from exc
            raise RoomcastError("connect_failed", f"cannot connect to {self._url}: {exc}") from exc

    async def close(self) -> None:
        """Disconnects for good (until `connect()`); subscriptions and cursors are kept.
        Returns once the handlers of everything received so far have run."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await self._sio.shutdown()
        self._set_state("disconnected")
        queue, dispatcher = self._queue, self._dispatcher
        self._queue = self._dispatcher = None
        if queue is not None and dispatcher is not None and not dispatcher.done():
            queue.put_nowait(None)
            await dispatcher

    async def __aenter__(self) -> "RoomcastClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[Any]) -> "asyncio.Task[Any]":
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --------------------------------------------------------- socket handlers (internals)

    async def _auth(self) -> Dict[str, Any]:
        """The handshake auth, built afresh on every (re)connect by python-socketio."""
        auth: Dict[str, Any] = {}
        since = self._since()
        if since:
            auth["since"] = since
        if self._get_token is None:
            auth["token"] = self._token
            return auth
        try:
            auth["token"] = await _call_token_source(self._get_token)
        except Exception as exc:  # noqa: BLE001 - reported; the server answers token_missing
            self._emit("error", RoomcastError("token_unavailable", f"get_token failed: {exc!r}"))
        return auth

    def _on_any(self, event: str, *args: Any) -> None:
        payload = args[0] if args else None
        if event in _CONTROL_EVENTS or not isinstance(payload, dict):
            return
        if not all(isinstance(payload.get(k), str) for k in ("id", "type", "room")):
            return
        typed = payload["type"] in EVENT_MODELS
        try:
            env = parse_envelope(payload)
        except ValidationError as exc:
            self._emit("error", RoomcastError("invalid_event", f"{event}: {exc}"))
            try:
                env = Envelope[Any].model_validate(payload)
            except ValidationError:
                return
            typed = False  # typed handlers are promised the type's model
        self._deliver(env, typed)

    def _deliver(self, env: Envelope[Any], typed: bool) -> None:
        """Drops duplicates (by seq, per room), advances cursors, and emits."""
        mine = [p for p in env.positions() if self._tracked(p.room)]
        for p in mine:
            c = self._cursors.get(p.room)
            if c is not None and c.epoch == p.epoch and p.seq <= c.seq:
                return  # already processed
        for p in mine:
            self._cursors[p.room] = Cursor(epoch=p.epoch, seq=p.seq)
        if env.type.startswith("stream.") and isinstance(env.data, dict):
            for stream in list(self._streams.get(str(env.data.get("stream_id")), [])):
                stream._handle(env.type, env.data)
        if typed:
            self._emit(env.type, env)
        elif env.type not in EVENT_MODELS and env.type in self._custom:
            self._schedule(list(self._custom[env.type]), env)
        self._emit("*", env)

    def _advance(self, room: str, position: Cursor) -> None:
        """Moves a room's cursor to a position the server reported, unless it is further."""
        if not self._tracked(room):
            return
        c = self._cursors.get(room)
        if c is None or c.epoch != position.epoch or c.seq < position.seq:
            self._cursors[room] = position

    def _on_established(self, payload: Any) -> None:
        try:
            info = ConnectionEstablished.model_validate(payload)
        except ValidationError as exc:
            self._emit("error", RoomcastError("invalid_event", f"connection.established: {exc}"))
            return
        self._info = info
        self._ever_connected = True
        self._default_rooms = {r for r in info.rooms if r == "global" or r.startswith("user:")}
        for room, r in info.recovery.items():
            if r.error is not None:
                self._subscribed.discard(room)
                self._cursors.pop(room, None)
                self._emit("room_lost", RoomLost(room=room, code=r.error))
            elif r.gap and r.epoch is not None and r.seq is not None:
                self._cursors[room] = Cursor(epoch=r.epoch, seq=r.seq)
                self._emit("gap", Gap(room=room, epoch=r.epoch, seq=r.seq))
        # The rooms joined without a cursor start where the server says they are; a replayed
        # room keeps its cursor (the replay that follows brings it up).
        for room, p in info.positions.items():
            if room not in info.recovery:
                self._advance(room, Cursor(epoch=p.epoch, seq=p.seq))
        missing = sorted(
            room
            for room in self._to_restore
            if room in self._subscribed and room not in info.recovery and room not in info.rooms
        )
        self._to_restore = set()
        self._set_state("connected")
        self._emit("established", info)
        self._restore_task = self._spawn(self._resubscribe(missing)) if missing else None
        # After the re-subscribes just started: each stream catches up from what it has.
        for stream in self._all_streams():
            stream._reconnected()
        self._established.set()

    async def _resubscribe(self, rooms: List[str]) -> None:
        """Re-joins rooms of an earlier connection that `auth.since` did not cover."""
        try:
            await self.subscribe(rooms)
            return
        except RoomcastError as err:
            if err.code in ("timeout", "not_connected"):
                self._emit("error", err)
                return
        # All-or-nothing failed: one at a time, dropping the rooms the server refuses.
        for room in rooms:
            try:
                await self.subscribe(room)
            except RoomcastError as err:
                if err.code not in ("timeout", "not_connected"):
                    self._subscribed.discard(room)
                    self._cursors.pop(room, None)
                    self._emit("room_lost", RoomLost(room=room, code=err.code))
                self._emit("error", err)

    def _on_expiring(self, payload: Any) -> None:
        try:
            self._emit("expiring", AuthExpiring.model_validate(payload))
        except ValidationError as exc:
            self._emit("error", RoomcastError("invalid_event", f"auth.expiring: {exc}"))
        if self._get_token is not None:
            self._spawn(self._refresh_in_background())

    async def _refresh_in_background(self) -> None:
        try:
            await self.refresh()
        except RoomcastError as err:
            self._emit("error", err)
        except Exception as exc:  # noqa: BLE001 - get_token failed
            self._emit("error", RoomcastError("token_unavailable", f"get_token failed: {exc!r}"))

    def _on_expired(self, payload: Any) -> None:
        self._expired_at = time.monotonic()
        try:
            self._emit("expired", AuthExpired.model_validate(payload))
        except ValidationError as exc:
            self._emit("error", RoomcastError("invalid_event", f"auth.expired: {exc}"))

    def _on_shutdown(self, payload: Any) -> None:
        try:
            self._emit("shutdown", ServerShutdown.model_validate(payload))
        except ValidationError as exc:
            self._emit("error", RoomcastError("invalid_event", f"server.shutdown: {exc}"))

    def _on_server_error(self, payload: Any = None) -> None:
        self._emit("error", RoomcastError.from_wire(payload))

    def _on_disconnect(self, reason: Any = None) -> None:
        self._to_restore = set(self._subscribed)
        for stream in self._all_streams():
            stream._disconnected()
        if self._closed or reason == socketio.AsyncClient.reason.CLIENT_DISCONNECT:
            self._set_state("disconnected")
        elif reason == socketio.AsyncClient.reason.SERVER_DISCONNECT:
            # python-socketio does not reconnect after a server disconnect. If the token ran
            # out, come back with a fresh one (and recover); otherwise we were sent away.
            if self._get_token is not None and time.monotonic() - self._expired_at < _EXPIRED_RECENTLY_S:
                self._set_state("reconnecting")
                self._renewing = True  # before __disconnect_final, which follows at once
                self._spawn(self._reconnect_after_expiry())
            else:
                self._set_state("disconnected")
        else:
            self._set_state("reconnecting" if self._sio.reconnection else "disconnected")

    def _on_disconnect_final(self, *_args: Any) -> None:
        # python-socketio will not reconnect: it gave up (reconnection_attempts), was told
        # to stop, or the server disconnected us (then _on_disconnect already decided).
        if not self._renewing and not self._sio.connected:
            self._set_state("disconnected")

    async def _reconnect_after_expiry(self) -> None:
        self._renewing = True
        try:
            deadline = time.monotonic() + self._connect_timeout
            while self._sio.eio.state != "disconnected" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self._refusal = None
            await self._open(retry=True)
        except RoomcastError as err:
            self._emit("error", err)
            self._set_state("disconnected")
        finally:
            self._renewing = False

    def _on_connect_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        if message in _TOKEN_REFUSALS:
            # The server refused the handshake: the same credentials will not do better.
            self._refusal = str(message)
            self._emit("error", RoomcastError(self._refusal, f"connection refused: {self._refusal}"))
            if not self._in_connect:
                self._set_state("disconnected")
                self._spawn(self._sio.shutdown())  # stops python-socketio's reconnect loop
        elif not self._in_connect and not self._closed:
            self._set_state("reconnecting" if self._ever_connected else "connecting")
