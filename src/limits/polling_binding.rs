//! `limits.bind_polling_to_address`: a long-polling session answers only the client address
//! that opened it.
//!
//! A polling client proves who it is with nothing but the `sid` in its query, so whoever
//! learns a sid (a log, a proxy, a browser extension) can read and write that session. With
//! the binding on, this middleware learns each polling session's address from the answer
//! that opens it (`0{"sid":…}`) and refuses a later request carrying that sid from another
//! address with `403` and Engine.IO's `{"code":4,"message":"Forbidden"}`, which a client
//! sees as a transport error. A session that moved to websocket is no longer polled: its
//! entry is dropped once unused for the heartbeat's length, after which engineioxide itself
//! refuses polling for it.
//!
//! The address is the one the handshake limit uses (the peer, or `X-Forwarded-For` from a
//! trusted proxy), so clients behind a changing proxy chain or mobile networks that switch
//! address mid-session are cut off: hence off by default.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip;
use crate::config::IpRange;

/// The opening answer is a few hundred bytes; more is not an open packet.
const OPEN_ANSWER_MAX: usize = 64 * 1024;

/// Polling sessions and the address each was opened from.
#[derive(Clone)]
pub struct PollingBinding {
    inner: Arc<Inner>,
}

struct Inner {
    trusted: Vec<IpRange>,
    /// An entry unused this long is dropped: engineioxide has closed a polling session that
    /// was not polled within its heartbeat (interval + timeout).
    idle: Duration,
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    by_sid: HashMap<String, (IpAddr, Instant)>,
    swept: Option<Instant>,
}

impl PollingBinding {
    pub fn new(trusted: Vec<IpRange>, idle: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                trusted,
                idle,
                sessions: Mutex::default(),
            }),
        }
    }

    /// Records `sid` as opened by `ip`; drops idle entries now and then.
    fn bind(&self, sid: String, ip: IpAddr) {
        let now = Instant::now();
        let Ok(mut s) = self.inner.sessions.lock() else {
            return;
        };
        if s.swept
            .is_none_or(|at| now.duration_since(at) >= self.inner.idle / 4)
        {
            let idle = self.inner.idle;
            s.by_sid
                .retain(|_, (_, used)| now.duration_since(*used) < idle);
            s.swept = Some(now);
        }
        s.by_sid.insert(sid, (ip, now));
    }

    /// Whether `ip` may use `sid`: yes for its own sessions and for sids not bound here.
    fn allows(&self, sid: &str, ip: IpAddr) -> bool {
        let now = Instant::now();
        let Ok(mut s) = self.inner.sessions.lock() else {
            return true;
        };
        match s.by_sid.get_mut(sid) {
            Some((owner, used)) if now.duration_since(*used) < self.inner.idle => {
                if *owner != ip {
                    return false;
                }
                *used = now;
                true
            }
            Some(_) => {
                s.by_sid.remove(sid);
                true
            }
            None => true,
        }
    }
}

/// The query fields engineioxide routes by, parsed as it parses them (first `sid=` and
/// `transport=` segment, no percent-decoding), so this sees the session it will see.
pub(crate) fn query_field<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|s| s.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

/// The sid in an Engine.IO open packet (`0{"sid":"…",…}`, also length-prefixed for v3).
fn opened_sid(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"sid\":\"")? + "\"sid\":\"".len();
    let len = text[start..].find('"')?;
    Some(text[start..start + len].to_owned())
}

pub async fn bind_polling_to_address(
    State(binding): State<PollingBinding>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/socket.io") {
        return next.run(request).await;
    }
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return next.run(request).await;
    };
    let ip = client_ip::resolve(peer.ip(), request.headers(), &binding.inner.trusted);
    let query = request.uri().query().unwrap_or_default();
    if let Some(sid) = query_field(query, "sid") {
        if !binding.allows(sid, ip) {
            tracing::debug!(%ip, "polling session used from another address: refused");
            return forbidden();
        }
        return next.run(request).await;
    }
    if query_field(query, "transport") != Some("polling") {
        return next.run(request).await;
    }
    // A polling open: read the answer for the sid it gives out.
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, OPEN_ANSWER_MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(sid) = opened_sid(&bytes) {
        binding.bind(sid, ip);
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"code":4,"message":"Forbidden"}"#,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_engineioxide_reads_them() {
        let q = "EIO=4&transport=polling&sid=abc&sid=def";
        assert_eq!(query_field(q, "sid"), Some("abc"));
        assert_eq!(query_field(q, "transport"), Some("polling"));
        assert_eq!(query_field("EIO=4&s%69d=x&sidx=1", "sid"), None);
        assert_eq!(
            opened_sid(br#"0{"sid":"AbCdEfGh12345678","upgrades":[]}"#).as_deref(),
            Some("AbCdEfGh12345678")
        );
        assert_eq!(opened_sid(b"96:0{\"sid\":\"x\"}").as_deref(), Some("x"));
    }

    #[test]
    fn a_session_answers_its_own_address_only() {
        let b = PollingBinding::new(Vec::new(), Duration::from_secs(60));
        let (a, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        b.bind("s1".into(), a);
        assert!(b.allows("s1", a));
        assert!(!b.allows("s1", other));
        assert!(b.allows("unknown", other));
    }
}
