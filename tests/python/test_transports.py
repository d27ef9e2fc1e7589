"""Transports and namespaces: polling only, websocket only, the default polling ->
websocket upgrade, and the `/ws` namespace that mirrors `/`."""

import pytest

from conftest import unique, without_positions


def round_trip(server, client, namespace="/"):
    """Greeting, a subscribe ack, a published event and a ping all work."""
    est = client.established(namespace)
    assert est["user_id"] == client.sub
    pid = client.pid
    ack = client.call("subscribe", {"room": f"project:{pid}"}, namespace=namespace)
    assert without_positions(ack) == {"ok": True, "rooms": [f"project:{pid}"]}
    sent = server.publish_ok("project.updated", {"project_id": pid, "status": "green"})
    env = client.wait_event("project.updated", lambda e: e["id"] == sent["id"], namespace=namespace)
    assert env["room"] == f"project:{pid}"
    assert env["data"] == {"project_id": pid, "status": "green"}
    assert client.call("ping", namespace=namespace)["pong"] is True


def make(connect, **kw):
    pid = unique("p")
    client = connect({"projects": [pid]}, **kw)
    client.pid = pid
    return client


def test_polling_only(server, connect):
    client = make(connect, transports=["polling"])
    assert client.sio.transport() == "polling"
    round_trip(server, client)
    assert client.sio.transport() == "polling"


def test_websocket_only(server, connect):
    client = make(connect, transports=["websocket"])
    assert client.sio.transport() == "websocket"
    round_trip(server, client)


def test_default_upgrades_to_websocket(server, connect):
    # python-socketio's default, named: the suite's lean run would open a websocket at once.
    client = make(connect, transports=["polling", "websocket"])
    # python-socketio opens with polling and upgrades during connect() when the
    # server advertises it.
    assert client.sio.eio.upgrades == ["websocket"]
    assert client.sio.transport() == "websocket"
    round_trip(server, client)


@pytest.mark.parametrize("via", ["auth", "header", "query"])
@pytest.mark.parametrize("transports", [["polling"], ["websocket"]], ids=["polling", "websocket"])
def test_token_locations_on_each_transport(connect, via, transports):
    client = connect({"sub": unique("u")}, via=via, transports=transports)
    assert client.established()["user_id"] == client.sub


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], None], ids=["polling", "websocket", "default"])
def test_ws_namespace(server, connect, transports):
    client = make(connect, namespaces=["/ws"], transports=transports)
    est = client.established("/ws")
    assert est["sid"] == client.sio.get_sid("/ws")
    assert sorted(est["rooms"]) == sorted(["global", f"user:{client.sub}"])
    round_trip(server, client, namespace="/ws")


def test_ws_namespace_subscribe_is_checked(connect):
    client = connect({"projects": ["mine"]}, namespaces=["/ws"])
    ack = client.call("subscribe", {"room": "project:theirs"}, namespace="/ws")
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"


def test_publish_reaches_both_namespaces(server, connect):
    pid = unique("p")
    main = connect({"projects": [pid]})
    legacy = connect({"projects": [pid]}, namespaces=["/ws"])
    main.subscribe(f"project:{pid}")
    legacy.subscribe(f"project:{pid}", namespace="/ws")
    sent = server.publish_ok("project.updated", {"project_id": pid})
    main.wait_event("project.updated", lambda e: e["id"] == sent["id"], namespace="/")
    legacy.wait_event("project.updated", lambda e: e["id"] == sent["id"], namespace="/ws")


def test_rooms_are_per_namespace_socket(server, connect):
    """One client on both namespaces: joining on /ws does not join on /."""
    pid = unique("p")
    # One Engine.IO connection for both: the lean path serves one namespace per websocket
    # (WEBSOCKET_API.md section 18), so this multiplexing runs on socketioxide's sessions.
    client = connect({"projects": [pid]}, namespaces=["/", "/ws"], transports=["polling", "websocket"])
    client.subscribe(f"project:{pid}", namespace="/ws")
    sent = server.publish_ok("project.updated", {"project_id": pid})
    client.wait_event("project.updated", lambda e: e["id"] == sent["id"], namespace="/ws")
    client.barrier(namespace="/")
    assert not client.matching("project.updated", lambda e: e["id"] == sent["id"], namespace="/")
