//! No event lost on reconnect: per-room `seq` and `epoch`, replay of what was missed with
//! `auth.since`, gaps reported honestly, history on demand, volatile events kept out.

mod common;

use common::*;
use serde_json::{Value, json};

async fn admin(server: &TestServer, auth: Value) -> Client {
    let mut c = claims("w");
    c.role = Some("admin".into());
    let mut auth = auth;
    auth["token"] = json!(token(&c));
    Client::connect(server.addr, Auth::Payload(auth))
        .await
        .unwrap()
}

async fn publish(server: &TestServer, project: &str, n: u64) -> Value {
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "workflow.progress", "data": {"workflow_id": "w", "project_id": project, "progress": n}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

#[tokio::test]
async fn events_are_numbered_per_room() {
    let server = TestServer::start().await;
    let mut c = admin(&server, json!({})).await;
    c.emit_with_ack(
        "subscribe",
        json!({"rooms": ["project:1", "project:2", "agent:a"]}),
    )
    .await;
    for n in 0..3 {
        publish(&server, "1", n).await;
    }
    publish(&server, "2", 0).await;
    let mut epoch = None;
    for want in 1..=3 {
        let e = c.event("workflow.progress").await;
        if e["room"] != "project:1" {
            assert_eq!(e["room"], "project:2");
            assert_eq!(e["seq"], 1);
            continue;
        }
        assert_eq!(e["seq"], want);
        epoch.get_or_insert(e["epoch"].clone());
        assert_eq!(Some(&e["epoch"]), epoch.as_ref());
    }
    // An agent event with a project is numbered in both rooms.
    server
        .post(
            "/api/v1/events",
            json!({"type": "agent.connected", "data": {"agent_id": "a", "project_id": "1"}}),
        )
        .await;
    let e = c.event("agent.connected").await;
    assert_eq!(
        (e["room"].as_str(), e["seq"].as_u64()),
        (Some("agent:a"), Some(1))
    );
    assert_eq!(e["also"][0]["room"], "project:1");
    assert_eq!(e["also"][0]["seq"], 4);
    assert_eq!(e["also"][0]["epoch"], epoch.unwrap());
}

#[tokio::test]
async fn a_reconnect_replays_exactly_what_was_missed_before_live_events() {
    let server = TestServer::start().await;
    let mut c = admin(&server, json!({})).await;
    c.subscribe("project:1").await;
    publish(&server, "1", 1).await;
    let last = c.event("workflow.progress").await;
    drop(c); // the transport dies: a train tunnel

    let mut missed = Vec::new();
    for n in 2..=4 {
        missed.push(publish(&server, "1", n).await["id"].clone());
    }
    let since = json!({"since": {"project:1": {"epoch": last["epoch"], "seq": last["seq"]}}});
    let mut c = admin(&server, since).await;
    let e = &c.established;
    assert_eq!(e["recovered"], true, "{e}");
    assert_eq!(e["recovery"]["project:1"]["replayed"], 3);
    assert_eq!(e["recovery"]["project:1"]["seq"], 4);
    assert!(e["rooms"].as_array().unwrap().contains(&json!("project:1")));
    let live = publish(&server, "1", 5).await;
    for (i, id) in missed.iter().enumerate() {
        let got = c.event("workflow.progress").await;
        assert_eq!(&got["id"], id);
        assert_eq!(got["seq"], i as u64 + 2);
    }
    let got = c.event("workflow.progress").await;
    assert_eq!(got["id"], live["id"]);
    assert_eq!(got["seq"], 5);
}

#[tokio::test]
async fn past_the_retention_is_a_gap_not_a_partial_replay() {
    let server = TestServer::start_with("[history]\nsize = 2").await;
    let mut c = admin(&server, json!({})).await;
    c.subscribe("project:1").await;
    publish(&server, "1", 1).await;
    let last = c.event("workflow.progress").await;
    drop(c);
    for n in 2..=5 {
        publish(&server, "1", n).await;
    }
    let since = json!({"since": {
        "project:1": {"epoch": last["epoch"], "seq": last["seq"]},
        "project:9": {"epoch": "unknown-epoch", "seq": 3},
        "nope": {"epoch": "x", "seq": 1},
    }});
    let mut c = admin(&server, since).await;
    let e = c.established.clone();
    assert_eq!(e["recovered"], false);
    assert_eq!(e["recovery"]["project:1"]["gap"], true);
    assert_eq!(e["recovery"]["project:1"]["seq"], 5);
    assert_eq!(e["recovery"]["project:9"]["gap"], true);
    assert_eq!(e["recovery"]["nope"]["error"], "invalid_room");
    // Nothing was replayed: the next event is live.
    let live = publish(&server, "1", 6).await;
    assert_eq!(c.event("workflow.progress").await["id"], live["id"]);
}

#[tokio::test]
async fn recovery_checks_access_again() {
    let server = TestServer::start().await;
    let t = token_for("alice", "default", &["1"]);
    let since = json!({"token": t, "since": {"project:2": {"epoch": "e", "seq": 0}}});
    let c = Client::connect(server.addr, Auth::Payload(since))
        .await
        .unwrap();
    assert_eq!(c.established["recovery"]["project:2"]["error"], "forbidden");
    assert_eq!(c.established["recovered"], false);
    assert!(
        !c.established["rooms"]
            .as_array()
            .unwrap()
            .contains(&json!("project:2"))
    );
}

#[tokio::test]
async fn history_on_demand_and_volatile_events() {
    let server = TestServer::start().await;
    let mut c = admin(&server, json!({})).await;
    c.subscribe("project:1").await;
    for n in 1..=3 {
        publish(&server, "1", n).await;
    }
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "workflow.progress", "volatile": true, "data": {"workflow_id": "w", "project_id": "1", "progress": 99}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    for _ in 0..3 {
        c.event("workflow.progress").await;
    }
    let tick = c.event("workflow.progress").await;
    assert!(
        tick.get("seq").is_none() && tick.get("epoch").is_none(),
        "{tick}"
    );

    let page = c
        .emit_with_ack(
            "history",
            json!({"room": "project:1", "since_seq": 1, "limit": 10}),
        )
        .await;
    assert_eq!(page["ok"], true, "{page}");
    assert_eq!(page["seq"], 3);
    assert_eq!(page["gap"], false);
    let seqs: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].clone())
        .collect();
    assert_eq!(seqs, [json!(2), json!(3)]);
    let ack = c
        .emit_with_ack("history", json!({"room": "project:2"}))
        .await;
    assert_eq!(ack["error"]["code"], "not_subscribed");

    let (status, page) = server
        .get(
            "/api/v1/rooms/project:1/history?since_seq=0&limit=2",
            Some(READ_KEY),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0]["data"]["progress"], 1);
}
