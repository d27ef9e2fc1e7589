//! Roomcast: a Socket.IO-compatible realtime server with JWT auth, tenant-scoped rooms,
//! typed events and an HTTP publish API.
//!
//! # Layout
//! - [`config`]: the whole configuration schema, defaults, env overrides, validation.
//! - [`auth`]: JWTs into an [`auth::Identity`] (sockets), API keys into an [`auth::Caller`] (HTTP).
//! - [`rooms`]: room names, tenant scoping and the access policy.
//! - [`events`]: one typed struct per event, routing (event → rooms) and the envelope.
//! - [`broadcaster`]: [`EventBroadcaster`], the single publish path.
//! - [`github`]: GitHub webhook signatures and payloads → `pr.*` / `issue.*` events.
//! - [`ingest`]: durable ingest from a Redis stream (a consumer group over all nodes).
//! - [`socket`]: the connect middleware and one file per client command.
//! - [`tcp`]: the accepted connections: closed lingering (no RST), severed at the end of a
//!   drain so clients see a dropped transport.
//! - [`presence`]: who is in which room, `presence.joined` / `presence.left`.
//! - [`cluster`]: many nodes on one Redis: the adapter's driver, heartbeats, shared presence.
//! - [`http`]: one file per endpoint group, and the `/debug` and `/admin` pages (assets in
//!   `clients/web/`, embedded in the binary).
//! - [`limits`]: connection limits and token buckets (handshakes, events, publishes).
//! - [`memory`]: gives freed heap back to the OS after many sockets have left.
//! - [`metrics`]: counters for stats and `GET /metrics`, events per second by type, recent
//!   errors.
//! - `fuzzing`: the bodies of the `cargo fuzz` targets in `fuzz/`, also run by `cargo test`.
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
//! let server = roomcast::Roomcast::new(&config).await?;
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
pub mod cluster;
pub mod config;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod github;
pub mod history;
pub mod http;
pub mod idempotency;
pub mod ingest;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod presence;
pub mod rooms;
pub mod socket;
pub mod tcp;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use socketioxide::adapter::Adapter;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};
use socketioxide_core::adapter::{DefinedAdapter, Spawnable};
use tokio::net::TcpListener;

pub use broadcaster::{EventBroadcaster, PublishError, Published};
pub use config::Config;

use auth::{ApiKeys, JwtVerifier};
use cluster::Cluster;
use config::Transport;
use metrics::Counters;
use presence::{MemoryStore, Presence, PresenceQueue, PresenceStore};
use socket::lifetime::Lifetimes;
use socket::{Hub, SocketCtx, SocketCtxInner};

/// A Roomcast server assembled from a [`Config`], ready to serve.
pub struct Roomcast {
    router: Router,
    broadcaster: EventBroadcaster,
    ready: Arc<AtomicBool>,
    hub: Arc<dyn Hub>,
    cluster: Option<Arc<Cluster>>,
    node_id: Arc<str>,
    shutdown_timeout: Duration,
    reconnect_after_ms: u64,
    /// Turned true at the start of a drain: the stream ingest stops taking entries.
    stop_ingest: tokio::sync::watch::Sender<bool>,
}

/// What [`Roomcast::assemble`] needs besides the Socket.IO layer.
struct Parts {
    config: Config,
    node_id: Arc<str>,
    counters: Arc<Counters>,
    presence: Presence,
    queue: PresenceQueue,
    presence_store: Arc<dyn PresenceStore>,
    lifetimes: Arc<Lifetimes>,
    history: history::HistoryStore,
    cluster: Option<Arc<Cluster>>,
    limits: Arc<limits::Limits>,
    /// For the HTTP screening of handshakes in front of Socket.IO.
    socket_ctx: SocketCtx,
}

impl Roomcast {
    /// Builds the server. In cluster mode this does not wait for Redis: the node starts,
    /// reports `/ready` 503 and joins the cluster when Redis answers.
    pub async fn new(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let node_id: Arc<str> = config
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()))
            .into();
        let cluster = match &config.cluster.redis_url {
            Some(url) => Some(Arc::new(Cluster::new(&config.cluster, url, &node_id)?)),
            None => None,
        };
        let presence_store: Arc<dyn PresenceStore> = match &cluster {
            Some(c) => c.store.clone(),
            None => Arc::new(MemoryStore::default()),
        };
        let (presence, queue) = Presence::new();
        let history = match &cluster {
            Some(c) => history::HistoryStore::Redis(Arc::new(c.history(config.history.clone()))),
            None => history::HistoryStore::Memory(Arc::new(history::History::new(
                config.history.clone(),
            ))),
        };
        let counters = Arc::new(Counters::default());
        let limits = Arc::new(limits::Limits::new(&config.limits));
        let lifetimes = Arc::new(Lifetimes::new(
            config.auth.expiry_warning_secs,
            config.auth.leeway_secs,
        ));
        let mut verifier = JwtVerifier::from_config(&config.auth)?;
        if let Some(jwks) = auth::Jwks::from_config(&config.auth) {
            jwks.load().await?;
            verifier = verifier.with_jwks_source(jwks.clone());
            tokio::spawn(jwks.run());
        }
        let ctx = SocketCtx::new(SocketCtxInner {
            verifier,
            max_rooms: config.limits.max_rooms_per_socket,
            node_id: node_id.clone(),
            counters: counters.clone(),
            presence: presence.clone(),
            presence_store: presence_store.clone(),
            lifetimes: lifetimes.clone(),
            history: history.clone(),
            limits: limits.clone(),
            parser: config.server.parser,
        });
        let builder = socketio_builder(config).with_state(ctx.clone());
        let parts = Parts {
            config: config.clone(),
            node_id,
            counters,
            presence,
            queue,
            presence_store,
            lifetimes,
            history,
            cluster: cluster.clone(),
            limits,
            socket_ctx: ctx,
        };
        match &cluster {
            Some(c) => {
                let (layer, io) = builder
                    .with_adapter::<socketioxide_redis::CustomRedisAdapter<_, cluster::driver::ResilientDriver>>(
                        c.adapter(),
                    )
                    .build_layer();
                Self::assemble(layer, io, parts)
            }
            None => {
                let (layer, io) = builder.build_layer();
                Self::assemble(layer, io, parts)
            }
        }
    }

    /// Everything past the adapter choice: one code path for a single node and a cluster.
    fn assemble<A: Adapter + DefinedAdapter>(
        layer: SocketIoLayer<A>,
        io: SocketIo<A>,
        p: Parts,
    ) -> anyhow::Result<Self> {
        for init in socket::register(&io) {
            init.spawn();
        }
        tokio::spawn(socket::lifetime::run(io.clone(), p.lifetimes));
        tokio::spawn(p.limits.clone().run_sweeper());
        tokio::spawn(memory::run_trimmer());
        let io = Arc::new(socket::Sockets::new(io, p.config.server.parser));
        let status = p.cluster.as_ref().map(|c| c.status.clone());
        let window = Duration::from_secs(p.config.publish.idempotency_window_secs);
        let idempotency: Arc<dyn idempotency::IdempotencyStore> = match &p.cluster {
            Some(c) => Arc::new(c.idempotency(window)),
            None => Arc::new(idempotency::MemoryIdempotency::new(window)),
        };
        match (&p.history, &p.cluster) {
            (history::HistoryStore::Memory(history), _) => {
                tokio::spawn(history.clone().run_sweeper());
            }
            (history::HistoryStore::Redis(history), Some(cluster)) => {
                tokio::spawn(history::redis::deliver_loop(
                    history.clone(),
                    cluster.numbered_events(history),
                    io.clone(),
                    p.counters.clone(),
                ));
            }
            (history::HistoryStore::Redis(_), None) => {}
        }
        let broadcaster = EventBroadcaster::new(
            io.clone(),
            p.counters.clone(),
            status,
            idempotency,
            p.history.clone(),
        );
        let announcer = presence::Announcer {
            store: p.presence_store.clone(),
            broadcaster: broadcaster.clone(),
            grace: Duration::from_secs(p.config.cluster.presence_grace_secs),
            max_users: p.config.limits.presence_announce_max_users,
        };
        Presence::start(p.queue, announcer.clone());
        if let Some(cluster) = &p.cluster {
            tokio::spawn(
                cluster
                    .clone()
                    .run(io.clone(), p.presence.clone(), announcer),
            );
        }
        let (stop_ingest, ingest_stopped) = tokio::sync::watch::channel(false);
        if let (Some(ingest), Some(url)) =
            (&p.config.ingest.redis_streams, p.config.ingest_redis_url())
        {
            let consumer =
                ingest::StreamIngest::new(ingest.clone(), url, &p.node_id, broadcaster.clone())?;
            tokio::spawn(consumer.run(ingest_stopped));
        }
        let ready = Arc::new(AtomicBool::new(false));
        let rates = Arc::new(metrics::Rates::default());
        tokio::spawn(rates.clone().run(p.counters.clone()));
        let state = http::AppState {
            api_keys: Arc::new(ApiKeys::from_config(&p.config.api_keys)),
            broadcaster: broadcaster.clone(),
            hub: io.clone(),
            presence_store: p.presence_store,
            history: p.history.clone(),
            github: Arc::new(github::Github::from_config(&p.config.github)),
            max_batch_events: p.config.publish.max_batch_events,
            cluster: p.cluster.clone(),
            counters: p.counters,
            rates,
            pages: p.config.pages.clone(),
            limits: p.limits.clone(),
            metrics_public: p.config.metrics.public,
            node_id: p.node_id.clone(),
            started: Instant::now(),
            ready: ready.clone(),
        };
        let router = http::router(state, p.config.limits.max_http_body_bytes)
            .layer(layer)
            .layer(axum::middleware::map_request(socket::detach_head))
            .layer(axum::middleware::map_request_with_state(
                p.socket_ctx,
                socket::screen_handshake,
            ))
            // Outermost, so Socket.IO long-polling and the API answer preflights alike.
            // Only when origins are listed: without any, no CORS header is ever sent.
            .layer(tower::util::option_layer(http::cors(
                &p.config.server.cors_origins,
            )));
        Ok(Self {
            router,
            broadcaster,
            ready,
            hub: io,
            cluster: p.cluster,
            node_id: p.node_id,
            shutdown_timeout: Duration::from_secs(p.config.server.shutdown_timeout_secs),
            reconnect_after_ms: p.config.server.reconnect_after_ms,
            stop_ingest,
        })
    }

    /// The axum router: the HTTP API with the Socket.IO layer, to mount in another app.
    /// See [`Self::into_router`], which also marks the server ready.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// For a program that runs Roomcast inside its own axum app: the router (HTTP API,
    /// `/webhooks/github` and Socket.IO at `/socket.io/`) to merge into the app, and the
    /// broadcaster to publish with. From now on `/ready` answers 200 and
    /// [`EventBroadcaster::global`] is this server's; the program owns the listener and its
    /// shutdown (there is no drain: use [`Self::serve`] for that).
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let config = roomcast::Config::default().with_fallbacks();
    /// let (roomcast, events) = roomcast::Roomcast::new(&config).await?.into_router();
    /// let app = axum::Router::new()
    ///     .route("/app/health", axum::routing::get(|| async { "ok" }))
    ///     .merge(roomcast);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    /// # let _ = events;
    /// axum::serve(listener, app).await?;
    /// # Ok(()) }
    /// ```
    pub fn into_router(self) -> (Router, EventBroadcaster) {
        self.broadcaster.install_global();
        self.ready.store(true, Ordering::Relaxed);
        (self.router, self.broadcaster)
    }

    pub fn broadcaster(&self) -> EventBroadcaster {
        self.broadcaster.clone()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Serves on `listener` until `shutdown` completes, then drains: `/ready` answers 503,
    /// no connection is accepted, every socket is sent `server.shutdown`, publishes and HTTP
    /// requests in flight finish, the websockets left are ended as a dropped transport would
    /// end them (what was queued is written first; no Engine.IO close, so stock clients
    /// reconnect by themselves), the other sessions are closed and the node leaves the
    /// cluster, all within `server.shutdown_timeout_secs`. Installs
    /// [`EventBroadcaster::global`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.broadcaster.install_global();
        self.ready.store(true, Ordering::Relaxed);
        let (ready, hub, cluster) = (self.ready.clone(), self.hub.clone(), self.cluster.clone());
        let broadcaster = self.broadcaster.clone();
        let stop_ingest = self.stop_ingest.clone();
        let (limit, reconnect_after_ms) = (self.shutdown_timeout, self.reconnect_after_ms);
        let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
        let connections = tcp::Connections::default();
        // The listener closes as soon as the signal comes; HTTP requests under way finish,
        // and upgraded websockets are ours to end below.
        // Small frames (the handshake's answer, then `connection.established`) must not wait
        // for the client's delayed ACK: without TCP_NODELAY a connect costs ~40 ms.
        let listener = axum::serve::ListenerExt::tap_io(connections.listener(listener), |conn| {
            if let Err(e) = conn.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        // ConnectInfo gives the connect middleware each client's address (handshake limit).
        let app = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining");
            ready.store(false, Ordering::Relaxed);
            let _ = draining.send(());
        });
        let server = server.into_future();
        tokio::pin!(server);
        let mut drain_started = drain_started;
        // With no HTTP request under way the server future ends in the very poll that sent
        // `draining` (hyper does not track upgraded websockets), so either branch can win.
        let finished = tokio::select! {
            result = &mut server => Some(result),
            _ = &mut drain_started => None,
        };
        let finished = match finished {
            Some(result) if drain_started.try_recv().is_err() => return result,
            other => other,
        };
        let notice = async {
            // No new stream entries are taken; what is not acknowledged stays pending for
            // the nodes that remain (or this one after its restart).
            let _ = stop_ingest.send(true);
            hub.emit_local(
                "server.shutdown",
                &serde_json::json!({ "reconnect_after_ms": reconnect_after_ms }),
            )
            .await;
            broadcaster.idle(limit).await;
        };
        // The server keeps being polled meanwhile: that is what closes its listener and
        // lets requests under way (long polls among them: the notice ends them) finish.
        let http = async {
            match finished {
                Some(result) => result,
                None => (&mut server).await,
            }
        };
        let drain = async {
            let ((), result) = tokio::join!(notice, http);
            // Only upgraded websockets are left. Each ends as if its client had gone: the
            // session writes what was queued, then closes the websocket. An Engine.IO close
            // packet (`Hub::close`) would tell python-socketio the server meant it: it would
            // not reconnect.
            connections.sever();
            connections.closed().await;
            // Sessions without a connection (polling between requests) end here; the node
            // leaves the cluster.
            hub.close().await;
            if let Some(cluster) = cluster {
                cluster.leave().await;
            }
            result
        };
        // Draining gets at most the shutdown timeout.
        match tokio::time::timeout(limit, drain).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("shutdown timeout reached: closing what is left");
                Ok(())
            }
        }
    }
}

fn socketio_builder(config: &Config) -> SocketIoBuilder {
    let server = &config.server;
    let limits = &config.limits;
    let builder = SocketIo::builder()
        .ping_interval(Duration::from_millis(server.ping_interval_ms))
        .ping_timeout(Duration::from_millis(server.ping_timeout_ms))
        .connect_timeout(Duration::from_millis(server.connect_timeout_ms))
        .ws_max_message_size(limits.ws_max_message_bytes)
        .ws_max_frame_size(limits.ws_max_frame_bytes)
        .ws_read_buffer_size(limits.ws_read_buffer_bytes.max(256))
        .max_payload(limits.polling_max_payload_bytes)
        .max_buffer_size(limits.socket_buffer_packets);
    let builder = match server.parser {
        config::Parser::Json => builder.with_parser(
            socketioxide::ParserConfig::common()
                .max_incoming_binaries(limits.max_binary_attachments)
                .max_incoming_binary_buf_size(limits.max_binary_bytes)
                .packet_completion_timeout(BINARY_COMPLETION_TIMEOUT),
        ),
        // A msgpack packet carries its binaries inline: one frame, bounded by the message
        // and payload limits above, so the attachment limits have nothing to count.
        config::Parser::Msgpack => builder.with_parser(socketioxide::ParserConfig::msgpack()),
    };
    let websocket = server.transports.contains(&Transport::Websocket);
    let polling = server.transports.contains(&Transport::Polling);
    match (websocket, polling) {
        (true, false) => builder.transports([TransportType::Websocket]),
        (false, true) => builder.transports([TransportType::Polling]),
        _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
    }
}

/// Binds `addr` with a listen backlog deep enough for a reconnect storm (the default 128
/// overflows when thousands of clients come back at once; the kernel caps it at
/// `net.core.somaxconn`).
pub async fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

const LISTEN_BACKLOG: u32 = 4096;

/// How long the binary attachments of one packet may take to arrive (socketioxide: 60 s):
/// a partial packet holds up to `limits.max_binary_bytes` meanwhile.
const BINARY_COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);

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
