//! Outbound webhooks (`[[webhooks]]`): a real HTTP receiver in the test records every request
//! Roomcast sends it; real sockets make things happen in rooms, on one node and on a
//! two-node cluster over a real redis-server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use hmac::{Hmac, Mac};
use roomcast::rooms::Grant;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

const HOOK_SECRET: &str = "hook-secret-0123456789";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    delivery: String,
    signature: String,
    content_type: String,
    body: bytes::Bytes,
    accepted: bool,
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Got>>,
    /// Answer 500 to this many requests first.
    fail_first: Mutex<usize>,
    /// When set, the first request is held until `release` is notified.
    gate: Option<Arc<Notify>>,
    held: Notify,
}

/// A real HTTP server on 127.0.0.1 that records what Roomcast posts to `/hook`.
struct Receiver {
    url: String,
    log: Arc<Log>,
}

async fn hook(State(log): State<Arc<Log>>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let first = log.requests.lock().unwrap().is_empty();
    if first && let Some(gate) = &log.gate {
        let released = gate.notified();
        log.held.notify_one();
        released.await;
    }
    let accepted = {
        let mut fail = log.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            false
        } else {
            true
        }
    };
    log.requests.lock().unwrap().push(Got {
        delivery: header("x-roomcast-delivery"),
        signature: header("x-roomcast-signature"),
        content_type: header("content-type"),
        body,
        accepted,
    });
    if accepted {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl Receiver {
    async fn start(fail_first: usize, gate: Option<Arc<Notify>>) -> Self {
        let log = Arc::new(Log {
            fail_first: Mutex::new(fail_first),
            gate,
            ..Log::default()
        });
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, log }
    }

    /// A `[[webhooks]]` entry for this receiver, quick to batch and to retry.
    fn config(&self, events: &[&str], more: &str) -> String {
        let quick = [
            "batch_max_ms = 20",
            "retry_initial_ms = 50",
            "retry_max_delay_ms = 200",
        ]
        .into_iter()
        .filter(|line| !more.contains(line.split(' ').next().unwrap()))
        .collect::<Vec<_>>()
        .join("\n");
        format!(
            "[[webhooks]]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\nevents = {events:?}\n{quick}\n{more}\n",
            self.url
        )
    }

    fn requests(&self) -> Vec<Got> {
        self.log.requests.lock().unwrap().clone()
    }

    /// Every event of the accepted (2xx) requests, in the order they arrived.
    fn events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|g| g.accepted)
            .flat_map(|g| {
                let body: Value = serde_json::from_slice(&g.body).unwrap();
                body["events"].as_array().unwrap().clone()
            })
            .collect()
    }

    /// The accepted events of `kind` (in `room`, when given).
    fn of(&self, kind: &str, room: Option<&str>) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind && room.is_none_or(|r| e["room"] == r))
            .collect()
    }

    /// Waits (10 s at most) until `done` holds for the accepted events.
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if done(&events) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never happened; received {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A token of `sub` in tenant `acme` with `projects` and `agents`.
fn token_in(sub: &str, projects: &[&str], agents: &[&str]) -> String {
    let ids = |ids: &[&str]| {
        Grant::Some(
            ids.iter()
                .map(|i| roomcast::rooms::Id::parse(i).unwrap())
                .collect(),
        )
    };
    let mut c = claims(sub);
    c.tenant = Some("acme".into());
    c.projects = ids(projects);
    c.agents = ids(agents);
    token(&c)
}

async fn joined(server: &TestServer, sub: &str, room: &str) -> Client {
    let id = room.split_once(':').unwrap().1;
    let (projects, agents) = if room.starts_with("agent:") {
        (vec![], vec![id])
    } else {
        (vec![id], vec![])
    };
    let mut c = server.connect(&token_in(sub, &projects, &agents)).await;
    let ack = c.subscribe(room).await;
    assert_eq!(ack["ok"], true, "{ack}");
    c
}

async fn metric(server: &TestServer, line: &str) -> Option<String> {
    let (_, text) = server.get_text("/metrics", Some(READ_KEY)).await;
    text.lines()
        .find(|l| l.starts_with(line))
        .map(str::to_owned)
}

#[tokio::test]
async fn batches_are_signed_with_the_secret_and_carry_typed_events() {
    let rx = Receiver::start(0, None).await;
    let server =
        TestServer::start_with(&rx.config(&["connection.opened", "connection.closed"], "")).await;
    let c = server.connect(&token_in("u1", &["1"], &[])).await;
    let sid = c.established["sid"].clone();
    c.disconnect().await;
    rx.until("opened and closed", |e| e.len() == 2).await;

    for got in rx.requests() {
        // The signature is the HMAC of the raw body with the configured secret.
        assert_eq!(got.signature, hmac_hex(HOOK_SECRET, &got.body));
        assert_ne!(got.signature, hmac_hex("another-secret-0123", &got.body));
        assert!(uuid::Uuid::parse_str(&got.delivery).is_ok(), "{got:?}");
        assert_eq!(got.content_type, "application/json");
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1, "only `events`: {body}");
    }
    let events = rx.events();
    assert_eq!(events[0]["type"], "connection.opened");
    assert_eq!(events[1]["type"], "connection.closed");
    for e in &events {
        assert!(
            uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok(),
            "{e}"
        );
        assert_eq!(e["tenant"], "acme");
        assert!(
            e.get("room").is_none(),
            "a connection is in no one room: {e}"
        );
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_eq!(e["data"]["user_id"], "u1");
        assert_eq!(e["data"]["sid"], sid);
        assert_eq!(e["data"]["namespace"], "/");
        assert_eq!(e["data"]["node_id"], "test-node");
    }
    assert!(events[1]["data"]["reason"].is_string(), "{}", events[1]);
    assert_ne!(events[0]["id"], events[1]["id"]);
}

#[tokio::test]
async fn a_failing_receiver_gets_everything_once_per_delivery_in_order() {
    let rx = Receiver::start(2, None).await;
    let server =
        TestServer::start_with(&rx.config(&["presence.joined"], "batch_max_events = 2")).await;
    let mut clients = Vec::new();
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        clients.push(joined(&server, user, "project:1").await);
    }
    rx.until("five joins", |e| e.len() == 5).await;

    let requests = rx.requests();
    // The first batch was refused twice, then accepted: three times one delivery id, with
    // one body.
    assert!(!requests[0].accepted && !requests[1].accepted && requests[2].accepted);
    assert_eq!(requests[0].delivery, requests[1].delivery);
    assert_eq!(requests[0].delivery, requests[2].delivery);
    assert_eq!(requests[0].body, requests[2].body);
    // Every delivery id was accepted exactly once.
    let mut accepted: Vec<&str> = requests
        .iter()
        .filter(|g| g.accepted)
        .map(|g| g.delivery.as_str())
        .collect();
    let all = accepted.len();
    accepted.dedup();
    assert_eq!(accepted.len(), all, "{requests:?}");
    // The room's joins in the order they happened, each once.
    let users: Vec<Value> = rx
        .events()
        .iter()
        .map(|e| e["data"]["user_id"].clone())
        .collect();
    assert_eq!(users, ["u1", "u2", "u3", "u4", "u5"]);
    assert!(rx.events().iter().all(|e| e["room"] == "project:1"));
    let failed = metric(
        &server,
        "roomcast_webhook_requests_failed_total{webhook=\"0\"}",
    )
    .await;
    assert_eq!(
        failed.as_deref(),
        Some("roomcast_webhook_requests_failed_total{webhook=\"0\"} 2")
    );
    let retried = metric(&server, "roomcast_webhook_retries_total{webhook=\"0\"}").await;
    assert_eq!(
        retried.as_deref(),
        Some("roomcast_webhook_retries_total{webhook=\"0\"} 2")
    );
    let sent = metric(&server, "roomcast_webhook_events_sent_total{webhook=\"0\"}").await;
    assert_eq!(
        sent.as_deref(),
        Some("roomcast_webhook_events_sent_total{webhook=\"0\"} 5")
    );
}

#[tokio::test]
async fn a_room_is_occupied_by_its_first_socket_and_vacated_once_by_its_last() {
    let rx = Receiver::start(0, None).await;
    let server = TestServer::start_with(&rx.config(&["room.occupied", "room.vacated"], "")).await;
    let a = joined(&server, "u1", "project:5").await;
    rx.until("occupied", |_| {
        !rx.of("room.occupied", Some("project:5")).is_empty()
    })
    .await;
    let b = joined(&server, "u2", "project:5").await;
    a.disconnect().await;
    // A marker through the same presence queue: once project:6 is occupied, anything the
    // first leave of project:5 produced has been sent before it.
    let _c = joined(&server, "u3", "project:6").await;
    rx.until("marker", |_| {
        !rx.of("room.occupied", Some("project:6")).is_empty()
    })
    .await;
    assert!(rx.of("room.vacated", None).is_empty(), "{:#?}", rx.events());
    b.disconnect().await;
    rx.until("vacated", |_| {
        !rx.of("room.vacated", Some("project:5")).is_empty()
    })
    .await;
    let vacated = rx.of("room.vacated", Some("project:5"));
    assert_eq!(vacated[0]["tenant"], "acme");
    assert_eq!(vacated[0]["data"]["user_id"], "u2");
    let occupied = rx.of("room.occupied", Some("project:5"));
    assert_eq!(occupied.len(), 1, "{occupied:#?}");
    assert_eq!(occupied[0]["data"]["user_id"], "u1");
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.of("room.vacated", Some("project:5")).len(), 1);
    assert_eq!(rx.of("room.occupied", Some("project:5")).len(), 1);
}

#[tokio::test]
async fn in_a_cluster_a_room_is_vacated_exactly_once_whichever_node_its_last_socket_leaves() {
    let redis = RedisServer::start().await;
    let rx = Receiver::start(0, None).await;
    let hook = rx.config(&["room.occupied", "room.vacated"], "");
    let n1 = TestServer::start_cluster_node_with("n1", &redis, "hk", &hook).await;
    let n2 = TestServer::start_cluster_node_with("n2", &redis, "hk", &hook).await;
    // project:9's last socket leaves from n2, project:19's from n1.
    for (room, first, last, marker) in [
        ("project:9", &n1, &n2, "project:10"),
        ("project:19", &n2, &n1, "project:20"),
    ] {
        let a = joined(first, "u1", room).await;
        let b = joined(last, "u2", room).await;
        a.disconnect().await;
        let _m = joined(first, "u3", marker).await;
        rx.until("marker", |_| {
            !rx.of("room.occupied", Some(marker)).is_empty()
        })
        .await;
        assert!(
            rx.of("room.vacated", Some(room)).is_empty(),
            "{:#?}",
            rx.events()
        );
        b.disconnect().await;
        rx.until("vacated", |_| !rx.of("room.vacated", Some(room)).is_empty())
            .await;
        // The other node saw the same change and must not report it too.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            rx.of("room.vacated", Some(room)).len(),
            1,
            "{:#?}",
            rx.events()
        );
        assert_eq!(
            rx.of("room.occupied", Some(room)).len(),
            1,
            "{:#?}",
            rx.events()
        );
    }
}

#[tokio::test]
async fn reaping_a_dead_node_that_held_a_rooms_last_socket_vacates_it() {
    let redis = RedisServer::start().await;
    let rx = Receiver::start(0, None).await;
    // A node that died holding u9's socket in project:77: its share of presence is in Redis
    // (as its presence store wrote it), its heartbeat is gone.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::pipe()
        .cmd("HSET")
        .arg("dead:presence:acme/project:77")
        .arg("u9")
        .arg(1)
        .cmd("HSET")
        .arg("dead:node-presence:ghost")
        .arg("acme/project:77\x1fu9")
        .arg(1)
        .cmd("ZADD")
        .arg("dead:nodes")
        .arg(0)
        .arg("ghost")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let _n1 = TestServer::start_cluster_node_with(
        "n1",
        &redis,
        "dead",
        &rx.config(&["room.vacated"], ""),
    )
    .await;
    rx.until("vacated by the reaper", |_| {
        !rx.of("room.vacated", Some("project:77")).is_empty()
    })
    .await;
    let vacated = rx.of("room.vacated", Some("project:77"));
    assert_eq!(vacated[0]["tenant"], "acme");
    assert_eq!(vacated[0]["data"]["user_id"], "u9");
}

#[tokio::test]
async fn presence_is_sent_with_tenant_and_user_and_the_room_filter_keeps_other_kinds_out() {
    let rx = Receiver::start(0, None).await;
    let server = TestServer::start_with(&format!(
        "{}\n[cluster]\npresence_grace_secs = 1",
        rx.config(
            &["presence.joined", "presence.left", "room.occupied"],
            "rooms = [\"agent\"]"
        )
    ))
    .await;
    let mut c = server.connect(&token_in("u1", &["3"], &["3"])).await;
    assert_eq!(c.subscribe("project:3").await["ok"], true);
    assert_eq!(c.subscribe("agent:3").await["ok"], true);
    rx.until("joined and occupied", |e| e.len() == 2).await;
    c.disconnect().await;
    rx.until("left after the grace period", |_| {
        !rx.of("presence.left", None).is_empty()
    })
    .await;
    let events = rx.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["room.occupied", "presence.joined", "presence.left"]);
    for e in &events {
        assert_eq!(e["room"], "agent:3", "project rooms are filtered out: {e}");
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["data"]["user_id"], "u1");
    }
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_events_and_counts_them() {
    let gate = Arc::new(Notify::new());
    let rx = Receiver::start(0, Some(gate.clone())).await;
    let server = TestServer::start_with(&rx.config(
        &["connection.opened"],
        "batch_max_events = 1\nqueue_max_events = 2\ntimeout_ms = 30000",
    ))
    .await;
    let mut clients = Vec::new();
    let mut connect = async |user: &str| {
        let c = server.connect(&token_in(user, &[], &[])).await;
        clients.push(c);
    };
    connect("u1").await;
    // u1's batch is at the receiver, held: the next five wait in a queue of two.
    tokio::time::timeout(DEADLINE, rx.log.held.notified())
        .await
        .expect("the first delivery arrives");
    for user in ["u2", "u3", "u4", "u5", "u6"] {
        connect(user).await;
    }
    let dropped = "roomcast_webhook_events_dropped_total{reason=\"queue_full\",webhook=\"0\"}";
    assert_eq!(metric(&server, dropped).await, Some(format!("{dropped} 3")));
    gate.notify_one();
    rx.until("the rest", |e| e.len() == 3).await;
    let users: Vec<Value> = rx
        .events()
        .iter()
        .map(|e| e["data"]["user_id"].clone())
        .collect();
    assert_eq!(users, ["u1", "u5", "u6"], "the oldest were dropped");
}

#[tokio::test]
async fn a_drain_sends_what_is_queued_without_waiting_for_the_batch() {
    let rx = Receiver::start(0, None).await;
    // A batch that would wait ten minutes to fill: only the drain's flush sends it.
    let mut server = TestServer::start_with(&rx.config(
        &["connection.opened"],
        "batch_max_ms = 600000\nbatch_max_events = 100",
    ))
    .await;
    let _c = server.connect(&token_in("u1", &[], &[])).await;
    server.shutdown();
    rx.until("the queued event", |e| e.len() == 1).await;
    assert_eq!(rx.events()[0]["data"]["user_id"], "u1");
}

#[tokio::test]
async fn a_batch_never_accepted_is_dropped_after_its_retry_age_and_counted() {
    let rx = Receiver::start(usize::MAX, None).await;
    let server =
        TestServer::start_with(&rx.config(&["connection.opened"], "retry_max_age_secs = 1")).await;
    let _c = server.connect(&token_in("u1", &[], &[])).await;
    let expired = "roomcast_webhook_events_dropped_total{reason=\"expired\",webhook=\"0\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&server, expired).await != Some(format!("{expired} 1")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted as expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = rx.requests();
    assert!(requests.len() >= 3, "retried meanwhile: {requests:?}");
    assert!(requests.iter().all(|g| g.delivery == requests[0].delivery));
    // Dropped for good: no attempt after the count.
    let attempts = requests.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.requests().len(), attempts);
    assert!(rx.events().is_empty());
}

/// `client_event`: every numbered client publish reaches the backend, with who sent it and
/// what the room received; a volatile one (typing) does not.
#[tokio::test]
async fn a_backend_hears_every_numbered_client_event_and_no_volatile_one() {
    let rx = Receiver::start(0, None).await;
    let server = TestServer::start_with(&format!(
        "{}\n[client_events]\nrooms = [\"project\"]\nevents = [\"chat.*\", \"typing.*\"]",
        rx.config(&["client_event"], "")
    ))
    .await;
    let mut alice = joined(&server, "alice", "project:42").await;
    let _bob = joined(&server, "bob", "project:42").await;
    let typing = alice
        .emit_with_ack(
            "publish",
            json!({"room": "project:42", "event": "typing.start", "data": {}, "volatile": true}),
        )
        .await;
    assert_eq!(typing["ok"], true, "{typing}");
    let mut acks = Vec::new();
    for text in ["hello", "again"] {
        let ack = alice
            .emit_with_ack(
                "publish",
                json!({"room": "project:42", "event": "chat.message", "data": {"text": text}}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        acks.push(ack);
    }
    rx.until("two client events", |e| e.len() >= 2).await;
    let events = rx.of("client_event", Some("project:42"));
    assert_eq!(
        events.len(),
        2,
        "the volatile typing.start is not sent: {events:#?}"
    );
    for (e, (ack, text)) in events.iter().zip(acks.iter().zip(["hello", "again"])) {
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["data"]["user_id"], "alice");
        let sid = e["data"]["sid"].as_str().unwrap();
        let event = &e["data"]["event"];
        assert_eq!(event["id"], ack["id"]);
        assert_eq!(event["seq"], ack["seq"]);
        assert_eq!(event["type"], "chat.message");
        assert_eq!(event["room"], "project:42");
        assert_eq!(event["data"]["text"], text);
        assert_eq!(event["from"], json!({"user_id": "alice", "sid": sid}));
    }
}
