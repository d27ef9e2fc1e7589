//! Yjs documents over Socket.IO, the protocol of the npm package `y-socket.io` (1.1.x): a
//! stock `SocketIOProvider` connects to the namespace `/yjs|<room>/<name>` with its token
//! in `auth`, and speaks `sync-step-1` (a state vector; the ack carries the update the
//! sender lacks), `sync-update` and `awareness-update`, all binary. The documents themselves
//! (merging, storing, the cluster) are [`crate::documents`]'s; this is the socket side.
//!
//! socketioxide creates a child namespace for every path the dynamic route matches when
//! its CONNECT arrives, before the connect middleware runs, and keeps it until it is
//! deleted. So: a name that is not a document is refused and its namespace deleted at
//! once; every other `/yjs|...` namespace is deleted by [`sweep`] once it has had no socket
//! for `documents.idle_namespace_secs`. The connects themselves ride sessions that the
//! screening counted as pre-auth until one of their namespaces is accepted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use super::auth::{Refusal, admit, store_identity};
use super::{SocketCtx, identity_of, span_of};
use crate::documents::{DocError, DocId, DocSink, Handle};
use crate::errors::{Code, Message};
use crate::limits::Slot;
use crate::rooms::Tenant;

/// The dynamic namespace route: `/yjs|` then the document.
pub const ROUTE: &str = "/yjs|{*doc}";
/// What the namespace of a document starts with.
pub const PREFIX: &str = "/yjs|";

/// The documents a session (one Engine.IO connection) has open, counted against
/// `documents.max_documents_per_connection`; kept in the session's request head.
#[derive(Default)]
pub struct SessionDocuments(AtomicUsize);

/// The `/yjs|...` namespaces this node created, for [`sweep`]: whether each was empty at
/// the last sweep.
#[derive(Default)]
pub struct Namespaces(Mutex<HashMap<String, bool>>);

impl Namespaces {
    /// A connect to `ns` is under way: it is not idle.
    fn busy(&self, ns: &str) {
        if let Ok(mut seen) = self.0.lock() {
            seen.insert(ns.to_owned(), false);
        }
    }

    fn forget(&self, ns: &str) {
        if let Ok(mut seen) = self.0.lock() {
            seen.remove(ns);
        }
    }
}

/// An editor: a socket on a document.
struct Editor {
    doc: Handle,
    /// The awareness client ids this socket announced, removed when it leaves.
    clients: Mutex<HashSet<u64>>,
    session: Option<Arc<SessionDocuments>>,
    /// Disconnects the socket when its token expires.
    expiry: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set by the first of the disconnect handler and the connect handler's check.
    left: std::sync::atomic::AtomicBool,
    /// Whether the server's `sync-step-1` was sent (see [`greet`]).
    greeted: std::sync::atomic::AtomicBool,
}

/// Registers the dynamic namespace of documents on `io`.
pub fn register<A: Adapter>(io: &SocketIo<A>) -> Result<(), socketioxide::NsInsertError> {
    io.dyn_ns(ROUTE, on_connect::<A>.with(authenticate::<A>))
}

/// The socket-side room of a tenant inside a document's namespace: tenants share the
/// namespace of a document name, never its updates.
fn tenant_room(tenant: &Tenant) -> String {
    format!("tenant:{tenant}")
}

/// The document `path` (of namespace `ns`) for `identity`: `invalid_document` when it does
/// not parse in the identity's tenant, `forbidden` (counted as a refused handshake) when the
/// token does not grant its room. Both websocket paths check a document connect with it.
pub(crate) fn granted(
    services: &crate::services::Services,
    identity: &crate::auth::Identity,
    ns: &str,
    path: &str,
) -> Result<DocId, Code> {
    let id = DocId::parse(identity.tenant.clone(), path).ok_or(Code::InvalidDocument)?;
    if !id.room.allows(identity) {
        services.counters.errors.refused(
            "handshake",
            Code::Forbidden.as_str(),
            ns.to_owned(),
            &Message::DocumentNotGranted.text(),
        );
        return Err(Code::Forbidden);
    }
    Ok(id)
}

/// The document of a namespace, without its tenant: `(room, name)` as they parse.
pub(crate) fn document_of(ns: &str) -> Option<&str> {
    let path = ns.strip_prefix(PREFIX)?;
    // The tenant is not known yet; the parse is the same for every tenant.
    DocId::parse(Tenant::default_tenant(), path).map(|_| path)
}

async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(auth): TryData<serde_json::Value>,
    io: SocketIo<A>,
) -> Result<(), Refusal> {
    let ns = s.ns().to_owned();
    ctx.yjs.busy(&ns);
    let Some(path) = document_of(&ns) else {
        refuse_namespace(&ctx, &io, &ns);
        return Err(Refusal::Document(Code::InvalidDocument));
    };
    let (identity, slot) = admit(&s, &ctx, auth.as_ref().ok()).await?;
    let id = granted(&ctx.services, &identity, &ns, path).map_err(Refusal::Document)?;
    let session = s
        .req_parts()
        .extensions
        .get::<Arc<SessionDocuments>>()
        .cloned();
    if let Some(session) = &session {
        let max = ctx.services.config.documents.max_documents_per_connection;
        if session.0.fetch_add(1, Ordering::AcqRel) >= max {
            session.0.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Document(Code::TooManyDocuments));
        }
    }
    let doc = match ctx.services.documents.open(&id).await {
        Ok(doc) => doc,
        Err(e) => {
            tracing::warn!(doc = %id.key(), "cannot open the document: {e}");
            if let Some(session) = &session {
                session.0.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Refusal::Document(Code::DocumentUnavailable));
        }
    };
    let expires_at = identity.expires_at;
    store_identity(&s, identity, slot);
    s.extensions.insert(Arc::new(Editor {
        doc,
        clients: Mutex::default(),
        session,
        expiry: Mutex::new(None),
        left: Default::default(),
        greeted: Default::default(),
    }));
    s.join(tenant_room(&id.tenant));
    // Here, before socketioxide answers CONNECT (see `register_commands`).
    s.on("sync-step-1", on_sync_step_1::<A>);
    s.on("sync-update", on_sync_update::<A>);
    s.on("awareness-update", on_awareness_update::<A>);
    s.on_disconnect(on_disconnect::<A>);
    watch_expiry(&s, &ctx, &io, expires_at);
    Ok(())
}

/// Deletes a refused connect's namespace if no socket is in it.
fn refuse_namespace<A: Adapter>(ctx: &SocketCtx, io: &SocketIo<A>, ns: &str) {
    let io = io.clone();
    let yjs = ctx.yjs.clone();
    let ns = ns.to_owned();
    // After the refusal is sent from within the namespace.
    tokio::spawn(async move {
        if io.of(&ns).is_some_and(|op| op.sockets().is_empty()) {
            io.delete_ns(&ns);
            yjs.forget(&ns);
        }
    });
}

/// Disconnects the socket when its token expires (plus `auth.leeway_secs`).
fn watch_expiry<A: Adapter>(s: &SocketRef<A>, ctx: &SocketCtx, io: &SocketIo<A>, expires_at: u64) {
    if expires_at > super::lifetime::NO_EXPIRY_AFTER {
        return;
    }
    let end = expires_at.saturating_add(ctx.services.config.auth.leeway_secs);
    let wait = end.saturating_sub(crate::auth::jwt::now_secs());
    let (io, ns, sid) = (io.clone(), s.ns().to_owned(), s.id);
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if let Some(s) = io.of(&ns).and_then(|op| op.get_socket(sid)) {
            let notice = json!({
                "code": Code::TokenExpired.as_str(),
                "message": Message::HandshakeTokenExpired.text(),
            });
            let _ = s.emit("auth.expired", &notice);
            let _ = s.disconnect();
        }
    });
    if let Some(editor) = s.extensions.get::<Arc<Editor>>()
        && let Ok(mut expiry) = editor.expiry.lock()
    {
        *expiry = Some(task.abort_handle());
    }
}

/// How long the server waits for the client's `sync-step-1` before sending its own anyway.
const GREET_FALLBACK: Duration = Duration::from_secs(1);

/// Sends the server's `sync-step-1` (see [`greet`]) once the client's has been answered, or
/// after [`GREET_FALLBACK`] for a client that sends none.
async fn on_connect<A: Adapter>(s: SocketRef<A>, State(ctx): State<SocketCtx>) {
    let Some(editor) = s.extensions.get::<Arc<Editor>>() else {
        let _ = s.disconnect();
        return;
    };
    if !s.connected() {
        // Closed before it was connected: its disconnect handler may never run.
        leave(&ctx, &s, &editor).await;
        return;
    }
    tracing::debug!(parent: &span_of(&s), doc = %editor.doc.id.path(), "editor connected");
    tokio::spawn(async move {
        tokio::time::sleep(GREET_FALLBACK).await;
        if s.connected() {
            greet(&s, &ctx, &editor).await;
        }
    });
}

/// As the `y-socket.io` server does on connection: `sync-step-1` with the server's state
/// vector (the client's ack, what the server lacks, is applied), then every known awareness
/// state; once per socket. Sent after the answer to the client's own `sync-step-1`, never
/// before: the stock provider reports `synced` when the server's `sync-step-1` arrives, so
/// this way `synced` means it holds the server's document (the Node server sends it first,
/// and `synced` may come before the content).
async fn greet<A: Adapter>(s: &SocketRef<A>, ctx: &SocketCtx, editor: &Arc<Editor>) {
    if editor.greeted.swap(true, Ordering::AcqRel) {
        return;
    }
    let sv = Bytes::from(editor.doc.state_vector().await);
    match s.emit_with_ack::<_, Bytes>("sync-step-1", &sv) {
        Ok(ack) => {
            let (s, ctx, editor) = (s.clone(), ctx.clone(), editor.clone());
            tokio::spawn(async move {
                if let Ok(update) = ack.await {
                    apply_update(&s, &ctx, &editor, &update).await;
                }
            });
        }
        Err(e) => tracing::debug!(parent: &span_of(s), "cannot send sync-step-1: {e}"),
    }
    if let Some(states) = editor.doc.awareness_all()
        && let Err(e) = s.emit("awareness-update", &Bytes::from(states))
    {
        tracing::debug!(parent: &span_of(s), "cannot send awareness-update: {e}");
    }
}

async fn on_sync_step_1<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    Data(sv): Data<Bytes>,
    ack: AckSender<A>,
) {
    let Some(editor) = s.extensions.get::<Arc<Editor>>() else {
        return;
    };
    // A node that missed a published update catches up from the store first.
    if let Err(e) = ctx.services.documents.repair(&editor.doc).await {
        tracing::debug!(parent: &span_of(&s), "cannot read the stored document: {e}");
    }
    match editor.doc.diff(&sv).await {
        Ok(update) => {
            if let Err(e) = ack.send(&Bytes::from(update)) {
                tracing::debug!(parent: &span_of(&s), "cannot answer sync-step-1: {e}");
            }
            greet(&s, &ctx, &editor).await;
        }
        Err(e) => refuse(&s, &e),
    }
}

async fn on_sync_update<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    Data(update): Data<Bytes>,
) {
    if let Some(editor) = s.extensions.get::<Arc<Editor>>() {
        apply_update(&s, &ctx, &editor, &update).await;
    }
}

async fn apply_update<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    editor: &Editor,
    update: &[u8],
) {
    if let Err(e) = ctx.services.documents.update(&editor.doc, update).await {
        refuse(s, &e);
    }
}

async fn on_awareness_update<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    Data(update): Data<Bytes>,
) {
    let Some(editor) = s.extensions.get::<Arc<Editor>>() else {
        return;
    };
    match ctx.services.documents.awareness(&editor.doc, &update).await {
        Ok(clients) => {
            if let Ok(mut mine) = editor.clients.lock() {
                mine.extend(clients);
            }
        }
        Err(e) => refuse(&s, &e),
    }
}

/// The code and message of an update that was not applied.
pub(crate) fn refusal(e: &DocError) -> (Message, String) {
    match e {
        DocError::InvalidUpdate => (Message::InvalidUpdate, Message::InvalidUpdate.text()),
        DocError::UpdateTooLarge { limit } => (
            Message::UpdateTooLarge,
            Message::UpdateTooLarge.render(&[("limit", limit)]),
        ),
        DocError::DocumentTooLarge { limit } => (
            Message::DocumentTooLarge,
            Message::DocumentTooLarge.render(&[("limit", limit)]),
        ),
        DocError::Unavailable(reason) => (
            Message::DocumentUnavailable,
            Message::DocumentUnavailable.render(&[("reason", reason)]),
        ),
    }
}

/// An update that was not applied: the socket is sent `error` `{code, message}` and, but
/// for a storage failure, disconnected (its copy now holds what the others never will).
fn refuse<A: Adapter>(s: &SocketRef<A>, e: &DocError) {
    let (message, text) = refusal(e);
    let who = identity_of(s);
    tracing::info!(
        parent: &span_of(s),
        sid = %s.id,
        user_id = who.as_ref().map(|w| w.user_id.as_str()),
        code = message.code().as_str(),
        "document update refused"
    );
    let notice = json!({ "code": message.code().as_str(), "message": text });
    if let Err(e) = s.emit("error", &notice) {
        tracing::debug!(parent: &span_of(s), "cannot send the refusal: {e}");
    }
    if !matches!(e, DocError::Unavailable(_)) {
        let _ = s.clone().disconnect();
    }
}

async fn on_disconnect<A: Adapter>(s: SocketRef<A>, State(ctx): State<SocketCtx>) {
    if let Some(slot) = s.extensions.get::<Arc<Slot>>() {
        slot.release();
    }
    if let Some(editor) = s.extensions.get::<Arc<Editor>>() {
        leave(&ctx, &s, &editor).await;
    }
}

/// The editor is gone: its awareness states are removed for the others, its document
/// handle given back, its place among the session's documents freed. Once.
async fn leave<A: Adapter>(ctx: &SocketCtx, s: &SocketRef<A>, editor: &Editor) {
    if editor.left.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::debug!(parent: &span_of(s), doc = %editor.doc.id.path(), "editor left");
    if let Ok(mut expiry) = editor.expiry.lock()
        && let Some(task) = expiry.take()
    {
        task.abort();
    }
    if let Some(session) = &editor.session {
        session.0.fetch_sub(1, Ordering::AcqRel);
    }
    let clients = editor.clients.lock().map(|c| c.clone()).unwrap_or_default();
    ctx.services
        .documents
        .awareness_gone(&editor.doc, &clients)
        .await;
    ctx.services.documents.release(&editor.doc).await;
}

/// Hands document changes to the editors of this node (always local: other nodes hear of
/// them through the documents' own channel, and apply them to their copy first).
pub struct Editors<A: Adapter> {
    io: SocketIo<A>,
}

impl<A: Adapter> Editors<A> {
    pub fn new(io: SocketIo<A>) -> Self {
        Self { io }
    }
}

impl<A: Adapter> DocSink for Editors<A> {
    fn emit<'a>(
        &'a self,
        id: &'a DocId,
        event: &'static str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(op) = self.io.of(format!("{PREFIX}{}", id.path())) else {
                return;
            };
            let payload = Bytes::from(payload);
            if let Err(e) = op
                .local()
                .to(tenant_room(&id.tenant))
                .emit(event, &payload)
                .await
            {
                tracing::debug!(doc = %id.key(), event, "not every editor reached: {e}");
            }
        })
    }
}

/// Deletes the `/yjs|...` namespaces that have had no socket for two sweeps in a row,
/// every `documents.idle_namespace_secs`.
pub async fn sweep<A: Adapter>(io: SocketIo<A>, ctx: SocketCtx) {
    let every = Duration::from_secs(ctx.services.config.documents.idle_namespace_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let paths: Vec<(String, bool)> = match ctx.yjs.0.lock() {
            Ok(seen) => seen.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => return,
        };
        for (ns, was_empty) in paths {
            let empty = io.of(&ns).is_none_or(|op| op.sockets().is_empty());
            if empty && was_empty {
                io.delete_ns(&ns);
                ctx.yjs.forget(&ns);
            } else if let Ok(mut seen) = ctx.yjs.0.lock()
                && let Some(flag) = seen.get_mut(&ns)
            {
                *flag = empty;
            }
        }
    }
}
