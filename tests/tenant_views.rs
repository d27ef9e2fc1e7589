//! What an API key bound to a tenant sees: every read endpoint answers for its tenant only
//! (or refuses), with sockets and publishes in two tenants; an unbound key still sees both.

mod common;

use common::*;
use serde_json::{Value, json};

const ACME_READ_KEY: &str = "test-key-acme-read";

async fn server() -> TestServer {
    TestServer::start_with(&format!(
        "[[api_keys]]\nname = \"acme-reader\"\nkey = \"{ACME_READ_KEY}\"\ntenant = \"acme\"\nscopes = [\"read\"]"
    ))
    .await
}

async fn publish(server: &TestServer, tenant: &str, event_type: &str, data: Value) {
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": event_type, "tenant": tenant, "data": data}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn project_updated(project: &str) -> Value {
    json!({"project_id": project, "project_name": "P", "status": "active", "updated_by": "u"})
}

/// `GET path` with `key`: status, JSON body and the raw text (to look for names anywhere).
async fn read(server: &TestServer, path: &str, key: &str) -> (u16, Value, String) {
    let (status, text) = server.get_text(path, Some(key)).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// Asserts the answer names nothing of globex: not the tenant, its user or its room.
fn no_globex(what: &str, text: &str) {
    for name in ["globex", "gustav", "secretproj"] {
        assert!(!text.contains(name), "{what} shows {name:?}: {text}");
    }
}

#[tokio::test]
async fn a_tenant_bound_key_sees_only_its_tenant() {
    let server = server().await;
    let mut alice = server.connect(&token_for("alice", "acme", &["a1"])).await;
    assert_eq!(alice.subscribe("project:a1").await["ok"], true);
    let mut gustav = server
        .connect(&token_for("gustav", "globex", &["secretproj"]))
        .await;
    assert_eq!(gustav.subscribe("project:secretproj").await["ok"], true);
    let _gustav2 = server
        .connect(&token_for("gustav", "globex", &["secretproj"]))
        .await;
    publish(&server, "acme", "project.updated", project_updated("a1")).await;
    for _ in 0..3 {
        publish(
            &server,
            "globex",
            "project.updated",
            project_updated("secretproj"),
        )
        .await;
    }
    alice.event("project.updated").await;
    gustav.event("project.updated").await;

    // Stats: acme's sockets, rooms and publishes; node-wide figures withheld.
    let (status, stats, text) = read(&server, "/api/v1/websocket/stats", ACME_READ_KEY).await;
    assert_eq!(status, 200, "{text}");
    no_globex("stats", &text);
    assert_eq!(stats["connections"], 1, "{stats}");
    assert_eq!(stats["users"], 1, "{stats}");
    assert_eq!(stats["tenants"], 1, "{stats}");
    // global, user:alice, project:a1: nothing internal is listed or counted.
    assert_eq!(stats["rooms"], 3, "{stats}");
    let rooms: Vec<&str> = stats["top_rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["tenant"], "acme", "{stats}");
            r["room"].as_str().unwrap()
        })
        .collect();
    assert_eq!(rooms.len(), 3, "{stats}");
    for room in ["global", "user:alice", "project:a1"] {
        assert!(rooms.contains(&room), "{stats}");
    }
    assert_eq!(stats["events_published"], 1, "{stats}");
    assert_eq!(stats["auth_failures"], Value::Null, "{stats}");
    assert_eq!(stats["delivery_failures"], Value::Null, "{stats}");
    assert_eq!(stats["cluster"]["connections"], 1, "{stats}");
    assert_eq!(stats["cluster"]["users"], 1, "{stats}");
    assert_eq!(stats["cluster"]["nodes"][0]["connections"], 1, "{stats}");

    // An unbound key still sees both tenants.
    let (status, all, text) = read(&server, "/api/v1/websocket/stats", READ_KEY).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("globex") && text.contains("secretproj"),
        "{text}"
    );
    assert_eq!(all["connections"], 3, "{all}");
    assert_eq!(all["users"], 2, "{all}");
    assert_eq!(all["tenants"], 2, "{all}");
    assert_eq!(all["rooms"], 6, "{all}");
    assert_eq!(all["events_published"], 4, "{all}");

    // Presence: its own tenant by default; another tenant is refused.
    let (status, body, text) = read(&server, "/api/v1/rooms/global/presence", ACME_READ_KEY).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["tenant"], "acme");
    no_globex("presence", &text);
    let (status, body, _) = read(
        &server,
        "/api/v1/rooms/global/presence?tenant=globex",
        ACME_READ_KEY,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body, _) = read(
        &server,
        "/api/v1/rooms/global/presence?tenant=globex",
        READ_KEY,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["users"],
        json!([{"user_id": "gustav", "connections": 2}])
    );

    // History: the same room name in acme holds none of globex's events.
    let (status, page, text) = read(
        &server,
        "/api/v1/rooms/project:secretproj/history",
        ACME_READ_KEY,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(page["events"], json!([]), "{page}");
    let (status, body, _) = read(
        &server,
        "/api/v1/rooms/project:secretproj/history?tenant=globex",
        ACME_READ_KEY,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (_, page, _) = read(
        &server,
        "/api/v1/rooms/project:secretproj/history?tenant=globex",
        READ_KEY,
    )
    .await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(3), "{page}");

    // Metrics are node-wide, labelled by tenant: refused, not narrowed.
    let (status, body, text) = read(&server, "/metrics", ACME_READ_KEY).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{text}"
    );
    no_globex("/metrics refusal", &text);
    let (status, text) = server.get_text("/metrics", Some(READ_KEY)).await;
    assert_eq!(status, 200);
    assert!(text.contains("tenant=\"globex\""), "{text}");

    // The admin overview: a tenant-bound key never holds the admin scope.
    let (status, body, _) = read(&server, "/api/v1/admin/overview", ACME_READ_KEY).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let refused = roomcast::Config::from_toml(
        "[[api_keys]]\nname = \"t\"\nkey = \"tenant-key-1\"\ntenant = \"acme\"\nscopes = [\"admin\"]",
    )
    .and_then(|c| c.validate());
    assert!(refused.is_err(), "a tenant-bound admin key was accepted");
}
