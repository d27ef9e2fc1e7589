"""Receiving events: typed envelopes, custom events, connection state, refused handshakes."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import Recorder, eventually, unique
from roomcast_client import (
    ConnectionEstablished,
    Envelope,
    Presence,
    RoomcastError,
    WorkflowProgress,
)


async def test_a_typed_event_published_over_http_arrives_as_its_model(server, make_client):
    pid, sub = unique("p"), unique("u")
    client = make_client(token=server.mint_token(sub=sub, projects=[pid]), rooms=[f"project:{pid}"])
    got = []

    @client.on("workflow.progress")
    async def on_progress(env):  # async handlers are awaited
        got.append(env)

    every = Recorder(client, "*")
    info = await client.connect()
    assert isinstance(info, ConnectionEstablished) and info.user_id == sub
    assert client.rooms == [f"project:{pid}"]

    published = await server.publish("workflow.progress", {
        "workflow_id": 9001, "project_id": pid, "progress": 40, "step": "build"})
    await eventually(lambda: got, what="workflow.progress")

    env = got[0]
    assert isinstance(env, Envelope) and isinstance(env.data, WorkflowProgress)
    assert (env.id, env.type, env.room) == (published["id"], "workflow.progress", f"project:{pid}")
    assert env.data.workflow_id == "9001"  # ids are delivered as strings
    assert (env.data.progress, env.data.step, env.data.message) == (40, "build", None)
    assert env.seq == 1 and env.epoch
    assert abs((dt.datetime.now(dt.timezone.utc) - env.timestamp).total_seconds()) < 60
    # "*" sees every envelope: first the presence notice of our own join, then the event.
    assert [(e.type, e.id) for e in every["*"]][-1] == ("workflow.progress", env.id)
    joined = [e for e in every["*"] if e.type == "presence.joined"]
    assert isinstance(joined[0].data, Presence) and joined[0].data.user_id == sub
    assert client.cursor(f"project:{pid}").seq == 1


async def test_a_custom_event_reaches_on_custom_with_raw_data(server, make_client):
    sub = unique("u")
    client = make_client(token=server.mint_token(sub=sub))
    got = []
    client.on_custom("deploy.finished", got.append)
    await client.connect()

    await server.broadcast("deploy.finished", f"user:{sub}", {"version": "1.4.2"})
    await eventually(lambda: got, what="deploy.finished")
    assert got[0].type == "deploy.finished" and got[0].data == {"version": "1.4.2"}


async def test_on_refuses_an_unknown_event_type(server, make_client):
    client = make_client(token=server.mint_token(sub=unique("u")))
    with pytest.raises(ValueError, match="on_custom"):
        client.on("project.renamed", print)


async def test_the_state_goes_connecting_connected_disconnected(server, make_client):
    states = []
    client = make_client(token=server.mint_token(sub=unique("u")), on_state_change=states.append)
    assert client.state == "disconnected"
    await client.connect()
    assert client.state == "connected"
    await client.close()
    assert client.state == "disconnected"
    assert states == ["connecting", "connected", "disconnected"]


async def test_a_refused_handshake_raises_the_server_code(server, make_client):
    errors = []
    client = make_client(token=server.mint_token(exp_in=-10, sub=unique("u")))
    client.on("error", errors.append)
    with pytest.raises(RoomcastError) as exc:
        await client.connect()
    assert exc.value.code == "token_expired"
    assert client.state == "disconnected"
    await eventually(lambda: errors, what="the error event")
    assert errors[0].code == "token_expired"
