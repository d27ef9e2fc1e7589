//! A reconnect storm: many sockets, continuous publishing, half of them dropped and
//! reconnected (with `auth.since`) at random. At the end every socket holds every event of
//! its room exactly once and in order. Size: `ROOMCAST_STORM_SOCKETS` (default 2,000).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const ROOMS: usize = 4;
const EVENTS: usize = 120;

/// One socket's life: connect, join its room, read; if chosen, drop once after `drop_after`
/// events and come back with `since`. Returns the event ids it received, in order.
async fn life(
    server: std::net::SocketAddr,
    token: String,
    room: String,
    expected: usize,
    drop_after: Option<usize>,
    gate: Arc<Semaphore>,
    joined: Arc<Semaphore>,
) -> Vec<String> {
    let connect = |auth: Value| async {
        let _slot = gate.acquire().await.unwrap();
        Client::connect(server, Auth::Payload(auth)).await.unwrap()
    };
    let mut c = connect(json!({ "token": token })).await;
    assert_eq!(c.subscribe(&room).await["ok"], true);
    joined.add_permits(1);
    let mut ids = Vec::with_capacity(expected);
    let mut cursor = Value::Null;
    while ids.len() < expected {
        if Some(ids.len()) == drop_after && !cursor.is_null() {
            drop(c);
            let pause = rand::rng().random_range(0..200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            c = connect(json!({ "token": token, "since": { &room: cursor } })).await;
            let r = &c.established["recovery"][&room];
            assert!(r.get("gap").is_none(), "gap on recovery: {r}");
            assert_eq!(c.established["recovered"], true);
        }
        let e = c
            .try_event("workflow.progress")
            .await
            .unwrap_or_else(|| panic!("{room}: stuck at {} of {expected}", ids.len()));
        cursor = json!({ "epoch": e["epoch"], "seq": e["seq"] });
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_ends_with_every_event_once_and_in_order() {
    let sockets: usize = std::env::var("ROOMCAST_STORM_SOCKETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let server = TestServer::start_with("[history]\nsize = 1000\nttl_secs = 600").await;
    // The publish plan is fixed up front, so each socket knows how many events it awaits.
    let mut rng = rand::rng();
    let plan: Vec<usize> = (0..EVENTS).map(|_| rng.random_range(0..ROOMS)).collect();
    let per_room: Vec<usize> = (0..ROOMS)
        .map(|r| plan.iter().filter(|p| **p == r).count())
        .collect();

    let gate = Arc::new(Semaphore::new(200));
    let joined = Arc::new(Semaphore::new(0));
    let mut lives = Vec::new();
    for i in 0..sockets {
        let room = i % ROOMS;
        let t = token_for(&format!("u{i}"), "default", &["*"]);
        let expected = per_room[room];
        // Half the sockets drop once, somewhere in the stream.
        let drop_after = (i % 2 == 0).then(|| rng.random_range(1..expected.max(2)));
        lives.push(tokio::spawn(life(
            server.addr,
            t,
            format!("project:{room}"),
            expected,
            drop_after,
            gate.clone(),
            joined.clone(),
        )));
    }
    tokio::time::timeout(
        Duration::from_secs(120),
        joined.acquire_many(sockets as u32),
    )
    .await
    .expect("all sockets joined")
    .unwrap()
    .forget();

    let mut published: HashMap<usize, Vec<String>> = HashMap::new();
    for (n, room) in plan.iter().enumerate() {
        let (status, body) = server
            .post(
                "/api/v1/events",
                json!({"type": "workflow.progress", "data": {"workflow_id": "storm", "project_id": room.to_string(), "progress": n % 100}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        published
            .entry(*room)
            .or_default()
            .push(body["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, life) in lives.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(120), life)
            .await
            .expect("socket finished")
            .expect("socket task");
        assert_eq!(got, published[&(i % ROOMS)], "socket {i}");
    }
}
