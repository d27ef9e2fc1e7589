//! [`Services`]: what socket commands and HTTP handlers may use, built once in
//! [`crate::Roomcast::new`] and shared by both sides. Settings are read from `config` where
//! they are used (`services.config.limits.max_rooms_per_socket`), not copied field by field.
//!
//! It holds no socket or HTTP type (the socket token deadlines and the cluster handle stay
//! with their side), so both sides can import it without a cycle.

use std::sync::Arc;

use crate::auth::JwtVerifier;
use crate::broadcaster::EventBroadcaster;
use crate::config::{Config, Schemas};
use crate::history::HistoryStore;
use crate::hooks_out::Webhooks;
use crate::limits::Limits;
use crate::metrics::Counters;
use crate::outbound::Outbound;
use crate::presence::{Presence, PresenceStore};
use crate::streams::Streams;

pub struct Services {
    pub config: Config,
    pub node_id: Arc<str>,
    pub verifier: JwtVerifier,
    pub counters: Arc<Counters>,
    pub presence: Presence,
    pub presence_store: Arc<dyn PresenceStore>,
    pub history: HistoryStore,
    /// AI streams: text, status, the delivery order of deltas on this node.
    pub streams: Arc<Streams>,
    /// Yjs documents (`/yjs|<room>/<name>`, `/api/v1/documents`).
    pub documents: Arc<crate::documents::Documents>,
    pub limits: Arc<Limits>,
    /// Signed requests to backends (webhooks out, the RPC proxy).
    pub outbound: Outbound,
    /// `[client_events.schemas]`, compiled.
    pub client_schemas: Schemas,
    /// The server's broadcaster, for the `publish` command. Set once it is built: it
    /// delivers through the Socket.IO server, which is built after the services (and
    /// holds them: this one holds the server weakly, `delivery::WeakDeliver`).
    pub broadcaster: std::sync::OnceLock<EventBroadcaster>,
    /// Outbound webhooks (`[[webhooks]]`): [`Webhooks::notify`] queues an event for them.
    pub hooks: Webhooks,
}
