//! The handshake edge. [`screen_handshake`] decides, with engineioxide's own rule, whether
//! an HTTP request opens an Engine.IO session; such a request is counted before the
//! session exists (a place among the sessions not authenticated yet, then one handshake
//! from its client address's bucket) and answered `429` itself over either bound, so a
//! refused client costs nothing. The session keeps only what it needs of its request (the
//! token it brought, not its headers). The connect middleware then finds the token,
//! verifies it, takes a handshake from the user's bucket, counts the socket against the
//! connection limits and stores the [`Identity`] (and the counted [`Slot`]) on the socket.
//! A refusal there is a `connect_error` whose message is the [`Refusal`] code.
//!
//! An Engine.IO v3 session (socket.io-client 2.x) is different: socketioxide connects it to
//! `/` as the session opens and gives it no connect timeout, so a refused v3 session would
//! stay open for as long as its client keeps pinging. Its token can only come with the HTTP
//! request (header or query), so the screening verifies it there and answers a request
//! without a valid one itself: no session is created.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};

use socketioxide::TransportType;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::SocketCtx;
use crate::auth::{AuthError, Identity};
use crate::errors::Message;
use crate::limits::{LimitError, PendingGuard, Slot};
use crate::presence::Share;
use crate::services::Services;

/// Socket.IO's request path (socketioxide's default `req_path`, which Roomcast keeps).
const REQ_PATH: &str = "/socket.io";

/// A token longer than this, in the `Authorization` header or the query, is not kept with
/// the session: the handshake is refused `token_invalid` if it gets to that token.
pub(super) const MAX_REQUEST_TOKEN_BYTES: usize = 16 * 1024;

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

/// The token a session's request brought (`Authorization: Bearer`, else `?token=`): the
/// one thing of the request head the connect middleware reads.
#[derive(Clone)]
enum RequestToken {
    Found(Arc<str>),
    /// Longer than [`MAX_REQUEST_TOKEN_BYTES`].
    TooLong,
}

impl RequestToken {
    /// The first non-empty bearer token of the `Authorization` headers, else the first
    /// non-empty `token` of the query.
    fn find(headers: &http::HeaderMap, uri: &http::Uri) -> Option<Self> {
        let from_header = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .filter_map(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .find(|t| !t.is_empty())
            .map(std::borrow::Cow::Borrowed);
        let token = from_header.or_else(|| {
            form_urlencoded::parse(uri.query()?.as_bytes())
                .find(|(k, v)| k == "token" && !v.is_empty())
                .map(|(_, v)| v)
        })?;
        Some(if token.len() > MAX_REQUEST_TOKEN_BYTES {
            Self::TooLong
        } else {
            Self::Found(token.into())
        })
    }
}

/// What engineioxide does with a request, decided from its path, method and query with
/// engineioxide's own rule. `RequestInfo::parse` (engineioxide 0.17, `service/parser.rs`)
/// is crate-private, so this mirrors it exactly: the first segment starting `EIO=` (its
/// text up to the next `=`) is the version, `3` or `4`; the first segment starting `sid=`
/// is the session id (present, even unparsable, means "existing session": a bad one is
/// refused, never opens a session); the first `transport=` segment is `polling` or
/// `websocket` and must be offered; nothing is percent-decoded, so `%73id=` or a bare `sid`
/// is no sid. `dispatch_req` then opens a session for a GET without sid, and upgrades an
/// existing one for a websocket GET with a sid. The path test is engineioxide's
/// `is_req_path`.
#[derive(Debug, PartialEq, Eq)]
enum EioRequest<'a> {
    /// Opens a session: a first poll or a direct websocket.
    Opens {
        version: &'a str,
        transport: &'a str,
        /// `b64=` (Engine.IO v3): kept as it came.
        b64: Option<&'a str>,
    },
    /// Upgrades the session `sid` to a websocket: the request lives as long as the socket.
    Upgrade { version: &'a str, sid: &'a str },
    /// Anything else: a poll or post of a session, or a request engineioxide refuses.
    Other,
}

impl<'a> EioRequest<'a> {
    fn parse(
        path: &str,
        method: &http::Method,
        query: Option<&'a str>,
        offered: &[TransportType],
    ) -> Self {
        let on_path = path
            .strip_prefix(REQ_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        let Some(query) = query.filter(|_| on_path && method == http::Method::GET) else {
            return Self::Other;
        };
        let first = |prefix: &str| query.split('&').find(|s| s.starts_with(prefix));
        let Some(version) = first("EIO=")
            .and_then(|s| s.split('=').nth(1))
            .filter(|v| matches!(*v, "3" | "4"))
        else {
            return Self::Other;
        };
        let sid = query.split('&').find_map(|s| s.strip_prefix("sid="));
        let Some((transport, kind)) = first("transport=")
            .and_then(|s| s.split('=').nth(1))
            .and_then(|t| Some((t, t.parse::<TransportType>().ok()?)))
            .filter(|(_, kind)| offered.contains(kind))
        else {
            return Self::Other;
        };
        match (sid, kind) {
            (None, _) => Self::Opens {
                version,
                transport,
                b64: query.split('&').find_map(|s| s.strip_prefix("b64=")),
            },
            (Some(sid), TransportType::Websocket) => Self::Upgrade { version, sid },
            (Some(_), TransportType::Polling) => Self::Other,
        }
    }

    /// The smallest URI engineioxide reads the same way.
    fn minimal_uri(&self) -> Option<http::Uri> {
        let query = match self {
            Self::Opens {
                version,
                transport,
                b64,
            } => match b64 {
                Some(b64) => format!("EIO={version}&transport={transport}&b64={b64}"),
                None => format!("EIO={version}&transport={transport}"),
            },
            Self::Upgrade { version, sid } => {
                format!("EIO={version}&transport=websocket&sid={sid}")
            }
            Self::Other => return None,
        };
        http::Uri::try_from(format!("{REQ_PATH}/?{query}")).ok()
    }
}

/// HTTP middleware before the Socket.IO layer. A request that opens a new Engine.IO session
/// (see [`EioRequest`]) takes a place among the sessions not authenticated yet
/// (`limits.preauth_sessions_per_ip`, `preauth_sessions`) and one handshake from its client
/// address's bucket; over either it is answered `429` `{code, message, retry_after_ms?}`
/// and no session is created. An Engine.IO v3 request without a token that verifies is
/// answered `401` `{code, message}` with the `token_*` code. The session keeps a minimal
/// head: the URI engineioxide needs, the `Sec-WebSocket-Key` of a websocket, the token the
/// request brought and the [`PendingGuard`]; no other header, and not the peer address.
pub async fn screen_handshake(
    axum::extract::State(ctx): axum::extract::State<SocketCtx>,
    mut req: axum::extract::Request,
) -> Result<axum::extract::Request, Response> {
    if !req.uri().path().starts_with(REQ_PATH) {
        return Ok(req);
    }
    let peer = req
        .extensions_mut()
        .remove::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer);
    let route = EioRequest::parse(
        req.uri().path(),
        req.method(),
        req.uri().query(),
        &ctx.transports,
    );
    let direct_websocket = matches!(
        route,
        EioRequest::Opens {
            version: "4",
            transport: "websocket",
            b64: None
        }
    );
    let v3 = match route {
        EioRequest::Opens { version, .. } => version == "3",
        EioRequest::Upgrade { .. } => {
            let head = minimal_head(&req, route.minimal_uri(), None);
            return Ok(with_head(req, head));
        }
        EioRequest::Other => return Ok(req),
    };
    // Without the peer address (a router served without connect info) only the node's
    // bound applies.
    let ip = peer.map(|peer| ctx.services.limits.client_ip(peer.ip(), req.headers()));
    let guard = match ctx.services.limits.preauth(ip) {
        Ok(guard) => guard,
        Err(e) => {
            let which = match &e {
                LimitError::TooManyPreauth { which: "node", .. } => "preauth_node",
                _ => "preauth_ip",
            };
            ctx.services.counters.limited(which);
            tracing::debug!(ip = ?ip, limit = which, "handshake refused: too_many_preauth_sessions");
            return Err(refused(Message::PreauthSessions, None));
        }
    };
    if let Some(ip) = ip
        && let Err(e) = ctx.services.limits.handshake(ip)
    {
        ctx.services.counters.limited("handshakes_ip");
        tracing::debug!(%ip, "handshake over the address's budget: rate_limited");
        return Err(refused(
            Message::HandshakesFromAddress,
            Some(e.retry_after_ms()),
        ));
    }
    let token = RequestToken::find(req.headers(), req.uri());
    let mut screened = None;
    if v3 {
        let result = match &token {
            None => Err(AuthError::TokenMissing),
            Some(RequestToken::TooLong) => Err(AuthError::TokenInvalid),
            Some(RequestToken::Found(token)) => {
                ctx.services.verifier.verify_or_refresh(token).await
            }
        };
        match result {
            Ok(identity) => screened = Some(Screened(Arc::new(Mutex::new(Some(identity))))),
            Err(e) => {
                let message = auth_failed(&ctx.services, e, "/", "HTTP 401");
                tracing::debug!(ip = ?ip, code = e.code(), "Engine.IO v3 handshake refused");
                return Err(refused(message, None));
            }
        }
    }
    let uri = route.minimal_uri();
    if direct_websocket
        && ctx.lean
        && req.headers().contains_key(http::header::SEC_WEBSOCKET_KEY)
        && req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
    {
        // The lean path's layer, behind this one, serves it (`transport::sio`).
        let handshake = LeanHandshake {
            pending: Some(Arc::new(guard)),
            token,
        };
        req.extensions_mut().insert(handshake);
        return Ok(req);
    }
    let mut head = minimal_head(&req, uri, Some(Arc::new(guard)));
    head.extensions
        .insert(Arc::new(super::yjs::SessionDocuments::default()));
    if let Some(token) = token {
        head.extensions.insert(token);
    }
    if let Some(screened) = screened {
        head.extensions.insert(screened);
    }
    Ok(with_head(req, head))
}

/// The head a session keeps of `req`: `uri` (else a copy of the request's), the method and
/// version, only `Sec-WebSocket-Key` of the headers (engineioxide answers the upgrade with
/// it), and the extensions (hyper's upgrade among them) plus `guard`.
///
/// Besides what a client puts in its headers, this frees hyper's read buffer: hyper parses
/// a head in place, its values being slices of the connection's buffer (8 KiB or more), and
/// engineioxide keeps the head for the socket's whole life.
fn minimal_head(
    req: &axum::extract::Request,
    uri: Option<http::Uri>,
    guard: Option<Arc<PendingGuard>>,
) -> http::request::Parts {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = req.method().clone();
    head.version = req.version();
    head.uri = uri
        .or_else(|| http::Uri::try_from(req.uri().to_string()).ok())
        .unwrap_or_else(|| req.uri().clone());
    if let Some(key) = req.headers().get(http::header::SEC_WEBSOCKET_KEY)
        && let Ok(key) = http::HeaderValue::from_bytes(key.as_bytes())
    {
        head.headers.insert(http::header::SEC_WEBSOCKET_KEY, key);
    }
    if let Some(guard) = guard {
        head.extensions.insert(guard);
    }
    head
}

/// `req` with `head`, keeping the request's extensions (and its body).
fn with_head(
    req: axum::extract::Request,
    mut head: http::request::Parts,
) -> axum::extract::Request {
    let (old, body) = req.into_parts();
    let mut extensions = old.extensions;
    // axum keeps the URI as it came, too.
    if let Some(original) = extensions.get_mut::<axum::extract::OriginalUri>() {
        original.0 = head.uri.clone();
    }
    extensions.extend(std::mem::take(&mut head.extensions));
    head.extensions = extensions;
    axum::extract::Request::from_parts(head, body)
}

/// The HTTP answer to a refused handshake: `{code, message}` (and `retry_after_ms` with a
/// `Retry-After` header when waiting helps), the shape of Engine.IO's own error answers.
fn refused(message: Message, retry_after_ms: Option<u64>) -> Response {
    let code = message.code();
    let mut body = serde_json::json!({ "code": code.as_str(), "message": message.text() });
    if let Some(ms) = retry_after_ms {
        body["retry_after_ms"] = ms.into();
    }
    // Every code a handshake is refused with has its status in the table (a test checks).
    let status = code
        .status()
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(ms) = retry_after_ms {
        crate::errors::set_retry_after(response.headers_mut(), ms);
    }
    response
}

/// Counts and records a handshake refused for its token (`how` the client was told);
/// returns the message.
fn auth_failed(services: &Services, e: AuthError, ns: &str, how: &str) -> Message {
    services.counters.auth_failed(e.code());
    let message = e.handshake_message();
    // Anyone can send a bad token: counted apart, so it never pushes real errors out.
    services.counters.errors.refused(
        "handshake",
        e.code(),
        ns.to_owned(),
        &format!("{how}: {}", message.text()),
    );
    message
}

/// Why a handshake was refused; its `Display` is the `connect_error` message.
#[derive(Debug)]
pub(super) enum Refusal {
    Auth(AuthError),
    Limit(LimitError),
    /// A `/yjs|...` connect refused for its document (`invalid_document`, `forbidden`, ...).
    Document(crate::errors::Code),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auth(e) => f.write_str(e.code()),
            Self::Limit(e) => f.write_str(e.code()),
            Self::Document(code) => f.write_str(code.as_str()),
        }
    }
}

impl std::error::Error for Refusal {}

/// The token, from (in order) the handshake `auth.token`, `Authorization: Bearer`, `?token=`
/// (the last two as the screening kept them, see [`RequestToken`]).
fn find_token(
    auth: Option<&serde_json::Value>,
    from_request: Option<&RequestToken>,
) -> Result<Arc<str>, AuthError> {
    // An empty value counts as absent, so the search goes on to the next place.
    let from_auth = auth
        .and_then(|a| a.get("token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty());
    match (from_auth, from_request) {
        (Some(token), _) => Ok(token.into()),
        (None, Some(RequestToken::Found(token))) => Ok(token.clone()),
        (None, Some(RequestToken::TooLong)) => Err(AuthError::TokenInvalid),
        (None, None) => Err(AuthError::TokenMissing),
    }
}

pub(super) async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(auth): TryData<serde_json::Value>,
) -> Result<(), Refusal> {
    let (identity, slot) = admit(&s, &ctx, auth.as_ref().ok()).await?;
    store_identity(&s, identity, slot);
    s.extensions.insert(Arc::new(Share::default()));
    // Here, not in the connect handler: socketioxide sends the CONNECT answer before it
    // spawns the connect handler, so a command the client sends at once could otherwise
    // arrive before any handler exists and be dropped without an answer.
    super::register_commands(&s);
    Ok(())
}

/// What every namespace's connect does first: the token verified into an [`Identity`], a
/// handshake taken from the user's bucket (once per session) and a connection slot
/// counted. The session stops being pre-auth only in [`store_identity`], once every other
/// check of the namespace passed too.
pub(super) async fn admit<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    auth: Option<&serde_json::Value>,
) -> Result<(Arc<Identity>, Slot), Refusal> {
    let req = s.req_parts();
    let screened = req.extensions.get::<Screened>().and_then(Screened::take);
    let session = Session {
        pending: req.extensions.get::<Arc<PendingGuard>>(),
        token: req.extensions.get::<RequestToken>(),
    };
    session
        .admit(&ctx.services, s.ns(), &s.id, screened, auth)
        .await
}

/// What a session's request left for its namespace connects to read.
struct Session<'a> {
    pending: Option<&'a Arc<PendingGuard>>,
    token: Option<&'a RequestToken>,
}

impl Session<'_> {
    /// [`admit`] for a connect to `ns` of this session (`sid` for the logs).
    async fn admit(
        &self,
        services: &Services,
        ns: &str,
        sid: &(dyn std::fmt::Display + Sync),
        screened: Option<Identity>,
        auth: Option<&serde_json::Value>,
    ) -> Result<(Arc<Identity>, Slot), Refusal> {
        let result = match screened {
            Some(identity) => Ok(identity),
            None => match find_token(auth, self.token) {
                Err(e) => Err(e),
                Ok(token) => services.verifier.verify_or_refresh(&token).await,
            },
        };
        let identity = match result {
            Ok(identity) => Arc::new(identity),
            Err(e) => {
                auth_failed(services, e, ns, "connect_error");
                tracing::debug!(%sid, code = e.code(), "handshake refused");
                return Err(Refusal::Auth(e));
            }
        };
        // Once per session: a second namespace of a session already accepted is not a new
        // handshake.
        if !self.pending.is_some_and(|p| p.accepted())
            && let Err(e) = services.limits.user_handshake(&identity)
        {
            services.counters.limited("handshakes_user");
            tracing::debug!(
                %sid,
                user_id = %identity.user_id,
                tenant = %identity.tenant,
                "handshake over the user's budget: rate_limited"
            );
            return Err(Refusal::Limit(e));
        }
        let slot: Slot = match services.limits.connections.admit(&identity) {
            Ok(slot) => slot,
            Err(e) => {
                if let LimitError::TooManyConnections { which, .. } = &e {
                    services.counters.limited(match *which {
                        "node" => "connections_node",
                        "tenant" => "connections_tenant",
                        _ => "connections_user",
                    });
                    tracing::debug!(
                        %sid,
                        user_id = %identity.user_id,
                        tenant = %identity.tenant,
                        limit = which,
                        "handshake refused: too_many_connections"
                    );
                }
                return Err(Refusal::Limit(e));
            }
        };
        Ok((identity, slot))
    }
}

/// A direct Socket.IO websocket the screening passed to the lean path
/// ([`crate::transport::sio`]): what its session keeps of the request (the pre-auth place,
/// the token it brought) until a namespace connect is admitted with it.
#[derive(Clone)]
pub struct LeanHandshake {
    pending: Option<Arc<PendingGuard>>,
    token: Option<RequestToken>,
}

impl LeanHandshake {
    /// Admits a connect to `ns` as the connect middleware does; the `connect_error` message
    /// when refused. Once admitted the session is no longer pre-auth.
    pub async fn admit(
        &self,
        services: &Services,
        ns: &str,
        auth: Option<&serde_json::Value>,
    ) -> Result<(Arc<Identity>, Slot), String> {
        let session = Session {
            pending: self.pending.as_ref(),
            token: self.token.as_ref(),
        };
        let admitted = session
            .admit(services, ns, &"lean", None, auth)
            .await
            .map_err(|refusal| refusal.to_string())?;
        if let Some(pending) = &self.pending {
            pending.accept();
        }
        Ok(admitted)
    }
}

/// The socket is accepted: its span, identity and slot go on it, and its session is no
/// longer pre-auth.
pub(super) fn store_identity<A: Adapter>(s: &SocketRef<A>, identity: Arc<Identity>, slot: Slot) {
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
    if let Some(pending) = s.req_parts().extensions.get::<Arc<PendingGuard>>() {
        pending.accept();
    }
    s.extensions.insert(Arc::new(slot));
    s.extensions.insert(identity);
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [TransportType; 2] = [TransportType::Polling, TransportType::Websocket];

    fn parse<'a>(path: &str, query: &'a str) -> EioRequest<'a> {
        EioRequest::parse(path, &http::Method::GET, Some(query), &BOTH)
    }

    #[test]
    fn what_engineioxide_takes_for_no_sid_opens_a_session() {
        let poll = "EIO=4&transport=polling";
        for query in [
            poll.to_owned(),
            format!("{poll}&sid"),
            format!("{poll}&s%69d=x"),
            format!("{poll}&%73id"),
            format!("{poll}&%73id=AAAAAAAAAAAAAAHs"),
            format!("{poll}&SID=AAAAAAAAAAAAAAHs"),
            format!("{poll}&xsid=AAAAAAAAAAAAAAHs"),
            format!("t=1&{poll}&token=abc"),
        ] {
            assert!(
                matches!(parse("/socket.io/", &query), EioRequest::Opens { .. }),
                "{query}"
            );
        }
        assert!(matches!(
            parse("/socket.io", "EIO=4&transport=websocket"),
            EioRequest::Opens { .. }
        ));
    }

    #[test]
    fn a_sid_even_unparsable_is_an_existing_session() {
        for query in [
            "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAHs",
            "EIO=4&transport=polling&sid=",
            "EIO=4&transport=polling&sid=garbage",
            "sid=x&EIO=4&transport=polling",
        ] {
            assert_eq!(parse("/socket.io/", query), EioRequest::Other, "{query}");
        }
        assert_eq!(
            parse(
                "/socket.io/",
                "EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAHs"
            ),
            EioRequest::Upgrade {
                version: "4",
                sid: "AAAAAAAAAAAAAAHs"
            }
        );
    }

    #[test]
    fn requests_engineioxide_refuses_open_nothing() {
        for (path, query) in [
            ("/socket.io/", "EIO=2&transport=polling"),
            ("/socket.io/", "EIO=4&transport=grpc"),
            ("/socket.io/", "EIO=4"),
            ("/socket.io/", "transport=polling"),
            ("/socket.iox/", "EIO=4&transport=polling"),
            ("/api/socket.io/", "EIO=4&transport=polling"),
        ] {
            assert_eq!(parse(path, query), EioRequest::Other, "{path}?{query}");
        }
        let post = EioRequest::parse(
            "/socket.io/",
            &http::Method::POST,
            Some("EIO=4&transport=polling"),
            &BOTH,
        );
        assert_eq!(post, EioRequest::Other);
        let not_offered = EioRequest::parse(
            "/socket.io/",
            &http::Method::GET,
            Some("EIO=4&transport=polling"),
            &[TransportType::Websocket],
        );
        assert_eq!(not_offered, EioRequest::Other);
    }

    #[test]
    fn the_minimal_uri_reads_the_same() {
        for query in [
            "EIO=4&transport=polling&t=abc&token=x.y.z&pad=aaaaaaaaaaaaaaaa",
            "EIO=3=9&transport=polling&b64=1",
            "EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAHs&j=1",
        ] {
            let route = parse("/socket.io/deep/path", query);
            let uri = route.minimal_uri().expect("a URI");
            assert_eq!(parse(uri.path(), uri.query().unwrap()), route, "{uri}");
            assert!(!uri.to_string().contains("token"), "{uri}");
        }
    }

    /// Pins the HTTP refusals of a handshake as the client sees them.
    #[tokio::test]
    async fn refusals_answer_with_the_code_status_and_wait() {
        async fn answer(response: Response) -> (u16, Option<String>, serde_json::Value) {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            (status, retry_after, serde_json::from_slice(&body).unwrap())
        }
        use serde_json::json;
        assert_eq!(
            answer(refused(Message::PreauthSessions, None)).await,
            (
                429,
                None,
                json!({"code": "too_many_preauth_sessions", "message": "too many sessions waiting to authenticate"})
            )
        );
        assert_eq!(
            answer(refused(Message::HandshakesFromAddress, Some(1500))).await,
            (
                429,
                Some("2".to_owned()),
                json!({"code": "rate_limited", "message": "too many handshakes from this address", "retry_after_ms": 1500})
            )
        );
        for (e, code, message) in [
            (
                AuthError::TokenMissing,
                "token_missing",
                "no token in the handshake",
            ),
            (
                AuthError::TokenInvalid,
                "token_invalid",
                "the token does not verify",
            ),
            (
                AuthError::TokenExpired,
                "token_expired",
                "the token has expired",
            ),
        ] {
            assert_eq!(
                answer(refused(e.handshake_message(), None)).await,
                (401, None, json!({"code": code, "message": message}))
            );
            assert_eq!(e.to_string(), code, "the connect_error message");
        }
    }

    #[test]
    fn the_request_token_is_the_header_then_the_query_and_is_bounded() {
        let uri: http::Uri = "/socket.io/?EIO=4&transport=polling&token=q%2Bq"
            .parse()
            .unwrap();
        let mut headers = http::HeaderMap::new();
        let found = |h: &http::HeaderMap| match RequestToken::find(h, &uri) {
            Some(RequestToken::Found(t)) => t.to_string(),
            Some(RequestToken::TooLong) => "too long".into(),
            None => "none".into(),
        };
        assert_eq!(found(&headers), "q+q");
        headers.append(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        headers.append(
            http::header::AUTHORIZATION,
            "bearer  h.h.h ".parse().unwrap(),
        );
        assert_eq!(found(&headers), "h.h.h");
        let long = "a".repeat(MAX_REQUEST_TOKEN_BYTES + 1);
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {long}").parse().unwrap(),
        );
        assert_eq!(found(&headers), "too long");
        assert!(matches!(
            find_token(None, RequestToken::find(&headers, &uri).as_ref()),
            Err(AuthError::TokenInvalid)
        ));
        let auth = serde_json::json!({ "token": "p.p.p" });
        assert_eq!(
            find_token(Some(&auth), RequestToken::find(&headers, &uri).as_ref())
                .ok()
                .as_deref(),
            Some("p.p.p")
        );
    }
}
