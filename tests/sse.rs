//! Server-Sent Events (`GET /api/v1/sse`), read over real HTTP as an `EventSource` reads
//! it: a connection receives the events of its rooms and no others, is refused with the
//! documented codes before streaming starts, recovers what it missed in every room from its
//! `Last-Event-ID` (or learns of a gap), follows an AI stream's deltas after its snapshot,
//! and is closed when it reads too slowly. On one node and on a two-node cluster.

mod common;

use std::time::Duration;

use common::{DEADLINE, KEY, RedisServer, TestServer, claims, token, token_for};
use serde_json::{Value, json};

/// One event of the stream.
#[derive(Debug, Clone)]
struct Event {
    event: String,
    id: Option<String>,
    data: Value,
}

/// An SSE connection read as `EventSource` reads it (comments skipped, `id:` kept).
struct Sse {
    resp: reqwest::Response,
    buf: String,
    /// The last `id:` seen, as `EventSource.lastEventId`.
    last_id: Option<String>,
    heartbeats: usize,
}

/// `GET /api/v1/sse?<query>` with `headers`; the status and JSON body when refused.
async fn open(
    server: &TestServer,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Sse, (u16, Value)> {
    let mut req = reqwest::Client::new().get(server.url(&format!("/api/v1/sse?{query}")));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    if status != 200 {
        return Err((status, resp.json().await.unwrap_or(Value::Null)));
    }
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Ok(Sse {
        resp,
        buf: String::new(),
        last_id: None,
        heartbeats: 0,
    })
}

async fn connect(server: &TestServer, query: &str) -> Sse {
    match open(server, query, &[]).await {
        Ok(sse) => sse,
        Err((status, body)) => panic!("refused {status}: {body}"),
    }
}

impl Sse {
    /// The next event within the deadline; `None` when the stream ended.
    async fn next(&mut self) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (None, None, Vec::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.heartbeats += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = Some(value.to_owned()),
                        "id" => id = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if id.is_some() {
                    self.last_id = id.clone();
                }
                let data = serde_json::from_str(&data.join("\n")).expect("JSON data");
                return Some(Event {
                    event: event.unwrap_or_else(|| "message".into()),
                    id,
                    data,
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("no event within the deadline");
            match chunk {
                Ok(Some(bytes)) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next event named `name`, skipping others.
    async fn event(&mut self, name: &str) -> Event {
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("ended before {name}"));
            if e.event == name {
                return e;
            }
        }
    }

    /// Every event up to and including the first custom `marker`.
    async fn until_marker(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await.expect("ended before the marker");
            let done = e.event == "marker";
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

fn alice() -> String {
    token_for("alice", "default", &["1", "2"])
}

async fn broadcast(server: &TestServer, event: &str, rooms: &[&str], data: Value) -> Value {
    broadcast_in(server, event, rooms, data, false).await
}

async fn broadcast_in(
    server: &TestServer,
    event: &str,
    rooms: &[&str],
    data: Value,
    volatile: bool,
) -> Value {
    let (status, body) = server
        .post(
            "/api/v1/broadcast",
            json!({"event": event, "rooms": rooms, "data": data, "volatile": volatile}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e.event, e.data["data"]["n"]))
        .collect()
}

#[tokio::test]
async fn a_connection_receives_its_rooms_and_no_others() {
    let server = TestServer::start().await;
    let token = alice();
    // The token in the query, as EventSource must send it.
    let mut sse = connect(
        &server,
        &format!("rooms=project:1,user:alice&token={token}"),
    )
    .await;
    let established = sse.event("connection.established").await;
    assert_eq!(established.data["user_id"], "alice");
    assert_eq!(
        established.data["rooms"],
        json!(["project:1", "user:alice"])
    );
    assert!(established.id.is_some(), "the starting resume token");
    // And in the header.
    let mut by_header = open(
        &server,
        "rooms=project:2",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("a bearer token");
    by_header.event("connection.established").await;

    broadcast(&server, "deploy", &["project:1"], json!({"n": 1})).await;
    broadcast(&server, "deploy", &["project:2"], json!({"n": 2})).await;
    broadcast(&server, "deploy", &["global"], json!({"n": 3})).await;
    broadcast(&server, "deploy", &["user:bob"], json!({"n": 4})).await;
    broadcast(&server, "deploy", &["user:alice"], json!({"n": 5})).await;
    // The same room names in another tenant.
    let (status, body) = server
        .post(
            "/api/v1/broadcast",
            json!({"event": "deploy", "rooms": ["project:1"], "data": {"n": 6}, "tenant": "acme"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    broadcast(
        &server,
        "marker",
        &["project:1", "project:2"],
        json!({"n": 0}),
    )
    .await;

    let seen = sse.until_marker().await;
    assert_eq!(names(&seen), ["deploy 1", "deploy 5", "marker 0"]);
    for e in &seen {
        assert_eq!(e.data["type"], e.event.as_str(), "data is the envelope");
        assert!(e.id.is_some(), "numbered events move the resume token");
    }
    let seen = by_header.until_marker().await;
    assert_eq!(names(&seen), ["deploy 2", "marker 0"]);

    // Volatile events flow, without moving the resume token.
    let before = sse.last_id.clone();
    broadcast_in(&server, "cursor", &["project:1"], json!({"n": 7}), true).await;
    let cursor = sse.event("cursor").await;
    assert_eq!(cursor.data["data"]["n"], 7);
    assert!(cursor.id.is_none());
    assert_eq!(sse.last_id, before);
}

#[tokio::test]
async fn refusals_come_before_streaming_with_their_codes() {
    let server =
        TestServer::start_with("[limits]\nmax_connections_per_user = 1\nmax_rooms_per_socket = 3")
            .await;
    let alice = alice();
    let mut expired = claims("alice");
    expired.exp = roomcast::auth::jwt::now_secs() - 60;
    let cases: Vec<(String, u16, &str)> = vec![
        ("rooms=project:1".into(), 401, "token_missing"),
        (
            "rooms=project:1&token=not.a.jwt".into(),
            401,
            "token_invalid",
        ),
        (
            format!("rooms=project:1&token={}", token(&expired)),
            401,
            "token_expired",
        ),
        (format!("rooms=project:3&token={alice}"), 403, "forbidden"),
        (format!("rooms=user:bob&token={alice}"), 403, "forbidden"),
        (
            format!("rooms=project:1,nope&token={alice}"),
            422,
            "invalid_room",
        ),
        (format!("token={alice}"), 422, "invalid_payload"),
        (
            format!("rooms=global,project:1,project:2,user:alice&token={alice}"),
            422,
            "too_many_rooms",
        ),
        (
            format!("rooms=project:1&streams=nope&token={alice}"),
            404,
            "stream_not_found",
        ),
    ];
    for (query, status, code) in cases {
        let (got, body) = match open(&server, &query, &[]).await {
            Ok(_) => panic!("{query} was accepted"),
            Err(refused) => refused,
        };
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
    }
    // A wrong scheme is no token.
    let (status, body) = match open(
        &server,
        "rooms=global",
        &[("authorization", &format!("Basic {alice}"))],
    )
    .await
    {
        Ok(_) => panic!("accepted"),
        Err(refused) => refused,
    };
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_missing"))
    );

    // Counted with the user's sockets: one connection, SSE or socket, and no more.
    let mut first = connect(&server, &format!("rooms=global&token={alice}")).await;
    first.event("connection.established").await;
    let (status, body) = match open(&server, &format!("rooms=global&token={alice}"), &[]).await {
        Ok(_) => panic!("a second connection was accepted"),
        Err(refused) => refused,
    };
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections")),
        "{body}"
    );
    assert!(
        common::Client::connect(server.addr, common::Auth::Payload(json!({"token": alice})))
            .await
            .is_err(),
        "a socket is refused too"
    );
    // Closing the connection gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match open(&server, &format!("rooms=global&token={alice}"), &[]).await {
            Ok(mut sse) => {
                sse.event("connection.established").await;
                break;
            }
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn last_event_id_recovers_what_was_missed_in_every_room() {
    let server = TestServer::start().await;
    let query = format!("rooms=project:1,user:alice&token={}", alice());
    let mut sse = connect(&server, &query).await;
    sse.event("connection.established").await;
    broadcast(&server, "deploy", &["project:1"], json!({"n": 1})).await;
    broadcast(&server, "deploy", &["user:alice"], json!({"n": 2})).await;
    assert_eq!(sse.event("deploy").await.data["data"]["n"], 1);
    assert_eq!(sse.event("deploy").await.data["data"]["n"], 2);
    let last = sse.last_id.clone().expect("an id");
    drop(sse);

    broadcast(&server, "deploy", &["project:1"], json!({"n": 3})).await;
    broadcast(&server, "deploy", &["user:alice"], json!({"n": 4})).await;
    broadcast(
        &server,
        "deploy",
        &["project:1", "user:alice"],
        json!({"n": 5}),
    )
    .await;
    broadcast(&server, "deploy", &["project:2"], json!({"n": 6})).await;

    // As EventSource reconnects: the same URL, the id in Last-Event-ID.
    let mut back = open(&server, &query, &[("last-event-id", &last)])
        .await
        .expect("back");
    let established = back.event("connection.established").await;
    assert_eq!(established.data["recovered"], true, "{}", established.data);
    assert_eq!(established.data["recovery"]["project:1"]["replayed"], 2);
    assert_eq!(established.data["recovery"]["user:alice"]["replayed"], 2);
    broadcast(&server, "marker", &["project:1"], json!({"n": 0})).await;
    let seen = back.until_marker().await;
    assert_eq!(
        names(&seen),
        ["deploy 3", "deploy 4", "deploy 5", "marker 0"]
    );
    let after = back.last_id.clone().unwrap();
    drop(back);

    // And with ?last_event_id= (a new EventSource cannot set the header): nothing twice.
    broadcast(&server, "deploy", &["user:alice"], json!({"n": 7})).await;
    let mut again = connect(
        &server,
        &format!("{query}&last_event_id={}", urlencode(&after)),
    )
    .await;
    let established = again.event("connection.established").await;
    assert_eq!(established.data["recovered"], true);
    broadcast(&server, "marker", &["project:1"], json!({"n": 0})).await;
    assert_eq!(names(&again.until_marker().await), ["deploy 7", "marker 0"]);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_room_whose_history_no_longer_covers_the_id_gets_a_gap() {
    let server = TestServer::start_with("[history]\nsize = 2").await;
    let query = format!("rooms=project:1,project:2&token={}", alice());
    let mut sse = connect(&server, &query).await;
    sse.event("connection.established").await;
    broadcast(&server, "deploy", &["project:1"], json!({"n": 1})).await;
    sse.event("deploy").await;
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    for n in 2..=5 {
        broadcast(&server, "deploy", &["project:1"], json!({"n": n})).await;
    }
    broadcast(&server, "deploy", &["project:2"], json!({"n": 6})).await;
    let mut back = open(&server, &query, &[("last-event-id", &last)])
        .await
        .unwrap();
    let established = back.event("connection.established").await;
    assert_eq!(established.data["recovered"], false);
    assert_eq!(established.data["recovery"]["project:1"]["gap"], true);
    let gap = back.event("gap").await;
    assert_eq!(gap.data["room"], "project:1");
    assert_eq!(gap.data["seq"], 5, "where the room is now: {}", gap.data);
    assert_eq!(gap.data["since"]["seq"], 1, "where the client was");
    assert!(gap.data["epoch"].is_string());
    broadcast(&server, "marker", &["project:1"], json!({"n": 0})).await;
    // project:2 recovers; project:1 replays nothing and goes on live.
    assert_eq!(names(&back.until_marker().await), ["deploy 6", "marker 0"]);
    let resumed = back.last_id.clone().unwrap();
    assert!(resumed.contains("project:1/"), "{resumed}");

    // An id this server did not write is a gap in every room.
    let mut garbage = open(&server, &query, &[("last-event-id", "not-a-token")])
        .await
        .unwrap();
    let established = garbage.event("connection.established").await;
    assert_eq!(established.data["recovery"]["project:1"]["gap"], true);
    assert_eq!(established.data["recovery"]["project:2"]["gap"], true);
    assert_eq!(garbage.event("gap").await.data["since"], Value::Null);
}

/// Code points of 1 to 4 UTF-8 bytes, a skin-tone modifier and a zero-width joiner.
const PIECES: [&str; 5] = ["héllo ", "👋🏽 ", "世界 ", "🧑‍💻", "\n"];

/// What a viewer holds of a stream: the snapshot, then each delta from where it has.
struct View {
    text: String,
    len: u64,
    snapshot: bool,
}

impl View {
    fn apply(&mut self, e: &Event) {
        match e.event.as_str() {
            "stream.snapshot" => {
                let offset = e.data["offset"].as_u64().unwrap();
                assert!(offset <= self.len);
                self.text = self.text.chars().take(offset as usize).collect();
                self.text.push_str(e.data["text"].as_str().unwrap());
                self.len = self.text.chars().count() as u64;
                self.snapshot = true;
            }
            "stream.delta" if self.snapshot => {
                assert!(e.id.is_none(), "a delta moves no resume token");
                let offset = e.data["data"]["offset"].as_u64().unwrap();
                assert!(offset <= self.len, "a delta past what the viewer has");
                let piece = e.data["data"]["text"].as_str().unwrap();
                let fresh: String = piece.chars().skip((self.len - offset) as usize).collect();
                self.len += fresh.chars().count() as u64;
                self.text.push_str(&fresh);
            }
            _ => {}
        }
    }
}

async fn create_stream(server: &TestServer, id: &str) {
    let (status, body) = server
        .post(
            "/api/v1/streams",
            json!({"room": "project:1", "stream_id": id}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn append(server: &TestServer, id: &str, text: &str) {
    let (status, body) = server
        .post(
            &format!("/api/v1/streams/{id}/append"),
            json!({"text": text}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// A viewer that opens mid-stream with `?streams=<id>:0` ends with the exact text, and so
/// does one that drops and comes back with its offset.
async fn follow_a_stream(producer: &TestServer, viewer: &TestServer, id: &str) {
    create_stream(producer, id).await;
    let mut expected = String::new();
    for piece in PIECES.iter().take(3) {
        append(producer, id, piece).await;
        expected.push_str(piece);
    }
    let query = format!("rooms=project:1&streams={id}:0&token={}", alice());
    let mut sse = connect(viewer, &query).await;
    let mut view = View {
        text: String::new(),
        len: 0,
        snapshot: false,
    };
    // Appends race with the snapshot.
    let appender = {
        let producer_url = producer.url("");
        let id = id.to_owned();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent = String::new();
            for i in 0..30 {
                let piece = PIECES[i % PIECES.len()];
                let resp = client
                    .post(format!("{producer_url}/api/v1/streams/{id}/append"))
                    .bearer_auth(KEY)
                    .json(&json!({"text": piece}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
                sent.push_str(piece);
            }
            sent
        })
    };
    let sent = appender.await.unwrap();
    expected.push_str(&sent);
    let expected_len = expected.chars().count() as u64;
    while view.len < expected_len {
        let e = sse.next().await.expect("the stream went on");
        view.apply(&e);
    }
    assert_eq!(view.text, expected);

    // Dropped; more appends; back with its offset.
    drop(sse);
    for piece in PIECES {
        append(producer, id, piece).await;
        expected.push_str(piece);
    }
    let (status, body) = producer
        .post(&format!("/api/v1/streams/{id}/finish"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let query = format!(
        "rooms=project:1&streams={id}:{}&token={}",
        view.len,
        alice()
    );
    let mut back = connect(viewer, &query).await;
    let snapshot = back.event("stream.snapshot").await;
    assert_eq!(snapshot.data["status"], "finished");
    assert_eq!(snapshot.data["offset"], view.len);
    view.apply(&snapshot);
    assert_eq!(view.text, expected);
}

#[tokio::test]
async fn a_browser_style_viewer_follows_a_stream_to_the_exact_text() {
    let server = TestServer::start().await;
    follow_a_stream(&server, &server, "answer-1").await;
    // Live deltas arrive as `event: stream.delta`, and `stream.finished` is numbered.
    create_stream(&server, "answer-2").await;
    let mut sse = connect(&server, &format!("rooms=project:1&token={}", alice())).await;
    sse.event("connection.established").await;
    append(&server, "answer-2", "👋🏽").await;
    let delta = sse.event("stream.delta").await;
    assert_eq!(
        delta.data["data"],
        json!({"stream_id": "answer-2", "offset": 0, "text": "👋🏽"})
    );
    let (status, _) = server
        .post("/api/v1/streams/answer-2/finish", json!({}))
        .await;
    assert_eq!(status, 200);
    let finished = sse.event("stream.finished").await;
    assert!(finished.id.is_some());
    // A stream outside the connection's rooms is refused.
    let (status, body) = open(
        &server,
        &format!("rooms=project:2&streams=answer-2:0&token={}", alice()),
        &[],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_payload"))
    );
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_connection_open() {
    let server = TestServer::start_with("[sse]\nheartbeat_secs = 1").await;
    let mut sse = connect(&server, &format!("rooms=global&token={}", alice())).await;
    sse.event("connection.established").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sse.heartbeats == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat");
        // A heartbeat alone is no event: read raw chunks.
        let chunk = tokio::time::timeout_at(deadline, sse.resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        sse.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        if sse.buf.contains(":heartbeat") || sse.buf.contains(": heartbeat") {
            sse.heartbeats += 1;
        }
    }
}

#[tokio::test]
async fn a_reader_too_slow_for_its_buffer_is_closed_and_recovers() {
    let server = TestServer::start_with(
        "[sse]\nbuffer = 4\n[history]\nsize = 1000\n\
         [limits]\npublish_per_key_per_sec = 0\npublish_bytes_per_key_per_sec = 0",
    )
    .await;
    let query = format!("rooms=global&token={}", alice());
    let mut sse = connect(&server, &query).await;
    sse.event("connection.established").await;
    let start = sse.last_id.clone().unwrap();
    // Not read meanwhile: far more than the socket buffers hold.
    server.publish_bulky(400, 64 * 1024).await;
    let mut received = 0;
    while let Some(e) = sse.next().await {
        if e.event == "system.notification" {
            received += 1;
        }
    }
    assert!(
        received < 400,
        "the connection was closed ({received} events read)"
    );
    // The client comes back from its last id and gets the rest.
    let last = sse.last_id.clone().unwrap_or(start);
    let mut back = open(&server, &query, &[("last-event-id", &last)])
        .await
        .unwrap();
    let established = back.event("connection.established").await;
    let replayed = established.data["recovery"]["global"]["replayed"].as_u64();
    assert_eq!(replayed, Some(400 - received), "{}", established.data);
    let mut titles = Vec::new();
    while titles.len() < (400 - received) as usize {
        let e = back.event("system.notification").await;
        titles.push(
            e.data["data"]["title"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(
        titles,
        (received..400).collect::<Vec<_>>(),
        "the rest, in order"
    );
}

/// Reads until the stream ends; the events seen on the way.
async fn until_closed(sse: &mut Sse) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Some(e) = sse.next().await {
        seen.push(e);
    }
    seen
}

#[tokio::test]
async fn the_connection_ends_at_token_expiry_revocation_and_shutdown() {
    let mut server = TestServer::start().await;
    // Expiry (the test server has no leeway): auth.expired, then the end.
    let mut short = claims("alice");
    short.exp = roomcast::auth::jwt::now_secs() + 2;
    let mut sse = connect(&server, &format!("rooms=global&token={}", token(&short))).await;
    sse.event("connection.established").await;
    let seen = until_closed(&mut sse).await;
    let last = seen.last().expect("auth.expired");
    assert_eq!(last.event, "auth.expired");
    assert_eq!(last.data["code"], "token_expired");

    // Revocation: the user's connections end, counted with their sockets; others go on.
    let mut alice = connect(&server, &format!("rooms=global&token={}", alice())).await;
    alice.event("connection.established").await;
    let bob_token = token_for("bob", "default", &[]);
    let mut bob = connect(&server, &format!("rooms=global&token={bob_token}")).await;
    bob.event("connection.established").await;
    let (status, body) = server
        .post("/api/v1/users/alice/disconnect", json!({}))
        .await;
    assert_eq!(
        (status, body["disconnected"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    until_closed(&mut alice).await;
    server.publish_marker().await;
    bob.event("system.notification").await;

    // Shutdown: ended, so the drain does not wait for it.
    server.shutdown();
    until_closed(&mut bob).await;
}

#[tokio::test]
async fn in_a_cluster_a_connection_gets_what_any_node_publishes_and_recovers_at_another() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("sse-a", &redis, "sse").await;
    let b = TestServer::start_cluster_node("sse-b", &redis, "sse").await;
    let query = format!("rooms=project:1,user:alice&token={}", alice());
    let mut sse = connect(&b, &query).await;
    sse.event("connection.established").await;
    broadcast(&a, "deploy", &["project:1"], json!({"n": 1})).await;
    broadcast(&a, "deploy", &["project:2"], json!({"n": 2})).await;
    broadcast(&a, "deploy", &["user:alice"], json!({"n": 3})).await;
    // Volatile events cross nodes too.
    broadcast_in(&a, "cursor", &["project:1"], json!({"n": 4}), true).await;
    broadcast(&a, "marker", &["project:1"], json!({"n": 0})).await;
    let seen = sse.until_marker().await;
    let mut got = names(&seen);
    got.sort();
    assert_eq!(got, ["cursor 4", "deploy 1", "deploy 3", "marker 0"]);
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    broadcast(&b, "deploy", &["project:1"], json!({"n": 5})).await;
    broadcast(&a, "deploy", &["user:alice"], json!({"n": 6})).await;
    let mut back = open(&a, &query, &[("last-event-id", &last)]).await.unwrap();
    let established = back.event("connection.established").await;
    assert_eq!(established.data["recovered"], true, "{}", established.data);
    broadcast(&b, "marker", &["project:1"], json!({"n": 0})).await;
    assert_eq!(
        names(&back.until_marker().await),
        ["deploy 5", "deploy 6", "marker 0"]
    );
    drop(back);

    // A stream started at one node, followed over SSE at the other.
    follow_a_stream(&a, &b, "cluster-answer").await;

    // A revocation at one node ends the user's connections at the other, and counts them
    // all (a user of their own: alice's dropped connections may not be gone yet).
    let carol = format!("rooms=global&token={}", token_for("carol", "default", &[]));
    let mut on_b = [connect(&b, &carol).await, connect(&b, &carol).await];
    let mut on_a = connect(&a, &carol).await;
    for sse in on_b.iter_mut().chain([&mut on_a]) {
        sse.event("connection.established").await;
    }
    let (status, body) = a.post("/api/v1/users/carol/disconnect", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], 3, "{body}");
    for sse in on_b.iter_mut().chain([&mut on_a]) {
        until_closed(sse).await;
    }
}

/// With `parser = "msgpack"` the adapter carries volatile broadcasts in the msgpack parser's
/// encoding: an SSE connection at the other node still gets them (and numbered events, which
/// travel Roomcast's own way), as JSON.
#[tokio::test]
async fn in_a_msgpack_cluster_volatile_events_cross_nodes_too() {
    let redis = RedisServer::start().await;
    let node = |id: &str| {
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nnode_id = \"{id}\"\nparser = \"msgpack\"\n\
             [auth]\njwt_secret = \"{}\"\n\
             [cluster]\nredis_url = \"redis://127.0.0.1:{}\"\nkey_prefix = \"sse-msgpack\"\n\
             [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]\n",
            common::SECRET,
            redis.port
        )
    };
    let a = TestServer::start_toml(&node("mp-a")).await;
    let b = TestServer::start_toml(&node("mp-b")).await;
    a.until_ready(true).await;
    b.until_ready(true).await;
    let query = format!("rooms=project:1&token={}", alice());
    let mut sse = connect(&b, &query).await;
    sse.event("connection.established").await;
    broadcast_in(
        &a,
        "cursor",
        &["project:1"],
        json!({"n": 1, "s": "👋🏽"}),
        true,
    )
    .await;
    broadcast(&a, "marker", &["project:1"], json!({"n": 0})).await;
    let seen = sse.until_marker().await;
    let mut got = names(&seen);
    got.sort();
    assert_eq!(got, ["cursor 1", "marker 0"]);
    let cursor = seen.iter().find(|e| e.event == "cursor").unwrap();
    assert_eq!(cursor.data["data"]["s"], "👋🏽");
    assert!(
        cursor.id.is_none(),
        "a volatile event moves no resume token"
    );
}
