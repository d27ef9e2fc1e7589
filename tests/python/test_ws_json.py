"""The plain JSON WebSocket protocol, `GET /ws/json` (WEBSOCKET_API.md section 17), with
websocket-client: refusals as HTTP answers, `connection.established`, commands answered by
`ack`, events from an HTTP publish, recovery with `?since=`, unreadable frames and the
event budget. Last, the section's Python client runs exactly as written, through a drop.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import websocket

from conftest import API_KEY, EVENT_TIMEOUT_S, Server, assert_envelope, unique, wait_for, without_positions
from roomcast_harness import REPO_ROOT


def ws_url(server: Server, **query: Any) -> str:
    """ws://…/ws/json; a non-string query value is sent as JSON (as `since` is)."""
    q = {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()}
    url = server.url.replace("http://", "ws://", 1) + "/ws/json"
    return url + ("?" + urllib.parse.urlencode(q) if q else "")


class JsonClient:
    """A /ws/json connection whose frames a reader thread records, in order."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws = ws
        self.frames: list[Any] = []
        self.taken: set[int] = set()
        self.close_status: int | None = None
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                opcode, frame = self.ws.recv_data_frame(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    data = frame.data if frame is not None else b""
                    self.close_status = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    return
                try:
                    msg = json.loads(frame.data)
                except ValueError:
                    msg = {"unreadable": frame.data}
                with self._lock:
                    self.frames.append(msg)
        except (websocket.WebSocketException, OSError):
            if self.close_status is None:
                self.close_status = -1  # dropped without a close frame

    def send(self, frame: Any) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def next(self, pred: Callable[[Any], bool], what: str = "a frame",
             timeout: float = EVENT_TIMEOUT_S) -> Any:
        """The first frame not taken yet that matches `pred` (it is taken)."""
        def find():
            with self._lock:
                for i, msg in enumerate(self.frames):
                    if i not in self.taken and pred(msg):
                        self.taken.add(i)
                        return (msg,)
            return None
        try:
            return wait_for(find, timeout, message=what)[0]
        except AssertionError as e:
            raise AssertionError(f"{e}; frames: {self.frames!r}; close: {self.close_status}") from None

    def established(self) -> dict:
        return self.next(lambda m: m.get("type") == "connection.established", "connection.established")["data"]

    def ack(self, id_: Any) -> dict:
        return self.next(lambda m: m.get("type") == "ack" and m.get("id") == id_, f"the ack of {id_!r}")

    def command(self, type_: str, data: Any = None, id_: Any = None) -> Any:
        id_ = id_ if id_ is not None else uuid.uuid4().hex
        frame = {"id": id_, "type": type_}
        if data is not None:
            frame["data"] = data
        self.send(frame)
        ack = self.ack(id_)
        assert set(ack) == {"type", "id", "data"}, ack
        return ack["data"]

    def envelope(self, event_id: str) -> dict:
        return self.next(lambda m: m.get("id") == event_id and "room" in m, f"the event {event_id}")

    def envelopes(self, room: str, type_: str) -> list[dict]:
        with self._lock:
            return [m for m in self.frames if m.get("room") == room and m.get("type") == type_]

    def close(self) -> None:
        """Sends a close frame and stops the reader (a plain ws.close() would wait for the
        server's close frame that the reader thread takes)."""
        try:
            self.ws.send_close()
        except Exception:  # noqa: BLE001 - already closed; teardown must not mask the result
            pass
        self.ws.abort()
        self._reader.join(timeout=EVENT_TIMEOUT_S)
        self.ws.shutdown()


@pytest.fixture
def open_json(server):
    """Factory: a connected JsonClient (token in ?token=); all closed at teardown."""
    opened: list[JsonClient] = []

    def make(claims: dict | None = None, srv: Server | None = None, header: bool = False,
             **query: Any) -> JsonClient:
        srv = srv or server
        claims = {"sub": unique("u"), **(claims or {})}
        token = srv.mint_token(**claims)
        headers = []
        if header:
            headers.append(f"Authorization: Bearer {token}")
        else:
            query["token"] = token
        ws = websocket.create_connection(ws_url(srv, **query), header=headers, timeout=EVENT_TIMEOUT_S)
        ws.settimeout(None)  # the reader thread blocks; the waits have the deadlines
        client = JsonClient(ws)
        opened.append(client)
        return client

    try:
        yield make
    finally:
        for c in opened:
            c.close()


def refusal(server: Server, header: list[str] | None = None, **query: Any):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        ws = websocket.create_connection(ws_url(server, **query), header=header or [], timeout=EVENT_TIMEOUT_S)
        ws.close()
    exc = info.value
    return exc.status_code, json.loads(exc.resp_body or b"null")


def test_refused_without_a_token_or_with_a_bad_one(server):
    status, body = refusal(server)
    assert (status, body["error"]["code"]) == (401, "token_missing"), body
    forged = server.mint_token(secret="another-secret-0123456789abcdef-0123", sub="mallory")
    status, body = refusal(server, token=forged)
    assert (status, body["error"]["code"]) == (401, "token_invalid"), body
    status, body = refusal(server, header=[f"Authorization: Bearer {forged}"])
    assert (status, body["error"]["code"]) == (401, "token_invalid"), body
    status, body = refusal(server, token=server.mint_token(sub="late", exp_in=-60))
    assert (status, body["error"]["code"]) == (401, "token_expired"), body
    status, body = refusal(server, token=server.mint_token(sub="s"), since="not json")
    assert (status, body["error"]["code"], body["error"].get("field")) == (422, "invalid_payload", "since"), body


def test_connection_established_comes_first(open_json, server):
    c = open_json({"sub": "py-est", "tenant": "acme"}, header=True)
    first = c.next(lambda m: True, "the first frame")
    assert first["type"] == "connection.established", first
    e = first["data"]
    assert e["user_id"] == "py-est" and e["tenant"] == "acme", e
    assert e["rooms"] == ["global", "user:py-est"]
    assert isinstance(e["sid"], str) and e["sid"]
    assert e["node_id"] == server.node_id
    assert e["recovered"] is False and e["recovery"] == {}
    assert sorted(e["positions"]) == ["global", "user:py-est"]


def test_subscribe_ack_and_an_event_from_an_http_publish(open_json, server):
    c = open_json({"projects": ["42"]})
    c.established()
    c.send({"id": 1, "type": "subscribe", "data": {"room": "project:42"}})
    ack = c.ack(1)
    assert ack["type"] == "ack" and ack["id"] == 1
    assert without_positions(ack["data"]) == {"ok": True, "rooms": ["project:42"]}
    refused = c.command("subscribe", {"room": "project:43"}, "nope")
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden", refused

    data = {"project_id": "42", "status": "active"}
    pub = server.publish_ok("project.updated", data)
    env = c.envelope(pub["id"])
    assert_envelope(env, type_="project.updated", room="project:42", data=data)
    assert env["seq"] == ack["data"]["positions"]["project:42"]["seq"] + 1


def test_recovery_with_since_replays_in_order_before_live(open_json, server):
    room = "project:77"
    first = open_json({"sub": "py-rec", "projects": ["77"]})
    first.established()
    assert first.command("subscribe", {"room": room})["ok"] is True
    envs = []
    for n in (1, 2, 3):
        pub = server.publish_ok("project.updated", {"project_id": "77", "status": f"r{n}"})
        envs.append(first.envelope(pub["id"]))
    first.close()

    since = {room: {"epoch": envs[0]["epoch"], "seq": envs[0]["seq"]}}
    again = open_json({"sub": "py-rec", "projects": ["77"]}, since=since)
    est = again.next(lambda m: True, "the first frame")
    assert est["type"] == "connection.established", est
    assert est["data"]["recovered"] is True, est
    assert est["data"]["recovery"][room]["replayed"] == 2, est
    live = server.publish_ok("project.updated", {"project_id": "77", "status": "r4"})
    again.envelope(live["id"])
    assert [e["data"]["status"] for e in again.envelopes(room, "project.updated")] == ["r2", "r3", "r4"]
    assert again.envelopes(room, "project.updated")[:2] == envs[1:]


def test_a_malformed_frame_is_invalid_payload_and_the_connection_stays(open_json):
    c = open_json()
    c.established()
    c.send("{this is not json")
    notice = c.next(lambda m: m.get("type") == "error", "the error notice")
    assert notice["data"]["code"] == "invalid_payload", notice
    pong = c.command("ping", id_="still-here")
    assert pong["pong"] is True, pong
    assert c.close_status is None


def test_over_the_event_budget_is_rate_limited(server_factory, open_json):
    srv = server_factory(limits={"events_per_sec": 1, "events_burst": 2})
    c = open_json(srv=srv)
    c.established()
    for i in range(4):
        c.send({"id": i, "type": "ping"})
    answers = [c.ack(i)["data"] for i in range(4)]
    assert [a.get("pong") is True for a in answers] == [True, True, False, False], answers
    for a in answers[2:]:
        assert a["ok"] is False and a["error"]["code"] == "rate_limited", a
        assert isinstance(a["error"]["retry_after_ms"], int) and a["error"]["retry_after_ms"] > 0, a


# --------------------------------------------------------------------------- the docs' client

MARKER = "# wsjson_client.py:"


def docs_client() -> str:
    """The ```python block of WEBSOCKET_API.md section 17 that starts with MARKER."""
    text = (REPO_ROOT / "WEBSOCKET_API.md").read_text()
    found = re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)
    blocks = [b for b in found if b.startswith(MARKER)]
    assert len(blocks) == 1, f"{len(blocks)} python blocks start with {MARKER!r}"
    return blocks[0]


def test_the_docs_client_runs_as_written_and_recovers_after_a_drop(server):
    code = docs_client()
    program = code.replace("ws://127.0.0.1:8000", server.url.replace("http://", "ws://", 1))
    assert program != code, "the client talks to the documented address"
    token = server.mint_token(sub="docreader", projects=["42"])
    run = f"doc-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wsjson_client.py"
        path.write_text(program)
        out_path = Path(tmp) / "out.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-u", str(path)], stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "TOKEN": token})
        output = lambda: out_path.read_text(errors="replace")  # noqa: E731

        def shown(text: str, timeout: float = 10.0) -> None:
            try:
                wait_for(lambda: text in output() or proc.poll() is not None, timeout, message=repr(text))
            except AssertionError:
                raise AssertionError(f"the client never printed {text!r}:\n{output()}") from None
            assert text in output(), f"the client exited ({proc.returncode}):\n{output()}"

        def publish(status: str) -> None:
            server.publish_ok("project.updated", {"project_id": "42", "status": status})

        try:
            shown("connected, recovered: False")
            # The subscribe is in flight: publish until the first event shows.
            wait_for(lambda: publish(f"{run}-1") or f"{run}-1" in output(), 10.0, interval=0.3,
                     message=f"the first event in:\n{output()}")
            # Cut the connection (close 4003); publish while the client waits to reconnect.
            r = requests.post(f"{server.url}/api/v1/users/docreader/disconnect",
                              headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
            assert r.status_code == 200 and r.json()["disconnected"] == 1, r.text
            publish(f"{run}-2")
            shown("connected, recovered: True")
            shown(f"{run}-2")
            publish(f"{run}-3")
            shown(f"{run}-3")
            # Every event once, in order: the first (published until shown), the missed one,
            # the live one.
            statuses = re.findall(rf"{run}-\d", output())
            assert statuses[-2:] == [f"{run}-2", f"{run}-3"], output()
            assert set(statuses[:-2]) == {f"{run}-1"}, output()
        finally:
            proc.kill()
            proc.wait()
