"""Cluster history with python-socketio: a client that leaves one node recovers at another.

Two Roomcast nodes share a redis-server (the `cluster` fixture). A client on node A receives
events, disconnects, misses events published at node B, and reconnects at node B with
`auth.since`: it gets exactly the missed events, in `seq` order, then live ones, and
`connection.established` reports `recovered: true` (WEBSOCKET_API.md section 11).
"""

from conftest import open_client, unique, wait_for

RECOVERY_TIMEOUT_S = 10.0


def updated(node, project, label):
    """Publishes project.updated at `node` (asserts 202); returns the accepted id."""
    return node.publish_ok("project.updated", {"project_id": project, "status": label})["id"]


def sessions(client, event):
    """The client's recorded `event` payloads, split per connection (one list per
    connection.established, in order)."""
    out: list[list] = []
    with client._lock:
        recorded = list(client._events)
    for ns, name, args in recorded:
        if ns != "/":
            continue
        if name == "connection.established":
            out.append([])
        elif name == event and out:
            out[-1].append(args[0])
    return out


def test_reconnect_at_another_node_with_since_replays_the_missed_events_in_order(cluster):
    node_a, node_b = cluster.nodes
    pid = unique("p")
    sub = unique("u")
    room = f"project:{pid}"
    token = node_a.mint_token(sub=sub, projects=[pid])

    client, exc = open_client(node_a, token=token, claims={"sub": sub}, transports=["websocket"])
    try:
        assert exc is None, f"connect to {node_a.node_id} failed: {exc!r} {client.connect_errors}"
        first = client.established()
        assert first["node_id"] == node_a.node_id, first
        client.subscribe(room)

        # Live on A, published at both nodes.
        seen = [updated(node_a, pid, "a-1"), updated(node_b, pid, "b-1"), updated(node_a, pid, "a-2")]
        wait_for(lambda: len(client.events("project.updated")) == 3, RECOVERY_TIMEOUT_S,
                 message="the first 3 events on A")
        got = client.events("project.updated")
        assert [e["id"] for e in got] == seen
        assert [e["seq"] for e in got] == [1, 2, 3]
        cursor = {"epoch": got[-1]["epoch"], "seq": got[-1]["seq"]}

        # Away: events published at B meanwhile.
        client.sio.disconnect()
        wait_for(lambda: not client.sio.connected, message="the disconnect")
        missed = [updated(node_b, pid, f"missed-{n}") for n in range(1, 6)]

        # The same client comes back, at B, with its cursor.
        client.sio.connect(node_b.url, auth={"token": token, "since": {room: cursor}},
                           transports=["websocket"], namespaces=["/"], wait_timeout=5)
        wait_for(lambda: len(client.events("connection.established")) == 2, RECOVERY_TIMEOUT_S,
                 message="connection.established of the reconnection")
        again = client.events("connection.established")[1]
        assert again["node_id"] == node_b.node_id, again
        assert again["recovered"] is True, again
        assert again["recovery"] == {room: {"replayed": 5, "epoch": cursor["epoch"], "seq": 8}}, again
        assert room in again["rooms"], again

        # A live event after the replay, published at the other node.
        live = updated(node_a, pid, "live-1")
        wait_for(lambda: len(sessions(client, "project.updated")[1]) == 6, RECOVERY_TIMEOUT_S,
                 message=f"the replay and the live event (got {sessions(client, 'project.updated')[1]})")
        client.barrier()

        before, after = sessions(client, "project.updated")
        assert [e["id"] for e in before] == seen
        assert [e["id"] for e in after] == missed + [live], "exactly the missed events, in order, then the live one"
        assert [e["seq"] for e in after] == [4, 5, 6, 7, 8, 9]
        assert {e["epoch"] for e in before + after} == {cursor["epoch"]}
        assert [e["data"]["status"] for e in after] == [f"missed-{n}" for n in range(1, 6)] + ["live-1"]
        for e in after:
            assert e["room"] == room and e["type"] == "project.updated", e
    finally:
        client.disconnect()
