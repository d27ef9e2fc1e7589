"""Issue 4 with python-socketio: recovery with `since`, token refresh, idempotent publish."""

import requests

from conftest import API_KEY, unique, wait_for


def progress(server, project, n):
    return server.publish_ok("workflow.progress",
                             {"workflow_id": "w", "project_id": project, "progress": n})


def test_reconnect_with_since_replays_the_missed_events_in_order(server, connect):
    pid = unique("p")
    sub = unique("u")
    first = connect({"sub": sub, "projects": [pid]})
    first.subscribe(f"project:{pid}")
    progress(server, pid, 1)
    env = first.wait_event("workflow.progress")
    cursor = {"epoch": env["epoch"], "seq": env["seq"]}
    first.sio.disconnect()

    missed = [progress(server, pid, n)["id"] for n in (2, 3, 4)]
    token = server.mint_token(sub=sub, projects=[pid])
    again = connect({"sub": sub, "projects": [pid]},
                    auth={"token": token, "since": {f"project:{pid}": cursor}})
    est = again.established()
    assert est["recovered"] is True, est
    assert est["recovery"][f"project:{pid}"]["replayed"] == 3
    live = progress(server, pid, 5)["id"]
    wait_for(lambda: len(again.events("workflow.progress")) == 4, message="replay and live")
    got = again.events("workflow.progress")
    assert [e["id"] for e in got] == missed + [live]
    assert [e["seq"] for e in got] == [2, 3, 4, 5]


def test_auth_refresh_keeps_the_user_and_tenant(server, connect):
    sub = unique("u")
    client = connect({"sub": sub})
    client.established()
    ack = client.call("auth.refresh", {"token": server.mint_token(sub=sub, exp_in=7200)})
    assert ack["ok"] is True and ack["expires_at"].endswith("Z"), ack
    ack = client.call("auth.refresh", {"token": server.mint_token(sub=unique("other"))})
    assert ack["error"]["code"] == "refresh_mismatch"


def test_idempotency_key_publishes_once(server, connect):
    pid = unique("p")
    client = connect({"projects": [pid]})
    client.subscribe(f"project:{pid}")
    body = {"type": "project.deleted", "data": {"project_id": pid}}
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": unique("k")}
    r1 = requests.post(f"{server.url}/api/v1/events", json=body, headers=headers, timeout=5)
    r2 = requests.post(f"{server.url}/api/v1/events", json=body, headers=headers, timeout=5)
    assert (r1.status_code, r2.status_code) == (202, 202)
    assert r1.json() == r2.json()
    assert r2.headers.get("Idempotent-Replayed") == "true"
    wait_for(lambda: client.events("project.deleted"), message="the delivery")
    client.barrier()
    assert len(client.events("project.deleted")) == 1
