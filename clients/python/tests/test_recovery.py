"""No event lost: recovery through `auth.since` after a transport drop, and `gap` when the
server no longer keeps the missed events."""

from __future__ import annotations

from conftest import Gate, Recorder, barrier, drop_transport, eventually, unique

MISSED = 5


async def test_after_a_transport_drop_the_client_gets_exactly_the_missed_events_in_order(
        server, make_client):
    sub, pid = unique("u"), unique("p")
    room = f"project:{pid}"
    gate = Gate(server, sub=sub, projects=[pid])
    client = make_client(get_token=gate, rooms=[room])
    states = []
    client.on_state_change(states.append)
    rec = Recorder(client, "workflow.progress", "established", "gap")
    await client.connect()

    async def progress(n: int) -> str:
        body = await server.publish("workflow.progress",
                                    {"workflow_id": "w", "project_id": pid, "progress": n})
        return body["id"]

    before = [await progress(n) for n in (1, 2)]
    await eventually(lambda: len(rec["workflow.progress"]) == 2, what="the first two events")

    # Hold the reconnect handshake until the missed events are published.
    gate.close()
    await drop_transport(client)
    await eventually(lambda: client.state == "reconnecting", what="state reconnecting")
    missed = [await progress(n) for n in range(3, 3 + MISSED)]
    gate.open()

    await eventually(lambda: len(rec["established"]) == 2, timeout=10, what="the reconnect")
    recovery = rec["established"][1].recovery
    assert recovery[room].replayed == MISSED, recovery
    assert rec["established"][1].recovered is True
    live = await progress(99)
    await eventually(lambda: len(rec["workflow.progress"]) == 2 + MISSED + 1,
                     what="replayed and live events")
    await barrier(server, client, sub)  # anything duplicated would have arrived by now

    got = rec["workflow.progress"]
    assert [e.id for e in got] == before + missed + [live]
    assert [e.seq for e in got] == list(range(1, 2 + MISSED + 2))
    assert [e.data.progress for e in got] == [1, 2, *range(3, 3 + MISSED), 99]
    assert rec["gap"] == []
    assert states == ["connecting", "connected", "reconnecting", "connected"]
    assert client.rooms == [room]


async def test_when_the_missed_events_are_no_longer_kept_the_client_reports_a_gap(
        server_factory, make_client):
    srv = server_factory(history_size=2)
    sub, pid = unique("u"), unique("p")
    room = f"project:{pid}"
    gate = Gate(srv, sub=sub, projects=[pid])
    client = make_client(srv=srv, get_token=gate, rooms=[room])
    order = []  # (kind, value) across handlers, in delivery order
    client.on("workflow.progress", lambda env: order.append(("event", env.seq)))
    client.on("gap", lambda gap: order.append(("gap", gap)))
    established = Recorder(client, "established")
    await client.connect()

    async def progress(n: int) -> None:
        await srv.publish("workflow.progress", {"workflow_id": "w", "project_id": pid, "progress": n})

    await progress(1)
    await eventually(lambda: order == [("event", 1)], what="the first event")
    epoch = client.cursor(room).epoch

    gate.close()
    await drop_transport(client)
    await eventually(lambda: client.state == "reconnecting", what="state reconnecting")
    for n in range(2, 7):  # seq 2..6; the room keeps only 5 and 6
        await progress(n)
    gate.open()

    await eventually(lambda: len(established["established"]) == 2, timeout=10, what="the reconnect")
    await progress(7)
    await eventually(lambda: len(order) == 3, what="the gap and the live event")

    kind, gap = order[1]
    assert kind == "gap" and (gap.room, gap.epoch, gap.seq) == (room, epoch, 6)
    assert order[2] == ("event", 7)  # nothing was replayed, and the live event follows
    assert client.cursor(room).seq == 7


async def test_a_room_with_no_event_yet_recovers_what_was_published_while_away(
        server, make_client):
    sub, pid = unique("u"), unique("p")
    room = f"project:{pid}"
    gate = Gate(server, sub=sub, projects=[pid])
    client = make_client(get_token=gate)
    rec = Recorder(client, "workflow.progress", "established", "gap")
    await client.connect()
    await client.subscribe(room)
    assert client.cursor(room).seq == 0  # the ack's position: the room has no event yet

    async def progress(n: int) -> str:
        body = await server.publish("workflow.progress",
                                    {"workflow_id": "w", "project_id": pid, "progress": n})
        return body["id"]

    gate.close()
    await drop_transport(client)
    await eventually(lambda: client.state == "reconnecting", what="state reconnecting")
    missed = [await progress(n) for n in range(1, 1 + MISSED)]
    gate.open()

    await eventually(lambda: len(rec["established"]) == 2, timeout=10, what="the reconnect")
    assert rec["established"][1].recovery[room].replayed == MISSED, rec["established"][1].recovery
    live = await progress(99)
    await eventually(lambda: len(rec["workflow.progress"]) == MISSED + 1,
                     what="replayed and live events")
    await barrier(server, client, sub)  # anything duplicated would have arrived by now

    got = rec["workflow.progress"]
    assert [e.id for e in got] == missed + [live]
    assert [e.seq for e in got] == list(range(1, MISSED + 2))
    assert rec["gap"] == []
