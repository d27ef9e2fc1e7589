//! Hostile input at a live server, over real websockets, long-polling and HTTP: broken
//! Engine.IO and Socket.IO frames, unknown namespaces, wrong ack ids, binary attachment
//! floods, invalid UTF-8, deeply nested JSON, huge arrays, room names with separators and
//! unicode, reserved event names, garbage on the HTTP API. The server never panics, keeps
//! delivering published events to a well-behaved socket during the barrage, and its memory
//! comes back near the baseline afterwards.

mod common;

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

static PANICKED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Any panic on any thread (a server task included) is recorded, then reported as usual.
fn watch_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Resident memory of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw websocket with the Engine.IO open packet read; `connect` also joins `/`.
async fn raw(server: &TestServer, connect: bool) -> Option<Ws> {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    let _open = tokio::time::timeout(DEADLINE, ws.next()).await.ok()??;
    if connect {
        let t = token(&claims("hostile"));
        ws.send(Message::text(format!("40{}", json!({ "token": t }))))
            .await
            .ok()?;
    }
    Some(ws)
}

/// How long one hostile conversation or one garbage request may take. The server answers
/// or closes each at once; one it neither answers nor reads from is a bug (a CI run once
/// hung here until the observer's token expired, an hour later), so the test names it.
const STUCK: Duration = Duration::from_secs(60);

/// Sends every message, ignoring a connection the server closed (that is a fine answer).
/// Panics naming the case and the step when the server stops reading without closing.
async fn barrage(server: &TestServer, case: usize, connect: bool, messages: Vec<Message>) {
    let stuck = |step: &str| format!("hostile case {case}: stuck {STUCK:?} at {step}");
    let Some(mut ws) = tokio::time::timeout(STUCK, raw(server, connect))
        .await
        .unwrap_or_else(|_| panic!("{}", stuck("connect")))
    else {
        return;
    };
    for (i, m) in messages.into_iter().enumerate() {
        match tokio::time::timeout(STUCK, ws.send(m)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => panic!("{}", stuck(&format!("sending message {i}"))),
        }
    }
    // Read what comes back for a moment, answering nothing.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    if tokio::time::timeout(STUCK, ws.close(None)).await.is_err() {
        panic!("{}", stuck("close"));
    }
}

fn text(s: impl Into<String>) -> Message {
    Message::text(s.into())
}

fn bad_utf8_text(bytes: &'static [u8]) -> Message {
    Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every hostile websocket conversation, each on its own connection.
fn websocket_cases() -> Vec<(bool, Vec<Message>)> {
    let huge_rooms: Vec<String> = (0..4000).map(|i| format!("project:{i}")).collect();
    let unicode_rooms = [
        "acme/project:1",
        "default/global",
        "project:1/2",
        "project:1:2",
        "project:\u{0}",
        "project:\u{202e}1",
        "ｐroject:1",
        "project:é",
        "user:../../etc",
        "global\n",
        "🙂",
        "",
    ];
    let mut subscribes: Vec<Message> = unicode_rooms
        .iter()
        .map(|r| text(format!("421{}", json!(["subscribe", {"room": r}]))))
        .collect();
    subscribes.push(text(format!(
        "422{}",
        json!(["subscribe", {"rooms": huge_rooms}])
    )));
    subscribes.push(text(format!(
        "423{}",
        json!(["subscribe", {"rooms": unicode_rooms}])
    )));
    let reserved: Vec<Message> = [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "error",
        "newListener",
        "connection.established",
        "auth.expired",
        "server.shutdown",
        "presence.joined",
        "__proto__",
        "constructor",
        "",
        "subscribe\u{0}",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| {
        text(format!(
            "42{i}{}",
            json!([name, {"room": "global"}, [1, 2]])
        ))
    })
    .collect();
    let attachment = Message::binary(vec![0xAB; 32 * 1024]);
    vec![
        // Engine.IO: unknown types, empty, ping storms, probes, upgrade on a websocket.
        (
            false,
            vec![
                text(""),
                text("9"),
                text("x"),
                text("2probe"),
                text("5"),
                text("6"),
                text("3"),
                text("2".repeat(1000)),
                text("0{\"sid\":\"forged\"}"),
                Message::binary(vec![0xFF, 0x00, 0x34]),
                Message::binary(Vec::new()),
            ],
        ),
        // Socket.IO packets before any namespace connect, and for unknown namespaces.
        (
            false,
            vec![
                text("4"),
                text("42[\"subscribe\",{\"room\":\"global\"}]"),
                text("40/unknown,"),
                text("42/unknown,[\"ping\"]"),
                text("40/ws"),
                text("40/ws,{\"token\":5}"),
                text(format!("40{{\"token\":{}}}", nested(100))),
                text(format!("40{}", nested(5000))),
                text("41"),
                text("49"),
                text("4/"),
                text("4/,"),
                text(format!("40/{},", "n".repeat(50_000))),
            ],
        ),
        // Broken Socket.IO frames on a connected socket.
        (
            true,
            vec![
                text("42"),
                text("42["),
                text("42[]"),
                text("42[1,2]"),
                text("42[null]"),
                text("42{\"a\":1}"),
                text("42\"subscribe\""),
                text("42[\"subscribe\""),
                text("42[\"subscribe\",{\"room\":\"global\"}"),
                text(format!("42{}", nested(10_000))),
                text(format!(
                    "421{}",
                    json!(["subscribe", json!({"room": {"deep": nested(50)}})])
                )),
                text("4299999999999999999999999999[\"ping\"]"),
                text("42-1[\"ping\"]"),
                text("42 1[\"ping\"]"),
                text("421.5[\"ping\"]"),
                text("4/ws,42[\"ping\"]"),
                bad_utf8_text(b"42[\"sub\xff\xfe\"]"),
                bad_utf8_text(b"\xc3\x28"),
                bad_utf8_text(b"42[\"subscribe\",{\"room\":\"project:\xed\xa0\x80\"}]"),
            ],
        ),
        // Acks the server never asked for, with wrong ids and shapes.
        (
            true,
            vec![
                text("43[]"),
                text("430[]"),
                text("4318446744073709551615[\"x\"]"),
                text("43999999999999999999999[\"x\"]"),
                text("43-5[1]"),
                text("431"),
                text("46-0[]"),
                text("461-0[{\"_placeholder\":true,\"num\":0}]"),
            ],
        ),
        // Binary attachments: more than announced, fewer, absurd counts, forged placeholders.
        (true, {
            let mut m = vec![text(
                "451-[\"subscribe\",{\"_placeholder\":true,\"num\":0}]",
            )];
            m.extend(std::iter::repeat_n(attachment.clone(), 200));
            m.push(text(
                "454294967295-[\"ping\",{\"_placeholder\":true,\"num\":7}]",
            ));
            m.extend(std::iter::repeat_n(attachment.clone(), 200));
            m.push(text("45999999999999999999999-[\"ping\"]"));
            m.push(text("452-[\"ping\",{\"_placeholder\":true,\"num\":99}]"));
            m.push(Message::binary(vec![1]));
            m.push(Message::binary(vec![2]));
            m.push(text("451-[\"ping\",{\"_placeholder\":\"yes\",\"num\":-1}]"));
            m.push(Message::binary(vec![3]));
            m
        }),
        // A message over the size limit: the connection is closed.
        (
            true,
            vec![text(format!("42[\"ping\",\"{}\"]", "x".repeat(200_000)))],
        ),
        (true, subscribes),
        (true, reserved),
        // Commands with every kind of wrong payload.
        (
            true,
            [
                "subscribe",
                "unsubscribe",
                "ping",
                "presence",
                "history",
                "rpc",
                "auth.refresh",
            ]
            .iter()
            .flat_map(|cmd| {
                [
                    json!(null),
                    json!(1),
                    json!("x"),
                    json!([]),
                    json!({}),
                    json!({"room": 5}),
                    json!({"rooms": {}}),
                    json!({"token": ["a"]}),
                    json!({"room": "global", "since": "x", "limit": -1}),
                    json!({"room": "global", "after": u64::MAX, "limit": u64::MAX}),
                    json!({"token": "a.b.c"}),
                    json!({"method": "m".repeat(10_000), "data": {"user_id": "x"}}),
                    json!({"method": "a\u{0}b"}),
                ]
                .into_iter()
                .enumerate()
                .map(move |(i, payload)| text(format!("42{i}{}", json!([cmd, payload]))))
            })
            .collect(),
        ),
    ]
}

/// An error is a fine answer to garbage, but not silence: a timeout fails the test.
fn unanswered(e: reqwest::Error) -> reqwest::Error {
    assert!(
        !e.is_timeout(),
        "a garbage request got no answer within {STUCK:?}: {e}"
    );
    e
}

/// Garbage on the HTTP API and the long-polling transport.
async fn http_garbage(server: &TestServer) -> usize {
    // A request the server neither answers nor refuses within STUCK fails the test, named.
    let client = reqwest::Client::builder()
        .timeout(STUCK)
        .build()
        .expect("client");
    let nested_body = nested(100_000);
    let array_body = format!(
        "{{\"event\":\"x\",\"rooms\":[{}],\"data\":1}}",
        vec!["\"global\""; 20_000].join(",")
    );
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"{\"type\": \"project.updated\", \"data\": {\"project_id\": \"\xff\"}}".to_vec(),
        nested_body.clone().into_bytes(),
        format!("{{\"type\":\"project.updated\",\"data\":{{\"project_id\":1,\"changes\":{}}}}}", nested(120)).into_bytes(),
        format!("{{\"type\":\"system.notification\",\"data\":{{\"title\":\"t\",\"message\":{}}}}}", nested(200)).into_bytes(),
        array_body.into_bytes(),
        b"{\"type\": \"project.updated\", \"type\": \"x\", \"data\": {}}".to_vec(),
        b"{\"event\": \"connect\", \"room\": \"global\"}".to_vec(),
        b"{\"event\": \"auth.refresh\", \"room\": \"global\"}".to_vec(),
        b"{\"event\": \"deploy\", \"room\": \"acme/global\"}".to_vec(),
        b"{\"event\": \"deploy\", \"rooms\": [\"project:\\u0000\", \"project:\\u202e\"]}".to_vec(),
        b"{\"event\": \"deploy\", \"room\": \"global\", \"tenant\": \"../acme\"}".to_vec(),
        b"[1e999999]".to_vec(),
        b"{\"type\":\"workflow.progress\",\"data\":{\"workflow_id\":-99999999999999999999,\"project_id\":1,\"progress\":1e3}}".to_vec(),
        vec![b'{'; 300_000],
    ];
    let mut requests = 0;
    for path in [
        "/api/v1/events",
        "/api/v1/broadcast",
        "/api/v1/users/%FF/disconnect",
    ] {
        for body in &bodies {
            for ct in [
                "application/json",
                "text/plain; charset=utf-16",
                "multipart/form-data; boundary=x",
            ] {
                let _ = client
                    .post(server.url(path))
                    .header("x-api-key", KEY)
                    .header("content-type", ct)
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(unanswered);
                requests += 1;
            }
        }
    }
    let long = "a".repeat(20_000);
    let paths = [
        "/api/v1/rooms/%FF%FE/presence".to_owned(),
        "/api/v1/rooms/project:1%2F..%2F/history?after=-1&limit=99999999999999999999".to_owned(),
        "/api/v1/rooms/global/history?tenant=%00&epoch=%FF".to_owned(),
        "/api/v1/rooms/global/presence?tenant[]=a&tenant=b".to_owned(),
        format!("/api/v1/rooms/{long}/presence"),
        "/api/v1/../../etc/passwd".to_owned(),
        "/socket.io/?EIO=4&transport=polling&sid=bogus".to_owned(),
        "/socket.io/?EIO=3&transport=polling".to_owned(),
        "/socket.io/?EIO=99999999999999999999&transport=websocket".to_owned(),
        "/socket.io/?EIO=4&transport=carrier-pigeon".to_owned(),
        format!("/socket.io/?EIO=4&transport=polling&sid={long}"),
        "/socket.io/?EIO=4&transport=polling&j=%FF".to_owned(),
    ];
    for path in &paths {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::OPTIONS,
        ] {
            let _ = client
                .request(method, server.url(path))
                .header("x-api-key", KEY)
                .header("authorization", format!("Bearer {long}"))
                .body("4garbage\u{1e}42[\"x\"]")
                .send()
                .await
                .map_err(unanswered);
            requests += 1;
        }
    }
    // Header junk on an endpoint that reads them.
    for (name, value) in [
        ("authorization", "Bearer"),
        ("authorization", "Bearer  "),
        ("authorization", "Basic Zm9vOmJhcg=="),
        ("x-api-key", "\u{7f}"),
        ("idempotency-key", ""),
        ("idempotency-key", "é"),
    ] {
        let _ = client
            .post(server.url("/api/v1/events"))
            .header(name, value.as_bytes())
            .body("{}")
            .send()
            .await
            .map_err(unanswered);
        requests += 1;
    }
    // Polling: a real session fed broken payloads.
    if let Ok(resp) = client
        .get(server.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .map_err(unanswered)
        && let Ok(open) = resp.text().await
        && let Some(sid) = open
            .strip_prefix('0')
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v["sid"].as_str().map(str::to_owned))
    {
        let url = server.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
        for body in [
            "40".to_owned(),
            "\u{1e}\u{1e}\u{1e}".to_owned(),
            format!("42{}", nested(5000)),
            "bAAAA".to_owned(),
            "b\u{ff}".to_owned(),
            "4".repeat(60_000),
        ] {
            let _ = client
                .post(&url)
                .body(body)
                .send()
                .await
                .map_err(unanswered);
            requests += 1;
        }
    }
    // Engine.IO v3 (socket.io-client 2.x) polling frames packets by length: a real v3
    // session fed lengths that lie, overflow or cut a character in half. Its token comes
    // with the HTTP request: without one no v3 session opens at all.
    let v3_open = format!(
        "/socket.io/?EIO=3&transport=polling&b64=1&token={}",
        token(&claims("hostile-v3"))
    );
    if let Ok(resp) = client
        .get(server.url(&v3_open))
        .send()
        .await
        .map_err(unanswered)
        && let Ok(open) = resp.text().await
        && let Some(sid) = open
            .split_once(':')
            .and_then(|(_, packet)| packet.strip_prefix('0'))
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v["sid"].as_str().map(str::to_owned))
    {
        let url = server.url(&format!("/socket.io/?EIO=3&transport=polling&sid={sid}"));
        let nested_event = format!("42{}", nested(5000));
        for body in [
            "2:40".to_owned(),
            "99999999999999999999:4".to_owned(),
            "3:4é".to_owned(),
            "1:".to_owned(),
            ":::".to_owned(),
            "0:".to_owned(),
            "7:42[\"x\"".to_owned(),
            format!("{}:{nested_event}", nested_event.len()),
            "\u{0}\u{1}\u{ff}".to_owned(),
            "9".repeat(60_000),
        ] {
            let _ = client
                .post(&url)
                .body(body)
                .send()
                .await
                .map_err(unanswered);
            requests += 1;
        }
    }
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_survives_hostile_input() {
    watch_panics();
    let server = TestServer::start().await;
    let mut observer = server.connect(&token(&claims("observer"))).await;
    // Warm up (allocator arenas, lazy statics) before the baseline.
    for _ in 0..3 {
        tokio::join!(
            async {
                for (case, (connect, messages)) in websocket_cases().into_iter().enumerate() {
                    barrage(&server, case, connect, messages).await;
                }
            },
            http_garbage(&server)
        );
    }
    server.publish_marker().await;
    observer.event("system.notification").await;
    let baseline = rss_kib();

    let done = AtomicUsize::new(0);
    let attack = async {
        for _ in 0..5 {
            let cases = websocket_cases();
            let total = cases.len();
            futures_util::future::join_all(
                cases
                    .into_iter()
                    .enumerate()
                    .map(|(case, (connect, messages))| barrage(&server, case, connect, messages)),
            )
            .await;
            http_garbage(&server).await;
            done.fetch_add(total, Ordering::SeqCst);
        }
    };
    // Meanwhile a well-behaved socket keeps receiving what is published.
    let watch = async {
        let mut delivered = 0;
        loop {
            let finished = done.load(Ordering::SeqCst) >= 5 * websocket_cases().len();
            server.publish_marker().await;
            let event = tokio::time::timeout(DEADLINE, observer.event("system.notification"))
                .await
                .expect("the observer still receives events during the barrage");
            assert_eq!(event["room"], "global");
            delivered += 1;
            if finished {
                break delivered;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((), delivered) = tokio::join!(attack, watch);
    assert!(delivered >= 2, "{delivered}");
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "the server panicked (see above)"
    );

    // Still serving: HTTP, a new socket, a subscribe, a publish.
    assert_eq!(server.get("/health", None).await.0, 200);
    let mut fresh = server.connect(&token_for("fresh", "default", &["9"])).await;
    assert_eq!(fresh.subscribe("project:9").await["ok"], true);
    let (status, _) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": 9}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(fresh.event("project.deleted").await["room"], "project:9");
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    // Only the observer and the fresh socket are left: hostile connections are gone.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
        if stats["connections"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections left: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stats);

    // Memory: five barrages after the warm-up must not have kept growing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    eprintln!("VmRSS baseline {baseline} KiB, after the barrage {after} KiB");
    assert!(
        after < baseline + 96 * 1024,
        "memory grew from {baseline} KiB to {after} KiB"
    );
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "the server panicked (see above)"
    );
}
