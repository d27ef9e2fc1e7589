//! A token's lifetime holds on a live socket: warned before expiry, disconnected at expiry
//! unless refreshed; and a shutdown drains sockets with `server.shutdown` and stops the
//! server's background loops.

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

/// The drain ends a websocket that still has events queued (its client reads slowly): every
/// one of them, then `server.shutdown`, reaches the client before the close. (Severing a
/// websocket by ending its reads made tungstenite refuse every write after it: what was not
/// yet written was lost, `server.shutdown` too when the drain was quick.)
#[tokio::test]
async fn a_drain_writes_what_a_slow_reader_has_queued() {
    const EVENTS: usize = 300;
    let mut server = TestServer::start_with(
        "[limits]\npublish_per_key_per_sec = 0\npublish_bytes_per_key_per_sec = 0\n",
    )
    .await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    // ~60 KB each, 18 MB in all: more than the loopback buffers hold while the client does
    // not read, so most of it is still queued in the session when the drain severs it.
    server.publish_bulky(EVENTS, 60_000).await;
    server.shutdown();
    let mut titles = Vec::new();
    loop {
        let (name, payload) = c
            .next_event()
            .await
            .unwrap_or_else(|| panic!("closed after {} events", titles.len()));
        match name.as_str() {
            "system.notification" => {
                titles.push(payload["data"]["title"].as_str().unwrap().to_owned())
            }
            "server.shutdown" => break,
            _ => {}
        }
    }
    let expected: Vec<String> = (0..EVENTS).map(|i| i.to_string()).collect();
    assert_eq!(titles, expected);
    assert_eq!(c.ending().await, "transport");
}

/// A polling client is between two requests for a moment only. A drain that begins in that
/// moment still gets `server.shutdown` to it: its next poll, on the keep-alive connection it
/// was using, is answered with the notice. The poll after that does not hold the drain
/// (nothing more comes; it is answered with a noop at once), and the server stops promptly.
#[tokio::test]
async fn a_polling_client_between_two_polls_gets_the_notice() {
    let mut server = TestServer::start().await;
    // One connection, kept alive, as python-socketio's requests session keeps it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let base = server.url("/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no sid in {open}"))
        .to_owned();
    let session = format!("{base}&sid={sid}");
    let connect = format!("40{}", json!({ "token": token(&claims("alice")) }));
    let posted = http.post(&session).body(connect).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    // Poll until connected and greeted: the session's queue is empty after that.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !seen.contains("connection.established") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not greeted: {seen}"
        );
        seen += &http
            .get(&session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    // Between two polls: the drain begins, and the listener closes.
    server.shutdown();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let next = http.get(&session).send().await;
    let body = next
        .expect("the next poll found its connection closed")
        .text()
        .await
        .unwrap();
    assert!(body.contains("server.shutdown"), "{body}");
    // The poll after the notice gets nothing but an end; the server does not wait for it.
    let after = tokio::time::timeout(DEADLINE, http.get(&session).send()).await;
    assert!(after.is_ok(), "the poll after the notice was held");
    assert!(server.stopped_within(DEADLINE).await, "the drain was held");
}

#[tokio::test]
async fn an_exp_near_2_pow_64_is_no_expiry() {
    let server = server().await;
    for exp in [u64::MAX, u64::MAX - 1, 1 << 63] {
        let mut far = claims("alice");
        far.exp = exp;
        let mut c = server.connect(&token(&far)).await;
        // The expiry timer wakes as soon as a socket is watched, and at least every 200 ms:
        // an overflowed deadline would end the socket well within this window.
        let ended = tokio::time::timeout(std::time::Duration::from_millis(1500), c.closed()).await;
        assert!(ended.is_err(), "exp {exp}: the socket was disconnected");
        assert_eq!(c.emit_with_ack("ping", json!(null)).await["pong"], true);
        assert!(
            !c.received().contains(&"auth.expired".to_string()),
            "exp {exp}"
        );
        // A refresh with such a token says when it expires: the last representable second.
        let ack = c
            .emit_with_ack("auth.refresh", json!({ "token": token(&far) }))
            .await;
        assert_eq!(ack["expires_at"], "9999-12-31T23:59:59.000Z", "{ack}");
    }
}

/// Once `serve` has returned from a shutdown no background loop runs on: the cluster
/// heartbeat does not put back the key the node dropped when it left, and every worker has
/// been joined.
#[tokio::test]
async fn no_worker_outlives_a_shutdown() {
    use redis::AsyncCommands;
    let redis = RedisServer::start().await;
    let config = roomcast::Config::from_toml(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nnode_id = \"leaver\"\n\
         [auth]\njwt_secret = \"{SECRET}\"\n\
         [cluster]\nredis_url = \"redis://127.0.0.1:{}\"\nkey_prefix = \"workers\"\n\
         node_ttl_secs = 3",
        redis.port
    ))
    .unwrap();
    let server = roomcast::Roomcast::new(&config).await.unwrap();
    let workers = server.workers();
    assert!(
        workers.running().contains(&"cluster_heartbeat"),
        "{:?}",
        workers.running()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = "workers:node:leaver";
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !conn.exists::<_, bool>(key).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat was ever sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let _ = stop.send(());
    tokio::time::timeout(DEADLINE, serving)
        .await
        .expect("the drain ends within the deadline")
        .unwrap()
        .unwrap();
    // A beat every second (a third of node_ttl_secs): a heartbeat still running would
    // have put the key back within this window, three beats long.
    let watch = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::time::Instant::now() < watch {
        assert!(
            !conn.exists::<_, bool>(key).await.unwrap(),
            "a heartbeat was sent after serve returned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        workers.running().is_empty(),
        "still running after serve returned: {:?}",
        workers.running()
    );
}
