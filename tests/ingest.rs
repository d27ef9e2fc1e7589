//! Durable ingest from a Redis stream: entries added while no consumer runs are delivered
//! once the nodes start, a dead consumer's pending entries are taken over, and poison
//! entries go to the dead-letter stream with their error without blocking the rest.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

const STREAM: &str = "wf:events";
const DEAD: &str = "wf:events:dead";

fn ingest_toml(extra: &str) -> String {
    format!(
        "[ingest.redis_streams]\nstream = \"{STREAM}\"\ngroup = \"roomcast\"\ndead_letter_stream = \"{DEAD}\"\n\
         block_ms = 200\nclaim_idle_ms = 1000\nclaim_interval_ms = 200\n{extra}"
    )
}

async fn redis_conn(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{}", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn progress(n: u64) -> String {
    json!({"type": "workflow.progress", "data": {"workflow_id": "w1", "project_id": "1", "progress": n}})
        .to_string()
}

async fn xadd(conn: &mut MultiplexedConnection, fields: &[(&str, &str)]) -> String {
    conn.xadd(STREAM, "*", fields).await.unwrap()
}

/// Entries read by the group and not yet acknowledged.
async fn pending(conn: &mut MultiplexedConnection) -> u64 {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("roomcast")
        .query_async(conn)
        .await
        .unwrap();
    match reply {
        redis::Value::Array(items) => redis::from_redis_value_ref(&items[0]).unwrap(),
        other => panic!("XPENDING: {other:?}"),
    }
}

async fn until_nothing_pending(conn: &mut MultiplexedConnection) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while pending(conn).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin(server: &TestServer) -> Client {
    let mut c = claims("ops");
    c.role = Some("admin".into());
    let mut client = server.connect(&token(&c)).await;
    assert_eq!(client.subscribe("project:1").await["ok"], true);
    client
}

/// Receives `n` `workflow.progress` events and returns how often each progress value came.
async fn progress_received(client: &mut Client, n: usize) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let event = client.event("workflow.progress").await;
        *seen
            .entry(event["data"]["progress"].as_u64().unwrap())
            .or_default() += 1;
    }
    seen
}

/// Progress events 0..n reached `user` exactly once each, every entry was acknowledged, and
/// no further progress event follows (a marker published at `watch` comes first).
async fn each_delivered_once(
    user: &mut Client,
    watch: &TestServer,
    conn: &mut MultiplexedConnection,
    n: u64,
) {
    let seen = progress_received(user, n as usize).await;
    assert_eq!(seen, (0..n).map(|p| (p, 1)).collect::<BTreeMap<_, _>>());
    until_nothing_pending(conn).await;
    watch.publish_marker().await;
    user.assert_not_before("workflow.progress", "system.notification")
        .await;
}

#[tokio::test]
async fn entries_added_while_every_consumer_is_down_are_all_delivered_once_they_start() {
    let redis = RedisServer::start().await;
    let mut conn = redis_conn(&redis).await;
    // A node that does not consume, where the user is connected.
    let watch = TestServer::start_cluster_node("watch", &redis, "ing1").await;
    let mut user = admin(&watch).await;
    for n in 0..40 {
        xadd(&mut conn, &[("event", &progress(n))]).await;
    }
    let config = ingest_toml("batch_size = 7");
    let _a = TestServer::start_cluster_node_with("a", &redis, "ing1", &config).await;
    let _b = TestServer::start_cluster_node_with("b", &redis, "ing1", &config).await;
    each_delivered_once(&mut user, &watch, &mut conn, 40).await;
}

#[tokio::test]
async fn a_dead_consumers_pending_entries_are_taken_over() {
    let redis = RedisServer::start().await;
    let mut conn = redis_conn(&redis).await;
    let watch = TestServer::start_cluster_node("watch", &redis, "ing2").await;
    let mut user = admin(&watch).await;
    // A node read these entries and was killed before acknowledging them: in Redis they are
    // pending, owned by a consumer that will never come back.
    let _: () = conn
        .xgroup_create_mkstream(STREAM, "roomcast", "0")
        .await
        .unwrap();
    for n in 0..5 {
        xadd(&mut conn, &[("event", &progress(n))]).await;
    }
    let read: redis::streams::StreamReadReply = conn
        .xread_options(
            &[STREAM],
            &[">"],
            &redis::streams::StreamReadOptions::default().group("roomcast", "killed-node"),
        )
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 5);
    assert_eq!(pending(&mut conn).await, 5);

    let _a = TestServer::start_cluster_node_with("a", &redis, "ing2", &ingest_toml("")).await;
    each_delivered_once(&mut user, &watch, &mut conn, 5).await;
}

#[tokio::test]
async fn poison_entries_go_to_the_dead_letter_stream_and_do_not_block_the_rest() {
    let redis = RedisServer::start().await;
    let mut conn = redis_conn(&redis).await;
    let server = TestServer::start_with(&ingest_toml(&format!(
        "redis_url = \"redis://127.0.0.1:{}\"",
        redis.port
    )))
    .await;
    let mut user = admin(&server).await;
    let unknown = xadd(
        &mut conn,
        &[("event", r#"{"type": "project.renamed", "data": {}}"#)],
    )
    .await;
    let broken = xadd(&mut conn, &[("event", "{not json")]).await;
    let invalid = xadd(
        &mut conn,
        &[("event", r#"{"type": "workflow.progress", "data": {"workflow_id": "w1", "project_id": "1", "progress": 101}}"#)],
    )
    .await;
    let no_event = xadd(&mut conn, &[("payload", "{}")]).await;
    xadd(&mut conn, &[("event", &progress(7))]).await;

    let event = user.event("workflow.progress").await;
    assert_eq!(event["data"]["progress"], 7);
    until_nothing_pending(&mut conn).await;
    let dead: redis::streams::StreamRangeReply = conn.xrange_all(DEAD).await.unwrap();
    let dead: Vec<BTreeMap<String, String>> = dead
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                .collect()
        })
        .collect();
    let summary: Vec<(&str, &str, &str)> = dead
        .iter()
        .map(|e| (e["id"].as_str(), e["code"].as_str(), e["field"].as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (unknown.as_str(), "unknown_event_type", ""),
            (broken.as_str(), "malformed_json", ""),
            (invalid.as_str(), "invalid_payload", "progress"),
            (no_event.as_str(), "invalid_payload", "event"),
        ]
    );
    assert_eq!(dead[1]["event"], "{not json");
    assert_eq!(dead[0]["stream"], STREAM);
    assert!(
        dead[2]["message"].contains("between 0 and 100"),
        "{:?}",
        dead[2]
    );
}

#[tokio::test]
async fn entries_with_one_idempotency_key_publish_once_into_their_tenant() {
    let redis = RedisServer::start().await;
    let mut conn = redis_conn(&redis).await;
    let server = TestServer::start_with(&ingest_toml(&format!(
        "redis_url = \"redis://127.0.0.1:{}\"",
        redis.port
    )))
    .await;
    let mut acme = server.connect(&token_for("a", "acme", &["1"])).await;
    assert_eq!(acme.subscribe("project:1").await["ok"], true);
    let event: Value = json!({"type": "project.updated", "tenant": "acme",
                              "data": {"project_id": "1", "status": "done"}});
    for _ in 0..2 {
        xadd(
            &mut conn,
            &[("event", &event.to_string()), ("idempotency_key", "job-17")],
        )
        .await;
    }
    xadd(
        &mut conn,
        &[(
            "event",
            &json!({"type": "system.notification", "tenant": "acme",
        "data": {"title": "t", "message": "m"}})
            .to_string(),
        )],
    )
    .await;
    assert_eq!(
        acme.event("project.updated").await["data"]["status"],
        "done"
    );
    acme.assert_not_before("project.updated", "system.notification")
        .await;
}
