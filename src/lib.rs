//! Roomcast: a Socket.IO-compatible realtime server with JWT auth, tenant-scoped rooms,
//! typed events and an HTTP publish API.
//!
//! # Layout
//! - [`config`]: the whole configuration schema, defaults, env overrides, validation.
//! - [`auth`]: JWTs into an [`auth::Identity`] (sockets), API keys into an [`auth::Caller`] (HTTP).
//! - [`rooms`]: room names, tenant scoping and the access policy.
//! - [`events`]: one typed struct per event, routing (event → rooms) and the envelope.
//! - [`broadcaster`]: [`EventBroadcaster`], the single publish path.
//! - [`socket`]: the connect middleware and one file per client command.
//! - [`http`]: one file per endpoint group.
//! - [`metrics`]: process-wide counters.
//!
//! Data flows one way: a request (socket command or HTTP call) is authenticated into an
//! identity, validated into a typed value, routed by `rooms`, published by the broadcaster
//! and delivered by the socketioxide adapter.
//!
//! [`Roomcast`] assembles the axum `Router` and the Socket.IO layer from a [`Config`], so a
//! program (or a test) can run a full server in-process:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = roomcast::Config::default().with_fallbacks();
//! let server = roomcast::Roomcast::new(&config)?;
//! let broadcaster = server.broadcaster();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn(server.serve(listener, std::future::pending()));
//! broadcaster
//!     .broadcast_system_notification(roomcast::events::SystemNotification {
//!         title: "Deploy".into(),
//!         message: "v2 is live".into(),
//!         severity: None,
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod broadcaster;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod rooms;
pub mod socket;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use socketioxide::SocketIo;
use tokio::net::TcpListener;

pub use broadcaster::{EventBroadcaster, PublishError, Published};
pub use config::Config;

use auth::{ApiKeys, JwtVerifier};
use metrics::Counters;
use socket::{SocketCtx, SocketCtxInner};

/// A Roomcast server assembled from a [`Config`], ready to serve.
pub struct Roomcast {
    router: Router,
    broadcaster: EventBroadcaster,
    ready: Arc<AtomicBool>,
    io: SocketIo,
    node_id: Arc<str>,
}

impl Roomcast {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let node_id: Arc<str> = config
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()))
            .into();
        let counters = Arc::new(Counters::default());
        let verifier = JwtVerifier::from_config(&config.auth)?;
        let limits = &config.limits;
        let ctx = SocketCtx::new(SocketCtxInner {
            verifier,
            max_rooms: limits.max_rooms_per_socket,
            node_id: node_id.clone(),
            counters: counters.clone(),
        });
        let server = &config.server;
        let (layer, io) = SocketIo::builder()
            .ping_interval(Duration::from_millis(server.ping_interval_ms))
            .ping_timeout(Duration::from_millis(server.ping_timeout_ms))
            .connect_timeout(Duration::from_millis(server.connect_timeout_ms))
            .ws_max_message_size(limits.ws_max_message_bytes)
            .ws_max_frame_size(limits.ws_max_frame_bytes)
            .max_payload(limits.polling_max_payload_bytes)
            .max_buffer_size(limits.socket_buffer_packets)
            .with_state(ctx)
            .build_layer();
        socket::register(&io);

        let io_arc = Arc::new(io.clone());
        let broadcaster = EventBroadcaster::new(io_arc.clone(), counters.clone());
        let ready = Arc::new(AtomicBool::new(false));
        let state = http::AppState {
            api_keys: Arc::new(ApiKeys::from_config(&config.api_keys)),
            broadcaster: broadcaster.clone(),
            census: io_arc,
            counters,
            node_id: node_id.clone(),
            started: Instant::now(),
            ready: ready.clone(),
        };
        let router = http::router(state, limits.max_http_body_bytes).layer(layer);
        Ok(Self {
            router,
            broadcaster,
            ready,
            io,
            node_id,
        })
    }

    /// The axum router: the HTTP API with the Socket.IO layer, to mount in another app.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn broadcaster(&self) -> EventBroadcaster {
        self.broadcaster.clone()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Serves on `listener` until `shutdown` completes, then disconnects every socket and
    /// finishes in-flight requests. Installs [`EventBroadcaster::global`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.broadcaster.install_global();
        self.ready.store(true, Ordering::Relaxed);
        let ready = self.ready.clone();
        let io = self.io.clone();
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                ready.store(false, Ordering::Relaxed);
                io.close().await;
            })
            .await
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
