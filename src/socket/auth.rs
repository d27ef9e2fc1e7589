//! The connect middleware: finds the token, verifies it and stores the [`Identity`] on the
//! socket. A refusal is a `connect_error` whose message is the [`AuthError`] code.

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::SocketCtx;
use crate::auth::AuthError;
use crate::metrics::Counters;

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
) -> Result<(), AuthError> {
    let result = match find_token(auth.as_ref().ok(), s.req_parts()) {
        None => Err(AuthError::TokenMissing),
        Some(token) => ctx.verifier.verify(&token),
    };
    match result {
        Ok(identity) => {
            s.extensions.insert(Arc::new(identity));
            Ok(())
        }
        Err(e) => {
            Counters::incr(&ctx.counters.auth_failures, 1);
            let message = match e {
                AuthError::TokenMissing => "connect_error: no token in the handshake",
                AuthError::TokenInvalid => "connect_error: the token does not verify",
                AuthError::TokenExpired => "connect_error: the token has expired",
            };
            ctx.counters
                .errors
                .record("handshake", e.code(), s.ns().to_owned(), message);
            tracing::debug!(sid = %s.id, code = e.code(), "handshake refused");
            Err(e)
        }
    }
}
