//! `GET /metrics` answers Prometheus text format, needs a `read` key unless
//! `[metrics] public = true`, and its figures move with connects, publishes and refusals.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

/// Parses Prometheus text format strictly enough to catch a malformed exposition: every
/// sample is `name{labels} value` with a declared `# TYPE`. Returns `series -> value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "no # TYPE for {line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let (status, text) = server.get_text("/metrics", Some(READ_KEY)).await;
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_need_a_read_key_unless_public() {
    let server = TestServer::start().await;
    assert_eq!(server.get_text("/metrics", None).await.0, 401);
    // A key without `read` is not enough.
    assert_eq!(server.get_text("/metrics", Some(ACME_KEY)).await.0, 403);
    assert_eq!(server.get_text("/metrics", Some(READ_KEY)).await.0, 200);
    let public = TestServer::start_with("[metrics]\npublic = true").await;
    let (status, text) = public.get_text("/metrics", None).await;
    assert_eq!(status, 200);
    parse(&text);
}

#[tokio::test]
async fn metrics_move_after_a_connect_a_publish_and_a_refusal() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, "roomcast_connections"), 0.0);
    assert_eq!(
        value(&before, "roomcast_publish_duration_seconds_count"),
        0.0
    );

    let mut c = server.connect(&token(&claims("alice"))).await;
    let refused = Client::connect(server.addr, Auth::Payload(json!({"token": "x.y.z"}))).await;
    assert_eq!(refused.err().as_deref(), Some("token_invalid"));
    server.publish_marker().await;
    c.event("system.notification").await;
    let (status, body) = server
        .post(
            "/api/v1/broadcast",
            json!({"event": "build.done", "room": "global", "data": {}, "tenant": "acme"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let after = scrape(&server).await;
    assert_eq!(value(&after, "roomcast_connections"), 1.0);
    assert_eq!(value(&after, "roomcast_sockets{namespace=\"/\"}"), 1.0);
    assert_eq!(value(&after, "roomcast_sockets{namespace=\"/ws\"}"), 0.0);
    assert_eq!(value(&after, "roomcast_users"), 1.0);
    assert_eq!(
        value(&after, "roomcast_rooms"),
        2.0,
        "global and user:alice"
    );
    assert_eq!(
        value(
            &after,
            "roomcast_events_published_total{tenant=\"default\",type=\"system.notification\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "roomcast_events_published_total{tenant=\"acme\",type=\"custom\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&after, "roomcast_publish_duration_seconds_count"),
        2.0
    );
    assert!(value(&after, "roomcast_publish_duration_seconds_sum") > 0.0);
    assert_eq!(
        value(
            &after,
            "roomcast_auth_failures_total{reason=\"token_invalid\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&after, "roomcast_history_events"),
        2.0,
        "both publishes are numbered and kept"
    );
}

#[tokio::test]
async fn refusals_by_a_limit_are_counted_per_limit() {
    let server = TestServer::start_with(
        "[limits]\nmax_connections_per_user = 1\npublish_per_key_per_sec = 1\npublish_per_key_burst = 1",
    )
    .await;
    let t = token(&claims("alice"));
    let _c = server.connect(&t).await;
    let refused = Client::connect(server.addr, Auth::Payload(json!({"token": t}))).await;
    assert_eq!(refused.err().as_deref(), Some("too_many_connections"));
    server.publish_marker().await;
    let (status, _) = server
        .post(
            "/api/v1/events",
            json!({"type": "system.notification", "data": {"title": "t", "message": "m"}}),
        )
        .await;
    assert_eq!(status, 429);
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, "roomcast_limited_total{limit=\"connections_user\"}"),
        1.0
    );
    assert_eq!(value(&m, "roomcast_limited_total{limit=\"publish\"}"), 1.0);
    assert_eq!(
        value(
            &m,
            "roomcast_events_published_total{tenant=\"default\",type=\"system.notification\"}"
        ),
        1.0,
        "the refused publish is not counted"
    );
}

#[tokio::test]
async fn cluster_nodes_report_redis_and_keep_history_out() {
    let redis = RedisServer::start().await;
    let server = TestServer::start_cluster_node("metrics-a", &redis, "metrics").await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    server.publish_marker().await;
    c.event("system.notification").await;
    let m = scrape(&server).await;
    assert_eq!(value(&m, "roomcast_redis_up"), 1.0);
    assert!(m.contains_key("roomcast_cluster_dropped_messages_total"));
    assert!(
        !m.contains_key("roomcast_history_events"),
        "history is in Redis"
    );
    assert_eq!(value(&m, "roomcast_publish_duration_seconds_count"), 1.0);
    drop(redis);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while value(&scrape(&server).await, "roomcast_redis_up") != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "redis_up stayed 1");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
