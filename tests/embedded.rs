//! Roomcast inside a host program's own axum app (as in examples/embedded.rs): the app's
//! routes, Roomcast's API and Socket.IO share one port, and the app's handlers publish
//! through the broadcaster the builder returned.

mod common;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use common::*;
use roomcast::events::SystemNotification;
use roomcast::{Config, EventBroadcaster, Roomcast};
use serde_json::json;

#[tokio::test]
async fn an_embedded_server_shares_the_apps_port_and_its_broadcaster_reaches_sockets() {
    let config = Config::from_toml(&format!("[auth]\njwt_secret = \"{SECRET}\"")).unwrap();
    let (roomcast, events) = Roomcast::new(&config).await.unwrap().into_router();
    async fn deploy(State(events): State<EventBroadcaster>) -> String {
        let published = events
            .broadcast_system_notification(SystemNotification {
                title: "Deploy".into(),
                message: "v2 is live".into(),
                severity: None,
            })
            .await
            .map(|p| p.id.to_string());
        published.unwrap_or_else(|e| e.to_string())
    }
    let app = Router::new()
        .route("/app/health", get(|| async { "app ok" }))
        .route("/app/deploy", post(deploy))
        .with_state(events)
        .merge(roomcast);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut socket = Client::connect(addr, Auth::Payload(json!({"token": token(&claims("ann"))})))
        .await
        .expect("socket connects through the host app");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let health = http.get(format!("{base}/app/health")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "app ok");
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let id = http
        .post(format!("{base}/app/deploy"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let event = socket.event("system.notification").await;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["data"]["message"], "v2 is live");

    // Roomcast's own API is served on the same port.
    let status = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(roomcast::config::DEV_API_KEY)
        .body(
            json!({"type": "system.notification", "data": {"title": "t", "message": "api"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    assert_eq!(
        socket.event("system.notification").await["data"]["message"],
        "api"
    );
}
