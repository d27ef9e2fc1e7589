//! Secrets never leave the server: not in its logs (at the most verbose level), not in HTTP
//! error bodies or stats, not in `check-config` output. The real binary is started with
//! known secrets and put through refusals of every kind.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::{Auth, Client, free_port};
use roomcast::auth::jwt::{TokenClaims, now_secs, sign_hs256, sign_hs256_with_kid};
use serde_json::json;

const JWT_SECRET: &str = "jwt-SECRET-4b1d9e2f7a3c8e6d";
const KID_SECRET: &str = "kid-SECRET-9f8e7d6c5b4a3210";
const API_KEY: &str = "api-SECRET-0a1b2c3d4e5f";
const READ_ONLY_KEY: &str = "read-SECRET-77aa88bb99cc";
const JWKS_PASSWORD: &str = "jwks-SECRET-pa55w0rd";
const JWKS_TOKEN: &str = "jwks-SECRET-querytoken";
const REDIS_PASSWORD: &str = "redis-SECRET-hunter2";
const RPC_SECRET: &str = "rpc-SECRET-5e6f7a8b9c0d";
const RPC_PASSWORD: &str = "rpc-SECRET-pa55w0rd";
const RPC_TOKEN: &str = "rpc-SECRET-querytoken";

fn secrets() -> Vec<&'static str> {
    vec![
        JWT_SECRET,
        KID_SECRET,
        API_KEY,
        READ_ONLY_KEY,
        JWKS_PASSWORD,
        JWKS_TOKEN,
        REDIS_PASSWORD,
        RPC_SECRET,
        RPC_PASSWORD,
        RPC_TOKEN,
    ]
}

fn config(port: u16, redis: bool) -> String {
    let closed = free_port();
    let redis = if redis {
        format!("[cluster]\nredis_url = \"redis://user:{REDIS_PASSWORD}@127.0.0.1:{closed}/0\"\n")
    } else {
        String::new()
    };
    format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\nnode_id = \"secrets\"\n\
         [auth]\njwt_secret = \"{JWT_SECRET}\"\nleeway_secs = 0\n\
         jwks_url = \"http://user:{JWKS_PASSWORD}@127.0.0.1:{closed}/jwks?access_token={JWKS_TOKEN}\"\n\
         jwks_refresh_secs = 1\n\
         [[auth.keys]]\nkid = \"k1\"\nsecret = \"{KID_SECRET}\"\n\
         [[api_keys]]\nname = \"full\"\nkey = \"{API_KEY}\"\nscopes = [\"publish\", \"read\"]\n\
         [[api_keys]]\nname = \"reader\"\nkey = \"{READ_ONLY_KEY}\"\nscopes = [\"read\"]\n\
         [rpc]\nurl = \"http://user:{RPC_PASSWORD}@127.0.0.1:{closed}/rpc?token={RPC_TOKEN}\"\n\
         secret = \"{RPC_SECRET}\"\n\
         {redis}\
         [log]\nlevel = \"trace\"\n"
    )
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "roomcast-secrets-{}-{}-{name}.toml",
        std::process::id(),
        now_secs()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_clean(what: &str, text: &str, tokens: &[String]) {
    for secret in secrets() {
        assert!(!text.contains(secret), "{what} contains {secret}:\n{text}");
    }
    for token in tokens {
        assert!(
            !text.contains(token.as_str()),
            "{what} contains a token:\n{text}"
        );
        // Nor its signature alone.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "{what} contains a token's signature"
        );
    }
}

#[test]
fn check_config_masks_every_secret() {
    for redis in [false, true] {
        let path = write_config("check", &config(free_port(), redis));
        let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("***"), "{stdout}");
        assert!(stdout.contains("kid = \"k1\""), "{stdout}");
        assert_clean("check-config output", &format!("{stdout}{stderr}"), &[]);
        let _ = std::fs::remove_file(&path);
    }
    // A refused config names the problem, not the secret.
    let bad = config(free_port(), false).replace("127.0.0.1:", "0.0.0.0:");
    let path = write_config("bad", &bad);
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("plain-text key"), "{all}");
    assert_clean("a refused config's error", &all, &[]);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn logs_errors_and_stats_hold_no_secret() {
    let port = free_port();
    let path = write_config("serve", &config(port, false));
    // The log goes to a file: a pipe nobody reads until the end would fill up and stall
    // the server at this log level.
    let log_path = path.with_extension("log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http.get(url("/health")).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exp = now_secs() + 600;
    let good = sign_hs256(JWT_SECRET, &TokenClaims::new("alice", exp)).unwrap();
    let keyed = sign_hs256_with_kid(KID_SECRET, Some("k1"), &TokenClaims::new("bob", exp)).unwrap();
    let expired = sign_hs256(JWT_SECRET, &TokenClaims::new("carol", now_secs() - 60)).unwrap();
    let unknown_kid =
        sign_hs256_with_kid(KID_SECRET, Some("k9"), &TokenClaims::new("dave", exp)).unwrap();
    let forged = sign_hs256("not-the-secret-0123456789", &TokenClaims::new("eve", exp)).unwrap();
    let tokens = vec![
        good.clone(),
        keyed.clone(),
        expired.clone(),
        unknown_kid.clone(),
        forged.clone(),
    ];

    // Sockets: accepted (three ways of presenting the token) and refused.
    let mut alice = Client::connect(addr, Auth::Payload(json!({ "token": good })))
        .await
        .expect("alice connects");
    let ack = alice
        .emit_with_ack("auth.refresh", json!({ "token": forged }))
        .await;
    assert_eq!(ack["error"]["code"], "token_invalid");
    let ack = alice
        .emit_with_ack("auth.refresh", json!({ "token": keyed }))
        .await;
    assert_eq!(ack["error"]["code"], "refresh_mismatch");
    // An RPC to a backend that cannot be reached (its URL has credentials and a token).
    let ack = alice
        .emit_with_ack("rpc", json!({"method": "a.b", "data": {}}))
        .await;
    assert_eq!(ack["error"]["code"], "rpc_unavailable");
    if let Err(e) = Client::connect(addr, Auth::Header(&keyed)).await {
        panic!("bob: {e}");
    }
    Client::connect(addr, Auth::Query(&good))
        .await
        .expect("query token");
    for (t, code) in [
        (&expired, "token_expired"),
        (&unknown_kid, "token_invalid"),
        (&forged, "token_invalid"),
    ] {
        for auth in [
            Auth::Payload(json!({ "token": t })),
            Auth::Query(t),
            Auth::Header(t),
        ] {
            let err = Client::connect(addr, auth).await.err();
            assert_eq!(err.as_deref(), Some(code));
        }
    }
    // HTTP: refusals and answers.
    let mut bodies = String::new();
    for (key, path) in [
        (Some("wrong-key-0123456789"), "/api/v1/websocket/stats"),
        (Some(READ_ONLY_KEY), "/api/v1/events"),
        (Some(API_KEY), "/api/v1/websocket/stats"),
        (Some(API_KEY), "/api/v1/events"),
        (None, "/api/v1/events"),
        (Some(good.as_str()), "/api/v1/events"),
    ] {
        for (header, value) in key
            .map(|k| {
                vec![
                    ("x-api-key", k.to_owned()),
                    ("authorization", format!("Bearer {k}")),
                ]
            })
            .unwrap_or_default()
            .into_iter()
            .chain(std::iter::once(("x-ignored", String::new())))
        {
            let req = if path.ends_with("events") {
                http.post(url(path))
                    .body("{\"type\": \"nope.nope\", \"data\": 1}")
            } else {
                http.get(url(path))
            };
            let resp = req.header(header, value).send().await.unwrap();
            bodies.push_str(&resp.text().await.unwrap());
            bodies.push('\n');
        }
    }
    let stats = http
        .get(url("/api/v1/websocket/stats"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stats.contains("auth_failures"), "{stats}");
    assert_clean("HTTP answers", &bodies, &tokens);
    assert_clean("stats", &stats, &tokens);
    // Let a few JWKS refreshes fail (the URL has credentials and a token in its query).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(alice);

    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(log.contains("roomcast listening"), "{log}");
    assert!(
        log.contains("JWK Set"),
        "the JWKS failures are logged: {log}"
    );
    assert_clean("the server log", &log, &tokens);
    let _ = std::fs::remove_file(&path);
}
