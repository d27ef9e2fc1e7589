"""Rooms: subscribe / unsubscribe / ping acks, the access policy, malformed payloads,
the `error` event for ack-less failures, the per-socket room limit, tenant isolation."""

import pytest

from conftest import assert_rfc3339_millis_now, unique, wait_for, without_positions


def publish_project_updated(server, project_id, tenant=None):
    """Publish a project.updated to project:<project_id>; returns the event id."""
    return server.publish_ok("project.updated", {"project_id": project_id}, tenant=tenant)["id"]


def got(client, event_id):
    return client.matching("project.updated", lambda env: env["id"] == event_id)


def assert_error(ack, code, room=None):
    assert isinstance(ack, dict), f"ack is not an object: {ack!r}"
    assert ack.get("ok") is False, f"expected a failure ack, got {ack!r}"
    err = ack["error"]
    assert err["code"] == code, f"expected {code}, got {ack!r}"
    assert isinstance(err["message"], str) and err["message"]
    if room is not None:
        assert err["room"] == room


# ---------------------------------------------------------------- subscribe allowed


def test_subscribe_single_room_in_claim_then_receives(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    ack = client.call("subscribe", {"room": f"project:{pid}"})
    assert without_positions(ack) == {"ok": True, "rooms": [f"project:{pid}"]}
    event_id = publish_project_updated(server, pid)
    client.wait_event("project.updated", lambda env: env["id"] == event_id)


def test_subscribe_list_in_claims(connect):
    pid, aid = unique("p"), unique("a")
    client = connect({"projects": [pid], "agents": [aid]})
    ack = client.call("subscribe", {"rooms": [f"project:{pid}", f"agent:{aid}"]})
    assert without_positions(ack) == {"ok": True, "rooms": [f"project:{pid}", f"agent:{aid}"]}


def test_numeric_project_claim_allows_room(connect):
    client = connect({"projects": [424242]})
    assert without_positions(client.call("subscribe", {"room": "project:424242"})) == {"ok": True, "rooms": ["project:424242"]}


def test_wildcard_claims_allow_any_project_and_agent(connect):
    client = connect({"projects": "*", "agents": "*"})
    rooms = [f"project:{unique('p')}", f"agent:{unique('a')}"]
    assert without_positions(client.call("subscribe", {"rooms": rooms})) == {"ok": True, "rooms": rooms}


def test_own_user_room_and_global_allowed(connect):
    sub = unique("u")
    client = connect({"sub": sub})
    assert without_positions(client.call("subscribe", {"rooms": ["global", f"user:{sub}"]})) == \
        {"ok": True, "rooms": ["global", f"user:{sub}"]}


def test_admin_joins_any_room_of_its_tenant(connect):
    client = connect({"role": "admin", "tenant": "acme"})
    rooms = [f"project:{unique('p')}", f"agent:{unique('a')}", f"user:{unique('other')}"]
    assert without_positions(client.call("subscribe", {"rooms": rooms})) == {"ok": True, "rooms": rooms}


# ---------------------------------------------------------------- subscribe refused


@pytest.mark.parametrize("claims,room", [
    ({"projects": ["mine"]}, "project:theirs"),
    ({}, "project:1"),
    ({"agents": ["a1"]}, "agent:a2"),
    ({"projects": "*"}, "agent:a1"),
    ({"sub": "alice"}, "user:bob"),
])
def test_subscribe_without_claim_is_forbidden(connect, claims, room):
    client = connect(claims)
    assert_error(client.call("subscribe", {"room": room}), "forbidden", room)


def test_forbidden_room_receives_nothing(server, connect):
    pid = unique("p")
    client = connect({"projects": ["other"]})
    assert_error(client.call("subscribe", {"room": f"project:{pid}"}), "forbidden", f"project:{pid}")
    event_id = publish_project_updated(server, pid)
    client.barrier()
    assert not got(client, event_id)


@pytest.mark.parametrize("room", [
    "", "project:", "project", "project:bad id", "project:a/b", "nope:1", "global:x",
    "PROJECT:1", "user:", "agent:" + "a" * 129, "project:1:2",
])
def test_invalid_room_names(connect, room):
    client = connect({"role": "admin"})
    assert_error(client.call("subscribe", {"room": room}), "invalid_room", room)


def test_id_of_128_chars_is_valid(connect):
    client = connect({"role": "admin"})
    room = "project:" + "a" * 128
    assert without_positions(client.call("subscribe", {"room": room})) == {"ok": True, "rooms": [room]}


def test_list_is_all_or_nothing(server, connect):
    allowed, denied = unique("ok"), unique("no")
    client = connect({"projects": [allowed]})
    ack = client.call("subscribe", {"rooms": [f"project:{allowed}", f"project:{denied}"]})
    assert_error(ack, "forbidden", f"project:{denied}")
    event_id = publish_project_updated(server, allowed)
    client.barrier()
    assert not got(client, event_id), "the allowed room of a refused list was joined"


def test_list_with_invalid_name_is_all_or_nothing(server, connect):
    allowed = unique("ok")
    client = connect({"projects": [allowed]})
    ack = client.call("subscribe", {"rooms": [f"project:{allowed}", "bogus"]})
    assert_error(ack, "invalid_room", "bogus")
    event_id = publish_project_updated(server, allowed)
    client.barrier()
    assert not got(client, event_id)


# ---------------------------------------------------------------- unsubscribe


def test_unsubscribe_stops_delivery(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    client.subscribe(f"project:{pid}")
    first = publish_project_updated(server, pid)
    client.wait_event("project.updated", lambda env: env["id"] == first)

    assert client.call("unsubscribe", {"room": f"project:{pid}"}) == {"ok": True, "rooms": [f"project:{pid}"]}
    second = publish_project_updated(server, pid)
    client.barrier()
    assert not got(client, second)


def test_unsubscribe_list_and_room_not_joined_is_ok(connect):
    client = connect({"projects": "*"})
    rooms = [f"project:{unique('p')}", f"project:{unique('p')}"]
    assert client.call("unsubscribe", {"rooms": rooms}) == {"ok": True, "rooms": rooms}


def test_unsubscribe_invalid_name(connect):
    client = connect({})
    assert_error(client.call("unsubscribe", {"room": "nope"}), "invalid_room", "nope")


def test_unsubscribe_then_resubscribe_receives_again(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    client.subscribe(f"project:{pid}")
    assert client.call("unsubscribe", {"room": f"project:{pid}"})["ok"] is True
    client.subscribe(f"project:{pid}")
    event_id = publish_project_updated(server, pid)
    client.wait_event("project.updated", lambda env: env["id"] == event_id)


# ---------------------------------------------------------------- ping


@pytest.mark.parametrize("payload", [None, {}, {"anything": 1}, "hello"])
def test_ping(connect, payload):
    client = connect({})
    ack = client.call("ping", payload)
    assert set(ack) == {"pong", "server_time"}
    assert ack["pong"] is True
    assert_rfc3339_millis_now(ack["server_time"])


# ---------------------------------------------------------------- malformed payloads


@pytest.mark.parametrize("command", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("payload", [
    "project:1",
    42,
    ["project:1"],
    None,
    {},
    {"room": 5},
    {"room": None},
    {"rooms": "project:1"},
    {"rooms": [1]},
    {"room": "project:1", "rooms": ["project:1"]},
], ids=lambda p: repr(p))
def test_malformed_payload_is_invalid_payload_and_socket_stays(server, connect, command, payload):
    pid = unique("p")
    client = connect({"projects": [pid]})
    ack = client.call(command, payload)
    assert isinstance(ack, dict) and ack.get("ok") is False, f"ack: {ack!r}"
    assert ack["error"]["code"] == "invalid_payload"
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
    # still connected and still served
    assert client.sio.connected
    client.subscribe(f"project:{pid}")
    event_id = publish_project_updated(server, pid)
    client.wait_event("project.updated", lambda env: env["id"] == event_id)


# ---------------------------------------------------------------- no ack -> `error` event


def test_failed_subscribe_without_ack_emits_error_event(connect):
    client = connect({"projects": ["mine"]})
    client.sio.emit("subscribe", {"room": "project:theirs"})
    err = client.wait_event("error")
    assert err["code"] == "forbidden"
    assert isinstance(err["message"], str) and err["message"]
    assert err["room"] == "project:theirs"
    assert client.sio.connected


def test_invalid_room_without_ack_emits_error_event(connect):
    client = connect({})
    client.sio.emit("subscribe", {"room": "nope:x"})
    err = client.wait_event("error")
    assert err["code"] == "invalid_room"
    assert err["room"] == "nope:x"


def test_malformed_payload_without_ack_emits_error_event(connect):
    client = connect({})
    client.sio.emit("subscribe", "project:1")
    err = client.wait_event("error")
    assert err["code"] == "invalid_payload"
    assert client.sio.connected
    assert client.call("ping")["pong"] is True


def test_successful_subscribe_without_ack_emits_no_error(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    client.sio.emit("subscribe", {"room": f"project:{pid}"})
    # Without an ack the client cannot know when the join took effect: publish until an
    # event arrives (each attempt waits briefly on the condition, all within one deadline).
    ids = []

    def delivered():
        ids.append(publish_project_updated(server, pid))
        try:
            return wait_for(lambda: any(got(client, i) for i in ids), timeout=0.2)
        except AssertionError:
            return None

    wait_for(delivered, message="a project.updated after a subscribe without ack")
    assert client.events("error") == []


def test_unknown_command_ack(connect):
    client = connect({})
    ack = client.call("frobnicate", {"x": 1})
    assert_error(ack, "unknown_command")
    assert client.sio.connected


def test_unknown_command_without_ack_emits_error_event(connect):
    client = connect({})
    client.sio.emit("frobnicate", {"x": 1})
    assert client.wait_event("error")["code"] == "unknown_command"


# ---------------------------------------------------------------- room limit


def test_too_many_rooms(server, connect):
    # limit 100 counts global and user:<sub>, so 98 more fit
    client = connect({"projects": "*"})
    fits = [f"project:{i}" for i in range(98)]
    assert without_positions(client.call("subscribe", {"rooms": fits})) == {"ok": True, "rooms": fits}
    ack = client.call("subscribe", {"room": "project:one-too-many"})
    assert_error(ack, "too_many_rooms", "project:one-too-many")

    # re-subscribing a room already joined does not count twice
    assert without_positions(client.call("subscribe", {"room": "project:0"})) == {"ok": True, "rooms": ["project:0"]}

    # free one slot; a list of two new rooms is still refused as a whole
    assert client.call("unsubscribe", {"room": "project:0"})["ok"] is True
    newcomer = unique("p")
    ack = client.call("subscribe", {"rooms": [f"project:{newcomer}", "project:another-one"]})
    assert ack.get("ok") is False and ack["error"]["code"] == "too_many_rooms", ack
    event_id = publish_project_updated(server, newcomer)
    client.barrier()
    assert not got(client, event_id), "part of a refused list was joined"

    # ... and the single freed slot can be used
    assert client.call("subscribe", {"room": f"project:{newcomer}"})["ok"] is True


# ---------------------------------------------------------------- tenant isolation


def test_same_project_room_in_two_tenants_is_isolated(server, connect):
    acme = connect({"tenant": "acme", "projects": ["1"]})
    globex = connect({"tenant": "globex", "projects": ["1"]})
    acme.subscribe("project:1")
    globex.subscribe("project:1")

    acme_id = publish_project_updated(server, "1", tenant="acme")
    globex_id = publish_project_updated(server, "1", tenant="globex")

    acme.wait_event("project.updated", lambda env: env["id"] == acme_id)
    globex.wait_event("project.updated", lambda env: env["id"] == globex_id)
    acme.barrier()
    globex.barrier()
    assert not got(acme, globex_id), "acme saw globex's project:1 event"
    assert not got(globex, acme_id), "globex saw acme's project:1 event"


def test_global_is_per_tenant(server, connect):
    acme = connect({"tenant": "acme"})
    globex = connect({"tenant": "globex"})
    default = connect({})
    title = unique("notice")
    sent = server.publish_ok("system.notification", {"title": title, "message": "hi"}, tenant="acme")
    env = acme.wait_event("system.notification", lambda e: e["id"] == sent["id"])
    assert env["room"] == "global"
    for other in (globex, default):
        other.barrier()
        assert not other.matching("system.notification", lambda e: e["data"]["title"] == title)


def test_publish_without_tenant_goes_to_default_tenant(server, connect):
    default = connect({"projects": ["1"]})
    acme = connect({"tenant": "acme", "projects": ["1"]})
    default.subscribe("project:1")
    acme.subscribe("project:1")
    event_id = publish_project_updated(server, "1")
    default.wait_event("project.updated", lambda env: env["id"] == event_id)
    acme.barrier()
    assert not got(acme, event_id)


def test_admin_cannot_reach_another_tenant(server, connect):
    admin = connect({"tenant": "acme", "role": "admin"})
    pid = unique("p")
    admin.subscribe(f"project:{pid}")
    event_id = publish_project_updated(server, pid, tenant="globex")
    admin.barrier()
    assert not got(admin, event_id)


def test_user_room_is_per_tenant(server, connect):
    sub = unique("same-user")
    acme = connect({"sub": sub, "tenant": "acme"})
    globex = connect({"sub": sub, "tenant": "globex"})
    r = server.broadcast("note.sent", {"n": 1}, room=f"user:{sub}", tenant="acme")
    assert r.status_code == 202, r.text
    acme.wait_event("note.sent", lambda env: env["id"] == r.json()["id"])
    globex.barrier()
    assert not globex.events("note.sent")
