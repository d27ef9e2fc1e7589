//! A single node with `[storage] path` loses nothing on restart: a client that saw `seq` 3
//! of a room, while the server is stopped (SIGTERM, or SIGKILL) and restarted and more
//! events are published, reconnects with `since` and gets exactly the events it missed, no
//! gap; an `Idempotency-Key` answered before the restart is answered the same after it.
//! Each test runs the real binary on a private data directory.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// The node tests here start and stop.
type Node = BinaryNode;

/// A fresh directory for one test's config (and data, under `data/`).
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "roomcast-storage-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl BinaryNode {
    async fn publish(&self, n: u64, idempotency_key: Option<&str>) -> (u16, Value, bool) {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/api/v1/events", self.addr))
            .bearer_auth(KEY)
            .json(&json!({"type": "workflow.progress",
                "data": {"workflow_id": "w", "project_id": "42", "progress": n}}));
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.expect("publish");
        let status = resp.status().as_u16();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        (status, resp.json().await.unwrap_or(Value::Null), replayed)
    }

    async fn connect(&self, since: Value) -> Client {
        let mut auth = since;
        auth["token"] = json!(token_for("alice", "default", &["42"]));
        Client::connect(self.addr, Auth::Payload(auth))
            .await
            .unwrap_or_else(|e| panic!("connect refused: {e}"))
    }
}

/// Sees `seq` 1..3 of `project:42`, has the server stopped with `signal` and restarted on
/// the same directory, 2 more events published, and reconnects with `since`: returns the
/// `connection.established` payload and the events received (until a marker).
async fn restart_and_recover(storage: bool, signal: &str) -> (Value, Vec<Value>, Vec<Value>) {
    let dir = workdir(signal);
    let node = Node::start(&dir, storage).await;
    let mut c = node.connect(json!({})).await;
    assert_eq!(c.subscribe("project:42").await["ok"], true);
    let mut last = Value::Null;
    for n in 1..=3 {
        let (status, body, _) = node.publish(n, None).await;
        assert_eq!(status, 202, "{body}");
        last = c.event("workflow.progress").await;
        assert_eq!(last["seq"], n);
    }
    drop(c);
    node.stop(signal).await;

    let node = Node::start(&dir, storage).await;
    let mut missed = Vec::new();
    for n in 4..=5 {
        let (status, body, _) = node.publish(n, None).await;
        assert_eq!(status, 202, "{body}");
        missed.push(body);
    }
    let since = json!({"since": {"project:42": {"epoch": last["epoch"], "seq": last["seq"]}}});
    let mut c = node.connect(since).await;
    let established = c.established.clone();
    // A live event after the replay marks its end.
    let (_, marker, _) = node.publish(6, None).await;
    let mut got = Vec::new();
    loop {
        let e = c.event("workflow.progress").await;
        if e["id"] == marker["id"] {
            break;
        }
        got.push(e);
    }
    let _ = std::fs::remove_dir_all(&dir);
    (established, got, missed)
}

fn assert_recovered_exactly(established: &Value, got: &[Value], missed: &[Value]) {
    assert_eq!(established["recovered"], true, "{established}");
    let room = &established["recovery"]["project:42"];
    assert_eq!(room["replayed"], 2, "{established}");
    assert_eq!(room["seq"], 5, "{established}");
    assert!(room.get("gap").is_none(), "{established}");
    let seqs: Vec<&Value> = got.iter().map(|e| &e["seq"]).collect();
    assert_eq!(seqs, [4, 5]);
    for (e, published) in got.iter().zip(missed) {
        assert_eq!(e["id"], published["id"]);
    }
}

#[tokio::test]
async fn after_sigterm_a_reconnect_gets_exactly_what_it_missed() {
    let (established, got, missed) = restart_and_recover(true, "TERM").await;
    assert_recovered_exactly(&established, &got, &missed);
}

#[tokio::test]
async fn after_sigkill_every_accepted_event_survives() {
    let (established, got, missed) = restart_and_recover(true, "KILL").await;
    assert_recovered_exactly(&established, &got, &missed);
}

/// Without `[storage]`, a restart starts the room over: the same client gets a gap. (What
/// the tests above would see without the disk backend.)
#[tokio::test]
async fn without_storage_a_restart_is_a_gap() {
    let (established, got, _) = restart_and_recover(false, "TERM").await;
    assert_eq!(established["recovered"], false, "{established}");
    assert_eq!(established["recovery"]["project:42"]["gap"], true);
    assert!(got.is_empty(), "nothing replayed: {got:?}");
}

/// Publishes with an `Idempotency-Key`, restarts (SIGKILL), publishes again with the key:
/// returns both answers and whether the second was a replay.
async fn idempotency_across_a_restart(storage: bool) -> (Value, Value, bool) {
    let dir = workdir("idem");
    let node = Node::start(&dir, storage).await;
    let (status, first, replayed) = node.publish(1, Some("deploy-42")).await;
    assert_eq!(status, 202, "{first}");
    assert!(!replayed);
    node.stop("KILL").await;
    let node = Node::start(&dir, storage).await;
    let mut c = node.connect(json!({})).await;
    assert_eq!(c.subscribe("project:42").await["ok"], true);
    let (status, second, replayed) = node.publish(1, Some("deploy-42")).await;
    assert_eq!(status, 202, "{second}");
    if replayed {
        // Nothing is delivered for a duplicate: the next event seen is a later one.
        let (_, marker, _) = node.publish(2, None).await;
        assert_eq!(c.event("workflow.progress").await["id"], marker["id"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    (first, second, replayed)
}

#[tokio::test]
async fn an_idempotency_key_is_honoured_after_a_restart() {
    let (first, second, replayed) = idempotency_across_a_restart(true).await;
    assert!(replayed, "answered as a duplicate");
    assert_eq!(first["id"], second["id"]);
}

#[tokio::test]
async fn without_storage_an_idempotency_key_is_forgotten_on_restart() {
    let (first, second, replayed) = idempotency_across_a_restart(false).await;
    assert!(!replayed);
    assert_ne!(first["id"], second["id"]);
}

/// Two servers cannot share one data directory: the second says so and does not start.
#[tokio::test]
async fn a_data_directory_in_use_is_refused_clearly() {
    let dir = workdir("shared");
    let _first = Node::start(&dir, true).await;
    let config = dir.join("config.toml");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(config.parent().unwrap())
            .env_remove("ROOMCAST_CONFIG")
            .env("ROOMCAST_SERVER__BIND", "127.0.0.1:0")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("in use by another roomcast process"),
        "{stderr}"
    );
}
