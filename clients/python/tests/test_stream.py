"""`client.stream(id)`: an AI stream's exact text as an async iterator, for a viewer from the
start, one that opens mid-stream and one whose transport drops; cancel reaches the producer.
On one node, and on a two-node cluster (produced at one node, followed at the other)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Gate, drop_transport, eventually, harness, unique
from roomcast_client import RoomcastError


@pytest.fixture(params=["one-node", "two-nodes"])
def nodes(request):
    """(producer's node, viewers' node): the same node, or the two nodes of a cluster."""
    if request.param == "one-node":
        srv = request.getfixturevalue("server")
        return srv, srv
    return request.getfixturevalue("cluster_nodes")


async def collect(stream) -> str:
    return "".join([piece async for piece in stream])


async def test_viewers_from_the_start_mid_stream_and_across_a_drop_get_the_exact_text(
        nodes, make_client):
    server, viewing = nodes
    pid = unique("p")
    room = f"project:{pid}"
    text = harness.STREAM_TEXT * 3
    pieces = harness.stream_pieces(text)
    third = len(pieces) // 3
    stream_id = await server.create_stream(room)

    # Its reconnect handshake waits for the gate, so the rest is appended while it is away.
    gate = Gate(server, sub=unique("u"), projects=[pid])
    early = make_client(viewing, get_token=gate)
    await early.connect()
    from_start = early.stream(stream_id, room=room)
    reading = asyncio.ensure_future(collect(from_start))
    await eventually(lambda: from_start.kind == "llm", what="the first resume")

    await server.append(stream_id, *pieces[:third])
    # Opens the page mid-stream: a new connection, which resumes from 0.
    late = make_client(viewing, token=server.mint_token(sub=unique("u"), projects=[pid]))
    await late.connect()
    mid_stream = late.stream(stream_id, room=room)
    late_reading = asyncio.ensure_future(collect(mid_stream))
    await eventually(lambda: mid_stream.text == "".join(pieces[:third]), what="the catch-up")

    await server.append(stream_id, *pieces[third:2 * third])
    await eventually(lambda: from_start.text == "".join(pieces[:2 * third]), what="the deltas")
    gate.close()
    await drop_transport(early)
    await eventually(lambda: early.state != "connected", what="the drop")
    # No delta follows its return: only its own resume on reconnect brings the rest.
    await server.append(stream_id, *pieces[2 * third:])
    gate.open()
    await eventually(lambda: from_start.text == text, timeout=10, what="the resume after the reconnect")
    assert from_start.status == "open"
    status, answer = await server.api("POST", f"/api/v1/streams/{stream_id}/finish", {})
    assert status == 200, answer
    assert answer["length"] == len(text)

    assert await asyncio.wait_for(reading, 15) == text
    assert await asyncio.wait_for(late_reading, 15) == text
    assert from_start.status == mid_stream.status == "finished"
    assert from_start.text == mid_stream.text == text
    assert from_start.length == len(text)
    # The follower that subscribed the room left it when its iteration ended.
    await eventually(lambda: room not in late.rooms, what="the room to be left")


async def test_cancel_reaches_the_http_producer_and_the_viewer_stays_connected(
        nodes, make_client):
    server, viewing = nodes
    pid, sub = unique("p"), unique("u")
    room = f"project:{pid}"
    stream_id = await server.create_stream(room, requested_by=sub)
    client = make_client(viewing, token=server.mint_token(sub=sub, projects=[pid]))
    await client.connect()
    stream = client.stream(stream_id, room=room)
    await server.append(stream_id, "partial ", "👩\u200d💻 ")
    await eventually(lambda: stream.text == "partial 👩\u200d💻 ", what="the text")

    ack = await stream.cancel("enough")
    assert ack["length"] == len("partial 👩\u200d💻 ")
    assert await asyncio.wait_for(stream.wait(), 5) == "cancelled"
    status, answer = await server.api("POST", f"/api/v1/streams/{stream_id}/append",
                                      {"text": "more"})
    assert status == 409, answer
    assert answer["error"]["code"] == "stream_cancelled"
    await eventually(lambda: stream.cancelled_by == sub, what="stream.cancelled")
    assert stream.cancel_reason == "enough"
    # A cancel is not a disconnect.
    assert client.state == "connected"
    assert (await client.ping()).pong is True
    with pytest.raises(RoomcastError) as refused:
        await stream.cancel()
    assert refused.value.code == "stream_cancelled"
    await stream.close()


async def test_an_unknown_stream_ends_the_iteration_with_its_code(server, make_client):
    pid = unique("p")
    client = make_client(token=server.mint_token(sub=unique("u"), projects=[pid]))
    await client.connect()
    with pytest.raises(RoomcastError) as refused:
        await asyncio.wait_for(collect(client.stream("no-such-stream", room=f"project:{pid}")), 5)
    assert refused.value.code == "stream_not_found"
