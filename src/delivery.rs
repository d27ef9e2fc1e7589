//! The seams between publishing and the sockets, in a leaf module every layer may import:
//! [`Deliver`] (how the broadcaster hands an event to the sockets of some rooms), [`Census`]
//! and [`Hub`] (what HTTP, stats and the cluster heartbeat need of the Socket.IO server),
//! and [`ClusterStatus`] (whether Redis is reachable). The socketioxide side implements
//! them in [`crate::socket`]; nothing here knows socketioxide.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::OnUnavailable;
use crate::rooms::{Id, Tenant};

/// Hands one serialized event to the sockets of some adapter-level rooms. Implemented for
/// socketioxide's `SocketIo<A>` over any adapter, so the broadcaster needs no generics.
pub trait Deliver: Send + Sync + 'static {
    /// Emits `payload` as `event` to every socket in any of `rooms`, once per socket, on
    /// every node (on this node only with `local_only`), except the socket whose id is
    /// `except` (a client event's sender). Returns how many sockets could not be reached,
    /// or an error when the other nodes could not be told (nothing delivered).
    fn deliver<'a>(
        &'a self,
        rooms: Vec<Cow<'static, str>>,
        event: &'a str,
        payload: &'a RawValue,
        local_only: bool,
        except: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, String>>;
}

/// A [`Deliver`] that does not keep the Socket.IO server alive. The services hold a
/// broadcaster delivering through one (for the `publish` command): the server's state holds
/// the services, so a strong handle would be a cycle that outlives the server.
pub struct WeakDeliver(pub std::sync::Weak<dyn Deliver>);

impl Deliver for WeakDeliver {
    fn deliver<'a>(
        &'a self,
        rooms: Vec<Cow<'static, str>>,
        event: &'a str,
        payload: &'a RawValue,
        local_only: bool,
        except: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, String>> {
        let io = self.0.upgrade();
        Box::pin(async move {
            match io {
                Some(io) => io.deliver(rooms, event, payload, local_only, except).await,
                None => Err("the server has stopped".into()),
            }
        })
    }
}

/// What the HTTP side needs from the Socket.IO server besides delivery, erased over the
/// adapter: cluster-wide where the adapter is.
pub trait Hub: Deliver + Census {
    /// Disconnects every socket of `user` in `tenant` on every node, found by identity (not
    /// by the public `user:` room, which admins may join too), and ends their SSE and
    /// `/ws/json` connections; returns how many there were (a node that does not answer in
    /// time is not counted).
    fn disconnect_user<'a>(
        &'a self,
        tenant: &'a Tenant,
        user: &'a Id,
    ) -> BoxFuture<'a, Result<u64, String>>;
    /// Sends `event` to every socket of this node (not the cluster).
    fn emit_local<'a>(
        &'a self,
        event: &'static str,
        data: &'a serde_json::Value,
    ) -> BoxFuture<'a, ()>;
    /// Disconnects every local socket (shutdown).
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Counts the sockets of this node. Computed on demand so connect and disconnect keep no
/// bookkeeping of their own.
pub trait Census: Send + Sync + 'static {
    /// Everything, with the `top` fullest rooms; only `tenant`'s sockets and rooms when set.
    fn snapshot(&self, top: usize, tenant: Option<&Tenant>) -> Snapshot;
    /// Connections and users only (the heartbeat's figures): no walk over rooms.
    fn counts(&self) -> (u64, u64);
    /// Sockets per namespace on this node.
    fn per_namespace(&self) -> Vec<(&'static str, u64)>;
}

/// Connected sockets as the stats endpoint reports them.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Snapshot {
    pub connections: u64,
    pub users: u64,
    pub rooms: u64,
    pub tenants: u64,
    pub top_rooms: Vec<RoomMembers>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomMembers {
    pub tenant: String,
    pub room: String,
    pub members: u64,
}

/// Whether the cluster is reachable, shared by the broadcaster, `/ready` and stats.
#[derive(Debug)]
pub struct ClusterStatus {
    up: AtomicBool,
    reason: Mutex<String>,
    pub on_unavailable: OnUnavailable,
}

impl ClusterStatus {
    pub fn new(on_unavailable: OnUnavailable) -> Self {
        Self {
            up: AtomicBool::new(false),
            reason: Mutex::new("connecting to redis".into()),
            on_unavailable,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "unknown".into())
    }

    pub(crate) fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_down(&self, reason: String) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!("redis unreachable: {reason}");
        }
        if let Ok(mut r) = self.reason.lock() {
            *r = format!("redis unreachable: {reason}");
        }
    }
}
