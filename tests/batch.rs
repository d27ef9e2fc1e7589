//! `POST /api/v1/events/batch`: up to `publish.max_batch_events` events, validated all or
//! nothing, published in order, answered per event.

mod common;

use common::*;
use serde_json::{Value, json};

fn progress(n: u64) -> Value {
    json!({"type": "workflow.progress", "data": {"workflow_id": "w1", "project_id": "1", "progress": n}})
}

async fn watcher(server: &TestServer) -> Client {
    let mut c = claims("w");
    c.role = Some("admin".into());
    let mut client = server.connect(&token(&c)).await;
    assert_eq!(client.subscribe("project:1").await["ok"], true);
    client
}

#[tokio::test]
async fn a_batch_is_published_in_order_with_an_answer_per_event() {
    let server = TestServer::start().await;
    let mut c = watcher(&server).await;
    let events: Vec<Value> = (0..=10).map(|i| progress(i * 10)).collect();
    let (status, body) = server
        .post("/api/v1/events/batch", json!({"events": events}))
        .await;
    assert_eq!(status, 202, "{body}");
    let answers = body["events"].as_array().unwrap();
    assert_eq!(answers.len(), 11);
    for (i, answer) in answers.iter().enumerate() {
        let got = c.event("workflow.progress").await;
        assert_eq!(got["id"], answer["id"], "event {i} out of order");
        assert_eq!(got["data"]["progress"], i as u64 * 10);
        assert_eq!(answer["room"], "project:1");
    }
}

#[tokio::test]
async fn one_invalid_event_rejects_the_whole_batch_naming_it() {
    let server = TestServer::start().await;
    let mut c = watcher(&server).await;
    let cases = [
        (
            json!([progress(1), {"type": "workflow.progress", "data": {"workflow_id": "w1", "project_id": "1", "progress": 101}}]),
            422,
            "invalid_payload",
            "events[1].data.progress",
        ),
        (
            json!([progress(1), {"type": "project.renamed", "data": {}}]),
            422,
            "unknown_event_type",
            "events[1]",
        ),
        (
            json!([{"type": "project.updated", "data": {}}]),
            422,
            "invalid_payload",
            "events[0].data.project_id",
        ),
        (
            json!([progress(1), {"type": "project.updated", "colour": 1}]),
            422,
            "invalid_payload",
            "events[1].colour",
        ),
    ];
    for (events, status, code, field) in cases {
        let (got, body) = server
            .post("/api/v1/events/batch", json!({"events": events}))
            .await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    // A key bound to acme may not publish one event of the batch elsewhere.
    let (status, body) = server
        .post_raw(
            "/api/v1/events/batch",
            Some(ACME_KEY),
            json!({"events": [progress(1), {"type": "project.updated", "data": {"project_id": 1}, "tenant": "globex"}]}).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    server.publish_marker().await;
    c.assert_not_before("workflow.progress", "system.notification")
        .await;
}

#[tokio::test]
async fn a_batch_over_the_limit_or_empty_is_refused() {
    let server = TestServer::start_with("[publish]\nmax_batch_events = 3").await;
    let mut c = watcher(&server).await;
    for n in [0, 4] {
        let events: Vec<Value> = (0..n).map(progress).collect();
        let (status, body) = server
            .post("/api/v1/events/batch", json!({"events": events}))
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "batch_too_large");
    }
    let (status, _) = server
        .post(
            "/api/v1/events/batch",
            json!({"events": [progress(1), progress(2), progress(3)]}),
        )
        .await;
    assert_eq!(status, 202);
    for want in [1, 2, 3] {
        assert_eq!(c.event("workflow.progress").await["data"]["progress"], want);
    }
}

#[tokio::test]
async fn a_retried_batch_with_an_idempotency_key_publishes_nothing_twice() {
    let server = TestServer::start().await;
    let mut c = watcher(&server).await;
    let body = json!({"events": [progress(1), progress(2)]}).to_string();
    let key = [("Idempotency-Key", "nightly-42")];
    let (s1, _, first) = server
        .post_with("/api/v1/events/batch", Some(KEY), body.clone(), &key)
        .await;
    let (s2, _, again) = server
        .post_with("/api/v1/events/batch", Some(KEY), body, &key)
        .await;
    assert_eq!((s1, s2), (202, 202));
    for i in 0..2 {
        assert_eq!(first["events"][i]["id"], again["events"][i]["id"]);
        assert_eq!(again["events"][i]["replayed"], true);
        assert_eq!(
            c.event("workflow.progress").await["id"],
            first["events"][i]["id"]
        );
    }
    server.publish_marker().await;
    c.assert_not_before("workflow.progress", "system.notification")
        .await;
}

#[tokio::test]
async fn a_publish_failure_stops_the_batch_and_answers_each_event() {
    let mut redis = RedisServer::start().await;
    let server = TestServer::start_cluster_node("a", &redis, "batchfail").await;
    redis.kill();
    server.until_ready(false).await;
    let (status, body) = server
        .post(
            "/api/v1/events/batch",
            json!({"events": [progress(1), progress(2)]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["events"][0]["error"]["code"], "cluster_unavailable");
    assert_eq!(body["events"][1]["error"]["code"], "skipped");
}
