//! Nothing CORS for an origin that is not allowed.
//!
//! tower-http's `CorsLayer` withholds `Access-Control-Allow-Origin` from an origin that is
//! not listed, but still answers it with the other `Access-Control-*` headers: the allowed
//! methods, headers and max age on a preflight, the exposed headers on any other request.
//! They tell a stranger what the API accepts, and no browser needs them. This middleware,
//! outside the `CorsLayer`, removes every `Access-Control-*` header from an answer to a
//! request whose `Origin` is not listed (or that has none).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The configured `server.cors_origins`, as they arrive in an `Origin` header.
#[derive(Clone)]
pub struct AllowedOrigins(Arc<[HeaderValue]>);

impl AllowedOrigins {
    /// `None` when no origin is listed (then no CORS layer runs at all).
    pub fn new(origins: &[String]) -> Option<Self> {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        (!list.is_empty()).then(|| Self(list.into()))
    }

    fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        origin.is_some_and(|o| self.0.contains(o))
    }
}

/// Strips `Access-Control-*` from answers to origins that are not allowed.
pub async fn only_allowed_origins(
    State(allowed): State<AllowedOrigins>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = allowed.allows(request.headers().get(header::ORIGIN));
    let mut response = next.run(request).await;
    if !allowed {
        let cors: Vec<HeaderName> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            response.headers_mut().remove(name);
        }
    }
    response
}
