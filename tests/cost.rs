//! One API key cannot exhaust a node: a publish names at most `limits.max_rooms_per_publish`
//! rooms, a key's publish bodies are held to `limits.publish_bytes_per_key_per_sec`, a batch
//! costs one publish request per event, and reads of rooms nobody used create nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use roomcast::events::SystemNotification;
use serde_json::{Value, json};

/// Publishes the marker `system.notification` past every HTTP limit (through the server's
/// own broadcaster): a socket that gets it has got everything published before it.
async fn marker(server: &TestServer) {
    server
        .broadcaster
        .broadcast_system_notification(SystemNotification {
            title: "marker".into(),
            message: "m".into(),
            severity: None,
        })
        .await
        .expect("marker published");
}

/// A socket of the default tenant that may join every project room.
async fn admin_socket(server: &TestServer) -> Client {
    let mut c = claims("watcher");
    c.role = Some("admin".into());
    server.connect(&token(&c)).await
}

/// The value of an unlabelled series of `GET /metrics`.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let (status, text) = server.get_text("/metrics", Some(KEY)).await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[tokio::test]
async fn a_publish_to_more_rooms_than_the_limit_is_refused_and_delivers_nothing() {
    let server = TestServer::start().await;
    let mut c = admin_socket(&server).await;
    assert_eq!(c.subscribe("project:0").await["ok"], true);
    let rooms = |n: usize| (0..n).map(|i| format!("project:{i}")).collect::<Vec<_>>();

    // 101 rooms (the default limit is 100), and 22,000 copies of one room.
    for (what, list) in [
        ("101 rooms", rooms(101)),
        ("22,000 names", vec!["global".to_owned(); 22_000]),
    ] {
        let (status, body) = server
            .post(
                "/api/v1/broadcast",
                json!({"event": "too.wide", "rooms": list, "data": {}}),
            )
            .await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["error"]["code"], "too_many_rooms", "{what}");
        assert_eq!(body["error"]["field"], "rooms", "{what}");
    }
    // With an idempotency key too: refused before the key is claimed.
    let (status, _, body) = server
        .post_with(
            "/api/v1/broadcast",
            Some(KEY),
            json!({"event": "too.wide", "rooms": rooms(101), "data": {}}).to_string(),
            &[("idempotency-key", "wide-1")],
        )
        .await;
    assert_eq!(status, 422, "{body}");

    // At the limit it is published.
    let (status, body) = server
        .post(
            "/api/v1/broadcast",
            json!({"event": "just.right", "rooms": rooms(100), "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rooms"].as_array().map(Vec::len), Some(100));
    c.event("just.right").await;
    marker(&server).await;
    c.assert_not_before("too.wide", "system.notification").await;
}

#[tokio::test]
async fn a_key_over_its_byte_budget_gets_429_and_publishes_nothing() {
    // 1 MiB of burst and 256 KiB a second: four bodies of 250 KB, then about one a second.
    let server = TestServer::start_with(
        "[limits]\npublish_bytes_per_key_per_sec = 262144\npublish_bytes_per_key_burst = 1048576",
    )
    .await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    let blob = "x".repeat(250_000);
    let body = json!({"event": "big.blob", "room": "global", "data": {"blob": blob}}).to_string();

    let started = Instant::now();
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut retry = None;
    for _ in 0..40 {
        let (status, headers, answer) = server
            .post_with("/api/v1/broadcast", Some(KEY), body.clone(), &[])
            .await;
        match status {
            202 => accepted += 1,
            429 => {
                refused += 1;
                assert_eq!(answer["error"]["code"], "rate_limited", "{answer}");
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("publish_bytes_per_key_per_sec"),
                    "{message}"
                );
                assert!(headers.contains_key("retry-after"));
                retry = answer["error"]["retry_after_ms"].as_u64();
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, plus what refilled while the test ran (one body a second, rounded up).
    let budget = 4 + elapsed.ceil() as u64;
    assert!(
        (4..=budget).contains(&accepted),
        "{accepted} accepted in {elapsed:.1}s"
    );
    assert!(refused >= 40 - budget, "{refused} refused");
    let retry = retry.expect("a refusal with retry_after_ms");
    assert!(retry > 0 && retry <= 1000, "{retry}");

    // Only the accepted ones reached the socket.
    marker(&server).await;
    let mut delivered = 0;
    while let Some((name, _)) = c.next_event().await {
        match name.as_str() {
            "big.blob" => delivered += 1,
            "system.notification" => break,
            _ => {}
        }
    }
    assert_eq!(delivered, accepted, "refused publishes were delivered");

    // Small publishes of another key are not held back by this key's budget.
    let (status, _, answer) = server
        .post_with(
            "/api/v1/events",
            Some(ACME_KEY),
            json!({"type": "system.notification", "data": {"title": "t", "message": "m"}})
                .to_string(),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{answer}");
}

fn progress(n: u64) -> Value {
    json!({"type": "workflow.progress", "data": {"workflow_id": "w1", "project_id": "1", "progress": n}})
}

#[tokio::test]
async fn a_batch_costs_one_publish_per_event_and_over_the_budget_delivers_nothing() {
    let server =
        TestServer::start_with("[limits]\npublish_per_key_per_sec = 1\npublish_per_key_burst = 5")
            .await;
    let mut c = admin_socket(&server).await;
    assert_eq!(c.subscribe("project:1").await["ok"], true);
    let batch = |n: u64| json!({"events": (0..n).map(progress).collect::<Vec<_>>()});

    // More events than the key's burst could ever pay for: refused outright.
    let (status, body) = server.post("/api/v1/events/batch", batch(6)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "batch_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 to 5 events")),
        "{body}"
    );

    // That request cost one: 4 left, and a batch of 5 needs 5.
    let (status, headers, body) = server
        .post_with("/api/v1/events/batch", Some(KEY), batch(5).to_string(), &[])
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(headers.contains_key("retry-after"));
    marker(&server).await;
    c.assert_not_before("workflow.progress", "system.notification")
        .await;

    // Once the bucket has refilled, a batch within it passes and takes all it holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let (status, body) = server.post("/api/v1/events/batch", batch(3)).await;
        if status == 202 {
            break body;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "the batch never passed");
        let wait = body["error"]["retry_after_ms"].as_u64().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    };
    assert_eq!(answer["events"].as_array().map(Vec::len), Some(3));
    for i in 0..3 {
        assert_eq!(c.event("workflow.progress").await["data"]["progress"], i);
    }
    // Three tokens taken at once: the next single publish right after is refused.
    let (status, body) = server.post("/api/v1/events", progress(9)).await;
    assert_eq!(status, 429, "{body}");
}

#[tokio::test]
async fn reads_of_rooms_nobody_used_create_no_history() {
    let server = TestServer::start().await;
    let before = metric(&server, "roomcast_history_rooms").await;
    let http = reqwest::Client::new();
    let reads = futures_util::stream::iter(0..10_000)
        .map(|i| {
            let (http, server) = (&http, &server);
            async move {
                let path = match i % 4 {
                    0 => format!("/api/v1/rooms/project:never{i}/history?since_seq=3"),
                    1 => format!("/api/v1/rooms/agent:never{i}/history"),
                    2 => format!("/api/v1/rooms/user:never{i}/history?tenant=t{i}"),
                    _ => format!("/api/v1/rooms/project:never{i}/presence"),
                };
                let resp = http
                    .get(server.url(&path))
                    .header("x-api-key", KEY)
                    .send()
                    .await
                    .expect("request");
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (status, body)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(reads.iter().all(|(status, _)| *status == 200), "{reads:?}");
    assert_eq!(
        metric(&server, "roomcast_history_rooms").await,
        before,
        "history reads created room logs"
    );
    // An empty page with no epoch: the room has no history (as in a cluster).
    for (_, body) in reads.iter().filter(|(_, b)| b.get("events").is_some()) {
        assert_eq!(body["seq"], 0, "{body}");
        assert_eq!(body["epoch"], "", "{body}");
        assert_eq!(body["events"], json!([]), "{body}");
    }

    // A room with events still pages them.
    let (status, body) = server.post("/api/v1/events", progress(7)).await;
    assert_eq!(status, 202, "{body}");
    let (status, page) = server
        .get("/api/v1/rooms/project:1/history", Some(KEY))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["seq"], 1);
    assert_eq!(page["events"][0]["data"]["progress"], 7);
}

#[tokio::test]
async fn empty_logs_of_subscribed_rooms_expire_with_the_history_ttl() {
    let server = TestServer::start_with("[history]\nttl_secs = 1").await;
    let mut c = admin_socket(&server).await;
    let subscribed = c.subscribe("project:5").await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");
    // The position is reported (the room got its epoch)...
    assert!(
        subscribed["positions"]["project:5"]["epoch"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{subscribed}"
    );
    assert!(metric(&server, "roomcast_history_rooms").await >= 1.0);
    // ...and the empty logs are gone within the TTL and a sweep.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "roomcast_history_rooms").await > 0.0 {
        assert!(Instant::now() < deadline, "empty room logs were kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reads_of_rooms_nobody_used_create_no_redis_keys() {
    let redis = RedisServer::start().await;
    let server = TestServer::start_cluster_node("cost-a", &redis, "cost").await;
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let reads = futures_util::stream::iter(0..2_000)
        .map(|i| {
            let (http, server) = (&http, &server);
            async move {
                let path = match i % 2 {
                    0 => format!("/api/v1/rooms/project:never{i}/history?since_seq=1"),
                    _ => format!("/api/v1/rooms/agent:never{i}/presence"),
                };
                let resp = http
                    .get(server.url(&path))
                    .header("x-api-key", KEY)
                    .send()
                    .await
                    .expect("request");
                resp.status().as_u16()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(reads.iter().all(|s| *s == 200), "{reads:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*never*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.is_empty(),
        "reads created {} keys: {:?}",
        keys.len(),
        &keys[..keys.len().min(5)]
    );
}
