//! A socket connects with a JWT from any of the three places, is refused with the exact
//! code otherwise, and is greeted with `connection.established`.

mod common;

use common::*;
use roomcast::auth::jwt::TokenClaims;
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
    for attempt in 0..30 {
        // One user per attempt: 30 connects of one user would pass its handshake budget.
        let t = token(&claims(&format!("alice{attempt}")));
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

/// `GET path` with optional `Authorization: Bearer`; the status, `Retry-After` and body.
async fn eio_get(server: &TestServer, path: &str, bearer: Option<&str>) -> (u16, bool, String) {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    let body = resp.bytes().await.unwrap_or_default();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// socket.io-client 2.x (Engine.IO v3) brings its token with the HTTP request, and
/// socketioxide connects a v3 session to `/` as it opens, with no connect timeout: a refused
/// session would stay open as long as its client pings. So the request itself is answered
/// 401 `{code, message}` and no session (no `sid`) exists, however often it is tried.
#[tokio::test]
async fn an_engine_io_v3_handshake_without_a_valid_token_opens_no_session() {
    let server = TestServer::start().await;
    let (_, before) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    let expired = token(&TokenClaims::new("alice", 1));
    let poll = "/socket.io/?EIO=3&transport=polling";
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (poll.to_owned(), None, "token_missing"),
        (format!("{poll}&b64=1&token="), None, "token_missing"),
        (format!("{poll}&token=not-a-jwt"), None, "token_invalid"),
        (poll.to_owned(), Some("not-a-jwt"), "token_invalid"),
        (format!("{poll}&token={expired}"), None, "token_expired"),
        (
            "/socket.io/?EIO=3&transport=websocket".to_owned(),
            None,
            "token_missing",
        ),
        // Percent-encoded, `sid` is no sid to the router, which would open a session.
        (
            format!("{poll}&%73id=AAAAAAAAAAAAAAHs"),
            None,
            "token_missing",
        ),
    ];
    const ROUNDS: u64 = 5;
    for _ in 0..ROUNDS {
        for (path, bearer, code) in &cases {
            let (status, _, body) = eio_get(&server, path, *bearer).await;
            assert_eq!(status, 401, "{path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(body["code"], *code, "{path}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(body.get("sid").is_none(), "{path}: {body}");
        }
    }
    // What an operator sees: every attempt counted as an auth failure (once), no connection.
    let (_, after) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(
        after["auth_failures"].as_u64(),
        Some(before["auth_failures"].as_u64().unwrap() + ROUNDS * cases.len() as u64),
        "{after}"
    );
    assert_eq!(after["connections"], before["connections"]);
    let (_, metrics) = server.get_text("/metrics", Some(KEY)).await;
    assert!(
        metrics.contains(&format!(
            "roomcast_auth_failures_total{{reason=\"token_missing\"}} {}",
            ROUNDS * 4
        )),
        "{metrics}"
    );
}

/// A valid token in the query or the header opens the v3 session as before, and it connects;
/// an Engine.IO v4 handshake carries no token (it comes in the CONNECT packet) and is not
/// screened for one.
#[tokio::test]
async fn an_engine_io_v3_handshake_with_a_valid_token_connects() {
    let server = TestServer::start().await;
    let t = token(&claims("alice"));
    let poll = "/socket.io/?EIO=3&transport=polling&b64=1";
    for (path, bearer) in [
        (format!("{poll}&token={t}"), None),
        (poll.to_owned(), Some(&*t)),
    ] {
        let (status, _, body) = eio_get(&server, &path, bearer).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"sid\""), "{body}");
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
        if stats["connections"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _, body) = eio_get(&server, "/socket.io/?EIO=4&transport=polling", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"sid\""), "{body}");
}

/// Over the address's handshake budget, a v3 handshake is answered 429 `rate_limited` at once
/// (a v4 one is refused at its CONNECT, as before).
#[tokio::test]
async fn an_engine_io_v3_handshake_over_the_budget_is_answered_429() {
    let server = TestServer::start_with(
        "[limits]\nhandshakes_per_ip_per_sec = 1\nhandshakes_per_ip_burst = 1\nhandshake_exempt = []",
    )
    .await;
    let path = format!(
        "/socket.io/?EIO=3&transport=polling&token={}",
        token(&claims("alice"))
    );
    let (status, _, body) = eio_get(&server, &path, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, retry_after, body) = eio_get(&server, &path, None).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after);
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    assert!(body.get("sid").is_none());
}
