//! A socket connects with a JWT from any of the three places, is refused with the exact
//! code otherwise, and is greeted with `connection.established`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn token_is_accepted_from_auth_header_and_query() {
    let server = TestServer::start().await;
    let t = token(&claims("alice"));
    for auth in [
        Auth::Payload(json!({ "token": t })),
        Auth::Header(&t),
        Auth::Query(&t),
        // An empty auth.token counts as absent: the search goes on.
        Auth::EmptyPayloadThenQuery(&t),
    ] {
        let c = Client::connect(server.addr, auth).await.expect("connects");
        assert_eq!(c.established["user_id"], "alice");
    }
}

#[tokio::test]
async fn auth_payload_wins_over_header() {
    let server = TestServer::start().await;
    let good = token(&claims("alice"));
    // A bad header token is ignored when auth.token is present and valid...
    let c = Client::connect(server.addr, Auth::Payload(json!({ "token": good }))).await;
    assert!(c.is_ok());
    // ...and a bad auth.token is not rescued by anything else.
    let err = Client::connect(server.addr, Auth::Payload(json!({ "token": "x.y.z" })))
        .await
        .err();
    assert_eq!(err.as_deref(), Some("token_invalid"));
}

#[tokio::test]
async fn refusals_carry_the_exact_code() {
    let server = TestServer::start().await;
    let mut expired = claims("alice");
    expired.exp = roomcast::auth::jwt::now_secs() - 3600;
    let wrong_secret =
        roomcast::auth::jwt::sign_hs256("some-other-secret-0123456789", &claims("alice")).unwrap();
    let bad_sub = token(&claims("alice smith"));
    let cases = [
        (Auth::None, "token_missing"),
        (Auth::Payload(json!({})), "token_missing"),
        (Auth::Payload(json!({ "token": "" })), "token_missing"),
        (
            Auth::Payload(json!({ "token": "garbage" })),
            "token_invalid",
        ),
        (
            Auth::Payload(json!({ "token": wrong_secret })),
            "token_invalid",
        ),
        (Auth::Payload(json!({ "token": bad_sub })), "token_invalid"),
        (
            Auth::Payload(json!({ "token": token(&expired) })),
            "token_expired",
        ),
    ];
    for (auth, code) in cases {
        let err = Client::connect(server.addr, auth).await.err();
        assert_eq!(err.as_deref(), Some(code));
    }
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(stats["auth_failures"], 7);
    assert_eq!(stats["connections"], 0);
}

#[tokio::test]
async fn established_describes_the_connection() {
    let server = TestServer::start().await;
    let c = Client::connect(
        server.addr,
        Auth::Payload(json!({ "token": token_for("bob", "acme", &[]) })),
    )
    .await
    .unwrap();
    let e = &c.established;
    assert_eq!(e["user_id"], "bob");
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["rooms"], json!(["global", "user:bob"]));
    assert_eq!(e["node_id"], "test-node");
    assert!(e["sid"].as_str().is_some_and(|s| !s.is_empty()));
    let time = e["server_time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-11-22T10:00:00.000Z".len(), "{time}");
    assert!(time.ends_with('Z'));
}

#[tokio::test]
async fn ws_namespace_behaves_like_the_root() {
    let server = TestServer::start().await;
    let t = token_for("carol", "default", &["7"]);
    let mut c = Client::connect_ns(server.addr, "/ws", Auth::Payload(json!({ "token": t })))
        .await
        .unwrap();
    assert_eq!(c.established["user_id"], "carol");
    assert_eq!(c.subscribe("project:7").await["ok"], true);
    let (status, _) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": "7"}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(c.event("project.deleted").await["room"], "project:7");
    let err = Client::connect_ns(server.addr, "/ws", Auth::None)
        .await
        .err();
    assert_eq!(err.as_deref(), Some("token_missing"));
}

/// socketioxide answers CONNECT before it runs the connect handler: a command sent the moment
/// the answer arrives (as python-socketio does) must still find its handler and be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_the_moment_connect_is_answered_is_answered() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start().await;
    let t = token(&claims("alice"));
    for attempt in 0..30 {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let open = ws.next().await.unwrap().unwrap();
        assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");
        ws.send(Message::text(format!("40{}", json!({ "token": t }))))
            .await
            .unwrap();
        let ack = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(msg)) = ws.next().await {
                let Ok(text) = msg.to_text() else { continue };
                if text.starts_with("40") {
                    // `subscribe` with ack id 1, before anything else arrives.
                    let subscribe = format!("421{}", json!(["subscribe", {"room": "global"}]));
                    ws.send(Message::text(subscribe)).await.ok()?;
                } else if let Some(body) = text.strip_prefix("431") {
                    return Some(body.to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let ack =
            ack.unwrap_or_else(|| panic!("attempt {attempt}: the subscribe was never answered"));
        assert!(ack.contains("\"ok\":true"), "attempt {attempt}: {ack}");
    }
}
