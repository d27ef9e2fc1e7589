//! The RPC proxy: a socket's `rpc` command reaches a real HTTP receiver (started here on
//! 127.0.0.1:0) as a signed POST carrying the token's identity, and the receiver's answer
//! comes back in the ack.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Client, DEADLINE, RedisServer, TestServer, free_port, token_for};
use serde_json::{Value, json};
use tokio::sync::watch;

const RPC_SECRET: &str = "rpc-secret-0123456789abcdef";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    signature: Option<String>,
    delivery: Option<String>,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A real HTTP server that records every request and answers by path:
/// `/status/<n>` → status n with a JSON body; `/text` → 200 with a body that is not JSON;
/// `/slow` → 200 after 10 s; `/hold` → 200 once [`Receiver::release`] is called; `/big` →
/// 200 with 100 KB of JSON; `/empty` → 204; anything else → 200 `{"path", "data"}`.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: watch::Sender<bool>,
}

impl Receiver {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (release, released) = watch::channel(false);
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            let mut released = released.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let path = uri.path().to_owned();
                record.lock().unwrap().push(Seen {
                    path: path.clone(),
                    signature: header("x-roomcast-signature"),
                    delivery: header("x-roomcast-delivery"),
                    body: body.clone(),
                });
                answer(&path, &body, &mut released).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            seen,
            release,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits, within the deadline, until `n` requests have arrived.
    async fn until_seen(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.seen().len() < n {
            assert!(Instant::now() < deadline, "{n} requests never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn answer(path: &str, body: &Bytes, released: &mut watch::Receiver<bool>) -> Response {
    let data = serde_json::from_slice::<Value>(body)
        .map(|b| b["data"].clone())
        .unwrap_or(Value::Null);
    if let Some(status) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(status.parse().unwrap()).unwrap();
        return (status, axum::Json(json!({"error": "scripted"}))).into_response();
    }
    match path {
        "/text" => "plain text, not JSON".into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            axum::Json(json!({})).into_response()
        }
        "/hold" => {
            let _ = released.wait_for(|r| *r).await;
            axum::Json(json!({"held": true})).into_response()
        }
        "/big" => axum::Json(json!({"blob": "x".repeat(100_000)})).into_response(),
        "/empty" => StatusCode::NO_CONTENT.into_response(),
        _ => axum::Json(json!({"path": path, "data": data})).into_response(),
    }
}

/// `[rpc]` with `url`, the test secret and `extra` lines.
fn rpc_config(url: &str, extra: &str) -> String {
    format!("[rpc]\nurl = \"{url}\"\nsecret = \"{RPC_SECRET}\"\n{extra}")
}

async fn rpc(client: &mut Client, method: &str, data: Value) -> Value {
    client
        .emit_with_ack("rpc", json!({"method": method, "data": data}))
        .await
}

fn error_code(ack: &Value) -> &str {
    assert_eq!(ack["ok"], false, "{ack}");
    ack["error"]["code"].as_str().unwrap()
}

#[tokio::test]
async fn a_call_returns_the_backends_json_and_carries_the_tokens_identity_signed() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(&rpc_config(&receiver.url("/main"), "")).await;
    let mut client = server.connect(&token_for("alice", "acme", &[])).await;
    let sid = client.established["sid"].as_str().unwrap().to_owned();

    let spoof = json!({"user_id": "mallory", "tenant": "evil", "sid": "not-mine", "n": 1});
    let ack = rpc(&mut client, "cart.add", spoof.clone()).await;
    assert_eq!(
        ack,
        json!({"ok": true, "result": {"path": "/main", "data": spoof}})
    );

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert!(
        roomcast::outbound::signature_valid(
            RPC_SECRET.as_bytes(),
            &call.body,
            call.signature.as_deref()
        ),
        "bad signature {:?}",
        call.signature
    );
    assert!(!roomcast::outbound::signature_valid(
        b"another-secret-0123456789",
        &call.body,
        call.signature.as_deref()
    ));
    let delivery = call.delivery.as_deref().unwrap();
    assert!(uuid::Uuid::parse_str(delivery).is_ok(), "{delivery}");
    assert_eq!(
        call.json(),
        json!({"method": "cart.add", "data": spoof, "user_id": "alice", "tenant": "acme", "sid": sid})
    );

    // `data` is optional: null.
    let ack = client
        .emit_with_ack("rpc", json!({"method": "cart.clear"}))
        .await;
    assert_eq!(ack["result"]["data"], Value::Null);
    assert_eq!(receiver.seen()[1].json()["data"], Value::Null);
    // Each call is its own delivery.
    assert_ne!(receiver.seen()[1].delivery.as_deref(), Some(delivery));
}

#[tokio::test]
async fn a_backend_that_fails_is_rpc_failed_with_its_status() {
    let receiver = Receiver::start().await;
    let routes = format!(
        "[rpc.methods]\n\"down\" = \"{}\"\n\"teapot\" = \"{}\"\n\"text\" = \"{}\"\n\"empty\" = \"{}\"\n\"big\" = \"{}\"",
        receiver.url("/status/503"),
        receiver.url("/status/418"),
        receiver.url("/text"),
        receiver.url("/empty"),
        receiver.url("/big"),
    );
    let config = rpc_config(
        &receiver.url("/main"),
        &format!("max_response_bytes = 10000\n{routes}"),
    );
    let server = TestServer::start_with(&config).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;

    for (method, status) in [("down", 503), ("teapot", 418), ("text", 200)] {
        let ack = rpc(&mut client, method, json!({})).await;
        assert_eq!(error_code(&ack), "rpc_failed", "{method}: {ack}");
        assert_eq!(ack["error"]["status"], status, "{method}: {ack}");
    }
    let ack = rpc(&mut client, "empty", json!({})).await;
    assert_eq!(ack, json!({"ok": true, "result": null}));
    // An answer over rpc.max_response_bytes is not read to its end.
    let ack = rpc(&mut client, "big", json!({})).await;
    assert_eq!(error_code(&ack), "rpc_failed", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rpc.max_response_bytes"),
        "{ack}"
    );
    // Without an ack, a failure comes as an `error` event, with the status too.
    client.emit("rpc", json!({"method": "down"})).await;
    let error = client.event("error").await;
    assert_eq!(
        (&error["code"], &error["status"]),
        (&json!("rpc_failed"), &json!(503)),
        "{error}"
    );
    // One attempt each: an RPC is not retried.
    assert_eq!(receiver.seen().len(), 6);
}

#[tokio::test]
async fn a_slow_backend_is_rpc_timeout_after_timeout_ms() {
    let receiver = Receiver::start().await;
    let config = rpc_config(&receiver.url("/slow"), "timeout_ms = 500");
    let server = TestServer::start_with(&config).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;
    let started = Instant::now();
    let ack = rpc(&mut client, "report.build", json!({})).await;
    let took = started.elapsed();
    assert_eq!(error_code(&ack), "rpc_timeout", "{ack}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test]
async fn rpc_is_unavailable_when_off_or_the_backend_cannot_be_reached() {
    let off = TestServer::start().await;
    let mut client = off.connect(&token_for("alice", "default", &[])).await;
    let ack = rpc(&mut client, "a.b", json!({})).await;
    assert_eq!(error_code(&ack), "rpc_unavailable", "{ack}");

    // A port nothing listens on.
    let closed = format!("http://127.0.0.1:{}/rpc", free_port());
    let server = TestServer::start_with(&rpc_config(&closed, "")).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;
    let ack = rpc(&mut client, "a.b", json!({})).await;
    assert_eq!(error_code(&ack), "rpc_unavailable", "{ack}");
}

#[tokio::test]
async fn methods_go_to_their_most_specific_route() {
    let main = Receiver::start().await;
    let billing = Receiver::start().await;
    let config = rpc_config(
        &main.url("/main"),
        &format!(
            "[rpc.methods]\n\"billing.*\" = \"{}\"\n\"billing.refund.*\" = \"{}\"\n\"billing.audit\" = \"{}\"",
            billing.url("/billing"),
            billing.url("/refunds"),
            main.url("/audit"),
        ),
    );
    let server = TestServer::start_with(&config).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;
    for (method, path) in [
        ("billing.charge", "/billing"),
        ("billing.refund.full", "/refunds"),
        ("billing.audit", "/audit"),
        ("billing", "/main"),
        ("chat.send", "/main"),
    ] {
        let ack = rpc(&mut client, method, json!({})).await;
        assert_eq!(ack["result"]["path"], path, "{method}: {ack}");
    }
    let paths = |r: &Receiver| r.seen().iter().map(|s| s.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&billing), ["/billing", "/refunds"]);
    assert_eq!(paths(&main), ["/audit", "/main", "/main"]);
}

#[tokio::test]
async fn a_bad_method_or_payload_is_invalid_payload_and_nothing_is_sent() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(&rpc_config(&receiver.url("/main"), "")).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;
    let long = "m".repeat(129);
    for payload in [
        json!({"method": ""}),
        json!({"method": "a b"}),
        json!({"method": "a/b"}),
        json!({"method": "é"}),
        json!({"method": long}),
        json!({"method": 5}),
        json!({"data": {}}),
        json!({"method": "a", "data": {}, "user_id": "mallory"}),
        json!("a.b"),
    ] {
        let ack = client.emit_with_ack("rpc", payload.clone()).await;
        assert_eq!(error_code(&ack), "invalid_payload", "{payload}: {ack}");
    }
    let ok = rpc(&mut client, &"m".repeat(128), json!(null)).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test]
async fn an_oversize_request_is_refused_unsent() {
    let receiver = Receiver::start().await;
    let config = rpc_config(&receiver.url("/main"), "max_request_bytes = 300");
    let server = TestServer::start_with(&config).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;
    let ack = rpc(&mut client, "a.b", json!({"blob": "x".repeat(400)})).await;
    assert_eq!(error_code(&ack), "payload_too_large", "{ack}");
    assert!(receiver.seen().is_empty());
    let ack = rpc(&mut client, "a.b", json!({"blob": "x".repeat(50)})).await;
    assert_eq!(ack["ok"], true, "{ack}");
}

#[tokio::test]
async fn a_socket_has_at_most_max_in_flight_calls() {
    let receiver = Receiver::start().await;
    let config = rpc_config(&receiver.url("/hold"), "max_in_flight_per_socket = 2");
    let server = TestServer::start_with(&config).await;
    let mut client = server.connect(&token_for("alice", "default", &[])).await;
    let mut other = server.connect(&token_for("alice", "default", &[])).await;
    // Two calls held by the backend (their acks are read after the release).
    for id in [900, 901] {
        client
            .send_raw(&format!("42{id}[\"rpc\",{{\"method\":\"held\"}}]"))
            .await;
    }
    receiver.until_seen(2).await;
    let ack = rpc(&mut client, "third", json!({})).await;
    assert_eq!(error_code(&ack), "rate_limited", "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rpc.max_in_flight_per_socket"),
        "{ack}"
    );
    assert_eq!(receiver.seen().len(), 2);
    // Another socket of the same user has its own allowance.
    receiver.until_seen(2).await;
    let waiting = tokio::spawn(async move {
        let ack = rpc(&mut other, "other", json!({})).await;
        (other, ack)
    });
    receiver.until_seen(3).await;
    receiver.release.send_replace(true);
    let (_other, ack) = waiting.await.unwrap();
    assert_eq!(ack["result"], json!({"held": true}));
    // Answered calls give their places back.
    let ack = rpc(&mut client, "fourth", json!({})).await;
    assert_eq!(ack["result"], json!({"held": true}), "{ack}");
}

#[tokio::test]
async fn a_socket_on_either_node_of_a_cluster_can_call() {
    let redis = RedisServer::start().await;
    let receiver = Receiver::start().await;
    let config = rpc_config(&receiver.url("/main"), "");
    let prefix = format!("rpc-{}", free_port());
    let a = TestServer::start_cluster_node_with("a", &redis, &prefix, &config).await;
    let b = TestServer::start_cluster_node_with("b", &redis, &prefix, &config).await;
    let mut on_a = a.connect(&token_for("alice", "acme", &[])).await;
    let mut on_b = b.connect(&token_for("bob", "acme", &[])).await;
    for (client, user) in [(&mut on_a, "alice"), (&mut on_b, "bob")] {
        let ack = rpc(client, "who", json!({"from": user})).await;
        assert_eq!(ack["result"]["data"], json!({"from": user}), "{ack}");
    }
    let bodies: Vec<Value> = receiver.seen().iter().map(Seen::json).collect();
    assert_eq!(bodies.len(), 2);
    for (body, client, user) in [(&bodies[0], &on_a, "alice"), (&bodies[1], &on_b, "bob")] {
        assert_eq!(body["user_id"], user);
        assert_eq!(body["tenant"], "acme");
        assert_eq!(body["sid"], client.established["sid"]);
    }
}
