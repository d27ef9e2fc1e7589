//! Connections that cost the server without doing anything (issue 14, items 1 and 3):
//! slow and idle connections, oversized request heads, many connections from one address,
//! and the process's descriptor limit.

mod common;

use std::time::{Duration, Instant};

use common::{Auth, Client, DEADLINE, KEY, READ_KEY, SECRET, TestServer, claims, token, token_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resolves once the server has closed `stream` (end of stream or reset); `None` if it is
/// still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

/// One HTTP/1.1 request on `stream` (kept alive unless the request says otherwise); the
/// status and body of the answer.
async fn http(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.expect("write");
    let read = async {
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = find(&data, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let status = head[9..12].parse().expect("status");
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    return (status, body.to_string());
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a full answer: {data:?}");
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("no answer in time")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A server whose `[server]` section holds `settings`.
/// `settings` go in `[server]`; other sections may follow them.
async fn start_with_server(settings: &str) -> TestServer {
    TestServer::start_toml(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\n\
         [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]\n\
         [server]\nbind = \"127.0.0.1:0\"\n{settings}\n"
    ))
    .await
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: roomcast\r\n{extra}\r\n")
}

/// Slowloris: a request line, then a header byte every 100 ms, forever.
async fn trickle(writer: &mut tokio::net::tcp::OwnedWriteHalf) -> std::io::Result<()> {
    writer.write_all(b"GET /health HTTP/1.1\r\n").await?;
    loop {
        writer.write_all(b"x").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_cut_off() {
    let server = start_with_server("header_read_timeout_ms = 500").await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        let _ = trickle(&mut writer).await;
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(DEADLINE, async {
        if let Ok(n @ 1..) = reader.read(&mut buf).await {
            panic!("answered a head that never ended: {:?}", &buf[..n]);
        }
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "a head sent byte by byte was kept open");
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn connections_without_a_request_under_way_are_closed_when_idle() {
    let server = start_with_server("idle_timeout_ms = 500").await;
    // Connected, never sends anything.
    let connecting = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // One request answered, then idle on keep-alive.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(http(&mut kept, &get("/health", "")).await.0, 200);
    let answered = Instant::now();
    let waiting = Instant::now();
    let took = closed_within(&mut silent, DEADLINE).await;
    assert!(took.is_some(), "a silent connection was kept open");
    // Its idle time counts from its connect, not from here: the request above may have
    // taken most of it on a busy machine.
    let closed_at = waiting + took.unwrap();
    assert!(closed_at.duration_since(connecting) >= Duration::from_millis(500));
    assert!(
        closed_within(&mut kept, DEADLINE).await.is_some(),
        "an idle keep-alive connection was kept open"
    );
    assert!(answered.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn websockets_and_long_polls_outlive_the_idle_timeout() {
    let server = start_with_server("idle_timeout_ms = 300").await;
    let token = token_for("u1", "default", &[]);
    let mut ws = server.connect(&token).await;

    // A long poll: Engine.IO handshake, Socket.IO CONNECT, then a GET left waiting.
    let http = reqwest::Client::new();
    let base = server.url("/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let polling = format!("{base}&sid={sid}");
    let connect = format!("40{}", json!({ "token": token }));
    let posted = http.post(&polling).body(connect).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    // Read until the CONNECT answer and `connection.established` are in.
    let mut received = String::new();
    while !received.contains("connection.established") {
        let body = http
            .get(&polling)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        received.push_str(&body);
    }
    let long_poll = tokio::spawn({
        let http = http.clone();
        async move {
            http.get(&polling)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    // Three idle timeouts with nothing on the wire (the heartbeat comes every 25 s).
    tokio::time::sleep(Duration::from_millis(900)).await;
    server.publish_marker().await;
    let answer = tokio::time::timeout(DEADLINE, long_poll)
        .await
        .expect("the long poll was not answered")
        .unwrap();
    assert!(answer.contains("system.notification"), "{answer}");
    ws.event("system.notification").await;
}

#[tokio::test]
async fn a_request_head_over_the_cap_is_refused_with_431() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let big = format!("x-padding: {}\r\n", "a".repeat(20 * 1024));
    assert_eq!(http(&mut stream, &get("/health", &big)).await.0, 431);

    // A handshake with a large cookie under the 16 KiB default still connects.
    let cookie = format!("session={}", "c".repeat(10 * 1024));
    let token = token_for("u1", "default", &[]);
    let client = Client::connect_with(
        server.addr,
        "/",
        Auth::Payload(json!({ "token": token })),
        &[("cookie", &cookie)],
    )
    .await;
    assert!(client.is_ok(), "{:?}", client.err());
}

#[tokio::test]
async fn one_address_may_hold_only_so_many_connections() {
    let server =
        TestServer::start_with("[limits]\nhandshake_exempt = []\nconnections_per_ip = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut over, DEADLINE).await.is_some(),
        "the fourth connection from one address was kept open"
    );
    // The three still work; the refusal is counted.
    assert_eq!(http(&mut held[0], &get("/health", "")).await.0, 200);
    let (status, metrics) = http(
        &mut held[1],
        &get("/metrics", &format!("x-api-key: {READ_KEY}\r\n")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("roomcast_limited_total{limit=\"connections_ip\"} 1"),
        "{metrics}"
    );
    // A connection closed gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut again = TcpStream::connect(server.addr).await.unwrap();
        if again.write_all(get("/health", "").as_bytes()).await.is_ok()
            && closed_within(&mut again, Duration::from_millis(200))
                .await
                .is_none()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
    }
}

/// The binary under `ulimit -n 256`, flooded with idle connections: `/health` still
/// answers and an existing socket still receives events.
#[tokio::test]
async fn health_and_existing_sockets_survive_the_descriptor_limit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("roomcast-fd-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
             [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" serve")
        .arg(env!("CARGO_BIN_EXE_roomcast"))
        .env("ROOMCAST_CONFIG", &config)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run roomcast");
    let child = Child(child);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    let health = || async move {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(get("/health", "connection: close\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut answer))
            .await
            .ok()?
            .ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    };
    let until_healthy = |what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        while health().await.is_none() {
            assert!(Instant::now() < deadline, "/health did not answer {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    until_healthy("at start").await;

    let token = token_for("u1", "default", &[]);
    let mut socket = Client::connect(addr, Auth::Payload(json!({ "token": token })))
        .await
        .expect("connect");
    let mut api = TcpStream::connect(addr).await.unwrap();

    // More idle connections than the process has descriptors for.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(addr).await {
            flood.push(s);
        }
    }
    until_healthy("with the descriptors spent").await;

    let body =
        json!({"type": "system.notification", "data": {"title": "t", "message": "m"}}).to_string();
    let publish = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: roomcast\r\nx-api-key: {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = http(&mut api, &publish).await;
    assert_eq!(status, 202, "{answer}");
    socket.event("system.notification").await;
    // The flood did reach the limit: the server closed some of it.
    let mut buf = [0u8; 16];
    let closed = flood
        .iter()
        .filter(|s| match s.try_read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        })
        .count();
    assert!(closed > 0, "no connection of the flood was refused");
    drop(flood);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the server when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client that stops reading cannot hold its connection open forever. Its session ends
/// (here: it sends a message over the size limit) while the server is still writing what
/// the client does not read; the writer must give up and the connection close, or the
/// client, which keeps sending, blocks for ever on a connection nobody reads (a CI run of
/// `hostile.rs` hung that way for an hour).
#[tokio::test]
async fn a_client_that_never_reads_cannot_hold_its_connection() {
    let server = start_with_server(
        "write_timeout_ms = 2000\n\
         [limits]\npublish_per_key_per_sec = 0\npublish_bytes_per_key_per_sec = 0",
    )
    .await;
    let mut c = server.connect(&token(&claims("alice"))).await;
    // 18 MB the client never reads: the server's writes stall.
    server.publish_bulky(300, 60_000).await;
    // Over `limits.ws_max_message_bytes`: the server ends the session.
    let oversize = format!("42[\"ping\",\"{}\"]", "x".repeat(100_000));
    let limit = Duration::from_secs(20);
    let started = std::time::Instant::now();
    // The client keeps sending (more than any socket buffer holds): every send is taken or
    // refused, none hangs.
    for i in 0..400 {
        let text = if i == 0 {
            oversize.as_str()
        } else {
            &oversize[..60_000]
        };
        match c.try_send_raw(text, limit).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(()) => panic!(
                "send {i} hung for {limit:?}: the server neither reads nor closes the connection"
            ),
        }
    }
    // And the connection is closed: what was written before is there, then the end.
    assert_eq!(c.ending().await, "transport");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}
