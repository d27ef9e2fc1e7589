"""subscribe / unsubscribe: acks become return values, refusals a RoomcastError with the code."""

from __future__ import annotations

import pytest

from conftest import barrier, unique
from roomcast_client import RoomcastError


async def test_subscribe_to_a_room_the_token_does_not_grant_raises_forbidden(server, make_client):
    sub, mine, other = unique("u"), unique("p"), unique("p")
    client = make_client(token=server.mint_token(sub=sub, projects=[mine]))
    got = []
    client.on("project.updated", got.append)
    await client.connect()

    with pytest.raises(RoomcastError) as exc:
        await client.subscribe([f"project:{mine}", f"project:{other}"])
    assert (exc.value.code, exc.value.room) == ("forbidden", f"project:{other}")

    # All or nothing: the granted room of the refused request was not joined either.
    assert client.rooms == []
    await server.publish("project.updated", {"project_id": mine})
    await barrier(server, client, sub)
    assert got == []


async def test_subscribe_with_a_bad_room_name_raises_invalid_room(server, make_client):
    client = make_client(token=server.mint_token(sub=unique("u")))
    await client.connect()
    with pytest.raises(RoomcastError) as exc:
        await client.subscribe("team:1")
    assert (exc.value.code, exc.value.room) == ("invalid_room", "team:1")


async def test_subscribe_past_the_room_limit_raises_too_many_rooms(server_factory, make_client):
    srv = server_factory(max_rooms=3)  # global + user:<sub> + one more
    client = make_client(srv=srv, token=srv.mint_token(sub=unique("u"), projects="*"))
    await client.connect()
    assert await client.subscribe("project:1") == ["project:1"]
    with pytest.raises(RoomcastError) as exc:
        await client.subscribe("project:2")
    assert (exc.value.code, exc.value.room) == ("too_many_rooms", "project:2")


async def test_after_unsubscribe_the_room_events_stop(server, make_client):
    sub, pid = unique("u"), unique("p")
    client = make_client(token=server.mint_token(sub=sub, projects=[pid]))
    got = []
    client.on("project.updated", got.append)
    await client.connect()
    assert await client.subscribe(f"project:{pid}") == [f"project:{pid}"]
    await server.publish("project.updated", {"project_id": pid, "status": "one"})
    await barrier(server, client, sub)
    assert [e.data.status for e in got] == ["one"]

    assert await client.unsubscribe(f"project:{pid}") == [f"project:{pid}"]
    assert client.rooms == [] and client.cursor(f"project:{pid}") is None
    await server.publish("project.updated", {"project_id": pid, "status": "two"})
    await barrier(server, client, sub)
    assert [e.data.status for e in got] == ["one"]


async def test_commands_while_disconnected_raise_not_connected(server, make_client):
    client = make_client(token=server.mint_token(sub=unique("u")))
    with pytest.raises(RoomcastError) as exc:
        await client.subscribe("global")
    assert exc.value.code == "not_connected"
