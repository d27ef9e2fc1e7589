"""Token lifetime: `auth.expiring` -> get_token() -> `auth.refresh`; the socket outlives the
first token. Without get_token the server ends the socket at expiry (the control case)."""

from __future__ import annotations

import asyncio
import time

from conftest import Recorder, barrier, eventually, unique

WARNING_SECS = 2
TTL_SECS = 4


async def test_refresh_keeps_the_socket_connected_past_the_first_token_expiry(
        server_factory, make_client):
    srv = server_factory(expiry_warning_secs=WARNING_SECS)
    sub = unique("u")
    first_exp = int(time.time()) + TTL_SECS
    tokens = [srv.mint_token(exp_in=first_exp - time.time(), sub=sub)]

    async def get_token() -> str:
        if tokens:
            return tokens.pop()
        return srv.mint_token(exp_in=3600, sub=sub)

    client = make_client(srv=srv, get_token=get_token)
    states = []
    client.on_state_change(states.append)
    rec = Recorder(client, "expiring", "refreshed", "expired", "error", "established")
    info = await client.connect()

    await eventually(lambda: rec["refreshed"], timeout=TTL_SECS + 3, what="refreshed")
    assert len(rec["expiring"]) == 1
    assert rec["refreshed"][0].expires_at.timestamp() > first_exp + 3000
    assert rec["refreshed"][0].left_rooms == []

    # Past the first token's expiry (leeway 0) the same socket still receives events.
    await eventually(lambda: time.time() > first_exp + 1.5, timeout=TTL_SECS + 5,
                     what="the first token's expiry to pass")
    await barrier(srv, client, sub)
    assert client.state == "connected"
    assert client.info.sid == info.sid and len(rec["established"]) == 1
    assert rec["expired"] == [] and rec["error"] == []
    assert states == ["connecting", "connected"]


async def test_without_get_token_the_socket_ends_at_expiry(server_factory, make_client):
    srv = server_factory(expiry_warning_secs=WARNING_SECS)
    client = make_client(srv=srv, token=srv.mint_token(exp_in=TTL_SECS, sub=unique("u")))
    rec = Recorder(client, "expiring", "expired", "refreshed")
    await client.connect()

    await asyncio.wait_for(client.wait(), TTL_SECS + 3)  # wait() ends with the socket
    assert client.state == "disconnected"
    assert len(rec["expiring"]) == 1 and len(rec["expired"]) == 1
    assert rec["expired"][0].code == "token_expired"
    assert rec["refreshed"] == []


async def test_after_a_refused_refresh_the_client_comes_back_with_a_fresh_token(
        server_factory, make_client):
    srv = server_factory(expiry_warning_secs=WARNING_SECS)
    sub, pid = unique("u"), unique("p")
    room = f"project:{pid}"
    calls = []

    def get_token() -> str:  # sync token sources work too
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            return srv.mint_token(exp_in=TTL_SECS, sub=sub, projects=[pid])
        if len(calls) == 2:  # the refresh: another user's token is refused
            return srv.mint_token(exp_in=3600, sub=unique("other"), projects=[pid])
        return srv.mint_token(exp_in=3600, sub=sub, projects=[pid])

    client = make_client(srv=srv, get_token=get_token, rooms=[room])
    states = []
    client.on_state_change(states.append)
    rec = Recorder(client, "error", "expired", "established", "workflow.started")
    await client.connect()
    await srv.publish("workflow.started", {"workflow_id": "w1", "project_id": pid})
    await eventually(lambda: rec["workflow.started"], what="the first event")

    await eventually(lambda: len(rec["established"]) == 2, timeout=TTL_SECS + 8,
                     what="the reconnect after expiry")
    assert [e.code for e in rec["error"]] == ["refresh_mismatch"]
    assert len(rec["expired"]) == 1
    assert states == ["connecting", "connected", "reconnecting", "connected"]
    # The cursor went along as auth.since: the room was re-joined through recovery.
    assert rec["established"][1].recovery[room].replayed == 0
    await srv.publish("workflow.started", {"workflow_id": "w2", "project_id": pid})
    await eventually(lambda: len(rec["workflow.started"]) == 2, what="an event after the reconnect")
    assert [e.seq for e in rec["workflow.started"]] == [1, 2]
    assert calls == [1, 2, 3]
