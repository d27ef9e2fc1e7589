"""Client events with python-socketio (WEBSOCKET_API.md 4.3b): chat between two users in a
project room, numbered, from the server's `from`, recovered after a reconnect; typing
indicators volatile and never replayed; the sender left out unless it asks for an echo."""

import pytest

from conftest import start_server, unique, wait_for


@pytest.fixture(scope="module")
def server():
    """This module's server lets clients chat and type in project rooms."""
    srv = start_server(client_events={"rooms": ["project"], "events": ["chat.*", "typing.*"]})
    try:
        yield srv
    finally:
        srv.stop()


def chat(room, text, **extra):
    return {"room": room, "event": "chat.message", "data": {"text": text}, **extra}


def test_chat_between_two_users_is_numbered_and_recovered(server, connect):
    pid, alice_sub, bob_sub = unique("p"), unique("alice"), unique("bob")
    room = f"project:{pid}"
    alice = connect({"sub": alice_sub, "projects": [pid], "publish": [room]})
    bob = connect({"sub": bob_sub, "projects": [pid]})
    alice_sid = alice.established()["sid"]
    for c in (alice, bob):
        c.subscribe(room)

    spoofed = chat(room, "hi bob")
    spoofed["data"]["from"] = {"user_id": "mallory", "sid": "x"}
    ack = alice.call("publish", spoofed)
    assert ack["ok"] is True and ack["seq"] == 1, ack
    env = bob.wait_event("chat.message", lambda e: e["id"] == ack["id"])
    assert env["seq"] == 1 and env["room"] == room
    assert env["from"] == {"user_id": alice_sub, "sid": alice_sid}
    assert env["data"] == {"text": "hi bob", "from": {"user_id": "mallory", "sid": "x"}}
    alice.barrier()
    assert alice.events("chat.message") == [], "the sender does not get its own chat"

    cursor = {"epoch": env["epoch"], "seq": env["seq"]}
    bob.sio.disconnect()
    missed = [alice.call("publish", chat(room, t)) for t in ("two", "three")]
    token = server.mint_token(sub=bob_sub, projects=[pid])
    again = connect({"sub": bob_sub, "projects": [pid]}, auth={"token": token, "since": {room: cursor}})
    assert again.established()["recovery"][room]["replayed"] == 2
    wait_for(lambda: len(again.events("chat.message")) == 2, message="the missed chats")
    got = again.events("chat.message")
    assert [e["id"] for e in got] == [m["id"] for m in missed]
    assert [e["seq"] for e in got] == [2, 3]
    assert all(e["from"]["user_id"] == alice_sub for e in got)

    echo = again.call("publish", chat(room, "back", echo=True))
    for c in (again, alice):
        assert c.wait_event("chat.message", lambda e: e["id"] == echo["id"])["from"]["user_id"] == bob_sub


def test_typing_indicators_are_volatile_and_never_replayed(server, connect):
    pid, bob_sub = unique("p"), unique("bob")
    room = f"project:{pid}"
    alice = connect({"sub": unique("alice"), "projects": [pid]})
    bob = connect({"sub": bob_sub, "projects": [pid]})
    for c in (alice, bob):
        c.subscribe(room)
    ack = alice.call("publish", {"room": room, "event": "typing.start", "data": {}, "volatile": True})
    assert ack["ok"] is True and "seq" not in ack, ack
    env = bob.wait_event("typing.start", lambda e: e["id"] == ack["id"])
    assert "seq" not in env and "epoch" not in env

    page = bob.call("history", {"room": room})
    assert page["events"] == [], page
    token = server.mint_token(sub=bob_sub, projects=[pid])
    again = connect({"sub": bob_sub, "projects": [pid]},
                    auth={"token": token, "since": {room: {"epoch": page["epoch"], "seq": 0}}})
    assert again.established()["recovery"][room]["replayed"] == 0
    again.barrier()
    assert again.events("typing.start") == []


def test_refusals_carry_their_codes(server, connect):
    pid, other = unique("p"), unique("p")
    client = connect({"sub": unique("u"), "projects": [pid, other], "publish": [f"project:{other}"]})
    ack = client.call("publish", chat(f"project:{other}", "no"))
    assert ack["error"]["code"] == "not_subscribed", ack
    client.subscribe(f"project:{pid}", f"project:{other}")
    cases = [
        (chat(f"project:{pid}", "no"), "forbidden"),  # the publish claim leaves it out
        (chat("global", "no"), "forbidden"),  # not a kind of client_events.rooms
        ({"room": f"project:{other}", "event": "deploy.done", "data": {}}, "event_not_allowed"),
        ({"room": f"project:{other}", "event": "auth.refresh", "data": {}}, "event_not_allowed"),
    ]
    for body, code in cases:
        ack = client.call("publish", body)
        assert ack["ok"] is False and ack["error"]["code"] == code, (body, ack)
