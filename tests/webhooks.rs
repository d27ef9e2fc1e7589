//! `POST /webhooks/github`: signed GitHub deliveries (fixtures in the shape GitHub documents)
//! reach the mapped project's room as `pr.*` / `issue.*`; unsigned or tampered ones are
//! refused; a redelivery publishes nothing twice.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const WEBHOOK_SECRET: &str = "gh-webhook-secret-0123456789";

fn github_config() -> String {
    format!(
        "[github]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n\
         [github.projects]\n\"Octo-Org/Hello-World\" = \"7\"\n\"octo-org/other\" = \"8\""
    )
}

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/github/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `sha256=<hex HMAC-SHA256>` of the raw body, as GitHub computes it.
fn signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `body` as GitHub would: event name, delivery id, signature (`None`: no header).
async fn deliver(
    server: &TestServer,
    event: &str,
    delivery: &str,
    body: String,
    signature: Option<String>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut headers = vec![
        ("X-GitHub-Event", event.to_owned()),
        ("X-GitHub-Delivery", delivery.to_owned()),
        ("X-GitHub-Hook-ID", "123456789".to_owned()),
        ("User-Agent", "GitHub-Hookshot/044aadd".to_owned()),
    ];
    if let Some(sig) = signature {
        headers.push(("X-Hub-Signature-256", sig));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    server
        .post_with("/webhooks/github", None, body, &headers)
        .await
}

async fn signed(server: &TestServer, event: &str, delivery: &str, file: &str) -> (u16, Value) {
    let body = fixture(file);
    let sig = signature(WEBHOOK_SECRET, &body);
    let (status, _, answer) = deliver(server, event, delivery, body, Some(sig)).await;
    (status, answer)
}

/// A socket of the default tenant in `project:7` (the mapped one) and one in `project:8`.
async fn watchers(server: &TestServer) -> (Client, Client) {
    let mut seven = server.connect(&token_for("dev", "default", &["7"])).await;
    assert_eq!(seven.subscribe("project:7").await["ok"], true);
    let mut eight = server.connect(&token_for("ops", "default", &["8"])).await;
    assert_eq!(eight.subscribe("project:8").await["ok"], true);
    (seven, eight)
}

#[tokio::test]
async fn a_signed_pull_request_opened_reaches_the_mapped_project_room_as_pr_created() {
    let server = TestServer::start_with(&github_config()).await;
    let (mut seven, mut eight) = watchers(&server).await;
    let (status, answer) = signed(&server, "pull_request", "d-1", "pull_request.opened.json").await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["type"], "pr.created");
    assert_eq!(answer["room"], "project:7");
    let event = seven.event("pr.created").await;
    assert_eq!(event["id"], answer["id"]);
    assert_eq!(event["room"], "project:7");
    assert_eq!(
        event["data"],
        json!({"project_id": "7", "number": 1347, "title": "Amazing new feature",
               "url": "https://github.com/octo-org/hello-world/pull/1347",
               "author": "octocat", "state": "open", "merged": false, "action": "opened"})
    );
    server.publish_marker().await;
    eight
        .assert_not_before("pr.created", "system.notification")
        .await;
}

#[tokio::test]
async fn a_tampered_or_unsigned_delivery_is_refused_and_publishes_nothing() {
    let server = TestServer::start_with(&github_config()).await;
    let (mut seven, _) = watchers(&server).await;
    let body = fixture("pull_request.opened.json");
    let good = signature(WEBHOOK_SECRET, &body);
    let tampered = body.replace("Amazing new feature", "Amazing new featurf");
    let cases = [
        ("tampered body", tampered, Some(good.clone())),
        (
            "wrong secret",
            body.clone(),
            Some(signature("another-secret-000000", &body)),
        ),
        ("no signature", body.clone(), None),
        (
            "sha1 only",
            body.clone(),
            Some("sha1=7d38cdd689735b008b3c702edd92eea23791c5f6".into()),
        ),
        ("garbage", body.clone(), Some("sha256=not-hex".into())),
    ];
    for (i, (case, body, sig)) in cases.into_iter().enumerate() {
        let (status, _, answer) =
            deliver(&server, "pull_request", &format!("bad-{i}"), body, sig).await;
        assert_eq!(status, 401, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature", "{case}");
    }
    server.publish_marker().await;
    seven
        .assert_not_before("pr.created", "system.notification")
        .await;
}

#[tokio::test]
async fn a_redelivery_publishes_nothing_twice() {
    let server = TestServer::start_with(&github_config()).await;
    let (mut seven, _) = watchers(&server).await;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let body = fixture("pull_request.opened.json");
    let sig = signature(WEBHOOK_SECRET, &body);
    let (s1, h1, first) = deliver(
        &server,
        "pull_request",
        delivery,
        body.clone(),
        Some(sig.clone()),
    )
    .await;
    let (s2, h2, again) = deliver(&server, "pull_request", delivery, body, Some(sig)).await;
    assert_eq!((s1, s2), (202, 202), "{first} {again}");
    assert_eq!(first, again);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(seven.event("pr.created").await["id"], first["id"]);
    server.publish_marker().await;
    seven
        .assert_not_before("pr.created", "system.notification")
        .await;
}

#[tokio::test]
async fn a_replay_under_a_new_delivery_id_publishes_nothing_twice() {
    // A captured delivery (body and signature) sent again with a fresh X-GitHub-Delivery
    // gets the first answer and publishes nothing.
    let server = TestServer::start_with(&github_config()).await;
    let (mut seven, _) = watchers(&server).await;
    let body = fixture("pull_request.opened.json");
    let sig = signature(WEBHOOK_SECRET, &body);
    let (s1, h1, first) = deliver(
        &server,
        "pull_request",
        "0b1d5e00-0000-4000-8000-000000000001",
        body.clone(),
        Some(sig.clone()),
    )
    .await;
    assert_eq!(s1, 202, "{first}");
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(seven.event("pr.created").await["id"], first["id"]);
    for delivery in [
        "0b1d5e00-0000-4000-8000-000000000002",
        "0b1d5e00-0000-4000-8000-000000000003",
    ] {
        let (status, headers, again) = deliver(
            &server,
            "pull_request",
            delivery,
            body.clone(),
            Some(sig.clone()),
        )
        .await;
        assert_eq!(status, 202, "{delivery}: {again}");
        assert_eq!(again, first, "{delivery}");
        assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    }
    server.publish_marker().await;
    seven
        .assert_not_before("pr.created", "system.notification")
        .await;
}

#[tokio::test]
async fn pull_request_and_issue_actions_map_to_their_event_types() {
    let server = TestServer::start_with(&github_config()).await;
    let (mut seven, _) = watchers(&server).await;
    let cases = [
        (
            "pull_request",
            "pull_request.synchronize.json",
            "pr.updated",
        ),
        ("pull_request", "pull_request.closed.json", "pr.closed"),
        ("issues", "issues.opened.json", "issue.created"),
        ("issues", "issues.labeled.json", "issue.updated"),
        ("issues", "issues.closed.json", "issue.closed"),
    ];
    let mut received = std::collections::HashMap::new();
    for (i, (event, file, want)) in cases.iter().enumerate() {
        let (status, answer) = signed(&server, event, &format!("d-{i}"), file).await;
        assert_eq!(
            (status, answer["type"].as_str()),
            (202, Some(*want)),
            "{file}: {answer}"
        );
        let got = seven.event(want).await;
        assert_eq!(got["id"], answer["id"], "{file}");
        received.insert(*want, got);
    }
    // Check the fields of two of them: merged on a closed PR, the issue's own fields.
    let closed = &received["pr.closed"];
    assert_eq!(closed["data"]["merged"], true);
    assert_eq!(closed["data"]["state"], "closed");
    assert_eq!(
        received["issue.closed"]["data"],
        json!({"project_id": "7", "number": 1348, "title": "Found a bug",
               "url": "https://github.com/octo-org/hello-world/issues/1348",
               "author": "hubot", "state": "closed", "action": "closed"})
    );
}

#[tokio::test]
async fn pings_unmapped_repositories_and_unhandled_events_publish_nothing() {
    let server = TestServer::start_with(&format!(
        "[github]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n[github.projects]\n\"octo-org/other\" = \"7\""
    ))
    .await;
    let (mut seven, _) = watchers(&server).await;
    let (status, answer) = signed(&server, "ping", "p-1", "ping.json").await;
    assert_eq!(status, 200, "{answer}");
    for (event, file, reason) in [
        ("pull_request", "pull_request.opened.json", "not mapped"),
        ("star", "star.created.json", "not handled"),
    ] {
        let (status, answer) = signed(&server, event, &format!("i-{file}"), file).await;
        assert_eq!(status, 202, "{answer}");
        let ignored = answer["ignored"].as_str().unwrap_or_default();
        assert!(ignored.contains(reason), "{file}: {answer}");
    }
    let mapped = TestServer::start_with(&github_config()).await;
    let (status, answer) =
        signed(&mapped, "pull_request", "a-1", "pull_request.assigned.json").await;
    assert_eq!(status, 202);
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap_or_default()
            .contains("assigned"),
        "{answer}"
    );
    server.publish_marker().await;
    seven
        .assert_not_before("pr.created", "system.notification")
        .await;
}

#[tokio::test]
async fn a_malformed_signed_payload_is_invalid_and_no_secret_turns_the_endpoint_off() {
    let server = TestServer::start_with(&github_config()).await;
    let body = json!({"action": "opened", "repository": {"full_name": "octo-org/hello-world"},
                      "pull_request": {"number": "x", "title": "t"}})
    .to_string();
    let sig = signature(WEBHOOK_SECRET, &body);
    let (status, _, answer) = deliver(&server, "pull_request", "m-1", body, Some(sig)).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_payload");
    assert_eq!(answer["error"]["field"], "pull_request.number");

    let off = TestServer::start().await;
    let (status, answer) = signed(&off, "pull_request", "o-1", "pull_request.opened.json").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "github_not_configured");
}

#[tokio::test]
async fn an_api_keys_idempotency_key_never_swallows_a_delivery() {
    let server = TestServer::start_with(&github_config()).await;
    let (mut seven, _) = watchers(&server).await;
    let delivery = "9e1c7a52-0000-11f0-8000-4c9367dc0958";
    // A publisher with a key claims the delivery id first, both ways an API key can (the
    // two headers name one key of the API key's own).
    for (header, replayed) in [("Idempotency-Key", false), ("X-GitHub-Delivery", true)] {
        let (status, headers, body) = server
            .post_with(
                "/api/v1/events",
                Some(KEY),
                json!({"type": "project.updated", "data": {"project_id": "7"}}).to_string(),
                &[(header, delivery)],
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            headers.contains_key("idempotent-replayed"),
            replayed,
            "{header}"
        );
    }
    seven.event("project.updated").await;
    let (status, answer) = signed(
        &server,
        "pull_request",
        delivery,
        "pull_request.opened.json",
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(seven.event("pr.created").await["id"], answer["id"]);
}
