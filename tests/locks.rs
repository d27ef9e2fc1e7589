//! Locks for critical sections, as clients observe them: `lock.acquire` / `lock.release` /
//! `lock.renew` over the socket and `/api/v1/locks/...` over HTTP, `locked` with the
//! holder, wrong and old tokens, the room hearing `lock.acquired` / `lock.released`, expiry
//! and disconnects ending a lock once, fencing tokens that only grow (across a restart with
//! `[storage] path` too); on one node and on a two-node cluster where many sockets race.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const RESOURCE: &str = "project:1/deploy";

async fn connect(server: &TestServer, user: &str) -> Client {
    server.connect(&token_for(user, "default", &["*"])).await
}

async fn acquire(client: &mut Client, resource: &str, ttl_ms: u64) -> Value {
    client
        .emit_with_ack(
            "lock.acquire",
            json!({"resource": resource, "ttl_ms": ttl_ms}),
        )
        .await
}

fn token_of(ack: &Value) -> u64 {
    assert_eq!(ack["ok"], true, "{ack}");
    ack["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("a numeric token: {ack}"))
}

fn code(ack: &Value) -> &str {
    assert_eq!(ack["ok"], false, "{ack}");
    ack["error"]["code"].as_str().unwrap_or_default()
}

/// The next `lock.*` event of `resource` the client receives: (name, data), with its `seq`.
async fn lock_event(client: &mut Client, resource: &str) -> (String, Value) {
    loop {
        let (name, payload) = client
            .next_event()
            .await
            .unwrap_or_else(|| panic!("no lock event of {resource} within {DEADLINE:?}"));
        if name.starts_with("lock.") && payload["data"]["resource"] == resource {
            assert!(payload["seq"].as_u64().is_some(), "numbered: {payload}");
            return (name, payload["data"].clone());
        }
    }
}

async fn http(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, server.url(path))
        .header("x-api-key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn acquire_locked_renew_release_and_wrong_tokens() {
    let server = TestServer::start().await;
    let mut alice = connect(&server, "alice").await;
    let mut bob = connect(&server, "bob").await;

    let ack = acquire(&mut alice, RESOURCE, 5000).await;
    let token = token_of(&ack);
    assert_eq!(ack["resource"], RESOURCE);
    let expires_at = ack["expires_at"].as_str().unwrap().to_owned();
    assert!(expires_at.ends_with('Z') && expires_at.len() == 24, "{ack}");

    // Held: anyone else is told who holds it and until when; the holder too (no reentry).
    let refused = acquire(&mut bob, RESOURCE, 5000).await;
    assert_eq!(code(&refused), "locked");
    assert_eq!(
        refused["error"]["holder"],
        json!({"user_id": "alice", "kind": "socket"})
    );
    assert_eq!(refused["error"]["expires_at"], expires_at.as_str());
    assert_eq!(code(&acquire(&mut alice, RESOURCE, 5000).await), "locked");

    // Another socket's lock, even with its token, and an old or made-up token change
    // nothing.
    let release = |token: u64| json!({"resource": RESOURCE, "token": token});
    let ack = bob.emit_with_ack("lock.release", release(token)).await;
    assert_eq!(code(&ack), "not_holder");
    assert_eq!(ack["error"]["resource"], RESOURCE);
    let ack = alice
        .emit_with_ack("lock.release", release(token - 1))
        .await;
    assert_eq!(code(&ack), "not_holder");
    let ack = bob
        .emit_with_ack("lock.renew", json!({"resource": RESOURCE, "token": token}))
        .await;
    assert_eq!(code(&ack), "not_holder");
    assert_eq!(code(&acquire(&mut bob, RESOURCE, 5000).await), "locked");

    // The holder renews: a later expiry, the same token.
    let ack = alice
        .emit_with_ack(
            "lock.renew",
            json!({"resource": RESOURCE, "token": token, "ttl_ms": 60000}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["token"], token);
    assert!(
        ack["expires_at"].as_str().unwrap() > expires_at.as_str(),
        "{ack}"
    );

    let ack = alice.emit_with_ack("lock.release", release(token)).await;
    assert_eq!(ack, json!({"ok": true, "resource": RESOURCE}));
    // Released: a second release, or a renew, of that token finds it gone.
    assert_eq!(
        code(&alice.emit_with_ack("lock.release", release(token)).await),
        "not_holder"
    );
    let ack = alice
        .emit_with_ack("lock.renew", json!({"resource": RESOURCE, "token": token}))
        .await;
    assert_eq!(code(&ack), "lock_lost");

    let next = token_of(&acquire(&mut bob, RESOURCE, 5000).await);
    assert!(next > token, "{next} after {token}");

    // Malformed requests.
    for bad in [
        "project:1",
        "project:1/",
        "nope:1/x",
        "project:1/a/b",
        "project:1/a b",
    ] {
        let ack = acquire(&mut alice, bad, 5000).await;
        assert_eq!(code(&ack), "invalid_resource", "{bad}: {ack}");
    }
    for ttl in [0, 99, 600_001] {
        let ack = acquire(&mut alice, "project:1/other", ttl).await;
        assert_eq!(code(&ack), "invalid_payload", "{ttl}: {ack}");
    }
    let ack = alice
        .emit_with_ack("lock.release", json!({"resource": RESOURCE, "token": "x"}))
        .await;
    assert_eq!(code(&ack), "invalid_payload");
}

#[tokio::test]
async fn the_room_hears_each_lock_taken_and_released() {
    let server = TestServer::start().await;
    let mut watcher = connect(&server, "carol").await;
    assert_eq!(watcher.subscribe("project:1").await["ok"], true);
    let mut alice = connect(&server, "alice").await;

    let token = token_of(&acquire(&mut alice, RESOURCE, 5000).await);
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert_eq!(name, "lock.acquired");
    assert_eq!(data["token"], token);
    assert_eq!(
        data["holder"],
        json!({"user_id": "alice", "kind": "socket"})
    );
    assert!(data["expires_at"].is_string(), "{data}");

    let ack = alice
        .emit_with_ack(
            "lock.release",
            json!({"resource": RESOURCE, "token": token}),
        )
        .await;
    assert_eq!(ack["ok"], true);
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert_eq!(name, "lock.released");
    assert_eq!(
        data,
        json!({"resource": RESOURCE, "token": token, "reason": "released"})
    );

    // A lock of another room is not this room's business.
    token_of(&acquire(&mut alice, "project:2/deploy", 5000).await);
    server.publish_marker().await;
    watcher
        .assert_not_before("lock.acquired", "system.notification")
        .await;
}

#[tokio::test]
async fn a_lock_expires_once_after_its_ttl() {
    let server = TestServer::start_with("[locks]\nsweep_ms = 100").await;
    let mut watcher = connect(&server, "carol").await;
    watcher.subscribe("project:1").await;
    let mut alice = connect(&server, "alice").await;
    let mut bob = connect(&server, "bob").await;

    let started = Instant::now();
    let token = token_of(&acquire(&mut alice, RESOURCE, 300).await);
    assert_eq!(lock_event(&mut watcher, RESOURCE).await.0, "lock.acquired");
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "ended early"
    );
    assert_eq!(name, "lock.released");
    assert_eq!(
        data,
        json!({"resource": RESOURCE, "token": token, "reason": "expired"})
    );

    // The holder hears it is gone; anyone may take it, with a larger token.
    let ack = alice
        .emit_with_ack("lock.renew", json!({"resource": RESOURCE, "token": token}))
        .await;
    assert_eq!(code(&ack), "lock_lost");
    let next = token_of(&acquire(&mut bob, RESOURCE, 5000).await);
    assert!(next > token);
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert_eq!(
        (name.as_str(), &data["token"]),
        ("lock.acquired", &json!(next))
    );
    // Announced once: nothing more of the old lock (the release is a later `seq`).
    server.publish_marker().await;
    watcher
        .assert_not_before("lock.released", "system.notification")
        .await;

    // A renewal keeps a lock past its first TTL.
    let ack = bob
        .emit_with_ack(
            "lock.renew",
            json!({"resource": RESOURCE, "token": next, "ttl_ms": 300}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let renewed = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let ack = bob
            .emit_with_ack(
                "lock.renew",
                json!({"resource": RESOURCE, "token": next, "ttl_ms": 300}),
            )
            .await;
        assert_eq!(ack["ok"], true, "renewed in time: {ack}");
    }
    assert!(renewed.elapsed() > Duration::from_millis(300));
    assert_eq!(code(&acquire(&mut alice, RESOURCE, 5000).await), "locked");
}

#[tokio::test]
async fn a_disconnect_releases_the_sockets_locks() {
    let server = TestServer::start().await;
    let mut watcher = connect(&server, "carol").await;
    watcher.subscribe("project:1").await;
    let mut alice = connect(&server, "alice").await;
    let mut bob = connect(&server, "bob").await;
    let first = token_of(&acquire(&mut alice, RESOURCE, 60000).await);
    let second = token_of(&acquire(&mut alice, "project:1/migrate", 60000).await);
    alice.disconnect().await;

    let mut released = Vec::new();
    while released.len() < 2 {
        let (name, payload) = watcher.next_event().await.expect("lock.released");
        if name == "lock.released" {
            assert_eq!(payload["data"]["reason"], "disconnected", "{payload}");
            released.push(payload["data"]["token"].as_u64().unwrap());
        }
    }
    released.sort();
    assert_eq!(released, [first, second]);
    assert!(token_of(&acquire(&mut bob, RESOURCE, 5000).await) > second);
}

#[tokio::test]
async fn a_room_the_token_does_not_grant_is_forbidden() {
    let server = TestServer::start_with("[locks]\nmax_per_socket = 2").await;
    let mut dave = server.connect(&token_for("dave", "default", &["2"])).await;
    let ack = acquire(&mut dave, RESOURCE, 5000).await;
    assert_eq!(code(&ack), "forbidden");
    assert_eq!(ack["error"]["room"], "project:1");
    // Another user's room neither; one's own, and granted projects, yes.
    assert_eq!(
        code(&acquire(&mut dave, "user:alice/x", 5000).await),
        "forbidden"
    );
    token_of(&acquire(&mut dave, "user:dave/x", 5000).await);
    token_of(&acquire(&mut dave, "project:2/x", 5000).await);
    // `locks.max_per_socket`.
    let ack = acquire(&mut dave, "global/x", 5000).await;
    assert_eq!(code(&ack), "too_many_locks", "{ack}");
}

#[tokio::test]
async fn backends_lock_over_http() {
    use reqwest::Method;
    let server = TestServer::start().await;
    let mut watcher = connect(&server, "carol").await;
    watcher.subscribe("project:1").await;
    let mut alice = connect(&server, "alice").await;
    let path = format!("/api/v1/locks/{RESOURCE}");

    let (status, body) = http(
        &server,
        Method::POST,
        &path,
        KEY,
        Some(json!({"ttl_ms": 5000, "holder": {"user_id": "agent-7"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_u64().unwrap();
    assert_eq!(
        (&body["ok"], &body["resource"]),
        (&json!(true), &json!(RESOURCE))
    );
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert_eq!(name, "lock.acquired");
    assert_eq!(data["holder"], json!({"user_id": "agent-7", "kind": "api"}));

    // Held for sockets and callers alike.
    let ack = acquire(&mut alice, RESOURCE, 5000).await;
    assert_eq!(code(&ack), "locked");
    assert_eq!(ack["error"]["holder"]["user_id"], "agent-7");
    let (status, body) = http(&server, Method::POST, &path, KEY, Some(json!({}))).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "locked");
    assert_eq!(
        body["error"]["holder"],
        json!({"user_id": "agent-7", "kind": "api"})
    );

    let (status, body) = http(&server, Method::GET, &path, KEY, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["token"], &body["holder"]["kind"]),
        (&json!(token), &json!("api"))
    );

    let (status, body) = http(
        &server,
        Method::POST,
        &format!("{path}/renew"),
        KEY,
        Some(json!({"token": token, "ttl_ms": 60000})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        &server,
        Method::POST,
        &format!("{path}/renew"),
        KEY,
        Some(json!({"token": token + 1})),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("lock_lost")));

    let (status, body) = http(
        &server,
        Method::DELETE,
        &format!("{path}?token={}", token - 1),
        KEY,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("not_holder"))
    );
    // A socket may not end a caller's lock, even with its token.
    let ack = alice
        .emit_with_ack(
            "lock.release",
            json!({"resource": RESOURCE, "token": token}),
        )
        .await;
    assert_eq!(code(&ack), "not_holder");
    let (status, body) = http(
        &server,
        Method::DELETE,
        &format!("{path}?token={token}"),
        KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert_eq!(
        (name.as_str(), &data["reason"]),
        ("lock.released", &json!("released"))
    );
    let (status, body) = http(&server, Method::GET, &path, KEY, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("lock_not_found"))
    );

    // Tenants: a key bound to `acme` locks in acme only; the same name elsewhere is free.
    let (status, body) = http(
        &server,
        Method::POST,
        &format!("{path}?tenant=default"),
        ACME_KEY,
        Some(json!({})),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let (status, _) = http(&server, Method::POST, &path, ACME_KEY, Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = http(&server, Method::POST, &path, KEY, Some(json!({}))).await;
    assert_eq!(status, 200, "tenant default has its own {RESOURCE}");

    let (status, body) = http(
        &server,
        Method::POST,
        "/api/v1/locks/nope:1/x",
        KEY,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_resource"))
    );
    let (status, body) = http(
        &server,
        Method::POST,
        "/api/v1/locks/project:1/y",
        KEY,
        Some(json!({"ttl_ms": 10})),
    )
    .await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("ttl_ms")));
}

impl BinaryNode {
    /// Acquires and releases `project:1/deploy` over HTTP: the token.
    async fn grant(&self) -> u64 {
        let url = format!("http://{}/api/v1/locks/{RESOURCE}", self.addr);
        let http = reqwest::Client::new();
        let body: Value = http
            .post(&url)
            .bearer_auth(KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = body["token"].as_u64().unwrap_or_else(|| panic!("{body}"));
        let released = http
            .delete(format!("{url}?token={token}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(released.status(), 200);
        token
    }
}

/// With `[storage] path` the fencing counter is on disk: after a restart (even a SIGKILL)
/// every token is larger than every token before it.
#[tokio::test]
async fn fencing_tokens_grow_across_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "roomcast-locks-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut last = 0;
    for signal in ["TERM", "KILL", "TERM"] {
        let node = BinaryNode::start(&dir, true).await;
        for _ in 0..3 {
            let token = node.grant().await;
            assert!(token > last, "{token} after {last}");
            last = token;
        }
        node.stop(signal).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One grant of the race: when its holder knew it held the lock, and its token.
#[derive(Debug, Clone, Copy)]
struct Grant {
    /// The acquire's ack arrived: the lock was held from before this.
    from: Instant,
    /// The release is about to be sent: the lock is held until after this.
    until: Instant,
    token: u64,
    node: usize,
}

/// Many sockets on two nodes race for one lock, in rounds and then freely: exactly one
/// grant per round, no two holders at once, fencing tokens strictly increasing in the order
/// of the grants; a lock that expires is announced once on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sockets_on_two_nodes_hold_one_at_a_time() {
    let redis = RedisServer::start().await;
    // Each socket sends up to a few hundred commands a second here.
    let extra = "[locks]\nsweep_ms = 100\n[limits]\nevents_per_sec = 1000\nevents_burst = 1000";
    let nodes = [
        TestServer::start_cluster_node_with("a", &redis, "locks-race", extra).await,
        TestServer::start_cluster_node_with("b", &redis, "locks-race", extra).await,
    ];
    let resource = "project:1/race";
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push((i % 2, connect(&nodes[i % 2], &format!("u{i}")).await));
    }

    // Rounds: all ask at once, one wins.
    let mut last = 0;
    for round in 0..10 {
        let acks = futures_util::future::join_all(
            clients
                .iter_mut()
                .map(|(_, c)| acquire(c, resource, 10_000)),
        )
        .await;
        let winners: Vec<usize> = (0..acks.len()).filter(|i| acks[*i]["ok"] == true).collect();
        assert_eq!(winners.len(), 1, "round {round}: {acks:?}");
        for (i, ack) in acks.iter().enumerate() {
            if i != winners[0] {
                assert_eq!(code(ack), "locked", "round {round}");
            }
        }
        let token = token_of(&acks[winners[0]]);
        assert!(token > last, "round {round}: {token} after {last}");
        last = token;
        let ack = clients[winners[0]]
            .1
            .emit_with_ack(
                "lock.release",
                json!({"resource": resource, "token": token}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }

    // Freely: each socket tries again and again, holds a few ms, releases.
    let grants = Arc::new(Mutex::new(Vec::<Grant>::new()));
    let stop = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for (node, mut client) in clients {
        let grants = grants.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let ack = acquire(&mut client, resource, 10_000).await;
                if ack["ok"] != true {
                    assert_eq!(code(&ack), "locked");
                    tokio::time::sleep(Duration::from_millis(1 + rand::random::<u64>() % 4)).await;
                    continue;
                }
                let from = Instant::now();
                let token = token_of(&ack);
                tokio::time::sleep(Duration::from_millis(3)).await;
                let until = Instant::now();
                let ack = client
                    .emit_with_ack(
                        "lock.release",
                        json!({"resource": resource, "token": token}),
                    )
                    .await;
                assert_eq!(ack["ok"], true, "{ack}");
                grants.lock().unwrap().push(Grant {
                    from,
                    until,
                    token,
                    node,
                });
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let mut grants = grants.lock().unwrap().clone();
    grants.sort_by_key(|g| g.from);
    assert!(grants.len() >= 20, "only {} grants", grants.len());
    assert!(
        grants.iter().any(|g| g.node == 0) && grants.iter().any(|g| g.node == 1),
        "both nodes granted"
    );
    for pair in grants.windows(2) {
        assert!(
            pair[1].from >= pair[0].until,
            "two holders at once: {pair:?}"
        );
        assert!(
            pair[1].token > pair[0].token,
            "tokens out of order: {pair:?}"
        );
    }
    assert!(grants[0].token > last);

    // An expiry is claimed once cluster-wide: each node's watcher hears it once.
    let mut watchers = Vec::new();
    for node in &nodes {
        let mut w = connect(node, "carol").await;
        w.subscribe("project:1").await;
        watchers.push(w);
    }
    let token = token_of(&acquire(&mut clients[1], resource, 300).await);
    for w in &mut watchers {
        let (name, data) = lock_event(w, resource).await;
        assert_eq!(
            (name.as_str(), &data["token"]),
            ("lock.acquired", &json!(token))
        );
        let (name, data) = lock_event(w, resource).await;
        assert_eq!(name, "lock.released");
        assert_eq!(
            data,
            json!({"resource": resource, "token": token, "reason": "expired"})
        );
    }
    // Every node has swept at least once more since (sweep_ms = 100): a second claim of
    // the expiry would have been announced by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = token_of(&acquire(&mut clients[0], resource, 5000).await);
    assert!(next > token);
    nodes[0].publish_marker().await;
    for w in &mut watchers {
        let (name, data) = lock_event(w, resource).await;
        assert_eq!(
            (name.as_str(), &data["token"]),
            ("lock.acquired", &json!(next))
        );
        w.assert_not_before("lock.released", "system.notification")
            .await;
    }
}

/// On a Redis Cluster (the lock scripts run on one shard under the prefix's hash tag): a
/// lock taken at one node is held at the other, and its expiry is claimed by a sweep.
#[tokio::test]
async fn locks_work_on_a_redis_cluster() {
    let redis = RedisCluster::start().await;
    let prefix = format!("locks-{:08x}", rand::random::<u32>());
    let extra = "[locks]\nsweep_ms = 100";
    let a = TestServer::start_cluster_node_on("a", &redis.urls(), "cluster", &prefix, extra).await;
    let b = TestServer::start_cluster_node_on("b", &redis.urls(), "cluster", &prefix, extra).await;
    let mut watcher = connect(&b, "carol").await;
    watcher.subscribe("project:1").await;
    let mut alice = connect(&a, "alice").await;
    let mut bob = connect(&b, "bob").await;
    let token = token_of(&acquire(&mut alice, RESOURCE, 300).await);
    let refused = acquire(&mut bob, RESOURCE, 5000).await;
    assert_eq!(code(&refused), "locked");
    assert_eq!(refused["error"]["holder"]["user_id"], "alice");
    assert_eq!(lock_event(&mut watcher, RESOURCE).await.0, "lock.acquired");
    let (name, data) = lock_event(&mut watcher, RESOURCE).await;
    assert_eq!(
        (name.as_str(), &data["reason"]),
        ("lock.released", &json!("expired"))
    );
    assert!(token_of(&acquire(&mut bob, RESOURCE, 5000).await) > token);
}
