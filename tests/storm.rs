//! A reconnect storm: many sockets, continuous publishing, half of them dropped and
//! reconnected (with `auth.since`) at random. At the end every socket holds every event of
//! its room exactly once and in order. On one node, and on a two-node cluster where every
//! dropped socket comes back at the other node. Size: `ROOMCAST_STORM_SOCKETS` (default
//! 2,000).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

const ROOMS: usize = 4;
const EVENTS: usize = 120;

/// What the sockets of a storm share: the gate that bounds connects in flight, the count of
/// sockets that joined, and whether publishing started.
#[derive(Clone)]
struct Crowd {
    gate: Arc<Semaphore>,
    joined: Arc<Semaphore>,
    publishing: watch::Receiver<bool>,
}

/// One socket's life: connect at `first`, join its room, read; if chosen, drop once after
/// `drop_after` events and come back at `second` with `since`. Returns the event ids it received, in order.
async fn life(
    (first, second): (std::net::SocketAddr, std::net::SocketAddr),
    token: String,
    room: String,
    expected: usize,
    drop_after: Option<usize>,
    crowd: Crowd,
) -> (Vec<String>, Vec<String>) {
    let Crowd {
        gate,
        joined,
        mut publishing,
    } = crowd;
    let connect = |server, auth: Value| {
        let gate = gate.clone();
        async move {
            let _slot = gate.acquire().await.unwrap();
            Client::connect(server, Auth::Payload(auth)).await.unwrap()
        }
    };
    let mut c = connect(first, json!({ "token": token })).await;
    assert_eq!(c.subscribe(&room).await["ok"], true);
    joined.add_permits(1);
    // Nothing is published before every socket joined, which can take longer than the
    // wait for one event on a busy machine (longer than the server's ping interval plus
    // timeout, even): keep answering pings until publishing starts.
    while !*publishing.borrow_and_update() {
        tokio::select! {
            _ = publishing.changed() => {}
            () = c.pump() => {}
        }
    }
    // The question is whether anything is lost, not how fast 2,000 sockets are served on
    // two cores shared with the test itself.
    c.patience = STORM_PATIENCE;
    let mut ids = Vec::with_capacity(expected);
    // What arrived on which connection, by `seq`, for a readable failure.
    let mut trace = Vec::new();
    let mut conn = 1;
    let mut cursor = Value::Null;
    while ids.len() < expected {
        if Some(ids.len()) == drop_after && !cursor.is_null() {
            drop(c);
            let pause = rand::rng().random_range(0..200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            c = connect(
                second,
                json!({ "token": token, "since": { &room: cursor } }),
            )
            .await;
            c.patience = STORM_PATIENCE;
            conn += 1;
            let r = &c.established["recovery"][&room];
            trace.push(format!("reconnect {r}"));
            assert!(r.get("gap").is_none(), "gap on recovery: {r}");
            assert_eq!(c.established["recovered"], true);
        }
        let e = c
            .try_event("workflow.progress")
            .await
            .unwrap_or_else(|| panic!("{room}: stuck at {} of {expected}", ids.len()));
        cursor = json!({ "epoch": e["epoch"], "seq": e["seq"] });
        trace.push(format!("{conn}:{}", e["seq"]));
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    (ids, trace)
}

/// How long a socket of the storm waits for its next event.
const STORM_PATIENCE: Duration = Duration::from_secs(30);

const HISTORY: &str = "[history]\nsize = 1000\nttl_secs = 600";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_ends_with_every_event_once_and_in_order() {
    let server = TestServer::start_with(HISTORY).await;
    storm(&[&server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_every_socket_ends_with_every_event_once_and_in_order() {
    let redis = RedisServer::start().await;
    let prefix = format!("storm{:08x}", rand::random::<u32>());
    let a = TestServer::start_cluster_node_with("a", &redis, &prefix, HISTORY).await;
    let b = TestServer::start_cluster_node_with("b", &redis, &prefix, HISTORY).await;
    storm(&[&a, &b]).await;
}

/// One storm at a time: two at once on two cores measure the machine, not the server.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sockets spread over `nodes` (a dropped one comes back at the next node); events are
/// published at the first.
async fn storm(nodes: &[&TestServer]) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sockets: usize = std::env::var("ROOMCAST_STORM_SOCKETS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let server = nodes[0];
    // The publish plan is fixed up front, so each socket knows how many events it awaits.
    let mut rng = rand::rng();
    let plan: Vec<usize> = (0..EVENTS).map(|_| rng.random_range(0..ROOMS)).collect();
    let per_room: Vec<usize> = (0..ROOMS)
        .map(|r| plan.iter().filter(|p| **p == r).count())
        .collect();

    let (start, publishing) = watch::channel(false);
    let crowd = Crowd {
        gate: Arc::new(Semaphore::new(200)),
        joined: Arc::new(Semaphore::new(0)),
        publishing,
    };
    let mut lives = Vec::new();
    for i in 0..sockets {
        let room = i % ROOMS;
        let t = token_for(&format!("u{i}"), "default", &["*"]);
        let expected = per_room[room];
        // Half the sockets drop once, somewhere in the stream.
        let drop_after = (i % 2 == 0).then(|| rng.random_range(1..expected.max(2)));
        lives.push(tokio::spawn(life(
            (
                nodes[i % nodes.len()].addr,
                nodes[(i + 1) % nodes.len()].addr,
            ),
            t,
            format!("project:{room}"),
            expected,
            drop_after,
            crowd.clone(),
        )));
    }
    tokio::time::timeout(
        Duration::from_secs(120),
        crowd.joined.acquire_many(sockets as u32),
    )
    .await
    .expect("all sockets joined")
    .unwrap()
    .forget();
    start.send_replace(true);

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
        let (got, trace) = tokio::time::timeout(Duration::from_secs(120), life)
            .await
            .expect("socket finished")
            .expect("socket task");
        let want = &published[&(i % ROOMS)];
        if got != *want {
            let at = got.iter().zip(want).position(|(g, w)| g != w);
            let index = |id: &String| want.iter().position(|w| w == id);
            let around: Vec<_> = got
                .iter()
                .skip(at.unwrap_or(0).saturating_sub(2))
                .take(5)
                .map(index)
                .collect();
            panic!(
                "socket {i}: got {} of {} events; first difference at {at:?}; \
                 received there (as published positions): {around:?}; trace: {trace:?}",
                got.len(),
                want.len()
            );
        }
    }
}
