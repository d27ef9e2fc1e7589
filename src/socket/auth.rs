//! The handshake edge. [`screen_handshake`] takes each new Engine.IO session from its client
//! address's bucket as the HTTP request arrives; the connect middleware then refuses a
//! screened-out session, finds the token, verifies it, counts the socket against the
//! connection limits and stores the [`Identity`] (and the counted [`Slot`]) on the socket.
//! A refusal is a `connect_error` whose message is the [`Refusal`] code.
//!
//! An Engine.IO v3 session (socket.io-client 2.x) is different: socketioxide connects it to
//! `/` as the session opens and gives it no connect timeout, so a refused v3 session would
//! stay open for as long as its client keeps pinging. Its token can only come with the HTTP
//! request (header or query), so the screening verifies it there and answers a request
//! without a valid one (or over the address's budget) itself: no session is created.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::SocketCtx;
use crate::auth::{AuthError, Identity};
use crate::limits::{LimitError, Slot};
use crate::presence::Share;

/// Marks a session whose handshake was over its address's budget.
#[derive(Clone)]
struct HandshakeRefused(LimitError);

/// The identity the screening verified for an Engine.IO v3 session. The connect to `/` that
/// socketioxide makes as the session opens takes it, so the token is verified once per
/// handshake; a later namespace connect finds it taken and verifies the token again.
#[derive(Clone)]
struct Screened(Arc<Mutex<Option<Identity>>>);

impl Screened {
    fn take(&self) -> Option<Identity> {
        self.0.lock().ok()?.take()
    }
}

/// What the screening reads from an Engine.IO query, read the way engineioxide's router
/// reads it (the first `EIO=` segment, any `sid=` segment, nothing percent-decoded), so the
/// two never disagree on whether a request opens a session.
struct EioQuery {
    /// No `sid`: a direct websocket or the first poll, which opens a session.
    opens_session: bool,
    /// `EIO=3`: socket.io-client 2.x.
    v3: bool,
}

impl EioQuery {
    fn parse(query: Option<&str>) -> Self {
        let query = query.unwrap_or_default();
        let version = query
            .split('&')
            .find(|s| s.starts_with("EIO="))
            .and_then(|s| s.split('=').nth(1));
        Self {
            opens_session: !query.split('&').any(|s| s.starts_with("sid=")),
            v3: version == Some("3"),
        }
    }
}

/// HTTP middleware before the Socket.IO layer: a request that opens a new Engine.IO session
/// takes one handshake from its client address's bucket. Over it, the session is marked and
/// its namespace connects are refused with `rate_limited`. For Engine.IO v3 the request is
/// answered here instead (`429`), and so is one without a token that verifies (`401`, body
/// `{code, message}` with the `token_*` code). The peer address is taken out of the request
/// either way: engineioxide keeps the request head for the socket's whole life, and the
/// address is not needed later.
pub async fn screen_handshake(
    axum::extract::State(ctx): axum::extract::State<SocketCtx>,
    mut req: axum::extract::Request,
) -> Result<axum::extract::Request, Response> {
    if !req.uri().path().starts_with("/socket.io") {
        return Ok(req);
    }
    let Some(ConnectInfo(peer)) = req.extensions_mut().remove::<ConnectInfo<SocketAddr>>() else {
        return Ok(req);
    };
    let query = EioQuery::parse(req.uri().query());
    if !query.opens_session {
        return Ok(req);
    }
    let ip = ctx.limits.client_ip(peer.ip(), req.headers());
    if let Err(e) = ctx.limits.handshake(ip) {
        tracing::debug!(%ip, "handshake over the address's budget: rate_limited");
        if query.v3 {
            ctx.counters.limited("handshakes_ip");
            return Err(refused(
                http::StatusCode::TOO_MANY_REQUESTS,
                e.code(),
                "too many handshakes from this address",
                Some(e.retry_after_ms()),
            ));
        }
        req.extensions_mut().insert(HandshakeRefused(e));
        return Ok(req);
    }
    if query.v3 {
        let result = match find_token(None, req.headers(), req.uri()) {
            None => Err(AuthError::TokenMissing),
            Some(token) => ctx.verifier.verify_or_refresh(&token).await,
        };
        match result {
            Ok(identity) => {
                req.extensions_mut()
                    .insert(Screened(Arc::new(Mutex::new(Some(identity)))));
            }
            Err(e) => {
                let message = auth_failed(&ctx, e, "/", "HTTP 401");
                tracing::debug!(%ip, code = e.code(), "Engine.IO v3 handshake refused");
                return Err(refused(
                    http::StatusCode::UNAUTHORIZED,
                    e.code(),
                    message,
                    None,
                ));
            }
        }
    }
    Ok(req)
}

/// The HTTP answer to a refused handshake: `{code, message}` (and `retry_after_ms` with a
/// `Retry-After` header when waiting helps), the shape of Engine.IO's own error answers.
fn refused(
    status: http::StatusCode,
    code: &'static str,
    message: &'static str,
    retry_after_ms: Option<u64>,
) -> Response {
    let mut body = serde_json::json!({ "code": code, "message": message });
    if let Some(ms) = retry_after_ms {
        body["retry_after_ms"] = ms.into();
    }
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(ms) = retry_after_ms {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, ms.div_ceil(1000).max(1).into());
    }
    response
}

/// Counts and records a handshake refused for its token (`how` the client was told);
/// returns the message.
fn auth_failed(ctx: &SocketCtx, e: AuthError, ns: &str, how: &str) -> &'static str {
    ctx.counters.auth_failed(e.code());
    let message = match e {
        AuthError::TokenMissing => "no token in the handshake",
        AuthError::TokenInvalid => "the token does not verify",
        AuthError::TokenExpired => "the token has expired",
    };
    ctx.counters.errors.record(
        "handshake",
        e.code(),
        ns.to_owned(),
        &format!("{how}: {message}"),
    );
    message
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
fn find_token(
    auth: Option<&serde_json::Value>,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Option<String> {
    // An empty value counts as absent, so the search goes on to the next place.
    let from_auth = auth
        .and_then(|a| a.get("token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty());
    let from_header = || {
        headers
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
        form_urlencoded::parse(uri.query()?.as_bytes())
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
    let screened = req.extensions.get::<Screened>().and_then(Screened::take);
    let result = match screened {
        Some(identity) => Ok(identity),
        None => match find_token(auth.as_ref().ok(), &req.headers, &req.uri) {
            None => Err(AuthError::TokenMissing),
            Some(token) => ctx.verifier.verify_or_refresh(&token).await,
        },
    };
    let identity = match result {
        Ok(identity) => Arc::new(identity),
        Err(e) => {
            auth_failed(&ctx, e, s.ns(), "connect_error");
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
