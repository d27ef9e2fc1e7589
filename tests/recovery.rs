//! No event lost on reconnect: per-room `seq` and `epoch`, replay of what was missed with
//! `auth.since`, gaps reported honestly, history on demand, volatile events kept out. Each
//! test runs on a single node and on a two-node cluster on a private Redis, where events
//! are published at node `a` and clients come back at node `b`.

mod common;

use common::*;
use serde_json::{Value, json};

/// One node, or two cluster nodes: `a` publishes, clients move from `a` to `b`.
struct Setup {
    a: TestServer,
    b: Option<TestServer>,
    _redis: Option<RedisServer>,
}

impl Setup {
    async fn single(extra: &str) -> Self {
        Self {
            a: TestServer::start_with(extra).await,
            b: None,
            _redis: None,
        }
    }

    async fn cluster(extra: &str) -> Self {
        let redis = RedisServer::start().await;
        let prefix = format!("rec{:08x}", rand::random::<u32>());
        let a = TestServer::start_cluster_node_with("a", &redis, &prefix, extra).await;
        let b = TestServer::start_cluster_node_with("b", &redis, &prefix, extra).await;
        Self {
            a,
            b: Some(b),
            _redis: Some(redis),
        }
    }

    /// The node clients come back to.
    fn b(&self) -> &TestServer {
        self.b.as_ref().unwrap_or(&self.a)
    }
}

/// Runs each named test on one node and on a cluster, with its config.
macro_rules! in_both_modes {
    ($($name:ident($extra:expr)),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn single_node() {
                super::$name(super::Setup::single($extra).await).await
            }
            #[tokio::test]
            async fn cluster() {
                super::$name(super::Setup::cluster($extra).await).await
            }
        }
    )*};
}

in_both_modes! {
    events_are_numbered_per_room(""),
    a_reconnect_replays_exactly_what_was_missed_before_live_events(""),
    past_the_retention_is_a_gap_not_a_partial_replay("[history]\nsize = 2"),
    recovery_checks_access_again(""),
    history_on_demand_and_volatile_events(""),
    a_room_named_in_since_and_joined_by_default_gets_its_backlog_first(""),
    the_subscribe_ack_and_established_give_each_room_its_position(""),
    a_quiet_room_recovers_from_the_position_in_the_ack(""),
    a_quiet_global_room_recovers_from_the_position_in_established(""),
    every_event_after_the_acked_position_arrives_live(""),
    a_quiet_room_keeps_its_position_for_its_history_ttl("[history]\nttl_secs = 1"),
}

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

async fn events_are_numbered_per_room(s: Setup) {
    let server = &s.a;
    let mut c = admin(s.b(), json!({})).await;
    c.emit_with_ack(
        "subscribe",
        json!({"rooms": ["project:1", "project:2", "agent:a"]}),
    )
    .await;
    for n in 0..3 {
        publish(server, "1", n).await;
    }
    publish(server, "2", 0).await;
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

async fn a_reconnect_replays_exactly_what_was_missed_before_live_events(s: Setup) {
    let server = &s.a;
    let mut c = admin(server, json!({})).await;
    c.subscribe("project:1").await;
    publish(server, "1", 1).await;
    let last = c.event("workflow.progress").await;
    drop(c); // the transport dies: a train tunnel

    let mut missed = Vec::new();
    for n in 2..=4 {
        missed.push(publish(server, "1", n).await["id"].clone());
    }
    let since = json!({"since": {"project:1": {"epoch": last["epoch"], "seq": last["seq"]}}});
    let mut c = admin(s.b(), since).await;
    let e = &c.established;
    assert_eq!(e["recovered"], true, "{e}");
    assert_eq!(e["recovery"]["project:1"]["replayed"], 3);
    assert_eq!(e["recovery"]["project:1"]["seq"], 4);
    assert!(e["rooms"].as_array().unwrap().contains(&json!("project:1")));
    let live = publish(server, "1", 5).await;
    for (i, id) in missed.iter().enumerate() {
        let got = c.event("workflow.progress").await;
        assert_eq!(&got["id"], id);
        assert_eq!(got["seq"], i as u64 + 2);
    }
    let got = c.event("workflow.progress").await;
    assert_eq!(got["id"], live["id"]);
    assert_eq!(got["seq"], 5);
}

async fn past_the_retention_is_a_gap_not_a_partial_replay(s: Setup) {
    let server = &s.a;
    let mut c = admin(server, json!({})).await;
    c.subscribe("project:1").await;
    publish(server, "1", 1).await;
    let last = c.event("workflow.progress").await;
    drop(c);
    for n in 2..=5 {
        publish(server, "1", n).await;
    }
    let since = json!({"since": {
        "project:1": {"epoch": last["epoch"], "seq": last["seq"]},
        "project:9": {"epoch": "unknown-epoch", "seq": 3},
        "nope": {"epoch": "x", "seq": 1},
    }});
    let mut c = admin(s.b(), since).await;
    let e = c.established.clone();
    assert_eq!(e["recovered"], false);
    assert_eq!(e["recovery"]["project:1"]["gap"], true);
    assert_eq!(e["recovery"]["project:1"]["seq"], 5);
    assert_eq!(e["recovery"]["project:9"]["gap"], true);
    assert_eq!(e["recovery"]["nope"]["error"], "invalid_room");
    // Nothing was replayed: the next event is live.
    let live = publish(server, "1", 6).await;
    assert_eq!(c.event("workflow.progress").await["id"], live["id"]);
}

async fn recovery_checks_access_again(s: Setup) {
    let t = token_for("alice", "default", &["1"]);
    let since = json!({"token": t, "since": {"project:2": {"epoch": "e", "seq": 0}}});
    let c = Client::connect(s.b().addr, Auth::Payload(since))
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

async fn history_on_demand_and_volatile_events(s: Setup) {
    let server = &s.a;
    let mut c = admin(s.b(), json!({})).await;
    c.subscribe("project:1").await;
    for n in 1..=3 {
        publish(server, "1", n).await;
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

    let (status, page) = s
        .b()
        .get(
            "/api/v1/rooms/project:1/history?since_seq=0&limit=2",
            Some(READ_KEY),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0]["data"]["progress"], 1);
}

async fn a_room_named_in_since_and_joined_by_default_gets_its_backlog_first(s: Setup) {
    let server = &s.a;
    let notice = |n: u64| json!({"type": "system.notification", "data": {"title": format!("n{n}"), "message": "m"}});
    let mut c = admin(server, json!({})).await;
    server.post("/api/v1/events", notice(1)).await;
    let last = c.event("system.notification").await;
    drop(c);
    for n in 2..=3 {
        server.post("/api/v1/events", notice(n)).await;
    }
    let since = json!({"since": {"global": {"epoch": last["epoch"], "seq": last["seq"]}}});
    let mut c = admin(s.b(), since).await;
    assert_eq!(c.established["recovery"]["global"]["replayed"], 2);
    let rooms = c.established["rooms"].as_array().unwrap().clone();
    assert_eq!(
        rooms.iter().filter(|r| *r == "global").count(),
        1,
        "{rooms:?}"
    );
    server.post("/api/v1/events", notice(4)).await;
    for want in 2..=4 {
        let e = c.event("system.notification").await;
        assert_eq!(e["seq"], want, "{e}");
    }
}

/// Cluster only: two nodes publishing into one room at once number it contiguously, and a
/// socket on either node receives every event once, in `seq` order.
#[tokio::test]
async fn two_publishers_on_two_nodes_number_one_room_contiguously() {
    let s = Setup::cluster("").await;
    let b = s.b();
    let mut on_a = admin(&s.a, json!({})).await;
    let mut on_b = admin(b, json!({})).await;
    on_a.subscribe("project:1").await;
    on_b.subscribe("project:1").await;
    const EACH: u64 = 60;
    let publish_at = |node: &'static str, server: &TestServer| {
        let server = server.url("");
        async move {
            let http = reqwest::Client::new();
            for n in 0..EACH {
                let body = json!({"type": "workflow.progress", "data": {"workflow_id": node, "project_id": "1", "progress": n}});
                let res = http
                    .post(format!("{server}/api/v1/events"))
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
            }
        }
    };
    tokio::join!(publish_at("a", &s.a), publish_at("b", b));
    let mut orders = Vec::new();
    for c in [&mut on_a, &mut on_b] {
        let mut ids = Vec::new();
        let mut epoch = None;
        for want in 1..=2 * EACH {
            let e = c.event("workflow.progress").await;
            assert_eq!(e["seq"], want, "{e}");
            assert_eq!(e["epoch"], *epoch.get_or_insert(e["epoch"].clone()));
            ids.push(e["id"].clone());
        }
        orders.push(ids);
    }
    assert_eq!(orders[0], orders[1], "both nodes deliver in one order");
    // And nothing more arrives.
    let marker =
        s.a.post(
            "/api/v1/events",
            json!({"type": "system.notification", "data": {"title": "end", "message": "m"}}),
        )
        .await;
    assert_eq!(marker.0, 202);
    for c in [&mut on_a, &mut on_b] {
        c.assert_not_before("workflow.progress", "system.notification")
            .await;
    }
}

/// Cluster only: a node that missed a numbered event on pub/sub (here: one written to the
/// room's stream behind every node's back) reads it back when the room's next event shows
/// the jump, and its sockets still receive every event in order.
#[tokio::test]
async fn a_node_that_missed_an_event_reads_it_back_before_the_next() {
    let redis = RedisServer::start().await;
    let prefix = format!("rep{:08x}", rand::random::<u32>());
    let a = TestServer::start_cluster_node_with("a", &redis, &prefix, "").await;
    let b = TestServer::start_cluster_node_with("b", &redis, &prefix, "").await;
    let mut on_b = admin(&b, json!({})).await;
    on_b.subscribe("project:1").await;
    publish(&a, "1", 1).await;
    let first = on_b.event("workflow.progress").await;
    assert_eq!(first["seq"], 1);

    // Event 2 is numbered and kept as the publish script would, but never broadcast.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let room = "default/project:1";
    let missed = json!({"id": "00000000-0000-7000-8000-000000000002", "type": "workflow.progress",
        "room": "project:1", "timestamp": "2026-11-22T00:00:00.000Z", "seq": 2,
        "epoch": first["epoch"], "data": {"workflow_id": "w", "project_id": "1", "progress": 2}});
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _: () = redis::pipe()
        .cmd("HINCRBY")
        .arg(format!("{prefix}:history-meta:{room}"))
        .arg("seq")
        .arg(1)
        .ignore()
        .cmd("XADD")
        .arg(format!("{prefix}:history:{room}"))
        .arg("2-0")
        .arg(&[
            "i",
            missed["id"].as_str().unwrap(),
            "e",
            "workflow.progress",
        ])
        .arg("t")
        .arg(now_ms)
        .arg("p")
        .arg(missed.to_string())
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let third = publish(&a, "1", 3).await;
    let got = on_b.event("workflow.progress").await;
    assert_eq!(
        got["id"], missed["id"],
        "the missed event comes first: {got}"
    );
    assert_eq!(got["seq"], 2);
    let got = on_b.event("workflow.progress").await;
    assert_eq!(got["id"], third["id"]);
    assert_eq!(got["seq"], 3);
    let (_, stats) = b.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(stats["cluster"]["repaired_events"], 1, "{stats}");
}

async fn notify(server: &TestServer, n: u64) -> Value {
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "system.notification", "data": {"title": "t", "message": n.to_string()}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

async fn the_subscribe_ack_and_established_give_each_room_its_position(s: Setup) {
    let server = &s.a;
    let mut c = admin(s.b(), json!({})).await;
    let positions = c.established["positions"].clone();
    for room in ["global", "user:w"] {
        assert_eq!(positions[room]["seq"], 0, "{positions}");
        assert!(
            positions[room]["epoch"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        );
    }
    let ack = c
        .emit_with_ack("subscribe", json!({"rooms": ["project:1", "project:2"]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let quiet = ack["positions"]["project:1"].clone();
    let second = ack["positions"]["project:2"].clone();
    assert_eq!(quiet["seq"], 0, "{ack}");
    // Another socket, on the other node, is told the same epoch for the quiet room.
    let mut other = admin(server, json!({})).await;
    let again = other.subscribe("project:1").await;
    assert_eq!(again["positions"]["project:1"], quiet);
    // The room's first event carries that epoch, numbered right after the position.
    publish(server, "1", 1).await;
    let e = c.event("workflow.progress").await;
    assert_eq!((&e["epoch"], &e["seq"]), (&quiet["epoch"], &json!(1)));
    // Subscribing again to a room the socket is in reports where it is now.
    let ack = c.subscribe("project:1").await;
    assert_eq!(ack["positions"]["project:1"]["seq"], 1, "{ack}");
    assert_eq!(ack["positions"]["project:1"]["epoch"], quiet["epoch"]);
    // A reconnect reports positions for the recovered rooms and the default ones.
    let since = json!({"since": {"project:2": second}});
    let c = admin(s.b(), since).await;
    let e = &c.established;
    assert_eq!(e["recovery"]["project:2"]["replayed"], 0, "{e}");
    assert_eq!(
        e["positions"]["project:2"],
        json!({"epoch": e["recovery"]["project:2"]["epoch"], "seq": 0})
    );
    assert_eq!(e["positions"]["global"], positions["global"]);
    assert_eq!(e["positions"]["user:w"], positions["user:w"]);
}

async fn a_quiet_room_recovers_from_the_position_in_the_ack(s: Setup) {
    let server = &s.a;
    let mut c = admin(server, json!({})).await;
    let ack = c.subscribe("project:1").await;
    let position = ack["positions"]["project:1"].clone();
    assert_eq!(position["seq"], 0, "{ack}");
    drop(c); // gone before the room's first event

    let mut missed = Vec::new();
    for n in 1..=3 {
        missed.push(publish(server, "1", n).await["id"].clone());
    }
    let mut c = admin(s.b(), json!({"since": {"project:1": position}})).await;
    let e = c.established.clone();
    assert_eq!(e["recovered"], true, "{e}");
    assert_eq!(e["recovery"]["project:1"]["replayed"], 3, "{e}");
    assert_eq!(e["positions"]["project:1"]["seq"], 3, "{e}");
    let live = publish(server, "1", 4).await;
    for (i, id) in missed.iter().enumerate() {
        let got = c.event("workflow.progress").await;
        assert_eq!((&got["id"], &got["seq"]), (id, &json!(i + 1)));
    }
    assert_eq!(c.event("workflow.progress").await["id"], live["id"]);
}

async fn a_quiet_global_room_recovers_from_the_position_in_established(s: Setup) {
    let server = &s.a;
    let c = admin(server, json!({})).await;
    let position = c.established["positions"]["global"].clone();
    assert_eq!(position["seq"], 0, "{}", c.established);
    drop(c); // gone before the first event of `global`

    let mut missed = Vec::new();
    for n in 1..=2 {
        missed.push(notify(server, n).await["id"].clone());
    }
    let mut c = admin(s.b(), json!({"since": {"global": position}})).await;
    assert_eq!(c.established["recovery"]["global"]["replayed"], 2);
    for id in &missed {
        assert_eq!(&c.event("system.notification").await["id"], id);
    }
}

/// Sockets subscribe while a room's events stream in: each receives every event after the
/// position its ack gave, in order, none missing. The publisher runs from before the first
/// subscribe until after the last (not a fixed count, which a busy machine could publish
/// entirely before the first subscribe), so every position is taken mid-stream.
async fn every_event_after_the_acked_position_arrives_live(s: Setup) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(admin(s.b(), json!({})).await);
    }
    let addr = s.a.addr;
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (published, stop) = (published.clone(), stop.clone());
        async move {
            let http = reqwest::Client::new();
            // At least one event after the last subscribe.
            let mut last = false;
            while !last {
                last = stop.load(Ordering::SeqCst);
                let n = published.load(Ordering::SeqCst) + 1;
                let body = json!({"type": "workflow.progress", "data": {"workflow_id": "w", "project_id": "1", "progress": n}});
                let status = http
                    .post(format!("http://{addr}/api/v1/events"))
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                assert_eq!(status.ok(), Some(202));
                published.store(n, Ordering::SeqCst);
                // Paced well under `limits.publish_per_key_per_sec`.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while published.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut acked = Vec::new();
    for c in &mut clients {
        let ack = c.subscribe("project:1").await;
        acked.push(
            ack["positions"]["project:1"]["seq"]
                .as_u64()
                .expect("a position"),
        );
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::SeqCst);
    publisher.await.unwrap();
    let events = published.load(Ordering::SeqCst);
    // Each position was read mid-stream: after the first event, before the last.
    assert!(
        acked.iter().all(|p| *p >= 1 && *p < events),
        "positions {acked:?} of {events} events"
    );
    for (c, from) in clients.iter_mut().zip(acked) {
        let mut want = from + 1;
        while want <= events {
            let e = c.event("workflow.progress").await;
            let seq = e["seq"].as_u64().unwrap();
            if seq <= from {
                continue; // numbered before the position was read: may come or not
            }
            assert_eq!(seq, want, "after position {from}");
            want += 1;
        }
    }
}

/// An epoch made up for a room with no event lasts the room's history TTL from the last time
/// a socket was told it (not the hour a room that had events keeps its epoch): past it, the
/// room is given a new one.
async fn a_quiet_room_keeps_its_position_for_its_history_ttl(s: Setup) {
    let server = &s.a;
    let mut c = admin(s.b(), json!({})).await;
    let ack = c
        .emit_with_ack("subscribe", json!({"rooms": ["project:1", "project:2"]}))
        .await;
    let quiet = ack["positions"]["project:1"].clone();
    publish(server, "2", 1).await;
    let busy = c.event("workflow.progress").await;
    // Watched through the history endpoint, which gives no position away.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, page) = server
            .get("/api/v1/rooms/project:1/history?tenant=default", Some(KEY))
            .await;
        assert_eq!(status, 200, "{page}");
        if page["epoch"] != quiet["epoch"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{quiet} never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut other = admin(server, json!({})).await;
    let now = other.subscribe("project:1").await["positions"]["project:1"].clone();
    assert_ne!(now["epoch"], quiet["epoch"]);
    assert_eq!(now["seq"], 0);
    // The room that had an event still has its epoch: no gap for a client that saw it.
    let since = json!({"since": {"project:2": {"epoch": busy["epoch"], "seq": busy["seq"]}}});
    let c = admin(s.b(), since).await;
    assert_eq!(c.established["recovered"], true, "{}", c.established);
}
