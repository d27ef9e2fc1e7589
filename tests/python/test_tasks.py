"""Tasks with progress and ETA (WEBSOCKET_API.md 5.15c, 5.15d) seen by python-socketio.

A backend reports a task of 100 units in 10 steady steps over HTTP; every socket of the
project room receives `task.progress` with `percent` exact, `rate_per_sec` within the rate
this test observed, and `eta_ms` = what is left at that rate, coming down to 0; then
`task.completed` with its `duration_ms`. The envelopes also parse into the client package's
models (`roomcast_client.TaskProgress`). On one node, and on a two-node cluster where the task
starts at one node and its progress alternates between the two.

The expected rate comes from the instants this test observed: the server timed each event
between the moment its request was sent and the moment the answer came, so the bounds hold
however slow the machine is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from roomcast_client import TaskCompleted, TaskProgress, parse_envelope

from conftest import open_client, unique

TOTAL = 100.0
STEPS = 10
#: The publisher's pace between two progress events.
PACE_S = 0.1
#: The rate's half-life (src/tasks/mod.rs): the oldest sample here weighs at least
#: 2^(-elapsed / half-life).
HALF_LIFE_MS = 10_000.0


@dataclass
class Span:
    """When a request was sent and when its answer came (ms): the server handled it between."""

    sent: float
    answered: float


def now_ms() -> float:
    return time.monotonic() * 1000.0


def published(node, type_, data) -> tuple[str, Span]:
    sent = now_ms()
    accepted = node.publish_ok(type_, data)
    return accepted["id"], Span(sent, now_ms())


def viewer(node, project):
    client, exc = open_client(node, claims={"sub": unique("u"), "projects": [project]})
    assert exc is None, f"connect to {node.node_id}: {exc!r} {client.connect_errors}"
    client.subscribe(f"project:{project}")
    return client


def received_by_all(clients, type_, event_id, room):
    """The envelope `event_id` at every client: the same `data` everywhere; returns one."""
    envelopes = [c.wait_event(type_, lambda env: env["id"] == event_id) for c in clients]
    for env in envelopes:
        assert env["room"] == room
        assert env["data"] == envelopes[0]["data"], "every viewer gets the same data"
    return envelopes[0]


def rate_bounds(start: Span, progress: Span, current: float) -> tuple[float, float]:
    """The rate the server may have computed at `current`: the time between its two instants
    is at least `progress.sent - start.answered` and at most `progress.answered - start.sent`
    (± 1 ms of its clock each), the samples' weights differ by at most 2^(-elapsed/half-life),
    the rate has 4 significant digits, and 2 % covers the server's wall clock against ours."""
    shortest = progress.sent - start.answered - 2
    longest = progress.answered - start.sent + 2
    assert shortest > 0, "the pace keeps events apart"
    weight = 2 ** (-longest / HALF_LIFE_MS)
    return weight * current / longest * 1000 * 0.98, current / shortest * 1000 / weight * 1.02


def steady_task(nodes, clients, project, task_id):
    room = f"project:{project}"

    def at(i):
        return nodes[i % len(nodes)]

    event_id, start = published(at(0), "task.started",
                                {"task_id": task_id, "project_id": project, "name": "index",
                                 "total": TOTAL})
    env = received_by_all(clients, "task.started", event_id, room)
    assert env["data"] == {"task_id": task_id, "project_id": project, "name": "index",
                           "total": TOTAL}

    etas = []
    for i in range(1, STEPS + 1):
        time.sleep(PACE_S)
        current = i * TOTAL / STEPS
        # No total: the server fills in the one task.started gave (possibly at the other node).
        event_id, span = published(at(i), "task.progress",
                                   {"task_id": task_id, "project_id": project,
                                    "current": current, "step": f"step {i}"})
        env = received_by_all(clients, "task.progress", event_id, room)
        progress = parse_envelope(env).data
        what = f"progress {i}: {env['data']}"
        assert isinstance(progress, TaskProgress), what
        assert progress.current == current, what
        assert progress.total == TOTAL, what
        assert progress.step == f"step {i}", what
        assert progress.percent == current * 100 / TOTAL, what
        assert progress.rate_per_sec is not None, what
        low, high = rate_bounds(start, span, current)
        assert low <= progress.rate_per_sec <= high, (
            f"{what}: rate {progress.rate_per_sec} not within the observed {low:.1f}..{high:.1f}")
        assert isinstance(progress.eta_ms, int), what
        left = TOTAL - current
        assert abs(progress.eta_ms - left / progress.rate_per_sec * 1000) <= 1, (
            f"{what}: eta is what is left at the rate")
        assert left / high * 1000 - 1 <= progress.eta_ms <= left / low * 1000 + 1, (
            f"{what}: eta not within the observed bounds")
        etas.append(progress.eta_ms)
    assert etas[-1] == 0, "done: nothing left"
    assert etas[-2] < etas[0], f"the ETA comes down: {etas}"

    event_id, end = published(at(STEPS + 1), "task.completed",
                              {"task_id": task_id, "project_id": project,
                               "result": {"files": 100}})
    done = parse_envelope(received_by_all(clients, "task.completed", event_id, room)).data
    assert isinstance(done, TaskCompleted)
    assert done.result == {"files": 100}
    shortest = end.sent - start.answered - 2
    longest = end.answered - start.sent + 2
    assert done.duration_ms is not None
    assert shortest * 0.98 <= done.duration_ms <= longest * 1.02, (
        f"duration {done.duration_ms} not within {shortest}..{longest}")


def test_one_node_steady_progress_has_percent_rate_and_eta(server):
    project = unique("p")
    clients = [viewer(server, project), viewer(server, project)]
    try:
        steady_task([server], clients, project, unique("t"))
    finally:
        for c in clients:
            c.disconnect()


def test_a_publisher_may_not_set_the_servers_fields(server):
    for type_, data, field in [
        ("task.progress", {"task_id": "x", "project_id": "1", "current": 1, "percent": 5}, "percent"),
        ("task.progress", {"task_id": "x", "project_id": "1", "current": 1, "rate_per_sec": 1},
         "rate_per_sec"),
        ("task.progress", {"task_id": "x", "project_id": "1", "current": 1, "eta_ms": 1}, "eta_ms"),
        ("task.failed", {"task_id": "x", "project_id": "1", "error": "e", "duration_ms": 1},
         "duration_ms"),
    ]:
        r = server.publish(type_, data)
        assert r.status_code == 422, f"{type_} {data}: {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "invalid_payload"
        assert r.json()["error"]["field"] == field


def test_cluster_progress_alternating_between_nodes_is_computed_from_one_history(cluster):
    node_a, node_b = cluster.nodes
    project = unique("p")
    clients = [viewer(node_a, project), viewer(node_b, project)]
    try:
        steady_task([node_a, node_b], clients, project, unique("t"))
    finally:
        for c in clients:
            c.disconnect()
