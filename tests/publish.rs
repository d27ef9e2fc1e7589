//! Publishing: every typed event reaches its room (and only it) in the envelope, over HTTP
//! and through the in-process `EventBroadcaster`; every API error has its code.

mod common;

use common::*;
use roomcast::EventBroadcaster;
use roomcast::events::{ProjectUpdated, SystemNotification};
use roomcast::rooms::{Grant, Id};
use serde_json::{Value, json};

async fn admin(server: &TestServer, sub: &str, rooms: &[&str]) -> Client {
    let mut c = claims(sub);
    c.role = Some("admin".into());
    let mut client = server.connect(&token(&c)).await;
    for room in rooms {
        assert_eq!(client.subscribe(room).await["ok"], true);
    }
    client
}

/// (type, data, rooms it must reach)
fn every_event() -> Vec<(&'static str, Value, Vec<&'static str>)> {
    let pr = json!({"project_id": "p1", "number": 7, "title": "Fix", "url": "https://x/pr/7", "author": "eve", "state": "open", "merged": false});
    let issue = json!({"project_id": "p1", "number": 8, "title": "Bug", "state": "open"});
    vec![
        (
            "project.updated",
            json!({"project_id": "p1", "project_name": "P", "status": "active", "updated_by": "u", "repository_url": "https://x", "changes": {"status": ["a", "b"]}}),
            vec!["project:p1"],
        ),
        (
            "project.deleted",
            json!({"project_id": "p1", "deleted_by": "u"}),
            vec!["project:p1"],
        ),
        (
            "agent.status_changed",
            json!({"agent_id": "a1", "status": "busy", "previous_status": "idle", "project_id": "p1"}),
            vec!["agent:a1", "project:p1"],
        ),
        (
            "agent.connected",
            json!({"agent_id": "a1"}),
            vec!["agent:a1"],
        ),
        (
            "agent.disconnected",
            json!({"agent_id": "a1", "project_id": "p1", "reason": "timeout"}),
            vec!["agent:a1", "project:p1"],
        ),
        (
            "workflow.started",
            json!({"workflow_id": "w1", "project_id": "p1"}),
            vec!["project:p1"],
        ),
        (
            "workflow.progress",
            json!({"workflow_id": "w1", "project_id": "p1", "progress": 50, "step": "build", "message": "m", "eta_seconds": 30}),
            vec!["project:p1"],
        ),
        (
            "workflow.completed",
            json!({"workflow_id": "w1", "project_id": "p1", "result": {"ok": true}, "duration_ms": 1200}),
            vec!["project:p1"],
        ),
        (
            "workflow.failed",
            json!({"workflow_id": "w1", "project_id": "p1", "error": "boom"}),
            vec!["project:p1"],
        ),
        ("pr.created", pr.clone(), vec!["project:p1"]),
        ("pr.updated", pr.clone(), vec!["project:p1"]),
        ("pr.closed", pr, vec!["project:p1"]),
        ("issue.created", issue.clone(), vec!["project:p1"]),
        ("issue.updated", issue.clone(), vec!["project:p1"]),
        ("issue.closed", issue, vec!["project:p1"]),
        (
            "ai.suggestion",
            json!({"suggestion_id": "s1", "content": "try this", "title": "t", "kind": "code", "user_id": "uu", "project_id": "p1"}),
            vec!["user:uu"],
        ),
        (
            "ai.analysis_complete",
            json!({"analysis_id": "an1", "project_id": "p1", "summary": "fine"}),
            vec!["project:p1"],
        ),
        (
            "system.notification",
            json!({"title": "t", "message": "m", "severity": "warning"}),
            vec!["global"],
        ),
        // Each its own task, none started: the server has nothing to add (tests/tasks.rs).
        (
            "task.started",
            json!({"task_id": "t1", "project_id": "p1", "name": "index"}),
            vec!["project:p1"],
        ),
        (
            "task.progress",
            json!({"task_id": "t2", "project_id": "p1", "current": 1.5, "step": "s", "message": "m"}),
            vec!["project:p1"],
        ),
        (
            "task.completed",
            json!({"task_id": "t3", "project_id": "p1", "result": {"ok": true}, "message": "m"}),
            vec!["project:p1"],
        ),
        (
            "task.failed",
            json!({"task_id": "t4", "project_id": "p1", "error": "e", "step": "s"}),
            vec!["project:p1"],
        ),
    ]
}

#[tokio::test]
async fn every_event_type_reaches_its_rooms_and_no_other() {
    let server = TestServer::start().await;
    // One admin socket per room; every socket is also in `global`, which none may leave.
    let all_rooms = ["project:p1", "agent:a1", "user:uu", "global"];
    let mut sockets = Vec::new();
    for (i, room) in all_rooms.iter().enumerate() {
        let c = admin(&server, &format!("watcher{i}"), &[room]).await;
        sockets.push((*room, c));
    }
    assert_eq!(every_event().len(), roomcast::events::EventType::ALL.len());

    for (event_type, data, targets) in every_event() {
        let (status, body) = server
            .post("/api/v1/events", json!({"type": event_type, "data": data}))
            .await;
        assert_eq!(status, 202, "{event_type}: {body}");
        assert_eq!(body["type"], event_type);
        assert_eq!(body["room"], targets[0]);
        for (room, client) in sockets.iter_mut() {
            if targets.contains(room) || targets.contains(&"global") {
                let e = client.event(event_type).await;
                assert_eq!(e["id"], body["id"]);
                assert_eq!(e["type"], event_type);
                assert_eq!(e["room"], targets[0]);
                assert_eq!(e["data"], data, "{event_type}");
                let id = e["id"].as_str().unwrap();
                assert_eq!(&id[14..15], "7", "UUIDv7: {id}");
                assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
            }
        }
    }
    // Nothing arrived where it should not: a final marker per socket, then no leftovers.
    for (room, client) in sockets.iter_mut() {
        let user = room.strip_prefix("user:");
        let data = match user {
            Some(u) => json!({"suggestion_id": "m", "content": "marker", "user_id": u}),
            None => json!({"suggestion_id": "m", "content": "marker", "project_id": "p1"}),
        };
        if *room == "project:p1" || user.is_some() {
            server
                .post(
                    "/api/v1/events",
                    json!({"type": "ai.suggestion", "data": data}),
                )
                .await;
            client.event("ai.suggestion").await;
        }
        // Other watchers joining announce presence; every other event is a leak.
        let leaked: Vec<_> = client
            .received()
            .into_iter()
            .filter(|name| !name.starts_with("presence."))
            .collect();
        assert!(leaked.is_empty(), "{room}: {leaked:?}");
    }
}

#[tokio::test]
async fn a_socket_in_both_rooms_gets_an_agent_event_once() {
    let server = TestServer::start().await;
    let mut c = admin(&server, "w", &["agent:a1", "project:p1"]).await;
    server
        .post(
            "/api/v1/events",
            json!({"type": "agent.connected", "data": {"agent_id": "a1", "project_id": "p1"}}),
        )
        .await;
    server.publish_marker().await;
    c.event("agent.connected").await;
    c.assert_not_before("agent.connected", "system.notification")
        .await;
}

#[tokio::test]
async fn api_errors_have_codes() {
    let server = TestServer::start_with("[limits]\nmax_http_body_bytes = 1024").await;
    let ok = json!({"type": "project.updated", "data": {"project_id": 1}}).to_string();
    // (key, body, status, code, field)
    type Case<'a> = (Option<&'a str>, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (None, ok.clone(), 401, "unauthorized", None),
        (Some("wrong-key-123"), ok.clone(), 401, "unauthorized", None),
        (Some(READ_KEY), ok.clone(), 403, "forbidden", None),
        // The scope is checked before the body is read.
        (Some(READ_KEY), "{not json".into(), 403, "forbidden", None),
        (Some(ACME_KEY), json!({"type": "project.updated", "tenant": "globex", "data": {"project_id": 1}}).to_string(), 403, "forbidden", None),
        (Some(KEY), "{not json".into(), 400, "malformed_json", None),
        (Some(KEY), "{\"type\": \"project.updated\",".into(), 400, "malformed_json", None),
        (Some(KEY), "[1, 2".into(), 400, "malformed_json", None),
        (Some(KEY), json!({"type": "nope", "data": {}}).to_string(), 422, "unknown_event_type", None),
        (Some(KEY), json!({"type": "project.updated", "data": {}}).to_string(), 422, "invalid_payload", Some("project_id")),
        (Some(KEY), json!({"type": "project.updated", "data": {"project_id": [1]}}).to_string(), 422, "invalid_payload", Some("project_id")),
        (Some(KEY), json!({"type": "workflow.progress", "data": {"workflow_id": 1, "project_id": 1, "progress": 101}}).to_string(), 422, "invalid_payload", Some("progress")),
        (Some(KEY), json!({"type": "project.updated", "data": {"project_id": 1, "bogus": true}}).to_string(), 422, "invalid_payload", Some("bogus")),
        (Some(KEY), json!({"data": {}}).to_string(), 422, "invalid_payload", Some("type")),
        (Some(KEY), json!({"type": "project.updated", "data": {"project_id": "x".repeat(2000)}}).to_string(), 413, "payload_too_large", None),
    ];
    let mut c = admin(&server, "w", &["project:1"]).await;
    for (key, body, status, code, field) in cases {
        let (got, resp) = server.post_raw("/api/v1/events", key, body.clone()).await;
        assert_eq!(got, status, "{body}: {resp}");
        assert_eq!(resp["error"]["code"], code, "{body}");
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if let Some(field) = field {
            assert_eq!(resp["error"]["field"], field, "{body}: {resp}");
        }
    }
    // None of those delivered anything; the acme key publishes into acme by default.
    let (status, body) = server.post_raw("/api/v1/events", Some(ACME_KEY), ok).await;
    assert_eq!((status, body["tenant"].as_str()), (202, Some("acme")));
    server.publish_marker().await;
    c.assert_not_before("project.updated", "system.notification")
        .await;
    // X-API-Key works as well as Bearer.
    let (status, _) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(status, 200);
    let (status, body) = server.get("/api/v1/websocket/stats", Some(ACME_KEY)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
}

#[tokio::test]
async fn custom_broadcasts() {
    let server = TestServer::start().await;
    let mut c = admin(&server, "w", &["project:1", "agent:b"]).await;
    let (status, body) = server
        .post(
            "/api/v1/broadcast",
            json!({"rooms": ["project:1", "agent:b"], "event": "deploy.finished", "data": {"v": 2}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rooms"], json!(["project:1", "agent:b"]));
    let e = c.event("deploy.finished").await;
    assert_eq!(e["type"], "deploy.finished");
    assert_eq!(e["room"], "project:1");
    assert_eq!(e["data"], json!({"v": 2}));
    for name in [
        "connect",
        "disconnect",
        "error",
        "connection.established",
        "project.updated",
        "Bad",
        "a b",
    ] {
        let (status, body) = server
            .post(
                "/api/v1/broadcast",
                json!({"room": "global", "event": name, "data": 1}),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_event_name")),
            "{name}"
        );
    }
    let (status, body) = server
        .post(
            "/api/v1/broadcast",
            json!({"room": "nope:1", "event": "x", "data": 1}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_room"))
    );
    let (status, body) = server
        .post("/api/v1/broadcast", json!({"event": "x", "data": 1}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_payload"))
    );
    // One delivery, not one per room.
    server.publish_marker().await;
    c.assert_not_before("deploy.finished", "system.notification")
        .await;
}

#[tokio::test]
async fn rust_code_publishes_through_the_broadcaster() {
    let server = TestServer::start().await;
    let mut acme = claims("u");
    acme.tenant = Some("acme".into());
    acme.projects = Grant::Some(vec![Id::parse("42").unwrap()].into());
    let mut c = server.connect(&token(&acme)).await;
    c.subscribe("project:42").await;
    let published = server
        .broadcaster
        .with_tenant(Id::parse("acme").unwrap())
        .broadcast_project_updated(ProjectUpdated {
            project_id: Id::parse("42").unwrap(),
            project_name: Some("Answer".into()),
            status: None,
            updated_by: None,
            repository_url: None,
            changes: None,
        })
        .await
        .unwrap();
    let e = c.event("project.updated").await;
    assert_eq!(e["id"], published.id.to_string());
    assert_eq!(
        e["data"],
        json!({"project_id": "42", "project_name": "Answer"})
    );
    // The default tenant is another tenant: this does not reach acme's socket.
    server
        .broadcaster
        .broadcast_system_notification(SystemNotification {
            title: "default".into(),
            message: "m".into(),
            severity: None,
        })
        .await
        .unwrap();
    // The running server installed itself as the global broadcaster.
    let global = EventBroadcaster::global().expect("installed");
    global
        .with_tenant(Id::parse("acme").unwrap())
        .broadcast_system_notification(SystemNotification {
            title: "acme".into(),
            message: "m".into(),
            severity: None,
        })
        .await
        .unwrap();
    // Several servers run in this test binary; only assert what is ours.
    let _ = global;
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert!(stats["events_published"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn stats_count_connections() {
    let server = TestServer::start().await;
    let (_, before) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(before["connections"], 0);
    let _a = admin(&server, "a", &["project:1"]).await;
    let _b = admin(&server, "a", &["project:1"]).await;
    let _c = admin(&server, "c", &[]).await;
    let (status, s) = server.get("/api/v1/websocket/stats", Some(READ_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(s["node_id"], "test-node");
    assert_eq!(s["connections"], 3);
    assert_eq!(s["users"], 2);
    assert_eq!(s["tenants"], 1);
    // global, user:a, user:c, project:1
    assert_eq!(s["rooms"], 4);
    assert_eq!(
        s["top_rooms"][0],
        json!({"tenant": "default", "room": "global", "members": 3})
    );
    for field in ["uptime_secs", "events_published", "auth_failures"] {
        assert!(s[field].is_u64(), "{field}");
    }
    let (h, _) = server.get("/health", None).await;
    let (r, _) = server.get("/ready", None).await;
    assert_eq!((h, r), (200, 200));
}

/// `GET /api/v1/schema` describes the envelope and every event type's `data`, from the
/// server's own structs: what a typed client is generated from.
#[tokio::test]
async fn the_schema_endpoint_describes_every_event_type() {
    let server = TestServer::start().await;
    let (status, schema) = server.get("/api/v1/schema", None).await;
    assert_eq!(status, 200, "{schema}");
    let events = schema["events"].as_object().unwrap();
    assert_eq!(events.len(), 22, "{:?}", events.keys());
    let updated = &events["project.updated"];
    assert!(
        updated["required"]
            .as_array()
            .unwrap()
            .contains(&json!("project_id")),
        "{updated}"
    );
    assert_eq!(updated["additionalProperties"], false, "{updated}");
    // The envelope schema names exactly what a delivered event carries.
    let mut c = admin(&server, "s", &["project:1"]).await;
    let (_, published) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.updated", "data": {"project_id": 1}}),
        )
        .await;
    let e = c.event("project.updated").await;
    assert_eq!(e["id"], published["id"]);
    let known = schema["envelope"]["properties"].as_object().unwrap();
    for field in e.as_object().unwrap().keys() {
        assert!(
            known.contains_key(field),
            "{field} not in the envelope schema"
        );
    }
    for field in schema["envelope"]["required"].as_array().unwrap() {
        assert!(
            e.get(field.as_str().unwrap()).is_some(),
            "{field} missing in {e}"
        );
    }
}
