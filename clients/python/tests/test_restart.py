"""A deploy: the server is stopped (SIGTERM) and started again on the same port. The client
gets `shutdown`, goes `reconnecting` (not `disconnected`), comes back by itself to the new
process with its rooms, and receives what is published there."""

from __future__ import annotations

import asyncio
import signal

from conftest import Recorder, eventually, start_server, unique


async def test_a_restarted_server_is_rejoined_with_the_rooms(make_client):
    old = start_server()
    new = None
    try:
        port = int(old.url.rsplit(":", 1)[1])
        sub, pid = unique("u"), unique("p")
        room = f"project:{pid}"
        states = []
        client = make_client(srv=old, token=old.mint_token(sub=sub, projects=[pid]), rooms=[room],
                             on_state_change=states.append)
        rec = Recorder(client, "project.updated", "established", "shutdown")
        await client.connect()
        first = (await old.publish("project.updated", {"project_id": pid, "status": "a"}))["id"]
        await eventually(lambda: rec["project.updated"], what="the event before the restart")

        old.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(old.proc.wait, 15) == 0, old.log_tail()
        await eventually(lambda: client.state == "reconnecting", what="state reconnecting")
        assert [s.reconnect_after_ms for s in rec["shutdown"]] == [1000]

        new = await asyncio.to_thread(start_server, port)
        await eventually(lambda: len(rec["established"]) == 2, timeout=15,
                         what="the client back on the restarted server")
        await eventually(lambda: client.rooms == [room], what="the room restored")
        live = (await new.publish("project.updated", {"project_id": pid, "status": "b"}))["id"]
        await eventually(lambda: len(rec["project.updated"]) == 2, what="the event after the restart")
        assert [e.id for e in rec["project.updated"]] == [first, live]
        assert states == ["connecting", "connected", "reconnecting", "connected"]
    finally:
        old.stop()
        if new is not None:
            new.stop()
