//! The admin overview (`GET /api/v1/admin/overview`, scope `admin`) and the pages the server
//! serves itself (`/debug`, `/admin`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const OVERVIEW: &str = "/api/v1/admin/overview";

/// Polls the overview until `ok` holds, within the deadline; returns the last answer.
async fn overview_until(server: &TestServer, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = server.get(OVERVIEW, Some(ADMIN_KEY)).await;
        assert_eq!(status, 200, "{body}");
        if ok(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "overview never showed {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn type_figures<'a>(overview: &'a Value, event_type: &str) -> Option<&'a Value> {
    overview["events_by_type"]
        .as_array()?
        .iter()
        .find(|t| t["type"] == event_type)
}

#[tokio::test]
async fn overview_needs_a_key_with_the_admin_scope() {
    let server = TestServer::start().await;
    let (status, body) = server.get(OVERVIEW, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = server.get(OVERVIEW, Some("not-a-key")).await;
    assert_eq!(status, 401, "{body}");
    // Neither `read` nor `publish` + `read` is enough.
    for key in [READ_KEY, KEY] {
        let (status, body) = server.get(OVERVIEW, Some(key)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
        assert_eq!(
            body["error"]["message"],
            "this API key lacks the \"admin\" scope"
        );
    }
    // And `admin` alone grants nothing else.
    let (status, _) = server.get("/api/v1/websocket/stats", Some(ADMIN_KEY)).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn overview_shows_a_connected_socket_its_rooms_and_a_publish() {
    let server = TestServer::start().await;
    let before = overview_until(&server, "an empty node", |o| o["connections"] == 0).await;
    assert_eq!(before["events_published"], 0);
    assert_eq!(before["events_by_type"], json!([]));
    assert_eq!(before["cluster"]["mode"], "single");

    let mut alice = server.connect(&token_for("alice", "acme", &["42"])).await;
    assert_eq!(alice.subscribe("project:42").await["ok"], true);
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.updated", "tenant": "acme", "data": {"project_id": "42"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    alice.event("project.updated").await;

    let o = overview_until(&server, "the socket and the publish", |o| {
        o["connections"] == 1 && o["events_published"] == 1
    })
    .await;
    assert_eq!(o["node_id"], "test-node");
    assert_eq!(o["users"], 1);
    assert_eq!(o["cluster"]["connections"], 1);
    assert_eq!(o["cluster"]["nodes"][0]["node_id"], "test-node");
    assert_eq!(o["cluster"]["nodes"][0]["connections"], 1);
    let rooms = o["top_rooms"].as_array().unwrap();
    assert!(
        rooms.contains(&json!({"tenant": "acme", "room": "project:42", "members": 1})),
        "{rooms:?}"
    );
    let figures = type_figures(&o, "project.updated").unwrap();
    assert_eq!(figures["total"], 1);
    assert_eq!(o["events_by_type"].as_array().unwrap().len(), 1);

    // The rate follows from the counters sampled every second: non-zero while the publish
    // is within the window.
    let o = overview_until(&server, "a rate for project.updated", |o| {
        type_figures(o, "project.updated").is_some_and(|t| t["per_sec"].as_f64() > Some(0.0))
    })
    .await;
    assert!(o["events_per_sec"].as_f64() > Some(0.0), "{o}");
    assert_eq!(o["rate_window_secs"], 5);

    drop(alice);
    overview_until(&server, "the socket gone", |o| o["connections"] == 0).await;
}

#[tokio::test]
async fn recent_errors_hold_codes_never_tokens_or_keys() {
    let server = TestServer::start().await;
    let mut expired = claims("mallory");
    expired.exp = 1;
    let expired = token(&expired);
    let refused = Client::connect(
        server.addr,
        Auth::Payload(json!({"token": expired.clone()})),
    )
    .await
    .err();
    assert_eq!(refused.as_deref(), Some("token_expired"));
    let (status, _) = server
        .post_raw("/api/v1/events", Some("wrong-secret-key"), "{}".into())
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.renamed", "data": {}}),
        )
        .await;
    assert_eq!(status, 422);

    let o = overview_until(&server, "the error and two refusals", |o| {
        o["recent_errors"].as_array().map(Vec::len) == Some(1)
            && o["refused_auth"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let errors = o["recent_errors"].as_array().unwrap();
    assert_eq!(errors[0]["code"], "unknown_event_type");
    assert_eq!(errors[0]["source"], "http");
    assert_eq!(errors[0]["at"], "POST /api/v1/events");
    assert!(errors[0]["time"].as_str().unwrap().ends_with('Z'));
    // Refused authentication is counted apart, most recent first.
    let refused = o["refused_auth"].as_array().unwrap();
    assert_eq!(refused[0]["code"], "unauthorized");
    assert_eq!(refused[0]["source"], "http");
    assert_eq!(refused[0]["count"], 1);
    assert_eq!(refused[1]["code"], "token_expired");
    assert_eq!(refused[1]["source"], "handshake");
    assert_eq!(refused[1]["at"], "/");
    assert!(refused[1]["last_time"].as_str().unwrap().ends_with('Z'));
    let text = format!("{} {}", o["recent_errors"], o["refused_auth"]);
    assert!(!text.contains(&expired), "{text}");
    assert!(!text.contains("wrong-secret-key"), "{text}");
    // The overview's own refusals are errors too, and so is every API endpoint's.
    server.get(OVERVIEW, Some(READ_KEY)).await;
    let o = overview_until(&server, "the refused overview", |o| {
        o["recent_errors"][0]["at"] == "GET /api/v1/admin/overview"
    })
    .await;
    assert_eq!(o["recent_errors"][0]["code"], "forbidden");
}

#[tokio::test]
async fn a_flood_of_refused_keys_and_tokens_never_pushes_a_real_error_out() {
    // Refused keys from this address are not throttled here: every one is answered 401.
    let server = TestServer::start_with("[limits]\nauth_failures_per_ip_per_sec = 0").await;
    let (status, _) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.renamed", "data": {}}),
        )
        .await;
    assert_eq!(status, 422);
    let bad_token = Client::connect(server.addr, Auth::Payload(json!({"token": "x.y.z"})))
        .await
        .err();
    assert_eq!(bad_token.as_deref(), Some("token_invalid"));

    const REFUSED: usize = 1000;
    let http = reqwest::Client::new();
    let url = server.url("/api/v1/events");
    for chunk in 0..REFUSED / 50 {
        let sends = (0..50).map(|i| {
            http.post(&url)
                .bearer_auth(format!("guess-{chunk}-{i}"))
                .body("{}")
                .send()
        });
        for answer in futures_util::future::join_all(sends).await {
            assert_eq!(answer.expect("request").status(), 401);
        }
    }

    let o = overview_until(&server, "every refusal counted", |o| {
        o["refused_auth"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["count"] == REFUSED))
    })
    .await;
    let errors = o["recent_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "unknown_event_type");
    let refused = o["refused_auth"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["source"], "http");
    assert_eq!(refused[0]["code"], "unauthorized");
    assert_eq!(refused[0]["count"], REFUSED);
    assert_eq!(refused[0]["at"], "POST /api/v1/events");
    assert!(refused[0]["first_time"].as_str() <= refused[0]["last_time"].as_str());
    assert_eq!(refused[1]["code"], "token_invalid");
    assert_eq!(refused[1]["count"], 1);
}

async fn page(server: &TestServer, path: &str) -> (u16, String, String) {
    let resp = reqwest::get(server.url(path)).await.expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn pages_are_served_without_a_key_and_load_nothing_from_elsewhere() {
    let server = TestServer::start().await;
    for (path, title) in [
        ("/debug", "Roomcast debug client"),
        ("/admin", "Roomcast admin"),
    ] {
        let resp = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(&format!("<title>{title}</title>")), "{path}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{path}"
        );
    }
    for path in ["/pages/roomcast.js", "/pages/debug.js", "/pages/admin.js"] {
        let (status, content_type, body) = page(&server, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            content_type.starts_with("text/javascript"),
            "{content_type}"
        );
        assert!(
            !body.contains("https://"),
            "{path} must not load anything from elsewhere"
        );
    }
    let (status, content_type, _) = page(&server, "/pages/pages.css").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/css; charset=utf-8")
    );
}

#[tokio::test]
async fn pages_can_be_turned_off() {
    let server = TestServer::start_with("[pages]\ndebug = false\nadmin = false").await;
    for path in ["/debug", "/admin", "/pages/roomcast.js", "/pages/admin.js"] {
        assert_eq!(page(&server, path).await.0, 404, "{path}");
    }
    // The endpoint stays, behind its scope.
    assert_eq!(server.get(OVERVIEW, Some(ADMIN_KEY)).await.0, 200);

    let server = TestServer::start_with("[pages]\nadmin = false").await;
    assert_eq!(page(&server, "/debug").await.0, 200);
    assert_eq!(page(&server, "/pages/roomcast.js").await.0, 200);
    assert_eq!(page(&server, "/admin").await.0, 404);
    assert_eq!(page(&server, "/pages/admin.js").await.0, 404);
}

#[tokio::test]
async fn the_root_names_the_version_and_links_every_page_and_the_docs() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "roomcast");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let links = body["links"].as_object().expect("links");
    for path in [
        "/debug",
        "/admin",
        "/health",
        "/ready",
        "/api/v1/schema",
        "/docs/WEBSOCKET_API.md",
    ] {
        assert!(links.contains_key(path), "{path} missing: {body}");
        assert_eq!(
            page(&server, path).await.0,
            200,
            "{path} is linked but not served"
        );
    }
    let (status, content_type, docs) = page(&server, "/docs/WEBSOCKET_API.md").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/markdown"), "{content_type}");
    assert!(
        docs.starts_with("# Roomcast WebSocket & HTTP API"),
        "{docs:.80}"
    );

    // A browser gets a page with the same links.
    let resp = reqwest::Client::new()
        .get(server.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(&format!("Roomcast {}", env!("CARGO_PKG_VERSION"))),
        "{html}"
    );
    for path in links.keys() {
        assert!(html.contains(&format!("href=\"{path}\"")), "{path}: {html}");
    }

    // Pages that are off are not linked.
    let server = TestServer::start_with("[pages]\ndebug = false\nadmin = false").await;
    let (_, body) = server.get("/", None).await;
    assert!(body["links"].get("/debug").is_none(), "{body}");
    assert!(body["links"].get("/admin").is_none(), "{body}");
    assert!(body["links"].get("/health").is_some(), "{body}");
}
