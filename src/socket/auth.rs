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
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if let Some(t) = auth.and_then(|a| a.get("token")).and_then(|t| t.as_str()) {
        return non_empty(t);
    }
    let bearer = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    if let Some(t) = bearer {
        return non_empty(t);
    }
    let query = req.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .and_then(|(_, v)| non_empty(&v))
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
            tracing::debug!(sid = %s.id, code = e.code(), "handshake refused");
            Err(e)
        }
    }
}
