//! The accept loop: each admitted connection is served by hyper's HTTP/1 (with upgrades,
//! for websockets) in its own task, with a cap on the request head and the
//! [`Activity`] timeouts. axum's `serve` does the same but exposes none of these settings.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::InFlight;
use super::{Activity, Admission, Admitted, Connections};
use crate::config::Config;
use crate::http::ApiError;
use crate::limits::polling_binding::query_field;
use crate::metrics::Counters;

/// How long a connection on the descriptor reserve may take to send its one request.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection stays open once the drain has begun before hyper's graceful
/// shutdown ends it (after the request under way, if any). A polling client is between two
/// requests for a moment only; closing its idle keep-alive connection at once left
/// `server.shutdown` in its session's queue, and its next poll found the connection closed
/// and the listener gone: it never heard the notice.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long a long poll may wait once the drain has begun. `server.shutdown` ends the polls
/// waiting when it is sent; a poll that comes after (the client fetched the notice and polls
/// again) would wait for a packet that never comes, holding the drain until the ping
/// timeout. It is answered with an Engine.IO noop and `Connection: close` instead: the
/// client polls again, finds the listener closed, and reconnects as after a dropped
/// transport.
const DRAIN_POLL_CUT: Duration = Duration::from_millis(500);

/// The per-connection settings, from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `limits.max_request_header_bytes`: a larger request line + headers is answered 431.
    pub max_header_bytes: usize,
    /// `server.header_read_timeout_ms`, from a head's first byte.
    pub header_read_timeout: Duration,
    /// `server.idle_timeout_ms`: no request under way, nothing received.
    pub idle_timeout: Duration,
    /// `server.write_timeout_ms`: a write the client takes nothing of for this long fails.
    pub write_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_header_bytes: config.limits.max_request_header_bytes,
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
            write_timeout: Duration::from_millis(config.server.write_timeout_ms),
        }
    }
}

/// Serves a router on a listener (see [`Server::run`]).
pub struct Server {
    pub settings: Settings,
    pub admission: Arc<Admission>,
    pub connections: Connections,
    pub counters: Arc<Counters>,
}

impl Server {
    /// Serves `app` on `listener` until `signal` completes. Then the listener is closed, each
    /// connection finishes the request under way (its keep-alive is turned off), and this
    /// resolves once every HTTP connection has ended. Upgraded connections are not waited
    /// for: they end through [`Connections::sever`].
    pub async fn run(
        self,
        listener: TcpListener,
        app: Router,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                signal.await;
                stop.cancel();
            }
        });
        let tasks = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE and the like: the reserve should keep this from happening;
                    // retry after a pause rather than spin.
                    tracing::error!("accept failed: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            let (ticket, health_only) = match self.admission.admit(peer.ip()) {
                Admitted::Full(ticket) => (ticket, false),
                Admitted::HealthOnly(ticket) => (ticket, true),
                Admitted::Refused(refusal) => {
                    self.counters.limited(refusal.limit());
                    tracing::debug!(%peer, limit = refusal.limit(), "connection refused");
                    continue; // `tcp` closes here, holding no descriptor
                }
            };
            // Small frames (the handshake's answer, then `connection.established`) must not
            // wait for the client's delayed ACK: without TCP_NODELAY a connect costs ~40 ms.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
            let activity = Arc::new(Activity::default());
            let conn =
                self.connections
                    .conn(tcp, ticket, activity.clone(), self.settings.write_timeout);
            let mut settings = self.settings.clone();
            if health_only {
                settings.idle_timeout = settings.idle_timeout.min(RESERVE_TIMEOUT);
                settings.header_read_timeout = settings.header_read_timeout.min(RESERVE_TIMEOUT);
            }
            let service = Service {
                app: app.clone(),
                peer,
                activity: activity.clone(),
                health_only,
                counters: self.counters.clone(),
                draining: stop.clone(),
            };
            tasks.spawn(serve_connection(
                conn,
                service,
                activity,
                settings,
                stop.clone(),
            ));
        }
        // The listener closes now: new clients are refused by the kernel, not queued.
        drop(listener);
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

/// Drives one connection until it closes, is upgraded (the websocket goes on without this
/// task), times out, or finishes its request after the drain began.
async fn serve_connection(
    conn: super::Conn,
    service: Service,
    activity: Arc<Activity>,
    settings: Settings,
    stop: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_header_size(settings.max_header_bytes)
        // Ours (`Activity`) tells idle time from a slow head; hyper's would need a timer.
        .header_read_timeout(None)
        .keep_alive(!service.health_only);
    let conn = http
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    let grace_over = async {
        stop.cancelled().await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::pin!(grace_over);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!("connection ended: {e}");
                }
                break;
            }
            _ = &mut grace_over, if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.expired(settings.idle_timeout, settings.header_read_timeout) => {
                tracing::trace!("connection timed out with no request under way");
                break; // dropping it closes it, lingering
            }
        }
    }
}

/// One connection's hyper service: the router, with the peer's address for the handshake
/// limit, and each request counted as under way until its response has been written.
#[derive(Clone)]
struct Service {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// On the descriptor reserve: `/health` and `/ready` only.
    health_only: bool,
    counters: Arc<Counters>,
    /// Cancelled when the drain begins.
    draining: CancellationToken,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request();
        if self.health_only && !is_health_check(&req) {
            self.counters.limited("descriptors");
            let response = ApiError::ServerBusy.into_response();
            return Box::pin(async move { Ok(Tracked::wrap(response, in_flight)) });
        }
        let has_body = !http_body::Body::is_end_stream(req.body());
        let long_poll = long_poll_noop(&req);
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let app = self.app.clone();
        let draining = self.draining.clone();
        Box::pin(async move {
            let answer = tower::ServiceExt::oneshot(app, req);
            let mut response = if let Some(noop) = long_poll {
                tokio::select! {
                    response = answer => response?,
                    () = cut_in_drain(draining) => drain_noop(noop),
                }
            } else {
                answer.await?
            };
            // A refusal (401, 429, …) is often answered before the body is read; hyper then
            // closes the connection once the response is written, when the rest of the body
            // has not arrived yet, without saying so. A keep-alive client that reuses it in
            // that moment sees its next request fail ("closed without response"). Saying
            // `Connection: close` makes the client open a new connection instead.
            if has_body
                && (response.status().is_client_error() || response.status().is_server_error())
            {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(Tracked::wrap(response, in_flight))
        })
    }
}

/// An Engine.IO polling `GET` of an open session, which waits until the session has packets:
/// the noop packet that ends it in its protocol version (v3 payloads are length-prefixed).
fn long_poll_noop<B>(req: &Request<B>) -> Option<&'static str> {
    let query = req.uri().query().unwrap_or_default();
    let is_poll = *req.method() == Method::GET
        && req.uri().path().starts_with("/socket.io")
        && query_field(query, "sid").is_some()
        && query_field(query, "transport") == Some("polling");
    match query_field(query, "EIO") {
        _ if !is_poll => None,
        Some("3") => Some("1:6"),
        _ => Some("6"),
    }
}

/// Resolves [`DRAIN_POLL_CUT`] after the drain began.
async fn cut_in_drain(draining: CancellationToken) {
    draining.cancelled().await;
    tokio::time::sleep(DRAIN_POLL_CUT).await;
}

/// A long poll's answer during the drain: an Engine.IO noop packet, and no keep-alive.
fn drain_noop(body: &'static str) -> axum::response::Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=UTF-8"),
            (http::header::CONNECTION, "close"),
        ],
        body,
    )
        .into_response()
}

fn is_health_check<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && matches!(req.uri().path(), "/health" | "/ready")
}

/// A response body that keeps its request counted as under way until hyper has written it
/// to the end (or given up) and dropped it.
pub struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Tracked {
    fn wrap(response: axum::response::Response, in_flight: InFlight) -> Response<Tracked> {
        response.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Errors of one connection that `accept` reports: the next accept is unaffected.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
