//! A token's lifetime holds on a live socket: warned before expiry, disconnected at expiry
//! unless refreshed; and a shutdown drains sockets with `server.shutdown`.

mod common;

use common::*;
use roomcast::auth::jwt::now_secs;
use roomcast::rooms::{Grant, Id};
use serde_json::json;

const SHORT: &str = "[auth]\njwt_secret = \"test-secret-0123456789abcdef\"\nleeway_secs = 0\nexpiry_warning_secs = 2";

fn short_lived(sub: &str, secs: u64) -> roomcast::auth::TokenClaims {
    let mut c = claims(sub);
    c.exp = now_secs() + secs;
    c
}

async fn server() -> TestServer {
    // The base config already has [auth]; replace it through the node config.
    TestServer::start_with_auth(SHORT).await
}

#[tokio::test]
async fn an_expiring_token_is_warned_then_disconnected() {
    let server = server().await;
    let mut c = server.connect(&token(&short_lived("alice", 3))).await;
    let warning = c.event("auth.expiring").await;
    assert!(
        warning["expires_in_secs"].as_u64().unwrap() <= 2,
        "{warning}"
    );
    assert!(warning["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c.event("auth.expired").await["code"], "token_expired");
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_refreshed_socket_stays() {
    let server = server().await;
    let mut c = server.connect(&token(&short_lived("alice", 3))).await;
    c.event("auth.expiring").await;
    let fresh = token(&short_lived("alice", 3600));
    let ack = c
        .emit_with_ack("auth.refresh", json!({ "token": fresh }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["expires_at"].as_str().unwrap().ends_with('Z'));
    // Past the old expiry the socket still answers, and was not told it expired.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(c.emit_with_ack("ping", json!(null)).await["pong"], true);
    assert!(!c.received().contains(&"auth.expired".to_string()));
}

#[tokio::test]
async fn refresh_must_keep_user_and_tenant_and_drops_lost_rooms() {
    let server = server().await;
    let mut first = short_lived("alice", 3600);
    first.projects = Grant::Some(vec![Id::parse("1").unwrap(), Id::parse("2").unwrap()].into());
    let mut c = server.connect(&token(&first)).await;
    c.emit_with_ack("subscribe", json!({"rooms": ["project:1", "project:2"]}))
        .await;

    let other = token(&short_lived("bob", 3600));
    let ack = c
        .emit_with_ack("auth.refresh", json!({ "token": other }))
        .await;
    assert_eq!(ack["error"]["code"], "refresh_mismatch");
    let ack = c
        .emit_with_ack("auth.refresh", json!({ "token": "x" }))
        .await;
    assert_eq!(ack["error"]["code"], "token_invalid");
    let mut old = short_lived("alice", 0);
    old.exp = now_secs() - 10;
    let ack = c
        .emit_with_ack("auth.refresh", json!({ "token": token(&old) }))
        .await;
    assert_eq!(ack["error"]["code"], "token_expired");

    let mut narrower = short_lived("alice", 3600);
    narrower.projects = Grant::Some(vec![Id::parse("1").unwrap()].into());
    let ack = c
        .emit_with_ack("auth.refresh", json!({ "token": token(&narrower) }))
        .await;
    assert_eq!(ack["left_rooms"], json!(["project:2"]), "{ack}");
    server
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": 2}}),
        )
        .await;
    server.publish_marker().await;
    c.assert_not_before("project.deleted", "system.notification")
        .await;
}

#[tokio::test]
async fn shutdown_tells_sockets_and_closes_them() {
    let mut server = TestServer::start_with("").await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    server.shutdown();
    let notice = c.event("server.shutdown").await;
    assert_eq!(notice["reconnect_after_ms"], 1000);
    // A draining node takes no new connection.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections while draining"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Closed as a dropped transport: an Engine.IO close or a Socket.IO disconnect would tell
    // stock clients the server meant it, and they would not reconnect.
    assert_eq!(c.ending().await, "transport");
}
