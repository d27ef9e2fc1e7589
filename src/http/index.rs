//! `GET /`: what this server is and where to go next (the version, the pages, the health
//! checks, the schema and the API reference), so a newcomer's first request is not a 404.
//! HTML for a browser, JSON for everything else. `GET /docs/WEBSOCKET_API.md` serves the
//! reference itself, embedded in the binary.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub(super) const DOCS_PATH: &str = "/docs/WEBSOCKET_API.md";
const DOCS: &str = include_str!("../../WEBSOCKET_API.md");

/// The links `GET /` lists: path and what is there. Pages turned off are left out.
fn links(state: &AppState) -> Vec<(&'static str, &'static str)> {
    let mut links = Vec::new();
    if state.services.config.pages.debug {
        links.push(("/debug", "interactive test client"));
    }
    if state.services.config.pages.admin {
        links.push(("/admin", "live dashboard (an API key with the admin scope)"));
    }
    links.extend([
        ("/health", "liveness"),
        ("/ready", "readiness"),
        ("/api/v1/schema", "JSON Schema of every event"),
        (DOCS_PATH, "the client and API reference"),
    ]);
    links
}

pub(super) async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let version = env!("CARGO_PKG_VERSION");
    let links = links(&state);
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !wants_html {
        let links: serde_json::Map<_, _> = links
            .iter()
            .map(|(path, what)| ((*path).to_owned(), json!(what)))
            .collect();
        return Json(json!({"name": "roomcast", "version": version, "links": links}))
            .into_response();
    }
    let items: String = links
        .iter()
        .map(|(path, what)| format!("<li><a href=\"{path}\">{path}</a>: {what}</li>\n"))
        .collect();
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Roomcast {version}</title></head>\n\
         <body><h1>Roomcast {version}</h1>\n<p>A Socket.IO-compatible realtime server. Clients \
         connect to <code>/</code> or <code>/ws</code> with a JWT.</p>\n<ul>\n{items}</ul></body></html>\n"
    ))
    .into_response()
}

pub(super) async fn docs() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        DOCS,
    )
}
