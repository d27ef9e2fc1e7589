//! Roomcast inside your own axum app: the library builder gives the router (HTTP API and
//! Socket.IO) to merge with your routes, and an `EventBroadcaster` your handlers publish with.
//!
//! ```sh
//! cargo run --example embedded
//! # your route, publishing through the broadcaster:
//! curl -s -X POST http://127.0.0.1:8000/app/projects/42/activate
//! # Roomcast's own API, on the same port:
//! curl -s http://127.0.0.1:8000/api/v1/events -H 'Authorization: Bearer roomcast-dev-key' \
//!   -d '{"type": "system.notification", "data": {"title": "hi", "message": "from curl"}}'
//! ```
//! Sockets connect to `http://127.0.0.1:8000` as usual (`roomcast token` mints a token with
//! the development secret used here).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use roomcast::events::ProjectUpdated;
use roomcast::rooms::Id;
use roomcast::{Config, EventBroadcaster, Roomcast};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Any config source works: Config::load(..) reads a file and the environment.
    let config = Config::from_toml("[server]\nbind = \"127.0.0.1:8000\"")?;
    let (roomcast, events) = Roomcast::new(&config).await?.into_router();

    let app = Router::new()
        .route("/app/health", get(|| async { "ok" }))
        .route("/app/projects/{id}/activate", post(activate))
        .with_state(events)
        .merge(roomcast);

    let listener = tokio::net::TcpListener::bind(config.server.bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(roomcast::shutdown_signal())
        .await?;
    Ok(())
}

/// One of the app's own handlers: it changes a project, then tells the project's room.
async fn activate(
    State(events): State<EventBroadcaster>,
    Path(id): Path<String>,
) -> Result<Json<roomcast::Published>, (StatusCode, String)> {
    let project_id = Id::parse(&id).ok_or((
        StatusCode::BAD_REQUEST,
        format!("invalid project id {id:?}"),
    ))?;
    let published = events
        .broadcast_project_updated(ProjectUpdated {
            project_id,
            project_name: None,
            status: Some("active".into()),
            updated_by: Some("embedded-example".into()),
            repository_url: None,
            changes: None,
        })
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(published))
}
