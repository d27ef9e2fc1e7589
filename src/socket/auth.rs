//! The connect middleware: takes a handshake from the client address's bucket, finds the
//! token, verifies it, counts the socket against the connection limits and stores the
//! [`Identity`] (and the counted [`Slot`]) on the socket. A refusal is a `connect_error`
//! whose message is the [`Refusal`] code.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::SocketCtx;
use crate::auth::AuthError;
use crate::limits::{LimitError, Slot};

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
    // Without ConnectInfo (the router served by another program) there is no peer address.
    if let Some(ConnectInfo(peer)) = req.extensions.get::<ConnectInfo<SocketAddr>>() {
        let ip = ctx.limits.client_ip(peer.ip(), &req.headers);
        if let Err(e) = ctx.limits.handshake(ip) {
            ctx.counters.limited("handshakes_ip");
            tracing::debug!(sid = %s.id, %ip, "handshake refused: rate_limited");
            return Err(Refusal::Limit(e));
        }
    }
    let result = match find_token(auth.as_ref().ok(), req) {
        None => Err(AuthError::TokenMissing),
        Some(token) => ctx.verifier.verify(&token),
    };
    let identity = match result {
        Ok(identity) => identity,
        Err(e) => {
            ctx.counters.auth_failed(e.code());
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
    s.extensions.insert(Arc::new(identity));
    Ok(())
}
