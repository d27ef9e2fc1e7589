//! Nothing costly happens before authentication: a request that opens an Engine.IO session
//! is counted (per address and per node, among the sessions not authenticated yet, and
//! against the address's handshake budget) before the session exists, whatever its query
//! looks like, and a session keeps nothing of its request head but what it needs; a user's
//! reconnects are budgeted too.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `GET path` request with `pad` bytes of extra headers (in 8 KB headers).
fn request(addr: SocketAddr, path: &str, pad: usize) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let chunk = "a".repeat(8000);
    let mut left = pad;
    let mut i = 0;
    while left > 0 {
        let n = left.min(chunk.len());
        req.push_str(&format!("X-Pad-{i}: {}\r\n", &chunk[..n]));
        left -= n;
        i += 1;
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends `request` over a fresh connection: the status and the body, `None` when the
/// server cut the connection.
async fn send(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

async fn raw_get(addr: SocketAddr, path: &str, pad: usize) -> Option<(u16, String)> {
    send(addr, &request(addr, path, pad)).await
}

/// The server binary, killed when dropped.
struct Binary {
    child: Child,
    addr: SocketAddr,
    config: std::path::PathBuf,
}

impl Binary {
    async fn start(limits: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = std::env::temp_dir().join(format!(
            "roomcast-preauth-{}-{port}.toml",
            std::process::id()
        ));
        let mut file = std::fs::File::create(&config).unwrap();
        write!(
            file,
            "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
             [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]\n\
             [limits]\n{limits}\n[log]\nlevel = \"warn\"\n"
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while raw_get(addr, "/health", 0).await.map(|r| r.0) != Some(200) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            child,
            addr,
            config,
        }
    }

    /// The process's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The flood: from one rate-limited address, 2,000 Engine.IO handshakes, each with
/// as many headers as the server accepts (up to 200 KB), and never a CONNECT. Each used to
/// leave a session holding its whole request head for the connect timeout: the server grew
/// by hundreds of MiB. Now at most `preauth_sessions_per_ip` sessions exist, each keeping a
/// minimal head; the rest are answered 429 before any session exists. The bound: the
/// server's RSS grows by less than 64 MiB, and `/health` answers 200 all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_sessions_with_huge_heads_costs_little() {
    const FLOOD: usize = 2000;
    const BOUND_KIB: u64 = 64 * 1024;
    let server = Binary::start(
        "handshake_exempt = []\nhandshakes_per_ip_per_sec = 5\nhandshakes_per_ip_burst = 20",
    )
    .await;
    let addr = server.addr;
    // The largest head the server takes (a header cap answers 431), probed on /health.
    let mut pad = 200 * 1024;
    while raw_get(addr, "/health", pad).await.map(|r| r.0) != Some(200) {
        pad /= 2;
        assert!(pad >= 4096, "the server refuses even small heads");
    }
    let before = server.rss_kib();

    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let health = tokio::spawn({
        let flooding = flooding.clone();
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            let mut answers = Vec::new();
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let status = http
                    .get(format!("http://{addr}/health"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                answers.push(status.map_err(|e| e.to_string()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        }
    });
    let mut peak = before;
    let mut opened = 0;
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    let started = std::time::Instant::now();
    let flood = request(addr, "/socket.io/?EIO=4&transport=polling", pad);
    let mut answers = futures_util::stream::iter(0..FLOOD)
        .map(|_| send(addr, &flood))
        .buffer_unordered(32);
    let mut seen = 0;
    while let Some(answer) = answers.next().await {
        match answer {
            Some((200, body)) if body.contains("\"sid\"") => opened += 1,
            Some((status, body)) => {
                let code = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                *refused.entry(format!("{status} {code}")).or_default() += 1;
            }
            None => *refused.entry("cut".into()).or_default() += 1,
        }
        seen += 1;
        if seen % 100 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    drop(answers);
    let elapsed = started.elapsed();
    peak = peak.max(server.rss_kib());
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let health = health.await.unwrap();

    let grown = peak.saturating_sub(before);
    eprintln!(
        "flood: {FLOOD} handshakes with {pad} bytes of headers in {elapsed:?}: {opened} \
         sessions, refused {refused:?}; RSS {before} KiB -> peak {peak} KiB (+{grown} KiB)"
    );
    assert!(
        grown < BOUND_KIB,
        "RSS grew by {grown} KiB (bound {BOUND_KIB}); {opened} sessions opened"
    );
    // 16 waiting sessions at a time (preauth_sessions_per_ip), each closed by the 10 s
    // connect timeout at the latest.
    let most = 16 * (1 + elapsed.as_secs() as usize / 10);
    assert!(opened <= most, "{opened} sessions in {elapsed:?}");
    for (what, n) in &refused {
        assert!(
            what == "429 rate_limited" || what == "429 too_many_preauth_sessions",
            "{n} answered {what}"
        );
    }
    assert!(health.len() >= 2, "/health was asked during the flood");
    assert!(
        health.iter().all(|a| *a == Ok(200)),
        "/health during the flood: {health:?}"
    );
}

/// The payloads of one long-polling GET, split on the record separator.
async fn poll(http: &reqwest::Client, server: &TestServer, sid: &str) -> Vec<String> {
    let url = server.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let body = http.get(url).send().await.unwrap().text().await.unwrap();
    body.split('\u{1e}').map(str::to_owned).collect()
}

/// A full Socket.IO connect over long-polling with `extra` appended to the handshake's
/// query: `Ok(sid)` once CONNECT is answered, else the HTTP refusal's `code` or the
/// `connect_error` message.
async fn poll_connect(server: &TestServer, extra: &str, token: &str) -> Result<String, String> {
    let http = reqwest::Client::new();
    let url = server.url(&format!("/socket.io/?EIO=4&transport=polling{extra}"));
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    if status != 200 {
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        return Err(v["code"].as_str().unwrap_or(&body).to_owned());
    }
    let open: Value = serde_json::from_str(body.trim_start_matches('0')).expect(&body);
    let sid = open["sid"].as_str().expect("sid").to_owned();
    let post = server.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let answer = http
        .post(post)
        .body(format!("40{}", json!({ "token": token })))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for packet in poll(&http, server, &sid).await {
            if packet.starts_with("40") {
                return Ok(sid);
            }
            if let Some(err) = packet.strip_prefix("44") {
                let v: Value = serde_json::from_str(err).unwrap_or_default();
                return Err(v["message"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CONNECT never answered"
        );
    }
}

/// Forms of `sid` that engineioxide does not read as a session id open a session, so the
/// screening counts them as new handshakes: against a budget of 20, 60 connects with each
/// form let about 20 through, not 60.
#[tokio::test]
async fn handshakes_with_a_disguised_sid_are_counted() {
    for form in ["&sid", "&s%69d=x", "&%73id", "&%73id=AAAAAAAAAAAAAAHs"] {
        let server = TestServer::start_with(
            "[limits]\nhandshakes_per_ip_per_sec = 1\nhandshakes_per_ip_burst = 20\n\
             handshake_exempt = []\npreauth_sessions_per_ip = 0",
        )
        .await;
        let mut passed = 0;
        let mut refusals = Vec::new();
        for i in 0..60 {
            match poll_connect(&server, form, &token(&claims(&format!("u{i}")))).await {
                Ok(_) => passed += 1,
                Err(code) => refusals.push(code),
            }
        }
        assert!(
            (20..=23).contains(&passed),
            "{form}: {passed} of 60 connected; refused: {refusals:?}"
        );
        assert!(refusals.iter().all(|c| c == "rate_limited"), "{refusals:?}");
    }
}

/// Opens a long-polling session without connecting it: the status, and the sid or the
/// refusal's code.
async fn open_session(server: &TestServer) -> (u16, String) {
    let (status, body) = server
        .get_text("/socket.io/?EIO=4&transport=polling", None)
        .await;
    let field = if status == 200 { "sid" } else { "code" };
    let v: Value = serde_json::from_str(body.trim_start_matches('0')).unwrap_or_default();
    (status, v[field].as_str().unwrap_or(&body).to_owned())
}

/// Sessions that never authenticate hold a bounded number of places, per address and per
/// node, and give them back when they CONNECT or when the connect timeout closes them.
#[tokio::test]
async fn sessions_waiting_to_authenticate_are_bounded_and_released() {
    let server = TestServer::start_with(
        "[limits]\nhandshakes_per_ip_per_sec = 0\nhandshake_exempt = []\n\
         preauth_sessions_per_ip = 3",
    )
    .await;
    // Authenticated sessions hold no place.
    for user in ["alice", "bob"] {
        poll_connect(&server, "", &token(&claims(user)))
            .await
            .expect("connects");
    }
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (status, sid) = open_session(&server).await;
        assert_eq!(status, 200, "{sid}");
        sids.push(sid);
    }
    assert_eq!(
        open_session(&server).await,
        (429, "too_many_preauth_sessions".to_owned())
    );
    let err = poll_connect(&server, "", &token(&claims("carol")))
        .await
        .err();
    assert_eq!(err.as_deref(), Some("too_many_preauth_sessions"));
    // One of the waiting sessions authenticates: its place comes back.
    let http = reqwest::Client::new();
    let post = server.url(&format!(
        "/socket.io/?EIO=4&transport=polling&sid={}",
        sids[0]
    ));
    let body = format!("40{}", json!({ "token": token(&claims("dave")) }));
    assert_eq!(
        http.post(post).body(body).send().await.unwrap().status(),
        200
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !poll(&http, &server, &sids[0])
        .await
        .iter()
        .any(|p| p.starts_with("40"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "CONNECT never answered"
        );
    }
    assert_eq!(open_session(&server).await.0, 200);
    assert_eq!(open_session(&server).await.0, 429);
    let (_, metrics) = server.get_text("/metrics", Some(KEY)).await;
    assert!(
        metrics.contains("roomcast_limited_total{limit=\"preauth_ip\"} 3"),
        "{metrics}"
    );

    // The connect timeout closes a session that never authenticates: its place comes back.
    let server = TestServer::start_toml(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nconnect_timeout_ms = 300\n\
         [auth]\njwt_secret = \"{SECRET}\"\n\
         [limits]\nhandshake_exempt = []\npreauth_sessions_per_ip = 2"
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(open_session(&server).await.0, 200);
    }
    assert_eq!(open_session(&server).await.0, 429);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while open_session(&server).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "no place came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The node's bound holds for exempt (loopback) addresses too.
    let server = TestServer::start_with("[limits]\npreauth_sessions = 2").await;
    for _ in 0..3 {
        // Not a websocket request: engineioxide refuses it, and the place is given back.
        let (status, _) = server
            .get_text("/socket.io/?EIO=4&transport=websocket", None)
            .await;
        assert_eq!(status, 400);
    }
    for _ in 0..2 {
        assert_eq!(open_session(&server).await.0, 200);
    }
    assert_eq!(
        open_session(&server).await,
        (429, "too_many_preauth_sessions".to_owned())
    );
}

/// A client that reconnects in a loop as one user is refused `rate_limited` past the user's
/// handshake budget; other users, and the same `sub` in another tenant, are not affected.
#[tokio::test]
async fn reconnect_churn_of_one_user_is_limited() {
    let server = TestServer::start_with(
        "[limits]\nhandshakes_per_user_per_sec = 1\nhandshakes_per_user_burst = 5",
    )
    .await;
    let alice = token_for("alice", "acme", &[]);
    let mut outcomes = Vec::new();
    for _ in 0..12 {
        let outcome = Client::connect(server.addr, Auth::Payload(json!({ "token": alice }))).await;
        outcomes.push(match outcome {
            Ok(client) => {
                client.disconnect().await;
                "connected".to_owned()
            }
            Err(code) => code,
        });
    }
    let connected = outcomes.iter().filter(|o| *o == "connected").count();
    assert!((5..=6).contains(&connected), "{outcomes:?}");
    assert_eq!(&outcomes[..5], ["connected"; 5], "{outcomes:?}");
    assert!(
        outcomes[5..]
            .iter()
            .all(|o| o == "rate_limited" || o == "connected"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.last().map(String::as_str), Some("rate_limited"));
    for other in [
        token_for("bob", "acme", &[]),
        token_for("alice", "other", &[]),
    ] {
        Client::connect(server.addr, Auth::Payload(json!({ "token": other })))
            .await
            .expect("another user has their own budget");
    }
    // The budget refills: a retry after a while connects.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while Client::connect(server.addr, Auth::Payload(json!({ "token": alice })))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = server.get_text("/metrics", Some(KEY)).await;
    assert!(
        metrics.contains("roomcast_limited_total{limit=\"handshakes_user\"}"),
        "{metrics}"
    );
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(
        stats["auth_failures"], 0,
        "a budget refusal is no auth failure"
    );
}
