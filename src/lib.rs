//! Roomcast: a Socket.IO-compatible realtime server with JWT auth, tenant-scoped rooms,
//! typed events and an HTTP publish API.
//!
//! # Layout
//! - [`config`]: the configuration schema, one file per TOML section (each default and check
//!   beside its field), env overrides; credentials are [`config::Secret`]s, never printed.
//! - [`auth`]: JWTs into an [`auth::Identity`] (sockets), API keys into an [`auth::Caller`] (HTTP).
//! - [`rooms`]: room names, tenant scoping and the access policy.
//! - [`events`]: one typed struct per event, routing (event → rooms) and the envelope;
//!   `events::request`, what publishers send (HTTP, batch, stream ingest), decoded and checked.
//! - [`broadcaster`]: [`EventBroadcaster`], the single publish path; also starts and ends
//!   AI streams ([`broadcaster::StreamWriter`]), whose `stream.*` events it publishes.
//! - [`outbound`]: the one signed HTTP sender for calls to backends (outbound webhooks, the
//!   RPC proxy): `X-Roomcast-Signature` / `X-Roomcast-Delivery`, one attempt per call.
//! - [`hooks_out`]: outbound webhooks: `room.*`, `presence.*`, `connection.*` and
//!   `client_event` batched, signed (through [`outbound`]) and retried to `[[webhooks]]`
//!   backends; one bounded queue and one sender worker per webhook.
//! - [`github`]: GitHub webhook signatures and payloads → `pr.*` / `issue.*` events.
//! - [`ingest`]: durable ingest from a Redis stream (a consumer group over all nodes).
//! - [`socket`]: the Socket.IO side: the connect middleware, and one file per client command
//!   (a `Deserialize` struct implementing [`socket::command::Command`]). What every command
//!   needs is done once: `socket::command` decodes the payload and finds the identity, over
//!   a [`socket::command::Connection`] that knows no socketioxide (so another transport can
//!   run the same commands); `dispatch` makes a socketioxide socket one and replies
//!   (`reply`: the ack or an `error` event); `budget` spends the per-socket event budget.
//!   `socket::yjs` is the other namespace: `/yjs|<room>/<name>`, the `y-socket.io`
//!   protocol over [`documents`].
//! - [`tcp`]: the accept loop and the accepted connections: who is admitted (per-address
//!   cap, descriptor reserve), the request head cap, the idle / header-read timeouts and
//!   the write timeout;
//!   closed lingering (no RST), severed at the end of a drain so clients see a dropped
//!   transport.
//! - [`stores`]: memory, disk (`[storage] path`) or Redis, chosen once: room history
//!   ([`history`]), idempotency answers ([`idempotency`]), presence ([`presence`]), AI
//!   streams ([`streams`]), task progress ([`tasks`]: the rate and ETA the broadcaster
//!   adds to `task.progress`), locks ([`locks`]: fencing tokens, expiry claimed once) and
//!   Yjs documents ([`documents`]: merged with `yrs`, stored before forwarded, relayed
//!   between nodes), each a module with one file per backend. The publish path and recovery call the store
//!   (`HistoryStore::publish`, `HistoryStore::catch_up`) and know no backend: how each one
//!   keeps a room's `seq` order (locks held through delivery on one node, a Lua script and
//!   a delivery lock in a cluster) lives beside its data. [`disk`] is what the disk backends share (times on
//!   disk, the storage error); [`redis_conn`] the Redis connection the Redis backends and
//!   the cluster share.
//! - [`delivery`]: the seams, a leaf: [`delivery::Deliver`] (the broadcaster hands an event
//!   to the sockets of some rooms), [`delivery::Census`] / [`delivery::Hub`] (what HTTP,
//!   stats and the heartbeat need of the Socket.IO server) and [`delivery::ClusterStatus`].
//! - [`sse`]: Server-Sent Events: this node's SSE (and `/ws/json`) connections by room, each
//!   with a bounded queue of shared frames, handed every event the sockets are (`socket::Sockets` delivers to both; in a
//!   cluster the adapter's broadcasts from other nodes through `cluster`'s driver); the
//!   resume token. The endpoint is `http::sse`.
//! - [`transport`]: Roomcast's own WebSocket transports: [`transport::json`], the plain
//!   JSON protocol at `/ws/json` (one task per connection writing the hub's shared frames
//!   in batches; the commands of [`socket`] over a [`socket::command::Connection`]). The
//!   endpoint (screening, upgrade) is `http::ws_json`.
//! - [`presence`]: who is in which room, `presence.joined` / `presence.left`.
//! - [`cluster`]: many nodes on one Redis, membership only: the adapter's driver,
//!   heartbeats, reaping dead nodes, and the one request Roomcast asks of every node itself
//!   (a revocation's SSE, `/ws/json` and lean connections, closed and counted there).
//! - [`http`]: one file per endpoint group, and the `/debug` and `/admin` pages (assets in
//!   `clients/web/`, embedded in the binary).
//! - [`errors`]: the one table of client-visible error codes (HTTP status, message templates,
//!   where each occurs) that HTTP errors, command errors, handshake refusals and limits use.
//! - [`limits`]: connection limits and token buckets (handshakes, events, publishes).
//! - [`logging`]: redacts tokens, keys and session ids from every formatted log line.
//! - [`memory`]: gives freed heap back to the OS after many sockets have left (the
//!   `roomcast` binary runs it: a process-wide choice, not the library's).
//! - [`metrics`]: counters for stats and `GET /metrics`, events per second by type, recent
//!   errors.
//! - [`services`]: [`services::Services`], what socket commands and HTTP handlers share
//!   (config, node id, verifier, stores, presence, limits, counters); settings are read
//!   from its `config`, not copied.
//! - [`workers`]: the long-running loops (heartbeats, sweepers, samplers, the stream
//!   consumer), started by name from one list in [`Roomcast::new`], stopped and joined at
//!   the end of [`Roomcast::serve`]'s drain.
//! - `fuzzing`: the bodies of the `cargo fuzz` targets in `fuzz/`, also run by `cargo test`.
//!
//! Data flows one way: a request (socket command or HTTP call) is authenticated into an
//! identity, validated into a typed value, routed by `rooms`, published by the broadcaster,
//! kept by a store ([`stores`]) and delivered by the socketioxide adapter. The top-level
//! modules form a DAG (leaves first: `config`, `rooms`, `events`, `delivery`, `disk`,
//! `redis_conn`; then the stores' modules, the broadcaster, `cluster`, `stores`, `services`,
//! `socket`, `http`): `tests/module_graph.rs` fails on a cycle and names it. A type two
//! layers share goes to the lower one (as `Identity` lives in `rooms`, `Position` in
//! `events`), never an import back up.
//!
//! # How to add a command
//! 1. `src/socket/<name>.rs`: a `#[derive(Deserialize)]` struct (the payload, usually with
//!    `#[serde(deny_unknown_fields)]`) and `impl Command` with `NAME` (the event name),
//!    `USAGE` (the `invalid_payload` message) and `run`, which answers `Ok(json)` (the ack)
//!    or a [`socket::CommandError`]. A command for subscribed sockets starts with
//!    `cx.subscribed(self.room)?`. Budget, decoding, identity and the reply are not its
//!    business.
//! 2. `src/socket/mod.rs`: `mod <name>;` and one line in `register_commands`.
//! 3. WEBSOCKET_API.md section 4, and a test against a real server (`tests/`).
//!
//! # How to add an event type
//! 1. `src/events/<group>.rs`: the payload struct (`Serialize`, `Deserialize`,
//!    `JsonSchema`, `deny_unknown_fields`) and `impl Payload` (its rooms).
//! 2. `src/events/mod.rs`: one row in `for_each_event!` (type name, wire name, payload,
//!    broadcaster method): the enum, the schema, `EventBroadcaster::broadcast_<name>` and
//!    the typed clients' checks follow from it.
//! 3. WEBSOCKET_API.md section 5, `clients/js/src/types.ts`, `clients/python/src/roomcast_client/`
//!    types (tests compare them with the schema), and a test.
//!
//! # How to add an endpoint
//! 1. A handler in `src/http/<group>.rs` (extractors in, `Result<_, ApiError>` out).
//! 2. One row in the endpoint table (`http::endpoints`): method, path and guard; the test
//!    that walks every guard picks it up.
//! 3. A new error code goes in [`errors`] (the doc test keeps WEBSOCKET_API.md section 7 in
//!    step); README's endpoint list and WEBSOCKET_API.md section 6.
//!
//! # How to add a config option
//! 1. The field, its default (the section's `impl Default`) and its check (`validate`) in
//!    `src/config/<section>.rs`; a new section is a file there plus a field of [`Config`].
//! 2. Read it where it is used through `services.config.<section>.<field>`.
//! 3. `config.toml` (a test checks it equals the defaults), README when users need it.
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

// STYLE.md: no unwrap()/expect() on anything a client or a config file controls. The library
// uses neither outside tests; the few infallible ones say why where they are allowed.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod broadcaster;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod disk;
pub mod documents;
pub mod errors;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod github;
pub mod history;
pub mod hooks_out;
pub mod http;
pub mod idempotency;
pub mod ingest;
pub mod limits;
pub mod locks;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod presence;
pub mod redis_conn;
pub mod rooms;
pub mod services;
pub mod socket;
pub mod sse;
pub mod stores;
pub mod streams;
pub mod tasks;
pub mod tcp;
pub mod transport;
pub mod workers;

use std::future::Future;
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
use presence::{Presence, PresenceQueue};
use services::Services;
use socket::lifetime::Lifetimes;
use socket::{Hub, SocketCtx, SocketCtxInner};
use workers::Workers;

/// A Roomcast server assembled from a [`Config`], ready to serve.
pub struct Roomcast {
    router: Router,
    broadcaster: EventBroadcaster,
    ready: Arc<AtomicBool>,
    hub: Arc<dyn Hub>,
    /// This node's SSE connections, ended at the start of a drain.
    sse: Arc<sse::SseHub>,
    cluster: Option<Arc<Cluster>>,
    services: Arc<Services>,
    /// Turned true at the start of a drain: the stream ingest stops taking entries.
    stop_ingest: tokio::sync::watch::Sender<bool>,
    workers: Workers,
}

/// What [`Roomcast::assemble`] needs besides the Socket.IO layer.
struct Parts {
    services: Arc<Services>,
    queue: PresenceQueue,
    lifetimes: Arc<Lifetimes>,
    stores: stores::Stores,
    cluster: Option<Arc<Cluster>>,
    jwks: Option<Arc<auth::Jwks>>,
    /// For the HTTP screening of handshakes in front of Socket.IO.
    socket_ctx: SocketCtx,
    /// The SSE and lean WebSocket connections' hub.
    sse: Arc<sse::SseHub>,
    /// The lean websocket path, when on.
    lean: Option<Arc<transport::Lean>>,
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
            Some(url) => Some(Arc::new(Cluster::new(
                &config.cluster,
                url.expose(),
                &node_id,
            )?)),
            None => None,
        };
        let stores = stores::Stores::open(config, cluster.as_deref())?;
        let (presence, queue) = Presence::new();
        let counters = Arc::new(Counters::default());
        let hooks = hooks_out::Webhooks::new(&config.webhooks, counters.clone());
        let limits = Arc::new(limits::Limits::new(&config.limits));
        let lifetimes = Arc::new(Lifetimes::new(
            config.auth.expiry_warning_secs,
            config.auth.leeway_secs,
        ));
        let mut verifier = JwtVerifier::from_config(&config.auth)?;
        let jwks = auth::Jwks::from_config(&config.auth);
        if let Some(jwks) = &jwks {
            jwks.load().await?;
            verifier = verifier.with_jwks_source(jwks.clone());
        }
        let services = Arc::new(Services {
            config: config.clone(),
            node_id,
            verifier,
            counters,
            presence,
            presence_store: stores.presence.clone(),
            history: stores.history.clone(),
            streams: stores.streams.clone(),
            locks: stores.locks.clone(),
            documents: stores.documents.clone(),
            limits,
            outbound: crate::outbound::Outbound::new(),
            client_schemas: config.client_events.compile_schemas()?,
            broadcaster: std::sync::OnceLock::new(),
            hooks,
        });
        let sse = Arc::new(sse::SseHub::new(config.sse.buffer));
        let lean = config.server.lean_websocket
            && config.server.parser == config::Parser::Json
            && offered_transports(&config.server).contains(&TransportType::Websocket);
        let ctx = SocketCtx::new(SocketCtxInner {
            services: services.clone(),
            lifetimes: lifetimes.clone(),
            transports: offered_transports(&config.server),
            yjs: Arc::default(),
            lean,
        });
        let lean = lean.then(|| {
            Arc::new(transport::Lean {
                services: services.clone(),
                hub: sse.clone(),
                editors: Arc::default(),
            })
        });
        let builder = socketio_builder(config).with_state(ctx.clone());
        let parts = Parts {
            services,
            queue,
            lifetimes,
            stores,
            cluster: cluster.clone(),
            jwks,
            socket_ctx: ctx,
            sse,
            lean,
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
        mut p: Parts,
    ) -> anyhow::Result<Self> {
        for init in socket::register(&io) {
            init.spawn();
        }
        socket::yjs::register(&io)?;
        let sessions: Arc<dyn documents::DocSink> = Arc::new(socket::yjs::Editors::new(io.clone()));
        p.services.documents.deliver_through(match &p.lean {
            Some(lean) => Arc::new(transport::yjs::BothEditors {
                sessions,
                lean: lean.editors.clone(),
            }),
            None => sessions,
        });
        let yjs_io = io.clone();
        let sockets = io.clone();
        let sse = p.sse.clone();
        let io = Arc::new(socket::Sockets::new(
            io,
            p.services.config.server.parser,
            sse.clone(),
            p.cluster.clone(),
        ));
        if let Some(cluster) = &p.cluster {
            cluster.tap_sse(sse.clone());
        }
        let status = p.cluster.as_ref().map(|c| c.status.clone());
        let broadcaster = EventBroadcaster::new(
            io.clone(),
            p.services.counters.clone(),
            status,
            p.stores.idempotency.clone(),
            p.services.history.clone(),
        )
        .with_max_rooms(p.services.config.limits.max_rooms_per_publish)
        .with_streams(p.stores.streams.clone())
        .with_tasks(p.stores.tasks.clone())
        .with_locks(p.stores.locks.clone());
        // Weakly: the Socket.IO server's state holds the services.
        let weak: std::sync::Weak<dyn delivery::Deliver> = Arc::downgrade(&io) as _;
        let _ = p
            .services
            .broadcaster
            .set(broadcaster.through(Arc::new(delivery::WeakDeliver(weak))));
        let announcer = presence::Announcer {
            store: p.services.presence_store.clone(),
            broadcaster: broadcaster.clone(),
            grace: Duration::from_secs(p.services.config.cluster.presence_grace_secs),
            max_users: p.services.config.limits.presence_announce_max_users,
            hooks: p.services.hooks.clone(),
        };
        let (stop_ingest, ingest_stopped) = tokio::sync::watch::channel(false);
        let ingest = match (
            &p.services.config.ingest.redis_streams,
            p.services.config.ingest_redis_url(),
        ) {
            (Some(ingest), Some(url)) => Some(ingest::StreamIngest::new(
                ingest.clone(),
                url,
                &p.services.node_id,
                broadcaster.clone(),
            )?),
            _ => None,
        };
        let rates = Arc::new(metrics::Rates::default());

        // Every long-running loop of the server, here and nowhere else.
        let workers = Workers::default();
        if let Some(jwks) = p.jwks {
            workers.start("jwks_refresh", jwks.run());
        }
        workers.start(
            "token_lifetimes",
            socket::lifetime::run(sockets, p.lifetimes),
        );
        workers.start("limits_sweeper", p.services.limits.clone().run_sweeper());
        workers.start(
            "yjs_namespaces",
            socket::yjs::sweep(yjs_io, p.socket_ctx.clone()),
        );
        p.stores
            .start(&workers, io.clone(), p.services.counters.clone());
        workers.start("lock_expiry", broadcaster.clone().run_lock_expiry());
        workers.start(
            "presence_flush",
            presence::flush(p.queue, announcer.clone()),
        );
        if let Some(cluster) = &p.cluster {
            workers.start(
                "cluster_heartbeat",
                cluster
                    .clone()
                    .run(io.clone(), p.services.presence.clone(), announcer),
            );
            workers.start(
                "cluster_revocations",
                cluster.answer_revocations(sse.clone()),
            );
        }
        if let Some(consumer) = ingest {
            workers.start("stream_ingest", consumer.run(ingest_stopped));
        }
        for sender in p.services.hooks.senders(&p.services.outbound) {
            workers.start("webhook_sender", sender);
        }
        workers.start(
            "event_rates",
            rates.clone().run(p.services.counters.clone()),
        );
        tracing::debug!(workers = ?workers.running(), "workers started");

        let ready = Arc::new(AtomicBool::new(false));
        let state = http::AppState {
            services: p.services.clone(),
            api_keys: Arc::new(ApiKeys::from_config(&p.services.config.api_keys)),
            broadcaster: broadcaster.clone(),
            hub: io.clone(),
            sse: sse.clone(),
            github: Arc::new(github::Github::from_config(&p.services.config.github)),
            cluster: p.cluster.clone(),
            rates,
            started: Instant::now(),
            ready: ready.clone(),
        };
        let router = http::router(state, p.services.config.limits.max_http_body_bytes)
            .layer(layer)
            // Between the screen and Socket.IO: the direct websockets the screen handed to
            // the lean path.
            .layer(tower::util::option_layer(p.lean.clone().map(|lean| {
                axum::middleware::from_fn_with_state(lean, transport::sio::intercept)
            })))
            .layer(axum::middleware::map_request_with_state(
                p.socket_ctx,
                socket::screen_handshake,
            ))
            // Outside the screen, which takes the peer address out of the request.
            .layer(tower::util::option_layer(
                p.services.config.limits.bind_polling_to_address.then(|| {
                    let heartbeat = p.services.config.server.ping_interval_ms
                        + p.services.config.server.ping_timeout_ms;
                    axum::middleware::from_fn_with_state(
                        limits::polling_binding::PollingBinding::new(
                            p.services.config.limits.trusted_proxies.clone(),
                            Duration::from_millis(heartbeat),
                        ),
                        limits::polling_binding::bind_polling_to_address,
                    )
                }),
            ))
            // Outermost, so Socket.IO long-polling and the API answer preflights alike.
            // Only when origins are listed: without any, no CORS header is ever sent.
            .layer(tower::util::option_layer(http::cors(
                &p.services.config.server.cors_origins,
            )))
            // Around it: the other Access-Control-* headers it sends to any origin go too.
            .layer(tower::util::option_layer(
                http::cors::AllowedOrigins::new(&p.services.config.server.cors_origins).map(
                    |allowed| {
                        axum::middleware::from_fn_with_state(
                            allowed,
                            http::cors::only_allowed_origins,
                        )
                    },
                ),
            ));
        Ok(Self {
            router,
            broadcaster,
            ready,
            hub: io,
            sse,
            cluster: p.cluster,
            services: p.services,
            stop_ingest,
            workers,
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
        &self.services.node_id
    }

    /// The server's long-running loops: which are running, and (for a program that serves
    /// through [`Self::into_router`]) a way to stop them. [`Self::serve`] stops them itself.
    pub fn workers(&self) -> Workers {
        self.workers.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then drains: `/ready` answers 503,
    /// no connection is accepted, every socket is sent `server.shutdown`, publishes and HTTP
    /// requests in flight finish, the websockets left are ended as a dropped transport would
    /// end them (what was queued is written first; no Engine.IO close, so stock clients
    /// reconnect by themselves), the other sessions are closed, the [`workers`] are stopped
    /// and joined and the node leaves the cluster, all within
    /// `server.shutdown_timeout_secs`. Installs [`EventBroadcaster::global`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.broadcaster.install_global();
        self.ready.store(true, Ordering::Relaxed);
        let (ready, hub, cluster) = (self.ready.clone(), self.hub.clone(), self.cluster.clone());
        let sse = self.sse.clone();
        let broadcaster = self.broadcaster.clone();
        let stop_ingest = self.stop_ingest.clone();
        let workers = self.workers.clone();
        let hooks = self.services.hooks.clone();
        let documents = self.services.documents.clone();
        let settings = &self.services.config.server;
        let limit = Duration::from_secs(settings.shutdown_timeout_secs);
        let reconnect_after_ms = settings.reconnect_after_ms;
        let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
        let connections = tcp::Connections::default();
        // The listener closes as soon as the signal comes; HTTP requests under way finish,
        // and upgraded websockets are ours to end below.
        let server = tcp::Server {
            settings: tcp::Settings::from_config(&self.services.config),
            admission: Arc::new(tcp::Admission::new(&self.services.config.limits)),
            connections: connections.clone(),
            counters: self.services.counters.clone(),
        }
        .run(listener, self.router, async move {
            shutdown.await;
            tracing::info!("shutting down: draining");
            ready.store(false, Ordering::Relaxed);
            let _ = draining.send(());
        });
        tokio::pin!(server);
        let mut drain_started = drain_started;
        // With no HTTP request under way the server future ends in the very poll that sent
        // `draining` (hyper does not track upgraded websockets), so either branch can win.
        let finished = tokio::select! {
            result = &mut server => Some(result),
            _ = &mut drain_started => None,
        };
        let finished = match finished {
            Some(result) if drain_started.try_recv().is_err() => {
                // The listener failed: this server is over all the same.
                workers.stop().await;
                return result;
            }
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
            // An SSE connection is an HTTP request under way: ended now, its client
            // reconnects (to another node) and recovers with its Last-Event-ID.
            sse.close_all();
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
            // Only upgraded websockets are left. Each ends as if its connection had broken:
            // the session writes what was queued, then closes the websocket. An Engine.IO close
            // packet (`Hub::close`) would tell python-socketio the server meant it: it would
            // not reconnect.
            connections.sever();
            connections.closed().await;
            // Sessions without a connection (polling between requests) end here; the node
            // leaves the cluster.
            hub.close().await;
            // The documents still open are merged in the store (their updates are in it
            // already: this only keeps the log short).
            documents.compact_all().await;
            // What the closed sockets produced goes out to the webhooks if it can, briefly:
            // their senders are workers.
            hooks.flush(hooks_out::FLUSH_AT_SHUTDOWN).await;
            // Before leaving: a heartbeat after the leave would bring the node back.
            workers.stop().await;
            if let Some(cluster) = cluster {
                cluster.leave().await;
            }
            result
        };
        // Draining gets at most the shutdown timeout.
        let result = match tokio::time::timeout(limit, drain).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("shutdown timeout reached: closing what is left");
                Ok(())
            }
        };
        // Prompt even past the timeout: a worker is dropped at its next await point.
        workers.stop().await;
        result
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
    match offered_transports(server).as_slice() {
        [only] => builder.transports([*only]),
        _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
    }
}

/// The Engine.IO transports the server offers: both unless exactly one is configured.
fn offered_transports(server: &config::ServerConfig) -> Vec<TransportType> {
    let websocket = server.transports.contains(&Transport::Websocket);
    let polling = server.transports.contains(&Transport::Polling);
    match (websocket, polling) {
        (true, false) => vec![TransportType::Websocket],
        (false, true) => vec![TransportType::Polling],
        _ => vec![TransportType::Polling, TransportType::Websocket],
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
pub(crate) const BINARY_COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);

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
