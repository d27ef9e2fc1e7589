//! AI streams, as clients observe them: a producer appends over HTTP (or from Rust), the
//! room's sockets receive `stream.delta`s, a viewer that joins mid-stream or comes back
//! resumes with `stream.resume` and ends with the exact text (multi-code-point emoji
//! included) while appends keep racing with it; finish, fail, the size limit and cancel.
//! On one node and on a two-node cluster (started at one node, appended at the other,
//! viewed and resumed at both).

mod common;

use std::time::Duration;

use common::{Client, DEADLINE, KEY, RedisServer, TestServer, token_for};
use roomcast::rooms::RoomName;
use roomcast::streams::StreamError;
use serde_json::{Value, json};

/// Cycled to make the stream's text: code points of 1 to 4 UTF-8 bytes, a skin-tone
/// modifier and a zero-width joiner, so byte, UTF-16 and code point counts all differ.
const PIECES: [&str; 5] = ["héllo ", "👋🏽 ", "世界 ", "🧑‍💻", "\n"];
const ROOM: &str = "project:1";

fn alice() -> String {
    token_for("alice", "default", &["*"])
}

/// What a client holds of one stream, applying the documented rules: a piece that starts
/// past what it has is a gap (ignored before its resume is answered, an error after); the
/// part of a piece it already has is dropped.
struct View {
    stream_id: String,
    text: String,
    len: u64,
    /// After the resume's ack: every delta must start at or before `len`.
    caught_up: bool,
    /// On one node no delta after the ack overlaps the snapshot either.
    strict: bool,
    finished: Option<u64>,
}

impl View {
    fn new(stream_id: &str, strict: bool) -> Self {
        Self {
            stream_id: stream_id.to_owned(),
            text: String::new(),
            len: 0,
            caught_up: false,
            strict,
            finished: None,
        }
    }

    fn apply(&mut self, offset: u64, piece: &str, what: &str) {
        if offset > self.len {
            assert!(
                !self.caught_up,
                "{what} at {offset} leaves a gap after {} code points",
                self.len
            );
            return;
        }
        if self.caught_up && self.strict && what == "delta" {
            assert_eq!(offset, self.len, "a delta overlapping what the client has");
        }
        let have = (self.len - offset) as usize;
        let fresh: String = piece.chars().skip(have).collect();
        self.len += fresh.chars().count() as u64;
        self.text.push_str(&fresh);
    }

    /// Handles one event of the socket.
    fn event(&mut self, name: &str, payload: &Value) {
        let data = &payload["data"];
        if data["stream_id"] != self.stream_id.as_str() {
            return;
        }
        match name {
            "stream.delta" => {
                assert!(
                    payload.get("seq").is_none(),
                    "a delta is volatile: {payload}"
                );
                self.apply(
                    data["offset"].as_u64().unwrap(),
                    data["text"].as_str().unwrap(),
                    "delta",
                );
            }
            "stream.finished" => self.finished = data["length"].as_u64(),
            _ => {}
        }
    }

    /// `stream.resume` from what the client has: what came before the ack is handled first
    /// (deltas past what it has are ignored), then the snapshot.
    async fn resume(&mut self, client: &mut Client) -> Value {
        let asked = self.len;
        let (before, ack) = client
            .emit_with_ack_seen(
                "stream.resume",
                json!({"stream_id": self.stream_id, "offset": self.len}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        for (name, payload) in &before {
            self.event(name, payload);
        }
        assert_eq!(ack["offset"].as_u64(), Some(asked), "{ack}");
        self.apply(
            ack["offset"].as_u64().unwrap(),
            ack["text"].as_str().unwrap(),
            "snapshot",
        );
        assert_eq!(ack["length"].as_u64(), Some(self.len), "{ack}");
        self.caught_up = true;
        ack
    }

    /// Reads until `stream.finished` came and the text is as long as it says.
    async fn follow(&mut self, client: &mut Client) {
        while self.finished != Some(self.len) {
            let (name, payload) = client.next_event().await.unwrap_or_else(|| {
                panic!(
                    "stream not complete within {DEADLINE:?}: {} of {:?} code points",
                    self.len, self.finished
                )
            });
            self.event(&name, &payload);
        }
    }
}

/// A socket subscribed to [`ROOM`].
async fn viewer(server: &TestServer) -> Client {
    let mut client = server.connect(&alice()).await;
    assert_eq!(client.subscribe(ROOM).await["ok"], true);
    client
}

/// Appends `count` pieces of [`PIECES`] to `stream_id`, each at the node `at(i)` picks;
/// checks every answer's offset and returns the whole text.
async fn produce(nodes: Vec<std::net::SocketAddr>, stream_id: String, count: usize) -> String {
    let http = reqwest::Client::new();
    let mut text = String::new();
    for i in 0..count {
        let piece = PIECES[i % PIECES.len()];
        let addr = nodes[i % nodes.len()];
        let resp = http
            .post(format!("http://{addr}/api/v1/streams/{stream_id}/append"))
            .bearer_auth(KEY)
            .json(&json!({"text": piece}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["offset"].as_u64(), Some(text.chars().count() as u64));
        text.push_str(piece);
    }
    text
}

async fn create(server: &TestServer, body: Value) -> (u16, Value) {
    server.post("/api/v1/streams", body).await
}

/// A viewer there from the start, one that loses its connection and resumes from its last
/// offset on a new socket, and one that joins mid-stream and resumes from 0, while the
/// producer keeps appending (at `producers`, in turn): all three end with the exact text.
async fn viewers_end_with_the_exact_text(
    start: &TestServer,
    first: &TestServer,
    second: &TestServer,
    producers: Vec<std::net::SocketAddr>,
    strict: bool,
) {
    let stream_id = "s-race";
    let mut from_start = viewer(first).await;
    let mut leaving = viewer(second).await;
    let (status, body) = create(
        start,
        json!({"room": ROOM, "stream_id": stream_id, "kind": "llm", "meta": {"model": "m1"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, json!({"stream_id": stream_id, "room": ROOM}));
    let started = from_start.event("stream.started").await;
    assert!(started["seq"].as_u64().is_some(), "numbered: {started}");
    assert_eq!(
        started["data"],
        json!({"stream_id": stream_id, "kind": "llm", "meta": {"model": "m1"}})
    );

    let producer = tokio::spawn(produce(producers, stream_id.to_owned(), 400));

    // There from the start: every delta, in order, none overlapping.
    let whole = tokio::spawn(async move {
        let mut view = View::new(stream_id, true);
        view.caught_up = true;
        view.follow(&mut from_start).await;
        view.text
    });

    // Reads some, loses its connection, resumes on a new socket from where it was.
    let second_addr = second.addr;
    let resumed = tokio::spawn(async move {
        let mut view = View::new(stream_id, strict);
        view.caught_up = true;
        while view.len < 20 {
            let (name, payload) = leaving.next_event().await.expect("deltas");
            view.event(&name, &payload);
        }
        drop(leaving);
        view.caught_up = false;
        let mut back = Client::connect(
            second_addr,
            common::Auth::Payload(json!({"token": alice()})),
        )
        .await
        .unwrap();
        assert_eq!(back.subscribe(ROOM).await["ok"], true);
        let ack = view.resume(&mut back).await;
        view.follow(&mut back).await;
        (view.text, ack["status"].clone())
    });

    // Joins mid-stream: subscribes, then resumes from 0.
    let mut late = viewer(first).await;
    let mut view = View::new(stream_id, strict);
    let mid = view.resume(&mut late).await;

    // Resumes again and again from what it has while the appends go on: each answer and
    // the deltas after it leave no gap (and, on one node, no overlap).
    let mut again_and_again = viewer(second).await;
    let mut often = View::new(stream_id, strict);
    'resuming: for _ in 0..30 {
        often.caught_up = false;
        often.resume(&mut again_and_again).await;
        for _ in 0..3 {
            let next = again_and_again.next_event();
            match tokio::time::timeout(Duration::from_millis(500), next).await {
                Ok(Some((name, payload))) => often.event(&name, &payload),
                _ if producer.is_finished() => break 'resuming,
                _ => panic!("no delta while the producer appends"),
            }
        }
    }

    let text = producer.await.unwrap();
    let (status, finished) = start
        .post(
            &format!("/api/v1/streams/{stream_id}/finish"),
            json!({"usage": {"prompt_tokens": 5, "completion_tokens": 400}}),
        )
        .await;
    assert_eq!(status, 200, "{finished}");
    let length = text.chars().count() as u64;
    assert_eq!(finished["length"].as_u64(), Some(length));
    assert!(
        finished["tokens_per_sec"].as_f64().unwrap() > 0.0,
        "{finished}"
    );

    view.follow(&mut late).await;
    assert_eq!(view.text, text, "joined mid-stream");
    often.follow(&mut again_and_again).await;
    assert_eq!(often.text, text, "resumed again and again");
    assert_eq!(whole.await.unwrap(), text, "there from the start");
    let (again, resumed_status) = resumed.await.unwrap();
    assert_eq!(again, text, "resumed from its last offset");
    // The resumes raced with the appends (else this proves little).
    assert_eq!(mid["status"], "open", "{mid}");
    assert_eq!(resumed_status, "open");

    // A backend reads the same, from any offset.
    let (status, read) = second
        .get(&format!("/api/v1/streams/{stream_id}?offset=7"), Some(KEY))
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["status"], "finished");
    assert_eq!(read["length"].as_u64(), Some(length));
    assert_eq!(read["offset"], 7);
    let tail: String = text.chars().skip(7).collect();
    assert_eq!(read["text"], tail.as_str());
}

#[tokio::test]
async fn one_node_viewers_end_with_the_exact_text() {
    let server = TestServer::start().await;
    viewers_end_with_the_exact_text(&server, &server, &server, vec![server.addr], true).await;
}

#[tokio::test]
async fn cluster_viewers_end_with_the_exact_text_whichever_node_appends() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "streams-race").await;
    let b = TestServer::start_cluster_node("b", &redis, "streams-race").await;
    // Started at A, appended at B (and A, in turn), viewed at A, resumed at B and at A.
    viewers_end_with_the_exact_text(&a, &a, &b, vec![b.addr, a.addr], false).await;
}

/// finish and fail reach the room; an ended stream takes no more appends.
async fn finish_and_fail_are_announced(start: &TestServer, other: &TestServer) {
    let mut client = viewer(start).await;
    for id in ["s-ok", "s-bad"] {
        let (status, body) = create(start, json!({"room": ROOM, "stream_id": id})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = other
            .post(
                &format!("/api/v1/streams/{id}/append"),
                json!({"text": "👋🏽!"}),
            )
            .await;
        assert_eq!((status, body), (202, json!({"offset": 0, "length": 3})));
    }
    let (status, again) = create(start, json!({"room": ROOM, "stream_id": "s-ok"})).await;
    assert_eq!(status, 409);
    assert_eq!(again["error"]["code"], "stream_exists");

    let (status, _) = other.post("/api/v1/streams/s-ok/finish", json!({})).await;
    assert_eq!(status, 200);
    let finished = client.event("stream.finished").await;
    assert!(finished["seq"].as_u64().is_some(), "numbered: {finished}");
    assert_eq!(finished["data"]["stream_id"], "s-ok");
    assert_eq!(finished["data"]["length"], 3);
    assert!(finished["data"]["duration_ms"].as_u64().is_some());
    assert!(finished["data"].get("tokens_per_sec").is_none());

    let (status, _) = other
        .post(
            "/api/v1/streams/s-bad/fail",
            json!({"error": "the model timed out"}),
        )
        .await;
    assert_eq!(status, 200);
    let failed = client.event("stream.failed").await;
    assert_eq!(
        failed["data"],
        json!({"stream_id": "s-bad", "error": "the model timed out", "length": 3})
    );

    for (id, status_word) in [("s-ok", "finished"), ("s-bad", "failed")] {
        let (status, body) = other
            .post(
                &format!("/api/v1/streams/{id}/append"),
                json!({"text": "more"}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "stream_ended");
        let (_, read) = other.get(&format!("/api/v1/streams/{id}"), Some(KEY)).await;
        assert_eq!(
            (read["status"].as_str(), read["text"].as_str()),
            (Some(status_word), Some("👋🏽!"))
        );
        // A socket resuming an ended stream gets its whole text and its status.
        let ack = client
            .emit_with_ack("stream.resume", json!({"stream_id": id, "offset": 2}))
            .await;
        assert_eq!(
            (ack["status"].as_str(), ack["text"].as_str()),
            (Some(status_word), Some("!"))
        );
    }
    let (status, body) = other
        .post("/api/v1/streams/nope/append", json!({"text": "x"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("stream_not_found"))
    );
    let (status, _) = other.get("/api/v1/streams/nope", Some(KEY)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn one_node_finish_and_fail_are_announced_and_end_the_stream() {
    let server = TestServer::start().await;
    finish_and_fail_are_announced(&server, &server).await;
}

#[tokio::test]
async fn cluster_finish_and_fail_are_announced_and_end_the_stream() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "streams-end").await;
    let b = TestServer::start_cluster_node("b", &redis, "streams-end").await;
    // Created and viewed at A, written, ended and read at B.
    finish_and_fail_are_announced(&a, &b).await;
}

/// A socket must be in the stream's room to resume or cancel it.
#[tokio::test]
async fn only_sockets_in_the_room_resume_or_cancel() {
    let server = TestServer::start().await;
    let (status, _) = create(&server, json!({"room": "project:2", "stream_id": "s-2"})).await;
    assert_eq!(status, 201);
    let mut outsider = viewer(&server).await;
    for (command, payload) in [
        ("stream.resume", json!({"stream_id": "s-2"})),
        ("stream.cancel", json!({"stream_id": "s-2"})),
    ] {
        let ack = outsider.emit_with_ack(command, payload).await;
        assert_eq!(ack["error"]["code"], "not_subscribed", "{command}: {ack}");
    }
    let ack = outsider
        .emit_with_ack("stream.resume", json!({"stream_id": "missing"}))
        .await;
    assert_eq!(ack["error"]["code"], "stream_not_found");
    // A stream lives in its tenant: a key bound to `acme` creates it there, and a socket
    // of the default tenant does not find it.
    let (status, body) = server
        .post_raw(
            "/api/v1/streams",
            Some(common::ACME_KEY),
            json!({"room": ROOM, "stream_id": "s-acme"}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ack = outsider
        .emit_with_ack("stream.resume", json!({"stream_id": "s-acme"}))
        .await;
    assert_eq!(ack["error"]["code"], "stream_not_found", "{ack}");
    let mut acme = server.connect(&token_for("carol", "acme", &["*"])).await;
    assert_eq!(acme.subscribe(ROOM).await["ok"], true);
    let ack = acme
        .emit_with_ack("stream.resume", json!({"stream_id": "s-acme"}))
        .await;
    assert_eq!(
        (ack["ok"].as_bool(), ack["status"].as_str()),
        (Some(true), Some("open"))
    );
    // Deltas reach only the stream's room.
    let (status, _) = server
        .post("/api/v1/streams/s-2/append", json!({"text": "x"}))
        .await;
    assert_eq!(status, 202);
    server.publish_marker().await;
    outsider
        .assert_not_before("stream.delta", "system.notification")
        .await;
}

/// An append past `streams.max_bytes` is refused and appends nothing.
async fn bounded_in_size(server: &TestServer) {
    let (status, _) = create(server, json!({"room": ROOM, "stream_id": "s-big"})).await;
    assert_eq!(status, 201);
    // 12 bytes: 4 code points.
    let (status, _) = server
        .post("/api/v1/streams/s-big/append", json!({"text": "世界世界"}))
        .await;
    assert_eq!(status, 202);
    let (status, body) = server
        .post("/api/v1/streams/s-big/append", json!({"text": "👋🏽"}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "stream_too_large");
    let (status, body) = server
        .post("/api/v1/streams/s-big/append", json!({"text": "ab"}))
        .await;
    assert_eq!((status, body["offset"].as_u64()), (202, Some(4)));
    let (_, read) = server.get("/api/v1/streams/s-big", Some(KEY)).await;
    assert_eq!(read["text"], "世界世界ab");
}

#[tokio::test]
async fn one_node_a_stream_is_bounded_in_size() {
    let server = TestServer::start_with("[streams]\nmax_bytes = 16").await;
    bounded_in_size(&server).await;
}

#[tokio::test]
async fn cluster_a_stream_is_bounded_in_size() {
    let redis = RedisServer::start().await;
    let node = TestServer::start_cluster_node_with(
        "a",
        &redis,
        "streams-size",
        "[streams]\nmax_bytes = 16",
    )
    .await;
    bounded_in_size(&node).await;
}

/// A viewer cancels: the room hears it, the Rust writer's `cancelled()` resolves and its
/// appends are refused, an HTTP producer's next append is `409 stream_cancelled`, and the
/// viewer stays connected.
async fn cancel_reaches_the_producer(producer_node: &TestServer, viewer_node: &TestServer) {
    let mut client = viewer(viewer_node).await;
    let room = RoomName::parse(ROOM).unwrap();
    let writer = producer_node.broadcaster.stream(room, "llm").await.unwrap();
    let id = writer.id().to_string();
    let started = client.event("stream.started").await;
    assert_eq!(started["data"]["stream_id"], id.as_str());
    assert_eq!(writer.append("thinking…").await.unwrap(), 0);
    assert!(writer.is_cancelled().is_none());

    let ack = client
        .emit_with_ack("stream.cancel", json!({"stream_id": id, "reason": "stop"}))
        .await;
    assert_eq!(ack, json!({"ok": true, "stream_id": id, "length": 9}));
    let cancelled = client.event("stream.cancelled").await;
    assert_eq!(
        cancelled["data"],
        json!({"stream_id": id, "by": "alice", "reason": "stop", "length": 9})
    );
    let cancel = tokio::time::timeout(DEADLINE, writer.cancelled())
        .await
        .expect("StreamWriter::cancelled() resolves");
    assert_eq!(
        (cancel.by.as_str(), cancel.reason.as_deref()),
        ("alice", Some("stop"))
    );
    assert!(matches!(
        writer.append("more").await,
        Err(StreamError::Cancelled { .. })
    ));

    // Over HTTP: the next append answers 409 with the error body.
    let (status, _) = create(producer_node, json!({"room": ROOM, "stream_id": "s-http"})).await;
    assert_eq!(status, 201);
    let ack = client
        .emit_with_ack("stream.cancel", json!({"stream_id": "s-http"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let (status, body) = producer_node
        .post("/api/v1/streams/s-http/append", json!({"text": "x"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "stream_cancelled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("s-http")
    );
    // Twice is refused; the socket is still there.
    let ack = client
        .emit_with_ack("stream.cancel", json!({"stream_id": "s-http"}))
        .await;
    assert_eq!(ack["error"]["code"], "stream_cancelled", "{ack}");
    let pong = client.emit_with_ack("ping", json!({})).await;
    assert_eq!(pong["pong"], true);
}

#[tokio::test]
async fn one_node_cancel_reaches_the_producer() {
    let server = TestServer::start().await;
    cancel_reaches_the_producer(&server, &server).await;
}

#[tokio::test]
async fn cluster_cancel_at_one_node_reaches_the_writer_at_the_other() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "streams-cancel").await;
    let b = TestServer::start_cluster_node("b", &redis, "streams-cancel").await;
    cancel_reaches_the_producer(&a, &b).await;
}

/// With `streams.cancel = "requester"` only the user the stream was requested by cancels.
#[tokio::test]
async fn the_requester_policy_lets_only_the_requester_cancel() {
    let server = TestServer::start_with("[streams]\ncancel = \"requester\"").await;
    let (status, _) = create(
        &server,
        json!({"room": ROOM, "stream_id": "s-bob", "requested_by": "bob"}),
    )
    .await;
    assert_eq!(status, 201);
    let mut alice = viewer(&server).await;
    let ack = alice
        .emit_with_ack("stream.cancel", json!({"stream_id": "s-bob"}))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    let mut bob = server.connect(&token_for("bob", "default", &["*"])).await;
    assert_eq!(bob.subscribe(ROOM).await["ok"], true);
    let ack = bob
        .emit_with_ack("stream.cancel", json!({"stream_id": "s-bob"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let cancelled = alice.event("stream.cancelled").await;
    assert_eq!(cancelled["data"]["by"], "bob");
}

/// A long NDJSON request: each line is appended as it arrives and answered at once with a
/// line of the response, before the request ends; the first refusal ends both.
#[tokio::test]
async fn ndjson_appends_are_answered_line_by_line() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let server = TestServer::start().await;
    let mut client = viewer(&server).await;
    let (status, _) = create(&server, json!({"room": ROOM, "stream_id": "s-nd"})).await;
    assert_eq!(status, 201);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (read, mut write) = tcp.into_split();
    let mut read = BufReader::new(read);
    let head = format!(
        "POST /api/v1/streams/s-nd/append HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let chunk = |line: &str| format!("{:x}\r\n{line}\r\n", line.len());

    write
        .write_all(chunk("{\"text\": \"héllo \"}\n").as_bytes())
        .await
        .unwrap();
    // The response starts while the request goes on.
    let mut status_line = String::new();
    tokio::time::timeout(DEADLINE, read.read_line(&mut status_line))
        .await
        .expect("the response head comes before the request ends")
        .unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    loop {
        let mut line = String::new();
        read.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut answers = Answers::default();
    assert_eq!(
        answers.next(&mut read).await,
        json!({"offset": 0, "length": 6})
    );
    let delta = client.event("stream.delta").await;
    assert_eq!(
        delta["data"],
        json!({"stream_id": "s-nd", "offset": 0, "text": "héllo "})
    );

    // A line split over two chunks, and a blank line.
    write
        .write_all(chunk("\n{\"text\": \"👋").as_bytes())
        .await
        .unwrap();
    write.write_all(chunk("🏽\"}\n").as_bytes()).await.unwrap();
    assert_eq!(
        answers.next(&mut read).await,
        json!({"offset": 6, "length": 8})
    );
    let delta = client.event("stream.delta").await;
    assert_eq!(delta["data"]["text"], "👋🏽");

    write
        .write_all(chunk("{\"text\": 5}\n{\"text\": \"never\"}\n").as_bytes())
        .await
        .unwrap();
    let refused = answers.next(&mut read).await;
    assert_eq!(refused["error"]["code"], "invalid_payload", "{refused}");
    assert!(
        answers.ended(&mut read).await,
        "the answer ends at the first refusal"
    );
    let (_, read_back) = server.get("/api/v1/streams/s-nd", Some(KEY)).await;
    assert_eq!(read_back["text"], "héllo 👋🏽");
}

/// The lines of a chunked NDJSON response, as they come.
#[derive(Default)]
struct Answers(String);

impl Answers {
    /// Reads chunks until a whole line is in; `None` at the last chunk.
    async fn chunk<R: tokio::io::AsyncBufRead + Unpin>(&mut self, read: &mut R) -> Option<()> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut size = String::new();
        tokio::time::timeout(DEADLINE, read.read_line(&mut size))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut data = vec![0; size + 2];
        read.read_exact(&mut data).await.unwrap();
        if size == 0 {
            return None;
        }
        self.0.push_str(std::str::from_utf8(&data[..size]).unwrap());
        Some(())
    }

    async fn next<R: tokio::io::AsyncBufRead + Unpin>(&mut self, read: &mut R) -> Value {
        while !self.0.contains('\n') {
            self.chunk(read).await.expect("another answer line");
        }
        let at = self.0.find('\n').unwrap();
        let line: String = self.0.drain(..=at).collect();
        serde_json::from_str(&line).unwrap()
    }

    async fn ended<R: tokio::io::AsyncBufRead + Unpin>(&mut self, read: &mut R) -> bool {
        self.0.is_empty() && self.chunk(read).await.is_none()
    }
}

/// Producers appending to one stream at once, as under load: appends that pile up while a
/// delta of the stream is being delivered go out coalesced (one delta, `offset` the first
/// one's). A viewer there from the start and one resuming again and again while the
/// appends go on both end with the exact text, and every append's answer says where its
/// text is.
async fn concurrent_appends_end_exact(
    start: &TestServer,
    viewing: &TestServer,
    producers: Vec<std::net::SocketAddr>,
    strict: bool,
) {
    let stream_id = "s-coalesce";
    let mut from_start = viewer(viewing).await;
    let mut again_and_again = viewer(viewing).await;
    let (status, body) = create(start, json!({"room": ROOM, "stream_id": stream_id})).await;
    assert_eq!(status, 201, "{body}");

    let mut writers = Vec::new();
    for w in 0..8 {
        let addr = producers[w % producers.len()];
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut mine = Vec::new();
            for i in 0..40 {
                let piece = PIECES[(w + i) % PIECES.len()];
                let resp = http
                    .post(format!("http://{addr}/api/v1/streams/{stream_id}/append"))
                    .bearer_auth(KEY)
                    .json(&json!({"text": piece}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 202);
                let body: Value = resp.json().await.unwrap();
                mine.push((body["offset"].as_u64().unwrap(), piece));
            }
            mine
        }));
    }

    let whole = tokio::spawn(async move {
        let mut view = View::new(stream_id, true);
        view.caught_up = true;
        let mut longest = 0;
        while view.finished != Some(view.len) {
            let (name, payload) = from_start.next_event().await.expect("the stream's events");
            if name == "stream.delta" {
                longest = longest.max(payload["data"]["text"].as_str().unwrap().chars().count());
            }
            view.event(&name, &payload);
        }
        (view.text, longest)
    });

    let mut often = View::new(stream_id, strict);
    let mut resumes = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        often.caught_up = false;
        let ack = often.resume(&mut again_and_again).await;
        resumes += u32::from(ack["status"] == "open");
        // Deltas after the answer, for 150 ms (within the socket's event budget).
        let until = tokio::time::Instant::now() + Duration::from_millis(150);
        while let Ok(Some((name, payload))) =
            tokio::time::timeout_at(until, again_and_again.next_event()).await
        {
            often.event(&name, &payload);
        }
    }
    let mut appends = Vec::new();
    for w in writers {
        appends.extend(w.await.unwrap());
    }
    let (status, finished) = start
        .post(&format!("/api/v1/streams/{stream_id}/finish"), json!({}))
        .await;
    assert_eq!(status, 200, "{finished}");
    let (_, read) = start
        .get(&format!("/api/v1/streams/{stream_id}"), Some(KEY))
        .await;
    let text = read["text"].as_str().unwrap().to_owned();
    assert_eq!(appends.len(), 320);
    for (offset, piece) in &appends {
        let at: String = text
            .chars()
            .skip(*offset as usize)
            .take(piece.chars().count())
            .collect();
        assert_eq!(at, *piece, "the append answered offset {offset}");
    }
    assert_eq!(
        text.chars().count(),
        finished["length"].as_u64().unwrap() as usize
    );

    often.follow(&mut again_and_again).await;
    assert_eq!(often.text, text, "resumed again and again");
    let (seen, longest) = whole.await.unwrap();
    assert_eq!(seen, text, "there from the start");
    assert!(resumes > 0, "the resumes raced with the appends");
    // Whether appends piled up depends on timing; the unit tests force it.
    eprintln!("longest delta: {longest} code points (one append is at most 6)");
}

#[tokio::test]
async fn one_node_concurrent_appends_coalesce_and_end_exact() {
    let server = TestServer::start().await;
    concurrent_appends_end_exact(&server, &server, vec![server.addr], true).await;
}

#[tokio::test]
async fn cluster_concurrent_appends_coalesce_and_end_exact() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "streams-coalesce").await;
    let b = TestServer::start_cluster_node("b", &redis, "streams-coalesce").await;
    // Appended at both nodes at once, viewed and resumed at B.
    concurrent_appends_end_exact(&a, &b, vec![a.addr, b.addr], false).await;
}

/// With `streams.coalesce_ms`, a producer appending one piece at a time (each answered at
/// once) is seen by the viewers in fewer deltas than appends, the first at once, and a
/// viewer there from the start and one resuming mid-stream end with the exact text.
async fn a_window_joins_appends(start: &TestServer, viewing: &TestServer, strict: bool) {
    let stream_id = "s-window";
    let mut from_start = viewer(viewing).await;
    let mut late = viewer(viewing).await;
    let (status, _) = create(start, json!({"room": ROOM, "stream_id": stream_id})).await;
    assert_eq!(status, 201);
    let producer = tokio::spawn(produce(vec![start.addr], stream_id.to_owned(), 61));
    let delta = from_start.event("stream.delta").await;
    assert_eq!(
        delta["data"]["text"], PIECES[0],
        "the first append goes out alone"
    );
    let mut view = View::new(stream_id, true);
    view.caught_up = true;
    view.event("stream.delta", &delta);
    let mut resumed = View::new(stream_id, strict);
    resumed.resume(&mut late).await;
    let whole = producer.await.unwrap();
    let (status, _) = start
        .post(&format!("/api/v1/streams/{stream_id}/finish"), json!({}))
        .await;
    assert_eq!(status, 200);
    let mut deltas = 1;
    while view.finished != Some(view.len) {
        let (name, payload) = from_start.next_event().await.expect("the stream's events");
        deltas += u32::from(name == "stream.delta");
        view.event(&name, &payload);
    }
    assert_eq!(view.text, whole, "there from the start");
    assert!(deltas < 61 / 2, "61 appends went out as {deltas} deltas");
    resumed.follow(&mut late).await;
    assert_eq!(resumed.text, whole, "resumed mid-stream");
}

const WINDOW: &str = "[streams]\ncoalesce_ms = 100\n";

#[tokio::test]
async fn one_node_a_window_joins_appends() {
    let server = TestServer::start_with(WINDOW).await;
    a_window_joins_appends(&server, &server, true).await;
}

#[tokio::test]
async fn cluster_a_window_joins_appends() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node_with("a", &redis, "streams-window", WINDOW).await;
    let b = TestServer::start_cluster_node_with("b", &redis, "streams-window", WINDOW).await;
    a_window_joins_appends(&a, &b, false).await;
}
