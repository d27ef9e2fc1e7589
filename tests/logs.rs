//! Logs carry one span per connection, `socket{sid, user_id, tenant, ns}`, around the
//! socket's connect, refusal and disconnect lines; and no token appears in them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_connection_logs_within_its_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("roomcast=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let server = TestServer::start_with(
        "[limits]\nevents_per_sec = 1\nevents_burst = 1\nevent_abuse_refusals = 5",
    )
    .await;
    let t = token_for("alice", "acme", &[]);
    let mut c = server.connect(&t).await;
    let sid = c.established["sid"].as_str().unwrap().to_owned();
    c.emit_with_ack("ping", json!({})).await;
    let ack = c.emit_with_ack("ping", json!({})).await;
    assert_eq!(ack["error"]["code"], "rate_limited");
    drop(c);
    let span = format!("socket{{sid={sid} user_id=alice tenant=acme ns=/}}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = captured.text();
        let lines = |what: &str| text.lines().any(|l| l.contains(&span) && l.contains(what));
        if lines("socket connected")
            && lines("event refused: rate_limited")
            && lines("socket disconnected")
        {
            assert!(!text.contains(&t), "a token was logged");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing span lines for {span}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs the real binary with `RUST_LOG=filter` and the `format` log format, puts a token
/// through every way of presenting it (CONNECT payload over websocket and polling, query,
/// header), stops it with SIGTERM and returns its whole log, the tokens and the sids.
async fn run_binary(filter: &str, format: &str) -> (String, Vec<String>, Vec<String>) {
    let port = free_port();
    let dir = std::env::temp_dir();
    let stem = format!("roomcast-logs-{}-{port}", std::process::id());
    let config_path = dir.join(format!("{stem}.toml"));
    let log_path = dir.join(format!("{stem}.log"));
    std::fs::write(
        &config_path,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
             [log]\nformat = \"{format}\"\n"
        ),
    )
    .unwrap();
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", filter)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while http.get(url("/health")).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no server");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tokens: Vec<String> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|u| token_for(u, "acme", &[]))
        .collect();
    let mut sids = Vec::new();
    for (i, auth) in [
        Auth::Payload(json!({ "token": tokens[0] })),
        Auth::Query(&tokens[1]),
        Auth::Header(&tokens[2]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::connect(addr, auth)
            .await
            .unwrap_or_else(|e| panic!("connect {i}: {e}"));
        sids.push(c.established["sid"].as_str().unwrap().to_owned());
        c.emit_with_ack("ping", json!({})).await;
        c.disconnect().await;
    }
    // Long-polling: the sid is a bearer credential in every request's query.
    let open = http
        .get(url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    let polling = url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let sent = http
        .post(&polling)
        .body(format!("40{}", json!({ "token": tokens[3] })))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let mut received = String::new();
    while !received.contains("connection.established") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "polling: {received}"
        );
        received.push_str(
            &http
                .get(&polling)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    sids.push(sid);
    // SIGTERM: the server drains and exits, so every line is in the file.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&config_path);
    (log, tokens, sids)
}

#[tokio::test]
async fn no_filter_lets_a_token_or_a_sid_into_the_log() {
    for format in ["pretty", "json"] {
        for filter in [
            "debug,socketioxide::ns=warn",
            "debug",
            "trace",
            "info",
            "engineioxide=trace",
        ] {
            let (log, tokens, sids) = run_binary(filter, format).await;
            assert!(!log.trim().is_empty(), "{format} {filter}: nothing logged");
            for token in &tokens {
                let signature = token.rsplit('.').next().unwrap();
                assert!(
                    !log.contains(signature),
                    "{format} {filter}: a token in the log:\n{log}"
                );
            }
            for sid in &sids {
                assert!(
                    !log.contains(sid.as_str()),
                    "{format} {filter}: sid {sid} in the log:\n{log}"
                );
            }
        }
    }
}
