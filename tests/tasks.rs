//! Tasks with progress and ETA, as clients observe them: a publisher reports a task's
//! progress over HTTP at a steady pace, and the room's sockets receive `task.progress` with
//! the `percent`, `rate_per_sec` and `eta_ms` the server adds, the total filled in, and
//! `task.completed` with its `duration_ms`. On one node and on a two-node cluster where the
//! task starts at one node and its progress alternates between the two (a node keeping
//! its own state would not know the total or the start of the events it did not see).
//!
//! The expected rate comes from the times this test observed: the server timed each event
//! between the moment the request was sent and the moment its answer came, so the true
//! rate lies within bounds computed from those instants, however slow the machine.

mod common;

use std::time::{Duration, Instant};

use common::{Client, RedisServer, TestServer, token_for};
use serde_json::{Value, json};

const ROOM: &str = "project:1";
const TOTAL: f64 = 100.0;
const STEPS: u32 = 10;
/// The publisher's pace between two progress events.
const PACE: Duration = Duration::from_millis(100);
/// [`roomcast::tasks::RATE_HALF_LIFE_MS`]: the oldest sample of this test weighs at least
/// `2^(−elapsed / half-life)`.
const HALF_LIFE_MS: f64 = roomcast::tasks::RATE_HALF_LIFE_MS;

async fn viewer(server: &TestServer) -> Client {
    let mut client = server.connect(&token_for("alice", "default", &["*"])).await;
    assert_eq!(client.subscribe(ROOM).await["ok"], true);
    client
}

/// When a request was sent and when its answer came: the server handled it in between.
#[derive(Clone, Copy)]
struct Span {
    sent: Instant,
    answered: Instant,
}

/// Publishes a typed event at `server`; asserts `202` and returns the event's id and when.
async fn publish(server: &TestServer, event_type: &str, data: Value) -> (String, Span) {
    let sent = Instant::now();
    let (status, body) = server
        .post("/api/v1/events", json!({"type": event_type, "data": data}))
        .await;
    let answered = Instant::now();
    assert_eq!(status, 202, "{event_type}: {body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    (id, Span { sent, answered })
}

/// The next `event_type` envelope of every viewer: the one with `id`, the same for all.
async fn received(viewers: &mut [Client], event_type: &str, id: &str) -> Value {
    let mut seen: Option<Value> = None;
    for client in viewers.iter_mut() {
        let envelope = client.event(event_type).await;
        assert_eq!(envelope["id"], id, "{envelope}");
        assert_eq!(envelope["room"], ROOM);
        match &seen {
            Some(first) => assert_eq!(envelope["data"], first["data"], "every viewer the same"),
            None => seen = Some(envelope),
        }
    }
    seen.expect("at least one viewer")["data"].clone()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Bounds of the rate the server may have computed at `current`, from the spans of the
/// start and of this progress: the time between the two server-side instants is at least
/// `progress.sent − start.answered` and at most `progress.answered − start.sent` (± 1 ms of
/// the server's clock each), and the weights of the samples differ by at most
/// `2^(−elapsed / half-life)`. A 2 % margin covers the server's wall clock against this
/// test's monotonic one.
fn rate_bounds(start: Span, progress: Span, current: f64) -> (f64, f64) {
    let shortest = ms(progress.sent.duration_since(start.answered)) - 2.0;
    let longest = ms(progress.answered.duration_since(start.sent)) + 2.0;
    assert!(shortest > 0.0, "the pace keeps events apart");
    let weight = (-longest / HALF_LIFE_MS).exp2();
    let low = weight * current / longest * 1000.0 * 0.98;
    let high = current / shortest * 1000.0 / weight * 1.02;
    (low, high)
}

/// A task of [`TOTAL`] units in [`STEPS`] steady steps: started at `nodes[0]`, progress
/// `i` published at `nodes[i % len]`, completed at the node after the last; every viewer
/// checks every event.
async fn steady_task(nodes: &[&TestServer], viewers: &mut [Client], task_id: &str) {
    let at = |i: u32| nodes[i as usize % nodes.len()];
    let (id, start) = publish(
        at(0),
        "task.started",
        json!({"task_id": task_id, "project_id": 1, "name": "index", "total": TOTAL}),
    )
    .await;
    let data = received(viewers, "task.started", &id).await;
    assert_eq!(
        data,
        json!({"task_id": task_id, "project_id": "1", "name": "index", "total": TOTAL})
    );

    let mut etas = Vec::new();
    for i in 1..=STEPS {
        tokio::time::sleep(PACE).await;
        let current = f64::from(i) * TOTAL / f64::from(STEPS);
        // No total: the server fills in the one task.started gave (at the other node).
        let (id, span) = publish(
            at(i),
            "task.progress",
            json!({"task_id": task_id, "project_id": 1, "current": current, "step": format!("step {i}")}),
        )
        .await;
        let data = received(viewers, "task.progress", &id).await;
        let what = format!("progress {i}: {data}");
        assert_eq!(data["current"].as_f64(), Some(current), "{what}");
        assert_eq!(data["total"].as_f64(), Some(TOTAL), "{what}");
        assert_eq!(data["step"], format!("step {i}"), "{what}");
        assert_eq!(
            data["percent"].as_f64(),
            Some(current * 100.0 / TOTAL),
            "{what}"
        );
        let rate = data["rate_per_sec"].as_f64().expect(&what);
        let (low, high) = rate_bounds(start, span, current);
        assert!(
            (low..=high).contains(&rate),
            "{what}: rate {rate} not within the observed {low:.1}..{high:.1}"
        );
        let eta = data["eta_ms"].as_u64().expect(&what) as f64;
        let left = TOTAL - current;
        // The ETA is what is left at the rate given, and so within the observed bounds.
        assert!((eta - left / rate * 1000.0).abs() <= 1.0, "{what}");
        assert!(
            eta >= left / high * 1000.0 - 1.0 && eta <= left / low * 1000.0 + 1.0,
            "{what}: eta {eta} not within the observed bounds"
        );
        etas.push(eta);
    }
    assert_eq!(etas.last(), Some(&0.0), "done: nothing left");
    assert!(
        etas[etas.len() - 2] < etas[0],
        "the ETA comes down: {etas:?}"
    );

    let (id, end) = publish(
        at(STEPS + 1),
        "task.completed",
        json!({"task_id": task_id, "project_id": 1, "result": {"files": 100}}),
    )
    .await;
    let data = received(viewers, "task.completed", &id).await;
    let duration = data["duration_ms"].as_u64().expect("a duration") as f64;
    let shortest = ms(end.sent.duration_since(start.answered)) - 2.0;
    let longest = ms(end.answered.duration_since(start.sent)) + 2.0;
    assert!(
        (shortest * 0.98..=longest * 1.02).contains(&duration),
        "duration {duration} not within {shortest}..{longest}"
    );
    assert_eq!(data["result"], json!({"files": 100}));
}

#[tokio::test]
async fn one_node_steady_progress_has_percent_rate_and_eta() {
    let server = TestServer::start().await;
    let mut viewers = vec![viewer(&server).await];
    steady_task(&[&server], &mut viewers, "t-one").await;
}

#[tokio::test]
async fn cluster_progress_alternating_between_nodes_is_computed_from_one_history() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "tasks-steady").await;
    let b = TestServer::start_cluster_node("b", &redis, "tasks-steady").await;
    let mut viewers = vec![viewer(&a).await, viewer(&b).await];
    steady_task(&[&a, &b], &mut viewers, "t-cluster").await;
}

/// The first we hear of a task is a progress: no rate yet, so no `rate_per_sec` and no
/// `eta_ms` (absent, not null); the next progress has them. The server's fields are
/// refused from a publisher, naming the field.
async fn first_progress_and_refusals(publish_at: &TestServer, other: &TestServer) {
    let mut viewers = vec![viewer(publish_at).await, viewer(other).await];
    let (id, _) = publish(
        publish_at,
        "task.progress",
        json!({"task_id": "t-late", "project_id": 1, "current": 30, "total": 120}),
    )
    .await;
    let data = received(&mut viewers, "task.progress", &id).await;
    assert_eq!(data["percent"].as_f64(), Some(25.0), "{data}");
    assert!(data.get("rate_per_sec").is_none(), "{data}");
    assert!(data.get("eta_ms").is_none(), "{data}");
    tokio::time::sleep(PACE).await;
    let (id, _) = publish(
        other,
        "task.progress",
        json!({"task_id": "t-late", "project_id": 1, "current": 60}),
    )
    .await;
    let data = received(&mut viewers, "task.progress", &id).await;
    assert_eq!(data["percent"].as_f64(), Some(50.0), "{data}");
    assert!(
        data["rate_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{data}"
    );
    assert!(data["eta_ms"].as_u64().is_some_and(|e| e > 0), "{data}");
    // Never started (as far as the server knows): no duration.
    let (id, _) = publish(
        publish_at,
        "task.failed",
        json!({"task_id": "t-late", "project_id": 1, "error": "disk full"}),
    )
    .await;
    let data = received(&mut viewers, "task.failed", &id).await;
    assert_eq!(
        data,
        json!({"task_id": "t-late", "project_id": "1", "error": "disk full"})
    );

    for (event_type, data, field) in [
        (
            "task.progress",
            json!({"task_id": "x", "project_id": 1, "current": 1, "percent": 50}),
            "percent",
        ),
        (
            "task.progress",
            json!({"task_id": "x", "project_id": 1, "current": 1, "rate_per_sec": 2}),
            "rate_per_sec",
        ),
        (
            "task.progress",
            json!({"task_id": "x", "project_id": 1, "current": 1, "eta_ms": 5}),
            "eta_ms",
        ),
        (
            "task.completed",
            json!({"task_id": "x", "project_id": 1, "duration_ms": 5}),
            "duration_ms",
        ),
        (
            "task.failed",
            json!({"task_id": "x", "project_id": 1, "error": "e", "duration_ms": 5}),
            "duration_ms",
        ),
        (
            "task.progress",
            json!({"task_id": "x", "project_id": 1, "current": -1}),
            "current",
        ),
        (
            "task.progress",
            json!({"task_id": "x", "project_id": 1, "current": 1, "total": 0}),
            "total",
        ),
        (
            "task.started",
            json!({"task_id": "x", "project_id": 1, "total": 10}),
            "name",
        ),
    ] {
        let (status, body) = publish_at
            .post("/api/v1/events", json!({"type": event_type, "data": data}))
            .await;
        assert_eq!(status, 422, "{event_type} {data}: {body}");
        assert_eq!(body["error"]["code"], "invalid_payload", "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}

#[tokio::test]
async fn one_node_first_progress_has_no_rate_and_server_fields_are_refused() {
    let server = TestServer::start().await;
    first_progress_and_refusals(&server, &server).await;
}

#[tokio::test]
async fn cluster_first_progress_has_no_rate_and_server_fields_are_refused() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "tasks-first").await;
    let b = TestServer::start_cluster_node("b", &redis, "tasks-first").await;
    first_progress_and_refusals(&a, &b).await;
}

/// A task idle past `tasks.idle_secs` is forgotten: its next progress is a first one (no
/// total remembered, no rate), and its end has no duration.
async fn idle_tasks_are_forgotten(start_at: &TestServer, later_at: &TestServer) {
    let mut viewers = vec![viewer(later_at).await];
    let (id, _) = publish(
        start_at,
        "task.started",
        json!({"task_id": "t-idle", "project_id": 1, "name": "sync", "total": 10}),
    )
    .await;
    received(&mut viewers, "task.started", &id).await;
    // What is under test is a time limit: wait past it.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (id, _) = publish(
        later_at,
        "task.progress",
        json!({"task_id": "t-idle", "project_id": 1, "current": 5}),
    )
    .await;
    let data = received(&mut viewers, "task.progress", &id).await;
    assert_eq!(
        data,
        json!({"task_id": "t-idle", "project_id": "1", "current": 5.0}),
        "forgotten: no total, no percent, no rate"
    );
}

#[tokio::test]
async fn one_node_idle_tasks_are_forgotten() {
    let server = TestServer::start_with("[tasks]\nidle_secs = 1").await;
    idle_tasks_are_forgotten(&server, &server).await;
}

#[tokio::test]
async fn cluster_idle_tasks_are_forgotten() {
    let redis = RedisServer::start().await;
    let a =
        TestServer::start_cluster_node_with("a", &redis, "tasks-idle", "[tasks]\nidle_secs = 1")
            .await;
    let b =
        TestServer::start_cluster_node_with("b", &redis, "tasks-idle", "[tasks]\nidle_secs = 1")
            .await;
    idle_tasks_are_forgotten(&a, &b).await;
}

/// Each change of a task's state is atomic, cluster-wide: of many `task.completed` for one
/// started task, sent at once to both nodes, exactly one finds the start (and carries
/// `duration_ms`); the others find the state gone. A read-then-write store would let
/// several read the start before the first one dropped it.
async fn concurrent_ends_see_the_start_once(nodes: &[&TestServer]) {
    const ENDS: usize = 20;
    let mut viewers = vec![viewer(nodes[0]).await];
    let (id, _) = publish(
        nodes[0],
        "task.started",
        json!({"task_id": "t-race", "project_id": 1, "name": "race"}),
    )
    .await;
    received(&mut viewers, "task.started", &id).await;
    let ends = (0..ENDS).map(|i| {
        publish(
            nodes[i % nodes.len()],
            "task.completed",
            json!({"task_id": "t-race", "project_id": 1, "message": format!("{i}")}),
        )
    });
    futures_util::future::join_all(ends).await;
    let mut with_duration = 0;
    for _ in 0..ENDS {
        let envelope = viewers[0].event("task.completed").await;
        if envelope["data"].get("duration_ms").is_some() {
            with_duration += 1;
        }
    }
    assert_eq!(with_duration, 1, "exactly one end found the start");
}

#[tokio::test]
async fn one_node_concurrent_ends_see_the_start_once() {
    let server = TestServer::start().await;
    concurrent_ends_see_the_start_once(&[&server]).await;
}

#[tokio::test]
async fn cluster_concurrent_ends_at_both_nodes_see_the_start_once() {
    let redis = RedisServer::start().await;
    let a = TestServer::start_cluster_node("a", &redis, "tasks-race").await;
    let b = TestServer::start_cluster_node("b", &redis, "tasks-race").await;
    concurrent_ends_see_the_start_once(&[&a, &b]).await;
}

/// Rust code publishes tasks through the broadcaster like HTTP does: the server's fields
/// are filled in, and refused when the caller sets them.
#[tokio::test]
async fn rust_callers_get_the_same_fields() {
    use roomcast::PublishError;
    use roomcast::events::{TaskProgress, TaskStarted};
    use roomcast::rooms::Id;

    let server = TestServer::start().await;
    let mut viewers = vec![viewer(&server).await];
    let id = |s: &str| Id::parse(s).unwrap();
    let started = server
        .broadcaster
        .broadcast_task_started(TaskStarted {
            task_id: id("t-rust"),
            project_id: id("1"),
            name: "embed".into(),
            total: Some(8.0),
        })
        .await
        .unwrap();
    received(&mut viewers, "task.started", &started.id.to_string()).await;
    let progress = TaskProgress::new(id("t-rust"), id("1"), 2.0);
    let published = server
        .broadcaster
        .broadcast_task_progress(progress.clone())
        .await
        .unwrap();
    let data = received(&mut viewers, "task.progress", &published.id.to_string()).await;
    assert_eq!(data["total"].as_f64(), Some(8.0), "{data}");
    assert_eq!(data["percent"].as_f64(), Some(25.0), "{data}");
    let refused = server
        .broadcaster
        .broadcast_task_progress(TaskProgress {
            eta_ms: Some(1),
            ..progress
        })
        .await;
    match refused {
        Err(PublishError::InvalidPayload(field)) => assert_eq!(field.field, "eta_ms"),
        other => panic!("{other:?}"),
    }
}
