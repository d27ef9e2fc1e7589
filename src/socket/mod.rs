//! Socket.IO side: the connect middleware, the connect handler and one file per client
//! command. Everything here is generic over the socketioxide adapter, so the same code serves
//! a single node (in-memory adapter) and a cluster.

mod auth;
mod budget;
pub mod command;
mod dispatch;

pub use auth::{LeanHandshake, screen_handshake};
mod history;
pub mod lifetime;
mod lock_acquire;
mod lock_release;
mod lock_renew;
mod ping;
mod presence;
mod publish;
pub mod recover;
mod refresh;
mod reply;
mod rpc;
mod stream_cancel;
mod stream_resume;
mod subscribe;
mod unsubscribe;
pub mod yjs;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide_core::adapter::DefinedAdapter;
use socketioxide_core::adapter::errors::BroadcastError;

use crate::auth::Identity;
use crate::cluster::Cluster;
use crate::config::Parser;
pub use crate::delivery::{Census, Deliver, Hub, RoomMembers, Snapshot};
use crate::events::Timestamp;
use crate::hooks_out::{HookEvent, HookKind};
use crate::limits::Slot;
use crate::presence::Share;
use crate::rooms::{Id, RoomName, Tenant, identity_room, is_identity_room, parse_identity_room};
use crate::services::Services;
use crate::sse::SseHub;

pub use reply::CommandError;

use budget::Budgeted;

/// Namespaces that carry the same handlers: `/`, and `/ws` for clients written against the
/// original API document.
pub const NAMESPACES: [&str; 2] = ["/", "/ws"];

/// What socket handlers share, installed as socketioxide state: the [`Services`] (all a
/// command sees) and what only the Socket.IO side needs.
#[derive(Clone)]
pub struct SocketCtx(Arc<SocketCtxInner>);

pub struct SocketCtxInner {
    pub services: Arc<Services>,
    /// Token deadlines of the connected sockets.
    pub lifetimes: Arc<lifetime::Lifetimes>,
    /// The Engine.IO transports offered (the screening decides as engineioxide does).
    pub transports: Vec<socketioxide::TransportType>,
    /// The `/yjs|...` namespaces of this node (see [`yjs`]).
    pub yjs: Arc<yjs::Namespaces>,
    /// With `server.lean_websocket` on (and the JSON parser): direct websocket requests are
    /// handed to the lean path's layer with their [`LeanHandshake`] instead of socketioxide.
    pub lean: bool,
}

impl SocketCtx {
    pub fn new(inner: SocketCtxInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for SocketCtx {
    type Target = SocketCtxInner;
    fn deref(&self) -> &SocketCtxInner {
        &self.0
    }
}

/// Registers the handlers on every namespace of `io`. With a remote adapter each result is
/// a future that completes once the namespace is attached to the cluster.
pub fn register<A: Adapter + DefinedAdapter>(io: &SocketIo<A>) -> Vec<A::InitRes> {
    NAMESPACES
        .iter()
        .map(|ns| io.ns(*ns, on_connect::<A>.with(auth::authenticate::<A>)))
        .collect()
}

/// How many public rooms a socket is in (its identity room is not one).
pub fn public_room_count<A: Adapter>(s: &SocketRef<A>) -> usize {
    s.rooms().iter().filter(|r| !is_identity_room(r)).count()
}

/// The socket's span: `socket{sid, user_id, tenant, ns}`, one per connection, created by the
/// connect middleware. It is a `debug` span, so with the default `info` filter it is never
/// created and costs an idle socket nothing; where debug logging is on it is kept on the
/// socket (a few hundred bytes in the subscriber). Log a socket's events with
/// `parent: &span_of(&s)`; handler futures run in socketioxide's own tasks, outside it.
pub fn span_of<A: Adapter>(s: &socketioxide::socket::Socket<A>) -> tracing::Span {
    s.extensions
        .get::<tracing::Span>()
        .unwrap_or_else(tracing::Span::none)
}

/// The identity the connect middleware stored on the socket.
pub fn identity_of<A: Adapter>(s: &socketioxide::socket::Socket<A>) -> Option<Arc<Identity>> {
    s.extensions.get::<Arc<Identity>>()
}

/// The socket's part in presence, stored by the connect middleware with its identity.
pub fn share_of<A: Adapter>(s: &socketioxide::socket::Socket<A>) -> Option<Arc<Share>> {
    s.extensions.get::<Arc<Share>>()
}

/// `connection.established`: the first event of every connection, whatever carries it.
#[derive(Serialize)]
pub struct Established<'a> {
    pub sid: String,
    pub user_id: &'a str,
    pub tenant: &'a str,
    pub rooms: Vec<RoomName>,
    pub server_time: Timestamp,
    pub node_id: &'a str,
    /// True when every room of `auth.since` was recovered completely.
    pub recovered: bool,
    /// Per room of `auth.since`: `{replayed, epoch, seq}`, `{gap: true, ...}` or `{error}`.
    pub recovery: &'a serde_json::Map<String, serde_json::Value>,
    /// `{room: {epoch, seq}}` for the rooms the socket was put in: the cursors to recover
    /// from, even for a room with no event yet.
    pub positions: &'a crate::history::Positions,
}

impl<'a> Established<'a> {
    /// What a connection of `identity` in `defaults` (and the rooms `outcome` recovered)
    /// is told.
    pub fn new(
        sid: String,
        identity: &'a Identity,
        node_id: &'a str,
        defaults: &[RoomName],
        outcome: &'a recover::Outcome,
    ) -> Self {
        let mut rooms: Vec<RoomName> = defaults.to_vec();
        rooms.extend(
            outcome
                .rooms
                .iter()
                .filter(|r| !defaults.contains(r))
                .cloned(),
        );
        Self {
            sid,
            user_id: identity.user_id.as_str(),
            tenant: identity.tenant.as_str(),
            rooms,
            server_time: Timestamp::now(),
            node_id,
            recovered: outcome.recovered,
            recovery: &outcome.report,
            positions: &outcome.positions,
        }
    }
}

/// The client commands, once: each type implements [`command::Command`]. Socket.IO sockets
/// register them ([`register_commands`]); other transports run them by name
/// ([`execute_named`]).
macro_rules! client_commands {
    ($($command:ty),* $(,)?) => {
        /// The client commands, registered by the connect middleware once the handshake is
        /// accepted (before socketioxide answers CONNECT). Every event, known or not, spends
        /// from the socket's budget first.
        pub(crate) fn register_commands<A: Adapter>(s: &SocketRef<A>) {
            $(dispatch::on::<A, $command>(s);)*
            s.on_fallback(Budgeted(reply::unknown_command::<A>));
        }

        /// Runs the command called `name` for `conn` (a connection of another transport);
        /// `unknown_command` for a name that is none.
        pub async fn execute_named(
            name: &str,
            conn: &dyn command::Connection,
            services: &Services,
            payload: Result<serde_json::Value, String>,
            held: &command::Held,
        ) -> Result<command::Reply, CommandError> {
            $(
                if name == <$command as command::Command>::NAME {
                    return Box::pin(command::execute_holding::<$command>(conn, services, payload, held)).await;
                }
            )*
            Err(CommandError::UnknownCommand(name.to_owned()))
        }
    };
}

client_commands!(
    subscribe::Subscribe,
    unsubscribe::Unsubscribe,
    ping::Ping,
    presence::Presence,
    refresh::Refresh,
    history::History,
    rpc::Rpc,
    publish::Publish,
    stream_resume::StreamResume,
    stream_cancel::StreamCancel,
    lock_acquire::LockAcquire,
    lock_release::LockRelease,
    lock_renew::LockRenew,
);

async fn on_connect<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(auth): TryData<serde_json::Value>,
) {
    let Some(identity) = identity_of(&s) else {
        // The middleware always stores an identity; without one the socket must not stay.
        let _ = s.disconnect();
        return;
    };
    // First, so a disconnect by identity finds the socket from here on.
    s.join(identity_room(&identity.tenant, &identity.user_id));
    let rooms = [RoomName::Global, RoomName::User(identity.user_id.clone())];
    // Counted before the disconnect handler exists, so its leave is queued after this.
    ctx.services.presence.connected(&identity);
    connection_hook(&ctx, &s, &identity, None);
    s.on_disconnect(on_disconnect::<A>);
    if !s.connected() {
        // Closed before the handler was set, so it may never run: leave here (the share
        // makes a second leave a no-op).
        left(&ctx, &s, &identity, "closed_during_connect");
        return;
    }
    ctx.lifetimes.watch(s.ns(), s.id, identity.expires_at);

    tracing::debug!(parent: &span_of(&s), "socket connected");
    // Joins `rooms`, and the rooms of `auth.since` with their backlog.
    let conn = dispatch::Socket { s: &s, ctx: &ctx };
    let parser = ctx.services.config.server.parser;
    recover::recover(
        &conn,
        &ctx.services,
        &identity,
        auth.as_ref().ok(),
        &rooms,
        |outcome| {
            let established = Established::new(
                s.id.to_string(),
                &identity,
                &ctx.services.node_id,
                &rooms,
                outcome,
            );
            if let Err(e) = s.emit("connection.established", &established) {
                tracing::debug!(parent: &span_of(&s), sid = %s.id, "cannot send connection.established: {e}");
            }
        },
        |event, payload| match s.emit(event, &Payload::new(parser, payload)) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(sid = %s.id, "replay stopped: {e}");
                false
            }
        },
    )
    .await;
}

async fn on_disconnect<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    reason: socketioxide::socket::DisconnectReason,
) {
    tracing::debug!(parent: &span_of(&s), ?reason, "socket disconnected");
    if let Some(slot) = s.extensions.get::<Arc<Slot>>() {
        slot.release();
    }
    let Some(identity) = identity_of(&s) else {
        return;
    };
    left(&ctx, &s, &identity, &format!("{reason:?}"));
    ctx.lifetimes.unwatch(s.ns(), s.id, identity.expires_at);
    if ctx.services.locks.held_by(&s.id.to_string()) > 0
        && let Some(broadcaster) = ctx.services.broadcaster.get()
    {
        broadcaster.release_socket_locks(&s.id.to_string()).await;
    }
}

/// The socket is gone: its presence ends and `connection.closed` is sent, once (the share
/// answers true to the first leave only).
fn left<A: Adapter>(ctx: &SocketCtx, s: &SocketRef<A>, identity: &Identity, reason: &str) {
    // Not `s.rooms()`: the adapter may have dropped them already (see `presence::Share`).
    if let Some(share) = share_of(s)
        && ctx.services.presence.disconnected(&share, identity)
    {
        connection_hook(ctx, s, identity, Some(reason));
    }
}

/// `connection.opened` (`closed` `None`) or `connection.closed` for the outbound webhooks.
fn connection_hook<A: Adapter>(
    ctx: &SocketCtx,
    s: &SocketRef<A>,
    identity: &Identity,
    closed: Option<&str>,
) {
    let hooks = &ctx.services.hooks;
    let kind = match closed {
        Some(_) => HookKind::ConnectionClosed,
        None => HookKind::ConnectionOpened,
    };
    if hooks.wants(kind) {
        hooks.notify(HookEvent::connection(
            &identity.tenant,
            &identity.user_id,
            &s.id.to_string(),
            s.ns(),
            &ctx.services.node_id,
            closed,
        ));
    }
}

/// An envelope kept as raw JSON, as the server's parser must be handed it. The JSON parser
/// copies the raw text into the packet as it is; msgpack would encode a `RawValue` as
/// serde_json's private struct (a map holding the JSON text), so for msgpack the text is
/// parsed into a value first: once per broadcast, not per recipient.
pub enum Payload<'a> {
    Raw(&'a RawValue),
    Parsed(serde_json::Value),
}

impl<'a> Payload<'a> {
    pub fn new(parser: Parser, raw: &'a RawValue) -> Self {
        match parser {
            Parser::Json => Self::Raw(raw),
            // A RawValue always holds valid JSON; were it ever not to parse, the raw text is
            // still better than nothing.
            Parser::Msgpack => serde_json::from_str(raw.get()).map_or(Self::Raw(raw), Self::Parsed),
        }
    }
}

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Raw(raw) => raw.serialize(serializer),
            Self::Parsed(value) => value.serialize(serializer),
        }
    }
}

/// The Socket.IO server as the broadcaster and the HTTP side see it: delivery, census and
/// the cluster-wide operations, with the parser that decides how raw payloads are handed on.
/// This node's SSE connections are handed every event its sockets are, at the same point.
pub struct Sockets<A: Adapter> {
    io: SocketIo<A>,
    parser: Parser,
    sse: Arc<SseHub>,
    /// In a cluster a broadcast to every node comes back to this one through Redis, where
    /// the driver hands it to the SSE connections (`Cluster::tap_sse`): not here too. A
    /// revocation asks the other nodes through it to close their hub connections.
    cluster: Option<Arc<Cluster>>,
}

impl<A: Adapter> Sockets<A> {
    pub fn new(
        io: SocketIo<A>,
        parser: Parser,
        sse: Arc<SseHub>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            io,
            parser,
            sse,
            cluster,
        }
    }
}

impl<A: Adapter> Deliver for Sockets<A> {
    fn deliver<'a>(
        &'a self,
        rooms: Vec<Cow<'static, str>>,
        event: &'a str,
        payload: &'a RawValue,
        local_only: bool,
        except: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let mut failed = 0;
            // Here, under the same history and stream delivery locks as the sockets: an SSE
            // connection gets a room's events in the same order, after its backlog.
            // A `/ws/json` sender is skipped by its session id, named as an `except` room of
            // the broadcast (no socket is in it): the node that holds it reads it there.
            let except_rooms: Vec<Cow<'static, str>> = except
                .map(|sid| Cow::Owned(sid.to_owned()))
                .into_iter()
                .collect();
            if local_only || self.cluster.is_none() {
                self.sse.deliver(&rooms, event, payload, &except_rooms);
            }
            let payload = Payload::new(self.parser, payload);
            // The sender is a socket of this node (it published here): a broadcast from it
            // skips it, on every node the broadcast reaches.
            let sender = except.and_then(|sid| sid.parse::<socketioxide_core::Sid>().ok());
            for ns in NAMESPACES {
                let Some(op) = self.io.of(ns) else { continue };
                let op = match sender.and_then(|sid| op.get_socket(sid)) {
                    Some(sender) => sender.to(rooms.clone()),
                    None => op.to(rooms.clone()).except(except_rooms.clone()),
                };
                let op = if local_only { op.local() } else { op };
                match op.emit(event, &payload).await {
                    Ok(()) => {}
                    Err(BroadcastError::Socket(errors)) => failed += errors.len() as u64,
                    // The other nodes were not told; nothing was delivered here either.
                    Err(BroadcastError::Adapter(e)) => return Err(e.to_string()),
                    Err(e) => tracing::warn!(ns, event, "broadcast failed: {e}"),
                }
            }
            Ok(failed)
        })
    }
}

impl<A: Adapter> Hub for Sockets<A> {
    fn disconnect_user<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a Id,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let room = identity_room(tenant, user);
            // The hub's connections of the user (SSE, `/ws/json`, lean sockets): this node's,
            // then, in a cluster, the other nodes', each counted by the node that closes them.
            let mut count = self.sse.close_rooms(std::slice::from_ref(&room));
            if let Some(cluster) = &self.cluster {
                count += cluster
                    .close_hub_elsewhere(std::slice::from_ref(&room))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // Socketioxide's sockets, found and disconnected on every node by the adapter.
            for ns in NAMESPACES {
                let Some(op) = self.io.of(ns) else { continue };
                let sockets = op
                    .clone()
                    .within(room.clone())
                    .fetch_sockets()
                    .await
                    .map_err(|e| e.to_string())?;
                count += sockets.len() as u64;
                op.within(room.clone())
                    .disconnect()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(count)
        })
    }

    fn emit_local<'a>(
        &'a self,
        event: &'static str,
        data: &'a serde_json::Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for ns in NAMESPACES {
                if let Some(op) = self.io.of(ns)
                    && let Err(e) = op.local().emit(event, data).await
                {
                    tracing::debug!(ns, event, "not every socket reached: {e}");
                }
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(SocketIo::close(&self.io))
    }
}

/// What one walk over this node's sockets found.
#[derive(Default)]
struct Walk {
    connections: u64,
    /// Distinct (tenant, user) pairs.
    users: HashSet<(Id, Id)>,
    /// Members per adapter-level room; filled only when asked for.
    rooms: HashMap<Cow<'static, str>, u64>,
}

/// Walks this node's sockets once (only `tenant`'s when set); rooms are counted only when
/// `with_rooms`, identity rooms never.
fn walk<A: Adapter>(
    io: &SocketIo<A>,
    lean: &SseHub,
    with_rooms: bool,
    tenant: Option<&Tenant>,
) -> Walk {
    let mut found = Walk::default();
    lean.each_lean_socket(|_, rooms| {
        // The identity room `#<tenant>/<user>` says whose socket it is.
        let Some((t, u)) = rooms.iter().find_map(|r| parse_identity_room(r)) else {
            return;
        };
        if tenant.is_some_and(|tenant| *tenant != t) {
            return;
        }
        found.connections += 1;
        found.users.insert((t, u));
        if with_rooms {
            for room in rooms.iter().filter(|r| !is_identity_room(r)) {
                *found.rooms.entry(Cow::Owned(room.clone())).or_default() += 1;
            }
        }
    });
    for ns in NAMESPACES {
        let Some(op) = io.of(ns) else { continue };
        for s in op.sockets() {
            let identity = identity_of(&s);
            if let Some(tenant) = tenant
                && identity.as_ref().is_none_or(|id| id.tenant != *tenant)
            {
                continue;
            }
            found.connections += 1;
            if let Some(id) = identity {
                found.users.insert((id.tenant.clone(), id.user_id.clone()));
            }
            if with_rooms {
                for room in s.rooms() {
                    if !is_identity_room(&room) {
                        *found.rooms.entry(room).or_default() += 1;
                    }
                }
            }
        }
    }
    found
}

impl<A: Adapter> Census for Sockets<A> {
    fn per_namespace(&self) -> Vec<(&'static str, u64)> {
        let mut counts: Vec<(&'static str, u64)> = NAMESPACES
            .iter()
            .map(|ns| {
                (
                    *ns,
                    self.io.of(ns).map_or(0, |op| op.sockets().len() as u64),
                )
            })
            .collect();
        self.sse.each_lean_socket(|ns, _| {
            if let Some((_, n)) = counts.iter_mut().find(|(n, _)| *n == ns) {
                *n += 1;
            }
        });
        counts
    }

    fn counts(&self) -> (u64, u64) {
        let found = walk(&self.io, &self.sse, false, None);
        (found.connections, found.users.len() as u64)
    }

    fn snapshot(&self, top: usize, tenant: Option<&Tenant>) -> Snapshot {
        let Walk {
            connections,
            users,
            rooms,
        } = walk(&self.io, &self.sse, true, tenant);
        let tenants: HashSet<&Id> = users.iter().map(|(tenant, _)| tenant).collect();
        let mut top_rooms: Vec<RoomMembers> = rooms
            .iter()
            .filter_map(|(scoped, members)| {
                let (tenant, room) = RoomName::unscope(scoped)?;
                Some(RoomMembers {
                    tenant: tenant.to_owned(),
                    room: room.to_owned(),
                    members: *members,
                })
            })
            .collect();
        top_rooms.sort_by(|a, b| {
            b.members
                .cmp(&a.members)
                .then_with(|| (&a.tenant, &a.room).cmp(&(&b.tenant, &b.room)))
        });
        top_rooms.truncate(top);
        Snapshot {
            connections,
            users: users.len() as u64,
            rooms: rooms.len() as u64,
            tenants: tenants.len() as u64,
            top_rooms,
        }
    }
}
