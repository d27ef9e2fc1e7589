"""publish: client events. The others in the room receive them from the server's `from`,
numbered and recovered; the sender only with echo; volatile ones never numbered; refusals
raise RoomcastError with the server's code."""

from __future__ import annotations

import pytest

from conftest import Recorder, barrier, drop_transport, eventually, unique
from roomcast_client import PublishAck, RoomcastError

CHAT = {"rooms": ["project"], "events": ["chat.*", "typing.*"], "max_bytes": 64}


@pytest.fixture(scope="module")
def chat_server():
    from conftest import start_server

    srv = start_server(client_events=CHAT)
    try:
        yield srv
    finally:
        srv.stop()


async def member(make_client, srv, sub, pid):
    client = make_client(srv=srv, token=srv.mint_token(sub=sub, projects=[pid]))
    await client.connect()
    await client.subscribe(f"project:{pid}")
    return client


async def test_chat_is_numbered_from_the_sender_and_recovered(chat_server, make_client):
    pid, alice_sub, bob_sub = unique("p"), unique("alice"), unique("bob")
    room = f"project:{pid}"
    alice = await member(make_client, chat_server, alice_sub, pid)
    bob = await member(make_client, chat_server, bob_sub, pid)
    got, mine = [], []
    bob.on_custom("chat.message", got.append)
    alice.on_custom("chat.message", mine.append)

    ack = await alice.publish(room, "chat.message", {"text": "hi", "from": "spoof"})
    assert isinstance(ack, PublishAck) and ack.ok and ack.seq == 1
    await eventually(lambda: got, what="bob's chat")
    env = got[0]
    assert (env.id, env.seq, env.data["text"]) == (ack.id, 1, "hi")
    assert env.from_ is not None and env.from_.user_id == alice_sub
    assert env.from_.sid == alice.info.sid
    assert env.data["from"] == "spoof"
    await barrier(chat_server, alice, alice_sub)
    assert mine == [], "the sender does not receive its own event without echo"

    # Missed while the transport is down, recovered on the reconnect, in order.
    await drop_transport(bob)
    await eventually(lambda: bob.state != "connected", what="bob to drop")
    acks = [await alice.publish(room, "chat.message", {"text": t}) for t in ("two", "three")]
    await eventually(lambda: len(got) == 3, what="the missed chats")
    assert [e.seq for e in got] == [1, 2, 3]
    assert [e.id for e in got[1:]] == [a.id for a in acks]

    echo = await alice.publish(room, "chat.message", {"text": "me"}, echo=True)
    await eventually(lambda: mine, what="the echo")
    assert mine[0].id == echo.id


async def test_typing_is_volatile(chat_server, make_client):
    pid = unique("p")
    room = f"project:{pid}"
    alice = await member(make_client, chat_server, unique("alice"), pid)
    bob_sub = unique("bob")
    bob = await member(make_client, chat_server, bob_sub, pid)
    typing = []
    bob.on_custom("typing.start", typing.append)
    ack = await alice.publish(room, "typing.start", {}, volatile=True)
    assert ack.seq is None
    await eventually(lambda: typing, what="the typing indicator")
    assert typing[0].seq is None and typing[0].id == ack.id
    history = await bob.history(room)
    assert history.events == []


@pytest.mark.parametrize(
    ("room", "event", "data", "code"),
    [
        ("project:{pid}", "deploy.done", {}, "event_not_allowed"),
        ("project:{pid}", "chat.message", {"text": "x" * 100}, "payload_too_large"),
        ("project:{other}", "chat.message", {}, "forbidden"),
        ("global", "chat.message", {}, "forbidden"),
    ],
)
async def test_refusals_raise_with_the_code(chat_server, make_client, room, event, data, code):
    pid, other = unique("p"), unique("p")
    client = await member(make_client, chat_server, unique("u"), pid)
    with pytest.raises(RoomcastError) as exc:
        await client.publish(room.format(pid=pid, other=other), event, data)
    assert exc.value.code == code, exc.value
