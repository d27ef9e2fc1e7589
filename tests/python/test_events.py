"""Typed events: each type published over POST /api/v1/events reaches exactly the
sockets of its room (in its tenant) as a Socket.IO event named after the type,
with the full envelope, and does not reach a same-tenant socket in another room."""

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from conftest import assert_envelope, assert_uuid7, unique, uuid7_millis

ID_FIELDS = {"project_id", "agent_id", "user_id", "workflow_id", "suggestion_id", "analysis_id"}


def numeric_id() -> int:
    return random.randint(10**9, 10**12)


def normalized(data: dict) -> dict:
    """What the server must deliver: the payload as sent, with ids as strings."""
    return {k: (str(v) if k in ID_FIELDS else v) for k, v in data.items()}


@dataclass
class Case:
    """One typed event: its payload (built from fresh ids) and where it must go."""
    name: str
    type: str
    build: Callable[[dict], dict]
    room: Callable[[dict], str]
    also: Callable[[dict], list] = field(default=lambda ids: [])

    def __repr__(self) -> str:
        return self.name


def project_room(ids):
    return f"project:{ids['pid']}"


def agent_room(ids):
    return f"agent:{ids['aid']}"


CASES = [
    Case("project.updated/full", "project.updated", lambda i: {
        "project_id": i["pid"], "project_name": "Roomcast", "status": "active",
        "updated_by": "alice", "repository_url": "https://example.com/acme/roomcast",
        "changes": {"status": {"from": "draft", "to": "active"}, "tags": ["a", "b"]},
    }, project_room),
    Case("project.updated/minimal", "project.updated", lambda i: {"project_id": i["pid"]}, project_room),
    Case("project.deleted", "project.deleted",
         lambda i: {"project_id": i["pid"], "deleted_by": "alice"}, project_room),
    Case("agent.status_changed/with-project", "agent.status_changed", lambda i: {
        "agent_id": i["aid"], "status": "busy", "previous_status": "idle", "project_id": i["pid"],
    }, agent_room, lambda i: [project_room(i)]),
    Case("agent.status_changed/agent-only", "agent.status_changed",
         lambda i: {"agent_id": i["aid"], "status": "idle"}, agent_room),
    Case("agent.connected", "agent.connected",
         lambda i: {"agent_id": i["aid"], "project_id": i["pid"]}, agent_room, lambda i: [project_room(i)]),
    Case("agent.disconnected", "agent.disconnected",
         lambda i: {"agent_id": i["aid"], "project_id": i["pid"], "reason": "shutdown"},
         agent_room, lambda i: [project_room(i)]),
    Case("workflow.started", "workflow.started",
         lambda i: {"workflow_id": i["wid"], "project_id": i["pid"]}, project_room),
    Case("workflow.progress", "workflow.progress", lambda i: {
        "workflow_id": i["wid"], "project_id": i["pid"], "progress": 40,
        "step": "build", "message": "compiling", "eta_seconds": 30,
    }, project_room),
    Case("workflow.progress/bounds-0", "workflow.progress",
         lambda i: {"workflow_id": i["wid"], "project_id": i["pid"], "progress": 0}, project_room),
    Case("workflow.progress/bounds-100", "workflow.progress",
         lambda i: {"workflow_id": i["wid"], "project_id": i["pid"], "progress": 100}, project_room),
    Case("workflow.completed", "workflow.completed", lambda i: {
        "workflow_id": i["wid"], "project_id": i["pid"],
        "result": {"artifacts": ["a.tar.gz"], "ok": True}, "duration_ms": 1234,
    }, project_room),
    Case("workflow.failed", "workflow.failed",
         lambda i: {"workflow_id": i["wid"], "project_id": i["pid"], "error": "tests failed"},
         project_room),
    *[Case(t, t, lambda i: {
        "project_id": i["pid"], "number": 7, "title": "Add rooms", "url": "https://example.com/pr/7",
        "author": "alice", "state": "open", "merged": False,
    }, project_room) for t in ("pr.created", "pr.updated", "pr.closed")],
    *[Case(t, t, lambda i: {
        "project_id": i["pid"], "number": 12, "title": "Bug", "url": "https://example.com/issues/12",
        "author": "bob", "state": "open",
    }, project_room) for t in ("issue.created", "issue.updated", "issue.closed")],
    Case("pr.created/minimal", "pr.created",
         lambda i: {"project_id": i["pid"], "number": 1, "title": "t"}, project_room),
    Case("ai.suggestion/user", "ai.suggestion", lambda i: {
        "suggestion_id": i["sid"], "content": "Use a HashMap", "title": "Perf", "kind": "refactor",
        "user_id": i["uid"], "project_id": i["pid"],
    }, lambda i: f"user:{i['uid']}"),
    Case("ai.suggestion/project", "ai.suggestion",
         lambda i: {"suggestion_id": i["sid"], "content": "Split module", "project_id": i["pid"]},
         project_room),
    Case("ai.analysis_complete", "ai.analysis_complete",
         lambda i: {"analysis_id": i["anid"], "project_id": i["pid"], "summary": "3 findings"},
         project_room),
    Case("system.notification", "system.notification",
         lambda i: {"title": "Maintenance", "message": "at 22:00", "severity": "warning"},
         lambda i: "global"),
]


def fresh_ids() -> dict:
    return {
        # numeric ids on the wire check the "numbers become strings" rule
        "pid": numeric_id(), "wid": numeric_id(), "anid": numeric_id(),
        "aid": unique("agent"), "sid": unique("sugg"), "uid": unique("user"),
    }


def receiver_claims(ids: dict, tenant: str) -> dict:
    return {"sub": str(ids["uid"]), "tenant": tenant,
            "projects": [str(ids["pid"])], "agents": [ids["aid"]]}


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_typed_event_routed_to_its_room_with_full_envelope(server, connect, case):
    ids = fresh_ids()
    tenant = unique("tenant")
    data = case.build(ids)
    room = case.room(ids)
    rooms = [room, *case.also(ids)]

    receiver = connect(receiver_claims(ids, tenant))
    joinable = [r for r in rooms if r.startswith(("project:", "agent:"))]
    if joinable:
        receiver.subscribe(*joinable)

    # Same tenant, another user, member of *other* project/agent rooms.
    bystander = connect({"tenant": tenant, "projects": "*", "agents": "*"})
    if room != "global":
        bystander.subscribe(f"project:{numeric_id()}", f"agent:{unique('agent')}")
    # For `global`, every socket of the tenant is a member: the bystander lives in another tenant.
    outsider = connect({"tenant": unique("other"), "projects": "*", "agents": "*"})
    outsider.subscribe(f"project:{ids['pid']}", f"agent:{ids['aid']}")

    r = server.publish(case.type, data, tenant=tenant)
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"id", "type", "room", "rooms", "tenant"}
    assert_uuid7(body["id"])
    assert body["type"] == case.type
    assert body["room"] == room
    assert body["rooms"] == rooms
    assert body["tenant"] == tenant

    env = receiver.wait_event(case.type, lambda e: e["id"] == body["id"])
    assert_envelope(env, type_=case.type, room=room, data=normalized(data))

    for other in (bystander, outsider) if room != "global" else (outsider,):
        other.barrier()
        assert not other.matching(case.type, lambda e: e["id"] == body["id"]), \
            f"{case.type} leaked to a socket outside {room}"


def test_string_ids_are_delivered_unchanged(server, connect):
    pid = unique("proj.v2_x")
    client = connect({"projects": [pid]})
    client.subscribe(f"project:{pid}")
    sent = server.publish_ok("project.updated", {"project_id": pid, "status": "x"})
    env = client.wait_event("project.updated", lambda e: e["id"] == sent["id"])
    assert env["data"] == {"project_id": pid, "status": "x"}


@pytest.mark.parametrize("type_", ["agent.status_changed", "agent.connected", "agent.disconnected"])
def test_agent_event_with_project_reaches_both_rooms_once(server, connect, type_):
    pid, aid = unique("p"), unique("a")
    agent_only = connect({"agents": [aid]})
    agent_only.subscribe(f"agent:{aid}")
    project_only = connect({"projects": [pid]})
    project_only.subscribe(f"project:{pid}")
    both = connect({"projects": [pid], "agents": [aid]})
    both.subscribe(f"agent:{aid}", f"project:{pid}")

    data = {"agent_id": aid, "project_id": pid}
    if type_ == "agent.status_changed":
        data["status"] = "busy"
    sent = server.publish_ok(type_, data)

    for client in (agent_only, project_only, both):
        env = client.wait_event(type_, lambda e: e["id"] == sent["id"])
        assert env["room"] == f"agent:{aid}"
    both.barrier()
    assert len(both.matching(type_, lambda e: e["id"] == sent["id"])) == 1, "delivered twice"


def test_agent_event_without_project_skips_project_rooms(server, connect):
    pid, aid = unique("p"), unique("a")
    project_member = connect({"projects": [pid]})
    project_member.subscribe(f"project:{pid}")
    agent_member = connect({"agents": [aid]})
    agent_member.subscribe(f"agent:{aid}")
    sent = server.publish_ok("agent.connected", {"agent_id": aid})
    assert sent["rooms"] == [f"agent:{aid}"]
    agent_member.wait_event("agent.connected", lambda e: e["id"] == sent["id"])
    project_member.barrier()
    assert not project_member.matching("agent.connected", lambda e: e["id"] == sent["id"])


def test_ai_suggestion_for_user_not_sent_to_project(server, connect):
    pid, uid = unique("p"), unique("u")
    user = connect({"sub": uid})
    project_member = connect({"projects": [pid]})
    project_member.subscribe(f"project:{pid}")
    sent = server.publish_ok("ai.suggestion", {"suggestion_id": "s1", "content": "c",
                                               "user_id": uid, "project_id": pid})
    assert sent["rooms"] == [f"user:{uid}"]
    user.wait_event("ai.suggestion", lambda e: e["id"] == sent["id"])
    project_member.barrier()
    assert not project_member.matching("ai.suggestion", lambda e: e["id"] == sent["id"])


def test_user_room_reaches_every_socket_of_that_user(server, connect):
    uid = unique("u")
    first, second = connect({"sub": uid}), connect({"sub": uid})
    sent = server.publish_ok("ai.suggestion", {"suggestion_id": "s", "content": "c", "user_id": uid})
    for client in (first, second):
        client.wait_event("ai.suggestion", lambda e: e["id"] == sent["id"])


def test_ids_are_time_ordered_and_distinct(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    client.subscribe(f"project:{pid}")
    sent = [server.publish_ok("project.updated", {"project_id": pid, "status": str(n)})["id"]
            for n in range(5)]
    assert len(set(sent)) == 5
    millis = [uuid7_millis(i) for i in sent]
    assert millis == sorted(millis), f"UUIDv7 timestamps not non-decreasing: {sent}"
    for event_id in sent:
        client.wait_event("project.updated", lambda e, i=event_id: e["id"] == i)
    delivered = [e["id"] for e in client.events("project.updated")]
    assert delivered == sent, "events of one room arrived out of publish order"


# ---------------------------------------------------------------- payload validation


def assert_invalid(r, field_name):
    assert r.status_code == 422, f"{r.status_code} {r.text}"
    err = r.json()["error"]
    assert err["code"] == "invalid_payload"
    assert err["field"] == field_name, err
    assert isinstance(err["message"], str) and err["message"]


REQUIRED = {
    "project.updated": {"project_id": "1"},
    "project.deleted": {"project_id": "1"},
    "agent.status_changed": {"agent_id": "a1", "status": "busy"},
    "agent.connected": {"agent_id": "a1"},
    "agent.disconnected": {"agent_id": "a1"},
    "workflow.started": {"workflow_id": "w", "project_id": "1"},
    "workflow.progress": {"workflow_id": "w", "project_id": "1", "progress": 5},
    "workflow.completed": {"workflow_id": "w", "project_id": "1"},
    "workflow.failed": {"workflow_id": "w", "project_id": "1", "error": "e"},
    "pr.created": {"project_id": "1", "number": 1, "title": "t"},
    "pr.updated": {"project_id": "1", "number": 1, "title": "t"},
    "pr.closed": {"project_id": "1", "number": 1, "title": "t"},
    "issue.created": {"project_id": "1", "number": 1, "title": "t"},
    "issue.updated": {"project_id": "1", "number": 1, "title": "t"},
    "issue.closed": {"project_id": "1", "number": 1, "title": "t"},
    "ai.suggestion": {"suggestion_id": "s", "content": "c", "user_id": "u"},
    "ai.analysis_complete": {"analysis_id": "an", "project_id": "1", "summary": "s"},
    "system.notification": {"title": "t", "message": "m"},
    "task.started": {"task_id": "t", "project_id": "1", "name": "n"},
    "task.progress": {"task_id": "t", "project_id": "1", "current": 1},
    "task.completed": {"task_id": "t", "project_id": "1"},
    "task.failed": {"task_id": "t", "project_id": "1", "error": "e"},
}


@pytest.mark.parametrize("type_,data", REQUIRED.items(), ids=list(REQUIRED))
def test_minimal_payload_accepted(server, type_, data):
    assert server.publish(type_, data).status_code == 202


@pytest.mark.parametrize("type_,missing", [
    (t, f) for t, d in REQUIRED.items() for f in d if not (t == "ai.suggestion" and f == "user_id")
], ids=lambda v: v)
def test_missing_required_field(server, type_, missing):
    data = {k: v for k, v in REQUIRED[type_].items() if k != missing}
    assert_invalid(server.publish(type_, data), missing)


@pytest.mark.parametrize("type_,field_name,value", [
    ("project.updated", "project_id", True),
    ("project.updated", "project_id", {"id": 1}),
    ("project.updated", "project_id", "bad id"),
    ("project.updated", "project_id", ""),
    ("project.updated", "project_id", "x" * 129),
    ("project.updated", "project_name", 5),
    ("project.updated", "changes", "not an object"),
    ("agent.connected", "agent_id", "a/b"),
    ("pr.created", "number", "seven"),
    ("pr.created", "number", -1),
    ("pr.created", "merged", "yes"),
    ("workflow.progress", "progress", 101),
    ("workflow.progress", "progress", -1),
    ("workflow.progress", "progress", 50.5),
    ("workflow.progress", "progress", "50"),
    ("system.notification", "severity", "loud"),
    ("ai.suggestion", "user_id", "has space"),
], ids=lambda v: repr(v)[:40])
def test_mistyped_field(server, type_, field_name, value):
    data = {**REQUIRED[type_], field_name: value}
    assert_invalid(server.publish(type_, data), field_name)


def test_unknown_field_is_rejected_with_its_name(server):
    r = server.publish("project.updated", {"project_id": "1", "colour": "red"})
    assert_invalid(r, "colour")


def test_ai_suggestion_without_user_or_project(server):
    r = server.publish("ai.suggestion", {"suggestion_id": "s", "content": "c"})
    assert_invalid(r, "user_id")


@pytest.mark.parametrize("severity", ["info", "warning", "error", "critical"])
def test_each_severity_accepted(server, severity):
    r = server.publish("system.notification", {"title": "t", "message": "m", "severity": severity})
    assert r.status_code == 202, r.text


def test_rejected_event_is_not_delivered(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    client.subscribe(f"project:{pid}")
    marker = unique("wf")
    r = server.publish("workflow.progress", {"workflow_id": marker, "project_id": pid, "progress": 101})
    assert r.status_code == 422
    client.barrier()
    assert not client.events("workflow.progress")
