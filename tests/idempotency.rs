//! A publish retried with the same idempotency key returns the first answer and delivers
//! nothing again; on a cluster, whichever node the retry reaches.

mod common;

use common::*;
use serde_json::json;

async fn watcher(server: &TestServer) -> Client {
    let mut c = claims("w");
    c.role = Some("admin".into());
    let mut client = server.connect(&token(&c)).await;
    client.subscribe("project:1").await;
    client
}

fn body() -> String {
    json!({"type": "project.updated", "data": {"project_id": 1}}).to_string()
}

#[tokio::test]
async fn a_retry_returns_the_first_answer_and_delivers_nothing() {
    let server = TestServer::start().await;
    let mut c = watcher(&server).await;
    let key = [("Idempotency-Key", "deploy-42")];
    let (s1, h1, first) = server
        .post_with("/api/v1/events", Some(KEY), body(), &key)
        .await;
    let (s2, h2, again) = server
        .post_with("/api/v1/events", Some(KEY), body(), &key)
        .await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first, again);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    // GitHub's delivery id counts as a key; another API key has its own keys.
    let gh = [("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")];
    let (_, _, a) = server
        .post_with("/api/v1/events", Some(KEY), body(), &gh)
        .await;
    let (_, _, b) = server
        .post_with("/api/v1/events", Some(KEY), body(), &gh)
        .await;
    assert_eq!(a["id"], b["id"]);
    let (_, _, other_key) = server
        .post_with("/api/v1/events", Some(ACME_KEY), body(), &key)
        .await;
    assert_ne!(other_key["id"], first["id"]);

    // Exactly two deliveries reached the default tenant's project:1: first and a.
    server.publish_marker().await;
    assert_eq!(c.event("project.updated").await["id"], first["id"]);
    assert_eq!(c.event("project.updated").await["id"], a["id"]);
    c.assert_not_before("project.updated", "system.notification")
        .await;
}

#[tokio::test]
async fn two_keys_in_one_tenant_never_share_an_answer() {
    let server = TestServer::start().await;
    let mut c = server.connect(&token_for("w", "acme", &["1"])).await;
    assert_eq!(c.subscribe("project:1").await["ok"], true);
    let body = json!({"type": "project.updated", "tenant": "acme", "data": {"project_id": 1}});
    let key = [("Idempotency-Key", "release-7")];
    // `full` (unbound, publishing into acme) and `acme` (bound to it): one key each.
    let (s1, h1, first) = server
        .post_with("/api/v1/events", Some(KEY), body.to_string(), &key)
        .await;
    let (s2, h2, second) = server
        .post_with("/api/v1/events", Some(ACME_KEY), body.to_string(), &key)
        .await;
    assert_eq!((s1, s2), (202, 202), "{first} {second}");
    assert!(h1.get("idempotent-replayed").is_none());
    assert!(h2.get("idempotent-replayed").is_none());
    assert_ne!(first["id"], second["id"]);
    assert_eq!(c.event("project.updated").await["id"], first["id"]);
    assert_eq!(c.event("project.updated").await["id"], second["id"]);
}

#[tokio::test]
async fn a_failed_publish_can_be_retried_with_its_key() {
    let server = TestServer::start().await;
    let key = [("Idempotency-Key", "k1")];
    let bad = json!({"type": "project.updated", "data": {}}).to_string();
    let (status, _, _) = server
        .post_with("/api/v1/events", Some(KEY), bad, &key)
        .await;
    assert_eq!(status, 422);
    let (status, headers, _) = server
        .post_with("/api/v1/events", Some(KEY), body(), &key)
        .await;
    assert_eq!(status, 202);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, _, err) = server
        .post_with(
            "/api/v1/events",
            Some(KEY),
            body(),
            &[("Idempotency-Key", "")],
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
}

#[tokio::test]
async fn keys_hold_across_the_cluster() {
    let redis = RedisServer::start().await;
    let prefix = format!("idem{}", std::process::id());
    let a = TestServer::start_cluster_node("a", &redis, &prefix).await;
    let b = TestServer::start_cluster_node("b", &redis, &prefix).await;
    let mut c = watcher(&b).await;
    let key = [("Idempotency-Key", "once")];
    let (_, _, first) = a.post_with("/api/v1/events", Some(KEY), body(), &key).await;
    let (status, headers, again) = b.post_with("/api/v1/events", Some(KEY), body(), &key).await;
    assert_eq!(status, 202);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(c.event("project.updated").await["id"], first["id"]);
    b.publish_marker().await;
    c.assert_not_before("project.updated", "system.notification")
        .await;
}
