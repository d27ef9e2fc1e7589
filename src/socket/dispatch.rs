//! Commands over socketioxide: a socket as a [`Connection`], and the one message handler
//! every [`Command`] is registered with (behind the event budget).

use std::borrow::Cow;
use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::budget::Budgeted;
use super::command::{Command, Connection, Held, execute_holding};
use super::reply::Responder;
use super::{SocketCtx, identity_of, share_of};
use crate::auth::Identity;
use crate::presence::Share;

/// Registers `C` on the socket.
pub(super) fn on<A: Adapter, C: Command>(s: &SocketRef<A>) {
    s.on(C::NAME, Budgeted(handle::<A, C>));
}

async fn handle<A: Adapter, C: Command>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(payload): TryData<serde_json::Value>,
    reply: Responder<A>,
) {
    let conn = Socket { s: &s, ctx: &ctx };
    let payload = payload.map_err(|e| e.to_string());
    let held = Held::default();
    let answer = execute_holding::<C>(&conn, &ctx.services, payload, &held).await;
    // Queued on the socket before what `held` keeps back (a stream's deltas) can follow.
    reply.result(answer);
    drop(held);
}

/// A socketioxide socket as a [`Connection`].
pub(super) struct Socket<'a, A: Adapter> {
    pub(super) s: &'a SocketRef<A>,
    pub(super) ctx: &'a SocketCtx,
}

impl<A: Adapter> Connection for Socket<'_, A> {
    fn id(&self) -> String {
        self.s.id.to_string()
    }

    fn identity(&self) -> Option<Arc<Identity>> {
        identity_of(self.s)
    }

    fn share(&self) -> Option<Arc<Share>> {
        share_of(self.s)
    }

    fn rooms(&self) -> Vec<Cow<'static, str>> {
        self.s.rooms()
    }

    fn join(&self, rooms: Vec<Cow<'static, str>>) {
        self.s.join(rooms);
    }

    fn leave(&self, rooms: Vec<Cow<'static, str>>) {
        self.s.leave(rooms);
    }

    fn connected(&self) -> bool {
        self.s.connected()
    }

    fn replace_identity(&self, old: &Identity, new: Arc<Identity>) {
        let expires_at = new.expires_at;
        self.s.extensions.insert(new);
        self.ctx
            .lifetimes
            .unwatch(self.s.ns(), self.s.id, old.expires_at);
        self.ctx.lifetimes.watch(self.s.ns(), self.s.id, expires_at);
    }
}
