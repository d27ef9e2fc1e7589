//! Every limit refuses at its boundary with its documented code and accepts below it:
//! connections per user, tenant and node; handshakes per client address (with
//! `X-Forwarded-For` believed only from trusted proxies); events per socket, with a
//! disconnect under sustained abuse; publishes per API key; and the size limits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn try_connect(server: &TestServer, token: &str) -> Result<Client, String> {
    Client::connect(server.addr, Auth::Payload(json!({ "token": token }))).await
}

/// Connects as `token` from the client address `xff` (sent as `X-Forwarded-For`).
async fn connect_from(server: &TestServer, token: &str, xff: &str) -> Result<Client, String> {
    Client::connect_with(
        server.addr,
        "/",
        Auth::Payload(json!({ "token": token })),
        &[("x-forwarded-for", xff)],
    )
    .await
}

#[tokio::test]
async fn connections_are_limited_per_user_tenant_and_node() {
    let server = TestServer::start_with(
        "[limits]\nmax_connections = 4\nmax_connections_per_tenant = 3\nmax_connections_per_user = 2",
    )
    .await;
    let alice = token_for("alice", "t1", &[]);
    let a1 = try_connect(&server, &alice).await.expect("first of alice");
    let _a2 = try_connect(&server, &alice).await.expect("second of alice");
    assert_eq!(
        try_connect(&server, &alice).await.err().as_deref(),
        Some("too_many_connections"),
        "a third socket of one user"
    );
    let _b = try_connect(&server, &token_for("bob", "t1", &[]))
        .await
        .expect("the tenant's third");
    assert_eq!(
        try_connect(&server, &token_for("carol", "t1", &[]))
            .await
            .err()
            .as_deref(),
        Some("too_many_connections"),
        "a fourth socket in one tenant"
    );
    let _d = try_connect(&server, &token_for("dave", "t2", &[]))
        .await
        .expect("the node's fourth");
    assert_eq!(
        try_connect(&server, &token_for("erin", "t3", &[]))
            .await
            .err()
            .as_deref(),
        Some("too_many_connections"),
        "a fifth socket on the node"
    );
    // A socket that leaves gives its place back.
    drop(a1);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match try_connect(&server, &alice).await {
            Ok(_) => break,
            Err(code) => {
                assert_eq!(code, "too_many_connections");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Refusals are not authentication failures.
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(stats["auth_failures"], 0);
}

#[tokio::test]
async fn handshakes_are_limited_per_forwarded_address_from_a_trusted_proxy() {
    let server = TestServer::start_with(
        "[limits]\nhandshakes_per_ip_per_sec = 1\nhandshakes_per_ip_burst = 3\n\
         trusted_proxies = [\"127.0.0.1\"]\nhandshake_exempt = []",
    )
    .await;
    let t = token(&claims("alice"));
    for _ in 0..3 {
        connect_from(&server, &t, "203.0.113.7")
            .await
            .expect("within the burst");
    }
    assert_eq!(
        connect_from(&server, &t, "203.0.113.7")
            .await
            .err()
            .as_deref(),
        Some("rate_limited")
    );
    // Another client behind the same proxy has its own bucket.
    connect_from(&server, &t, "203.0.113.8")
        .await
        .expect("another address");
    // The bucket refills at one handshake per second.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while connect_from(&server, &t, "203.0.113.7").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = TestServer::start_with(
        "[limits]\nhandshakes_per_ip_per_sec = 1\nhandshakes_per_ip_burst = 2\nhandshake_exempt = []",
    )
    .await;
    let t = token(&claims("alice"));
    connect_from(&server, &t, "198.51.100.1")
        .await
        .expect("1st");
    connect_from(&server, &t, "198.51.100.2")
        .await
        .expect("2nd");
    // A new spoofed address each time does not escape the peer's own bucket.
    assert_eq!(
        connect_from(&server, &t, "198.51.100.3")
            .await
            .err()
            .as_deref(),
        Some("rate_limited")
    );
}

#[tokio::test]
async fn loopback_clients_are_exempt_by_default() {
    let server = TestServer::start_with("[limits]\nhandshakes_per_ip_burst = 2").await;
    for i in 0..10 {
        try_connect(&server, &token(&claims(&format!("u{i}"))))
            .await
            .expect("loopback is exempt");
    }
}

#[tokio::test]
async fn events_over_the_budget_are_refused_then_the_socket_is_disconnected() {
    let server = TestServer::start_with(
        "[limits]\nevents_per_sec = 1\nevents_burst = 3\n\
         event_abuse_refusals = 3\nevent_abuse_window_secs = 60",
    )
    .await;
    let mut abuser = server.connect(&token(&claims("mallory"))).await;
    let mut other = server.connect(&token(&claims("alice"))).await;
    for _ in 0..3 {
        assert_eq!(
            abuser.emit_with_ack("ping", json!({})).await["pong"],
            true,
            "within the burst"
        );
    }
    // Over the budget: with an ack, the ack carries the refusal...
    let ack = abuser.emit_with_ack("ping", json!({})).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "rate_limited");
    let retry = ack["error"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!(retry > 0 && retry <= 1000, "{ack}");
    // ...without one, an `error` event does; and a command is not carried out.
    abuser
        .emit("subscribe", json!({"room": "user:mallory"}))
        .await;
    let error = abuser.event("error").await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert!(error["retry_after_ms"].as_u64().is_some(), "{error}");
    // The other socket is not affected.
    assert_eq!(other.emit_with_ack("ping", json!({})).await["pong"], true);
    // Third refusal: still only refused. Fourth: sustained abuse, disconnected.
    let ack = abuser.emit_with_ack("ping", json!({})).await;
    assert_eq!(ack["error"]["code"], "rate_limited");
    // Events already on their way when the server gives up do not count again.
    for _ in 0..4 {
        abuser.emit("ping", json!({})).await;
    }
    let notice = abuser.event("error").await;
    assert_eq!(notice["code"], "rate_limit_exceeded", "{notice}");
    // A server disconnect, which stock clients do not retry.
    assert_eq!(abuser.ending().await, "socket.io disconnect");
    // The other socket keeps working and receiving.
    assert_eq!(other.emit_with_ack("ping", json!({})).await["pong"], true);
    server.publish_marker().await;
    other.event("system.notification").await;
    let (_, metrics) = server.get_text("/metrics", Some(KEY)).await;
    assert!(
        metrics.contains("roomcast_rate_limit_disconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_refused_socket_may_retry_after_the_advertised_wait() {
    let server = TestServer::start_with(
        "[limits]\nevents_per_sec = 2\nevents_burst = 1\nevent_abuse_refusals = 5",
    )
    .await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    assert_eq!(c.emit_with_ack("ping", json!({})).await["pong"], true);
    let ack = c.emit_with_ack("ping", json!({})).await;
    assert_eq!(ack["error"]["code"], "rate_limited", "{ack}");
    let retry = ack["error"]["retry_after_ms"].as_u64().unwrap();
    // Waiting what the server said is enough (the bucket refills one event per 500 ms).
    tokio::time::sleep(Duration::from_millis(retry)).await;
    assert_eq!(c.emit_with_ack("ping", json!({})).await["pong"], true);
}

#[tokio::test]
async fn publishes_over_the_key_budget_get_429_and_deliver_nothing() {
    let server =
        TestServer::start_with("[limits]\npublish_per_key_per_sec = 1\npublish_per_key_burst = 2")
            .await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    let notification = |title: &str| {
        json!({"type": "system.notification", "data": {"title": title, "message": "m"}}).to_string()
    };
    for title in ["one", "two"] {
        let (status, _, body) = server
            .post_with("/api/v1/events", Some(KEY), notification(title), &[])
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(c.event("system.notification").await["data"]["title"], title);
    }
    let (status, headers, body) = server
        .post_with("/api/v1/events", Some(KEY), notification("refused"), &[])
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_ms = body["error"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        retry_after >= 1 && retry_after * 1000 >= retry_ms,
        "{retry_after} {retry_ms}"
    );
    // The custom-event endpoint shares the key's budget.
    let (status, _) = server
        .post(
            "/api/v1/broadcast",
            json!({"event": "x.y", "room": "global", "data": {}}),
        )
        .await;
    assert_eq!(status, 429);
    // Another key has its own budget: its publish arrives, and the refused one never did.
    let (status, _, body) = server
        .post_with(
            "/api/v1/events",
            Some(ACME_KEY),
            json!({"type": "system.notification", "data": {"title": "acme", "message": "m"}})
                .to_string(),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    let (status, _, body) = server
        .post_with("/api/v1/events", Some(KEY), notification("after"), &[])
        .await;
    assert_eq!(status, 202, "{body}");
    let next: Value = c.event("system.notification").await;
    assert_eq!(
        next["data"]["title"], "after",
        "the refused publish was delivered"
    );
    assert!(!c.received().contains(&"x.y".to_owned()));
}

/// `GET /api/v1/websocket/stats` with `key`, from the client address `xff`: status,
/// `Retry-After` (seconds) and body.
async fn stats_from(server: &TestServer, key: &str, xff: &str) -> (u16, Option<u64>, Value) {
    let resp = reqwest::Client::new()
        .get(server.url("/api/v1/websocket/stats"))
        .header("x-api-key", key)
        .header("x-forwarded-for", xff)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (
        status,
        retry_after,
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn guessing_keys_is_throttled_per_address_and_a_right_key_waits_too() {
    let server = TestServer::start_with(
        "[limits]\nauth_failures_per_ip_per_sec = 1\nauth_failures_per_ip_burst = 5\n\
         trusted_proxies = [\"127.0.0.1\"]\nhandshake_exempt = []",
    )
    .await;
    let guesser = "203.0.113.7";
    let started = tokio::time::Instant::now();
    let (mut refused, mut throttled) = (0u64, 0u64);
    for i in 0..200 {
        let (status, retry_after, body) = stats_from(&server, &format!("guess-{i}"), guesser).await;
        match status {
            401 => refused += 1,
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(
                    body["error"]["retry_after_ms"].as_u64() <= Some(1000),
                    "{body}"
                );
                assert_eq!(retry_after, Some(1));
                throttled += 1;
            }
            other => panic!("guess {i}: {other} {body}"),
        }
    }
    // The burst, plus at most one more per second the hammering took.
    let refills = started.elapsed().as_secs() + 1;
    assert!(
        (5..=5 + refills).contains(&refused),
        "{refused} guesses checked, {throttled} throttled"
    );
    // While the address is throttled its right key is not even checked.
    let (status, _, body) = stats_from(&server, READ_KEY, guesser).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    // Another address is not affected.
    let (status, _, body) = stats_from(&server, READ_KEY, "203.0.113.8").await;
    assert_eq!(status, 200, "{body}");
    // Once a token is back (one per second), the right key works again.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _, body) = stats_from(&server, READ_KEY, guesser).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never let through");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = server.get_text("/metrics", Some(READ_KEY)).await.1;
    assert!(
        metrics.contains("roomcast_limited_total{limit=\"auth_failures_ip\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn refused_keys_from_loopback_are_exempt_by_default() {
    let server = TestServer::start().await;
    for i in 0..50 {
        let (status, body) = server
            .get("/api/v1/websocket/stats", Some(&format!("guess-{i}")))
            .await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(
        server
            .get("/api/v1/websocket/stats", Some(READ_KEY))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn websocket_messages_over_the_limit_close_the_connection() {
    let server =
        TestServer::start_with("[limits]\nws_max_message_bytes = 4096\nws_max_frame_bytes = 4096")
            .await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    // Just under: answered (an unknown command).
    let ack = c.emit_with_ack("frobnicate", json!("a".repeat(3900))).await;
    assert_eq!(ack["error"]["code"], "unknown_command", "{ack}");
    c.emit("frobnicate", json!("a".repeat(5000))).await;
    assert!(c.closed().await, "an oversized message was accepted");
}

#[tokio::test]
async fn binary_attachments_are_limited_in_count_and_size() {
    let server =
        TestServer::start_with("[limits]\nmax_binary_attachments = 2\nmax_binary_bytes = 1000")
            .await;
    let t = token(&claims("alice"));
    let placeholder = |n: usize| {
        (0..n)
            .map(|i| json!({"_placeholder": true, "num": i}))
            .collect::<Vec<_>>()
    };
    // Two attachments of 400 bytes: read, and answered.
    let mut c = server.connect(&t).await;
    c.send_raw(&format!("452-{}", json!(["frobnicate", placeholder(2)])))
        .await;
    c.send_binary(vec![1; 400]).await;
    c.send_binary(vec![2; 400]).await;
    let error = c.event("error").await;
    assert_eq!(error["code"], "unknown_command", "{error}");
    // Three attachments: the connection is closed.
    let mut c = server.connect(&t).await;
    c.send_raw(&format!("453-{}", json!(["frobnicate", placeholder(3)])))
        .await;
    assert!(c.closed().await, "too many attachments were accepted");
    // Two that together exceed max_binary_bytes: closed too.
    let mut c = server.connect(&t).await;
    c.send_raw(&format!("452-{}", json!(["frobnicate", placeholder(2)])))
        .await;
    c.send_binary(vec![1; 600]).await;
    c.send_binary(vec![2; 600]).await;
    assert!(c.closed().await, "oversized attachments were accepted");
}

#[tokio::test]
async fn polling_payloads_over_the_limit_get_413() {
    let server = TestServer::start_with("[limits]\npolling_max_payload_bytes = 2000").await;
    let http = reqwest::Client::new();
    let open = http
        .get(server.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handshake: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    assert_eq!(handshake["maxPayload"], 2000, "{handshake}");
    let url = server.url(&format!(
        "/socket.io/?EIO=4&transport=polling&sid={}",
        handshake["sid"].as_str().unwrap()
    ));
    let connect = format!("40{}", json!({"token": token(&claims("alice"))}));
    let resp = http.post(&url).body(connect).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a small payload");
    let big = format!("42{}", json!(["frobnicate", "a".repeat(2100)]));
    let resp = http.post(&url).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413, "an oversized polling payload");
}

/// A long-polling session opened from 203.0.113.1 (through a trusted proxy) and connected
/// with a token; returns its polling URL.
async fn polling_session(server: &TestServer, http: &reqwest::Client) -> String {
    let open = http
        .get(server.url("/socket.io/?EIO=4&transport=polling"))
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let open = open.text().await.unwrap();
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    let url = server.url(&format!(
        "/socket.io/?EIO=4&transport=polling&sid={}",
        open["sid"].as_str().unwrap()
    ));
    let sent = http
        .post(&url)
        .header("x-forwarded-for", "203.0.113.1")
        .body(format!(
            "40{}",
            json!({"token": token_for("alice", "acme", &[])})
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    url
}

/// Polls `url` as `from` until `connection.established` arrives; the status of a refusal.
async fn poll_session(http: &reqwest::Client, url: &str, from: &str) -> Result<String, u16> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut received = String::new();
    while !received.contains("connection.established") {
        assert!(tokio::time::Instant::now() < deadline, "{received}");
        let resp = http
            .get(url)
            .header("x-forwarded-for", from)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        received.push_str(&resp.text().await.unwrap());
    }
    Ok(received)
}

#[tokio::test]
async fn a_polling_session_bound_to_its_address_refuses_another() {
    let http = reqwest::Client::new();
    // Off (the default): the sid alone is enough, from any address.
    let open = TestServer::start_with("[limits]\ntrusted_proxies = [\"127.0.0.1\"]").await;
    let url = polling_session(&open, &http).await;
    let stolen = poll_session(&http, &url, "198.51.100.7").await;
    assert!(stolen.is_ok(), "{stolen:?}");

    let bound = TestServer::start_with(
        "[limits]\ntrusted_proxies = [\"127.0.0.1\"]\nbind_polling_to_address = true",
    )
    .await;
    let url = polling_session(&bound, &http).await;
    assert_eq!(poll_session(&http, &url, "198.51.100.7").await, Err(403));
    let refused = http
        .post(&url)
        .header("x-forwarded-for", "198.51.100.7")
        .body("42[\"ping\",{}]")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"code": 4, "message": "Forbidden"})
    );
    // The owner's session is untouched by the attempts.
    let own = poll_session(&http, &url, "203.0.113.1").await;
    assert!(own.is_ok_and(|text| text.contains("\"user_id\":\"alice\"")));
}
