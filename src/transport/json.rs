//! `/ws/json` (WEBSOCKET_API.md section 17): after the HTTP side accepted the upgrade
//! (`http::ws_json`), the connection is a [`super::Member`] speaking [`super::Wire::Json`];
//! this is how its client's frames are read.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use socketioxide_core::Sid;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Accepted, Member, Outcome, Session, Wire};
use crate::services::Services;
use crate::socket::CommandError;
use crate::sse::SseHub;

/// The namespace a `/ws/json` connection is reported under (webhooks, logs).
pub const PATH: &str = "/ws/json";

/// A client command: `{"id"?, "type", "data"?}`.
#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    id: Option<Value>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Value>,
}

/// Runs the connection on `io` (the upgraded HTTP connection) until it ends.
pub async fn serve<S>(io: S, services: Arc<Services>, hub: Arc<SseHub>, accepted: Accepted)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = super::websocket(io, &services).await;
    // Boxed: what opening needs is not kept in the connection's future for its life.
    let sock = Box::pin(super::open_member(
        Wire::Json,
        Sid::new(),
        &services,
        &hub,
        accepted,
        None,
    ))
    .await;
    super::run(ws, Session::new(vec![sock], None), services, hub, None).await;
}

/// One text frame from the client: spends the event budget, then runs the command in a
/// task of its own. `Some` ends the connection (the budget was abused).
pub(super) fn command(conn: &Arc<Member>, services: &Arc<Services>, text: &str) -> Option<Outcome> {
    let request = serde_json::from_str::<Value>(text);
    // An id is echoed even when the rest of the frame is unreadable.
    let id = request
        .as_ref()
        .ok()
        .and_then(|v| v.get("id"))
        .filter(|id| !id.is_null())
        .cloned();
    if let Err(abusive) = conn.spend(services, &id) {
        return abusive.then_some(Outcome::Socket(0, super::ABUSE));
    }
    let request = match request.map(serde_json::from_value::<Request>) {
        Ok(Ok(request)) => request,
        _ => {
            let usage =
                "expected a JSON object {\"id\": <any>, \"type\": \"<command>\", \"data\": {...}}";
            conn.answer(id, Err(CommandError::InvalidPayload(usage.into())));
            return None;
        }
    };
    let payload = request.data.ok_or_else(|| "no data".to_owned());
    conn.execute(services, request.id, request.kind, payload);
    None
}
