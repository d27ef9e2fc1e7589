//! The handshake edge. [`screen_handshake`] takes each new Engine.IO session from its client
//! address's bucket as the HTTP request arrives; the connect middleware then refuses a
//! screened-out session, finds the token, verifies it, counts the socket against the
//! connection limits and stores the [`Identity`] (and the counted [`Slot`]) on the socket.
//! A refusal is a `connect_error` whose message is the [`Refusal`] code.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::SocketCtx;
use crate::auth::AuthError;
use crate::limits::{LimitError, Limits, Slot};
use crate::presence::Share;

/// Marks a session whose handshake was over its address's budget.
#[derive(Clone)]
struct HandshakeRefused(LimitError);

/// HTTP middleware before the Socket.IO layer: a request that opens a new Engine.IO session
/// (no `sid`: a direct websocket, or the first poll) takes one handshake from its client
/// address's bucket. Over it, the session is marked and its namespace connects are refused
/// with `rate_limited`. The peer address is taken out of the request either way: engineioxide
/// keeps the request head for the socket's whole life, and the address is not needed later.
pub async fn screen_handshake(
    axum::extract::State(limits): axum::extract::State<Arc<Limits>>,
    mut req: axum::extract::Request,
) -> axum::extract::Request {
    if !req.uri().path().starts_with("/socket.io") {
        return req;
    }
    let Some(ConnectInfo(peer)) = req.extensions_mut().remove::<ConnectInfo<SocketAddr>>() else {
        return req;
    };
    let new_session = !req
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "sid"));
    if new_session {
        let ip = limits.client_ip(peer.ip(), req.headers());
        if let Err(e) = limits.handshake(ip) {
            tracing::debug!(%ip, "handshake over the address's budget: rate_limited");
            req.extensions_mut().insert(HandshakeRefused(e));
        }
    }
    req
}

/// Why a handshake was refused; its `Display` is the `connect_error` message.
#[derive(Debug)]
pub enum Refusal {
    Auth(AuthError),
    Limit(LimitError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auth(e) => f.write_str(e.code()),
            Self::Limit(e) => f.write_str(e.code()),
        }
    }
}

impl std::error::Error for Refusal {}

/// The token, from (in order) the handshake `auth.token`, `Authorization: Bearer`, `?token=`.
fn find_token(auth: Option<&serde_json::Value>, req: &http::request::Parts) -> Option<String> {
    // An empty value counts as absent, so the search goes on to the next place.
    let from_auth = auth
        .and_then(|a| a.get("token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty());
    let from_header = || {
        req.headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .filter_map(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .find(|t| !t.is_empty())
    };
    let from_query = || {
        form_urlencoded::parse(req.uri.query()?.as_bytes())
            .find(|(k, v)| k == "token" && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    };
    from_auth
        .or_else(from_header)
        .map(str::to_owned)
        .or_else(from_query)
}

pub async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(auth): TryData<serde_json::Value>,
) -> Result<(), Refusal> {
    let req = s.req_parts();
    if let Some(HandshakeRefused(e)) = req.extensions.get::<HandshakeRefused>() {
        ctx.counters.limited("handshakes_ip");
        tracing::debug!(sid = %s.id, "handshake refused: rate_limited");
        return Err(Refusal::Limit(e.clone()));
    }
    let result = match find_token(auth.as_ref().ok(), req) {
        None => Err(AuthError::TokenMissing),
        Some(token) => ctx.verifier.verify_or_refresh(&token).await,
    };
    let identity = match result {
        Ok(identity) => Arc::new(identity),
        Err(e) => {
            ctx.counters.auth_failed(e.code());
            let message = match e {
                AuthError::TokenMissing => "connect_error: no token in the handshake",
                AuthError::TokenInvalid => "connect_error: the token does not verify",
                AuthError::TokenExpired => "connect_error: the token has expired",
            };
            ctx.counters
                .errors
                .record("handshake", e.code(), s.ns().to_owned(), message);
            tracing::debug!(sid = %s.id, code = e.code(), "handshake refused");
            return Err(Refusal::Auth(e));
        }
    };
    let slot: Slot = match ctx.limits.connections.admit(&identity) {
        Ok(slot) => slot,
        Err(e) => {
            if let LimitError::TooManyConnections { which, .. } = &e {
                ctx.counters.limited(match *which {
                    "node" => "connections_node",
                    "tenant" => "connections_tenant",
                    _ => "connections_user",
                });
                tracing::debug!(
                    sid = %s.id,
                    user_id = %identity.user_id,
                    tenant = %identity.tenant,
                    limit = which,
                    "handshake refused: too_many_connections"
                );
            }
            return Err(Refusal::Limit(e));
        }
    };
    let span = tracing::debug_span!(
        "socket",
        sid = %s.id,
        user_id = %identity.user_id,
        tenant = %identity.tenant,
        ns = %s.ns()
    );
    if !span.is_disabled() {
        s.extensions.insert(span);
    }
    s.extensions.insert(Arc::new(slot));
    s.extensions.insert(identity);
    s.extensions.insert(Arc::new(Share::default()));
    // Here, not in the connect handler: socketioxide sends the CONNECT answer before it
    // spawns the connect handler, so a command the client sends at once could otherwise
    // arrive before any handler exists and be dropped without an answer.
    super::register_commands(&s);
    Ok(())
}
