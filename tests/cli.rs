//! The `roomcast` binary: `publish` reaches a socket of a running server; `genconfig` prints
//! a config with fresh secrets that `check-config` accepts.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// Runs the built binary with `args` (off the async runtime: it blocks).
async fn roomcast(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(&args)
            .env_remove("ROOMCAST_URL")
            .env_remove("ROOMCAST_API_KEY")
            .output()
            .expect("run roomcast")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn publish_from_the_command_line_reaches_the_room() {
    let server = TestServer::start().await;
    let mut acme = server.connect(&token_for("dev", "acme", &["7"])).await;
    assert_eq!(acme.subscribe("project:7").await["ok"], true);
    let url = server.url("");
    let out = roomcast(args(&[
        "publish",
        "--url",
        &url,
        "--api-key",
        KEY,
        "--tenant",
        "acme",
        "--type",
        "project.updated",
        "--data",
        r#"{"project_id": 7, "status": "active"}"#,
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON answer");
    let event = acme.event("project.updated").await;
    assert_eq!(event["id"], answer["id"]);
    assert_eq!(event["data"]["status"], "active");
    assert_eq!(answer["tenant"], "acme");
}

#[tokio::test]
async fn a_refused_publish_exits_non_zero_with_the_error_code() {
    let server = TestServer::start().await;
    let url = server.url("");
    for (key, data, code) in [
        (KEY, r#"{"project_id": "a b"}"#, "invalid_payload"),
        ("wrong-key-123", r#"{"project_id": 1}"#, "unauthorized"),
    ] {
        let out = roomcast(args(&[
            "publish",
            "--url",
            &url,
            "--api-key",
            key,
            "--type",
            "project.updated",
            "--data",
            data,
        ]))
        .await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(code), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = roomcast(args(&[
        "publish",
        "--url",
        &url,
        "--api-key",
        KEY,
        "--type",
        "project.updated",
        "--data",
        "{nope",
    ]))
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data is not JSON"));
}

#[tokio::test]
async fn genconfig_prints_a_config_with_fresh_secrets_that_check_config_accepts() {
    let first = roomcast(args(&["genconfig"])).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(!text.contains(roomcast::config::DEV_JWT_SECRET));
    assert!(!text.contains(roomcast::config::DEV_API_KEY));
    let again = String::from_utf8(roomcast(args(&["genconfig"])).await.stdout).unwrap();
    assert_ne!(text, again, "secrets must be fresh on every run");

    let path = std::env::temp_dir().join(format!("roomcast-genconfig-{}.toml", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let check = roomcast(args(&["check-config", "--config", path.to_str().unwrap()])).await;
    let _ = std::fs::remove_file(&path);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(
        !out.contains("# warning"),
        "genconfig must not ship dev secrets: {out}"
    );

    // The key printed on stderr is the one the config accepts: a server started with the
    // generated config takes it.
    let key = String::from_utf8_lossy(&first.stderr)
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let config = roomcast::Config::from_toml(&text).unwrap();
    let keys = roomcast::auth::ApiKeys::from_config(&config.api_keys);
    assert!(
        keys.verify(&key).is_some(),
        "stderr key {key:?} not in the config"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `roomcast genconfig | head -1`: the reader goes away before the writer is done.
    for command in ["genconfig", "check-config"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .arg(command)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run roomcast");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert!(out.status.success(), "{command}: {:?} {stderr}", out.status);
    }
}

#[test]
fn genconfig_states_the_scopes_its_key_really_has() {
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("genconfig")
        .output()
        .expect("run roomcast");
    assert!(out.status.success());
    let config = roomcast::Config::from_toml(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(config.api_keys.len(), 1);
    let granted: Vec<&str> = config.api_keys[0]
        .scopes
        .iter()
        .map(|s| s.as_str())
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("(scopes: {}),", granted.join(", "))),
        "stderr {stderr:?} must state the granted scopes {granted:?}"
    );
}

#[test]
fn an_address_in_use_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // A directory without config.toml: the defaults, with the bind from the environment.
    let dir = std::env::temp_dir().join(format!("roomcast-inuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("serve")
        .current_dir(&dir)
        .env_remove("ROOMCAST_CONFIG")
        .env("ROOMCAST_SERVER__BIND", addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run roomcast");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("roomcast serve kept running on an address in use");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: ")) && stderr.contains("in use"),
        "{stderr}"
    );
    drop(taken);
}

/// `roomcast check-config` on a config whose `[[api_keys]]` are `keys` (TOML).
async fn check_keys(label: &str, keys: &str) -> Output {
    let path =
        std::env::temp_dir().join(format!("roomcast-keys-{label}-{}.toml", std::process::id()));
    let text =
        format!("[server]\nbind = \"127.0.0.1:8000\"\n[auth]\njwt_secret = \"{SECRET}\"\n{keys}");
    std::fs::write(&path, text).unwrap();
    let out = roomcast(args(&["check-config", "--config", path.to_str().unwrap()])).await;
    let _ = std::fs::remove_file(&path);
    out
}

fn key(name: &str, secret: &str, tenant: Option<&str>) -> String {
    let tenant = tenant.map_or(String::new(), |t| format!("tenant = \"{t}\"\n"));
    format!("[[api_keys]]\nname = {name:?}\nkey = \"{secret}\"\n{tenant}")
}

#[tokio::test]
async fn check_config_refuses_key_names_that_are_not_ids_duplicates_or_reserved() {
    let long = "k".repeat(129);
    let cases = [
        // `ci:x` would share idempotency keys with `ci` (`ci:x:a` = `ci` + `x:a`).
        (
            "colon",
            format!(
                "{}{}",
                key("ci", "secret-ci-1", None),
                key("ci:x", "secret-ci-2", None)
            ),
            "api_keys[1]: name \"ci:x\" must be 1 to 128 characters of [A-Za-z0-9_.-]",
        ),
        (
            "empty",
            key("", "secret-empty", None),
            "api_keys[0]: name \"\" must be 1 to 128",
        ),
        (
            "long",
            key(&long, "secret-long", None),
            "must be 1 to 128 characters",
        ),
        (
            "space",
            key("my key", "secret-space", None),
            "api_keys[0]: name \"my key\" must be",
        ),
        // Two keys of one name in two tenants would share one budget and idempotency keys.
        (
            "duplicate",
            format!(
                "{}{}",
                key("ci", "secret-ci-acme", Some("acme")),
                key("ci", "secret-ci-globex", Some("globex"))
            ),
            "api_keys[1]: name \"ci\" is already used by api_keys[0]",
        ),
        // A key named `github` would own the webhook's idempotency keys, `ingest` the stream's.
        (
            "github",
            key("github", "secret-github", None),
            "api_keys[0]: name \"github\" is reserved",
        ),
        (
            "ingest",
            key("ingest", "secret-ingest", None),
            "api_keys[0]: name \"ingest\" is reserved",
        ),
    ];
    for (label, keys, expected) in cases {
        let out = check_keys(label, &keys).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{label}: accepted\n{keys}");
        assert!(stderr.contains(expected), "{label}: {stderr}");
        assert!(
            !stderr.contains("secret-"),
            "{label}: a key in the message: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{label}");
    }
    // Ids of every allowed character, distinct: accepted.
    let ok = format!(
        "{}{}",
        key("Deploy_bot-2.prod", "secret-ok-1", None),
        key("deploy_bot-2.prod", "secret-ok-2", None)
    );
    let out = check_keys("ok", &ok).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
