"""HTTP API: authentication and scopes, error codes and shapes, the 202 body,
custom broadcasts, stats, health and readiness."""

import json

import pytest
import requests

from conftest import (ACME_KEY, API_KEY, NODE_ID, READ_ONLY_KEY, assert_envelope, assert_uuid7,
                      open_client, unique, wait_for)

EVENTS = "/api/v1/events"
BROADCAST = "/api/v1/broadcast"
STATS = "/api/v1/websocket/stats"
VALID = {"type": "project.updated", "data": {"project_id": "1"}}


def assert_error(r, status, code, field=None):
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    if field is not None:
        assert err["field"] == field, err


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize("path", [EVENTS, BROADCAST])
def test_no_key_is_401(server, path):
    assert_error(server.post(path, VALID, key=None), 401, "unauthorized")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-key"},
    {"X-API-Key": "wrong-key"},
    {"Authorization": "wrong-key"},
    {"Authorization": f"Basic {API_KEY}"},
    {"Authorization": "Bearer "},
], ids=["bearer-wrong", "x-api-key-wrong", "no-scheme", "basic-scheme", "empty-bearer"])
def test_wrong_key_is_401(server, headers):
    assert_error(server.post(EVENTS, VALID, headers=headers), 401, "unauthorized")


def test_x_api_key_header_accepted(server):
    r = server.post(EVENTS, VALID, headers={"X-API-Key": API_KEY})
    assert r.status_code == 202, r.text


def test_stats_without_key_is_401(server):
    assert_error(server.get(STATS, key=None), 401, "unauthorized")
    assert_error(server.get(STATS, key="nope"), 401, "unauthorized")


def test_tenant_bound_key_other_tenant_is_403(server):
    r = server.post(EVENTS, {**VALID, "tenant": "globex"}, key=ACME_KEY)
    assert_error(r, 403, "forbidden")
    r = server.broadcast("deploy.done", room="global", tenant="globex", key=ACME_KEY)
    assert_error(r, 403, "forbidden")


def test_tenant_bound_key_publishes_in_its_tenant(server, connect):
    acme = connect({"tenant": "acme", "projects": ["1"]})
    acme.subscribe("project:1")
    r = server.post(EVENTS, {**VALID, "tenant": "acme"}, key=ACME_KEY)
    assert r.status_code == 202, r.text
    assert r.json()["tenant"] == "acme"
    acme.wait_event("project.updated", lambda e: e["id"] == r.json()["id"])


def test_missing_scope_is_403(server):
    assert_error(server.get(STATS, key=ACME_KEY), 403, "forbidden")  # publish only
    assert_error(server.post(EVENTS, VALID, key=READ_ONLY_KEY), 403, "forbidden")
    assert_error(server.broadcast("deploy.done", room="global", key=READ_ONLY_KEY), 403, "forbidden")


# ---------------------------------------------------------------- request errors


@pytest.mark.parametrize("raw", ["{not json", '{"type": "project.updated",', "", "[1, 2"],
                         ids=["garbage", "truncated", "empty", "bad-array"])
@pytest.mark.parametrize("path", [EVENTS, BROADCAST])
def test_malformed_json_is_400(server, path, raw):
    assert_error(server.post(path, raw=raw), 400, "malformed_json")


@pytest.mark.parametrize("type_", ["project.exploded", "connection.established", "", "PROJECT.UPDATED"])
def test_unknown_event_type_is_422(server, type_):
    assert_error(server.post(EVENTS, {"type": type_, "data": {}}), 422, "unknown_event_type")


def test_invalid_payload_names_the_field(server):
    r = server.post(EVENTS, {"type": "pr.created", "data": {"project_id": "1", "title": "t"}})
    assert_error(r, 422, "invalid_payload", field="number")


def test_missing_type_is_invalid_payload(server):
    assert_error(server.post(EVENTS, {"data": {"project_id": "1"}}), 422, "invalid_payload", field="type")


def test_body_not_an_object_is_invalid_payload(server):
    r = server.post(EVENTS, [VALID])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_payload"


def test_body_over_limit_is_413(server):
    big = {"type": "project.updated", "data": {"project_id": "1", "project_name": "x" * 300_000}}
    assert_error(server.post(EVENTS, big), 413, "payload_too_large")
    r = server.broadcast("deploy.done", {"blob": "x" * 300_000}, room="global")
    assert_error(r, 413, "payload_too_large")


def test_body_just_under_limit_is_not_413(server):
    filler = "x" * (262144 - 200)
    r = server.post(EVENTS, {"type": "project.updated", "data": {"project_id": "1", "project_name": filler}})
    assert r.status_code == 202, f"{r.status_code} {r.text[:200]}"


def test_202_shape(server):
    r = server.post(EVENTS, {"type": "project.deleted", "data": {"project_id": 99}, "tenant": "acme"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"id", "type", "room", "rooms", "tenant"}
    assert_uuid7(body["id"])
    assert body == {"id": body["id"], "type": "project.deleted", "room": "project:99",
                    "rooms": ["project:99"], "tenant": "acme"}


def test_default_tenant_in_202(server):
    r = server.post(EVENTS, VALID)
    assert r.status_code == 202, r.text
    assert r.json()["tenant"] == "default"


# ---------------------------------------------------------------- broadcast


def test_broadcast_custom_event_to_room(server, connect):
    pid = unique("p")
    member = connect({"projects": [pid]})
    member.subscribe(f"project:{pid}")
    bystander = connect({"projects": "*"})
    bystander.subscribe(f"project:{unique('p')}")
    data = {"sha": "abc123", "steps": [1, 2, {"n": None}], "ok": True}
    r = server.broadcast("deploy.finished", data, room=f"project:{pid}")
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"id", "type", "room", "rooms", "tenant"}
    assert_uuid7(body["id"])
    assert body["type"] == "deploy.finished"
    assert body["room"] == f"project:{pid}"
    assert body["rooms"] == [f"project:{pid}"]
    assert body["tenant"] == "default"

    env = member.wait_event("deploy.finished", lambda e: e["id"] == body["id"])
    assert_envelope(env, type_="deploy.finished", room=f"project:{pid}", data=data)
    bystander.barrier()
    assert not bystander.events("deploy.finished")


def test_broadcast_to_several_rooms(server, connect):
    p1, p2, p3 = unique("p"), unique("p"), unique("p")
    a, b, c = (connect({"projects": [p]}) for p in (p1, p2, p3))
    a.subscribe(f"project:{p1}")
    b.subscribe(f"project:{p2}")
    c.subscribe(f"project:{p3}")
    r = server.broadcast("build:done", {"n": 1}, rooms=[f"project:{p1}", f"project:{p2}"])
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["room"] == f"project:{p1}"
    assert body["rooms"] == [f"project:{p1}", f"project:{p2}"]
    for client in (a, b):
        env = client.wait_event("build:done", lambda e: e["id"] == body["id"])
        assert env["room"] == f"project:{p1}"
        assert env["data"] == {"n": 1}
    c.barrier()
    assert not c.events("build:done")


@pytest.mark.parametrize("room", ["global", "user:someone"])
def test_broadcast_to_global_and_user(server, connect, room):
    client = connect({"sub": "someone", "tenant": unique("t")})
    r = server.broadcast("ping.me", "plain string", room=room, tenant=client.tenant)
    assert r.status_code == 202, r.text
    env = client.wait_event("ping.me", lambda e: e["id"] == r.json()["id"])
    assert env["data"] == "plain string"


def test_broadcast_data_defaults_to_null(server, connect):
    client = connect({"tenant": unique("t")})
    r = server.post(BROADCAST, {"event": "no.data", "room": "global", "tenant": client.tenant})
    assert r.status_code == 202, r.text
    env = client.wait_event("no.data", lambda e: e["id"] == r.json()["id"])
    assert "data" in env and env["data"] is None


def test_broadcast_respects_tenant(server, connect):
    acme = connect({"tenant": "acme"})
    globex = connect({"tenant": "globex"})
    r = server.broadcast("tenant.note", {"x": 1}, room="global", tenant="acme")
    assert r.status_code == 202, r.text
    acme.wait_event("tenant.note", lambda e: e["id"] == r.json()["id"])
    globex.barrier()
    assert not globex.events("tenant.note")


@pytest.mark.parametrize("name", [
    "connect", "connect_error", "disconnect", "disconnecting", "error", "newlistener",
    "removelistener", "connection.established", "connection.anything", "auth.failed",
    "server.shutdown", "presence.join", "project.updated", "agent.connected", "workflow.progress",
    "pr.created", "issue.closed", "ai.suggestion", "system.notification",
    "Deploy", "1deploy", "deploy now", "deploy/now", "", "a" * 65, "déploiement",
])
def test_invalid_or_reserved_event_name(server, name):
    r = server.broadcast(name, {}, room="global")
    assert_error(r, 422, "invalid_event_name")


def test_event_name_of_64_chars_accepted(server):
    r = server.broadcast("a" + "b" * 63, {}, room="global")
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("room", ["nope", "project:", "project:a b", "global:x"])
def test_broadcast_bad_room(server, room):
    assert_error(server.broadcast("deploy.done", {}, room=room), 422, "invalid_room", field="room")


def test_broadcast_without_room_is_invalid_payload(server):
    r = server.broadcast("deploy.done", {})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_payload"


# ---------------------------------------------------------------- health / ready


def test_health(server):
    r = requests.get(server.url + "/health", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready(server):
    r = requests.get(server.url + "/ready", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


# ---------------------------------------------------------------- stats


def test_stats_fields_and_counts(server_factory):
    srv = server_factory()  # fresh counters
    clients = []

    def stats():
        r = srv.get(STATS, key=API_KEY)
        assert r.status_code == 200, r.text
        return r.json()

    try:
        first = stats()
        # the documented fields; additive extras are not a contract break
        required = {"node_id", "uptime_secs", "connections", "users", "rooms", "tenants",
                    "events_published", "auth_failures", "top_rooms"}
        assert required <= set(first), f"missing stats fields: {required - set(first)}"
        assert first["node_id"] == NODE_ID
        assert isinstance(first["uptime_secs"], int) and first["uptime_secs"] >= 0
        assert first["connections"] == 0
        assert first["events_published"] == 0
        assert first["auth_failures"] == 0

        def conn(claims):
            rc, exc = open_client(srv, claims=claims)
            clients.append(rc)
            assert exc is None, exc
            return rc

        alice1 = conn({"sub": "alice", "tenant": "acme", "projects": ["1"]})
        alice2 = conn({"sub": "alice", "tenant": "acme"})
        bob = conn({"sub": "bob", "tenant": "globex"})
        for c in (alice1, alice2, bob):
            c.established()
        alice1.subscribe("project:1")

        bad, exc = open_client(srv, token="garbage")
        clients.append(bad)
        assert exc is not None
        nothing, exc = open_client(srv, via="none")
        clients.append(nothing)
        assert exc is not None

        for _ in range(2):
            assert srv.publish("project.updated", {"project_id": "1"}, tenant="acme").status_code == 202
        assert srv.broadcast("x.y", {}, room="global", tenant="globex").status_code == 202
        # a refused publish is not a published event
        assert srv.publish("project.updated", {}, tenant="acme").status_code == 422

        s = wait_for(lambda: (lambda s: s if s["connections"] == 3 and s["events_published"] == 3
                              and s["auth_failures"] == 2 else None)(stats()),
                     message="stats to count 3 connections, 3 events, 2 auth failures")
        assert s["users"] == 2
        assert s["tenants"] == 2
        # acme: global, user:alice, project:1   globex: global, user:bob
        assert s["rooms"] == 5
        top = {(t["tenant"], t["room"]): t["members"] for t in s["top_rooms"]}
        assert top[("acme", "global")] == 2
        assert top[("acme", "user:alice")] == 2
        assert top.get(("acme", "project:1")) == 1
        assert top[("globex", "global")] == 1
        members = [t["members"] for t in s["top_rooms"]]
        assert members == sorted(members, reverse=True), "top_rooms not ordered by members"

        # disconnects are reflected
        bob.disconnect()
        s = wait_for(lambda: (lambda s: s if s["connections"] == 2 else None)(stats()),
                     message="connections to drop to 2")
        assert s["users"] == 1
        assert s["tenants"] == 1
        assert s["rooms"] == 3
    finally:
        for c in clients:
            c.disconnect()
