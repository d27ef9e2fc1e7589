//! Yjs documents on the lean path: a `/yjs|<room>/<name>` namespace of a lean Socket.IO
//! connection, speaking `y-socket.io`'s protocol exactly as `socket::yjs` does on
//! socketioxide's sessions (the same checks, codes, messages and order: the answer to the
//! client's `sync-step-1`, then the server's own `sync-step-1` and the awareness states).
//! The documents themselves are [`crate::documents`]'s; [`Editors`] is where they hand
//! this node's lean editors their changes (beside socketioxide's editors).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use socketioxide_core::Sid;

use super::sio::{self, Reader};
use super::{Lifetime, Role, Sock};
use crate::auth::Identity;
use crate::documents::{DocError, DocId, DocSink, Handle};
use crate::errors::{Code, Message};
use crate::rooms::identity_room;
use crate::services::Services;
use crate::socket::yjs::{document_of, granted, refusal};
use crate::sse::{Frame, Kind, SseHub};

/// How long the server waits for the client's `sync-step-1` before sending its own anyway
/// (as `socket::yjs`).
const GREET_FALLBACK: Duration = Duration::from_secs(1);

/// A lean socket on a document.
pub struct Editor {
    ns: String,
    identity: Arc<Identity>,
    doc: Handle,
    /// The awareness client ids this socket announced, removed when it leaves.
    clients: Mutex<HashSet<u64>>,
    queued: Arc<crate::sse::Conn>,
    /// Whether the server's `sync-step-1` was sent.
    greeted: AtomicBool,
    /// The ack id of the server's `sync-step-1` (its answer is the update the server
    /// lacks); -1 before it is sent.
    greet_ack: AtomicI64,
    left: AtomicBool,
}

impl Editor {
    pub(super) fn ns(&self) -> &str {
        &self.ns
    }

    pub(super) fn expires_at(&self) -> u64 {
        self.identity.expires_at
    }

    /// Queues an answer or a notice of the socket's own (never refused).
    fn send(&self, frame: Frame) {
        self.queued
            .push(Arc::new(frame), false, self.queued.buffer());
    }

    /// Queues event `event` with `data` (JSON).
    fn emit(&self, event: &str, data: &Value) {
        self.send(Frame::wire(crate::sse::socketio_event(
            &self.ns,
            event,
            &data.to_string(),
        )));
    }

    /// The token ran out: `auth.expired`, then the socket is disconnected.
    pub(super) fn expired(&self) {
        let notice = json!({
            "code": Code::TokenExpired.as_str(),
            "message": Message::HandshakeTokenExpired.text(),
        });
        self.emit("auth.expired", &notice);
    }

    /// The editor is gone: its awareness states are removed for the others and its
    /// document handle given back. Once.
    pub(super) async fn leave(&self, services: &Services) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(doc = %self.doc.id.path(), "lean editor left");
        let clients = self.clients.lock().map(|c| c.clone()).unwrap_or_default();
        services.documents.awareness_gone(&self.doc, &clients).await;
        services.documents.release(&self.doc).await;
    }

    /// The server's `sync-step-1` (the state vector, asking for what the server lacks),
    /// then every known awareness state; once.
    async fn greet(&self, reader_ack: i64) {
        if self.greeted.swap(true, Ordering::AcqRel) {
            return;
        }
        let sv = Bytes::from(self.doc.state_vector().await);
        self.greet_ack.store(reader_ack, Ordering::Release);
        let (text, binary) = sio::binary_event(&self.ns, "sync-step-1", sv, Some(reader_ack));
        self.send(Frame::binary(text, binary));
        if let Some(states) = self.doc.awareness_all() {
            let (text, binary) =
                sio::binary_event(&self.ns, "awareness-update", Bytes::from(states), None);
            self.send(Frame::binary(text, binary));
        }
    }

    /// An update that was not applied: `error` `{code, message}` and, but for a storage
    /// failure, the end of the socket (its copy now holds what the others never will).
    fn refuse(&self, e: &DocError) -> Option<sio::Leave> {
        let (message, text) = refusal(e);
        tracing::info!(
            user_id = %self.identity.user_id,
            code = message.code().as_str(),
            "document update refused"
        );
        self.emit(
            "error",
            &json!({ "code": message.code().as_str(), "message": text }),
        );
        (!matches!(e, DocError::Unavailable(_))).then_some(sio::Leave::REFUSED)
    }

    async fn apply(&self, services: &Services, update: &[u8]) -> Option<sio::Leave> {
        match services.documents.update(&self.doc, update).await {
            Ok(_) => None,
            Err(e) => self.refuse(&e),
        }
    }
}

/// A CONNECT to the document namespace `ns`, checked as `socket::yjs::authenticate`
/// checks it; the socket, or the `connect_error` message.
pub(super) async fn connect(
    reader: &mut Reader,
    services: &Arc<Services>,
    hub: &Arc<SseHub>,
    editors_open: usize,
    ns: &str,
    auth: Option<&Value>,
) -> Result<Sock, String> {
    let Some(path) = document_of(ns) else {
        return Err(Code::InvalidDocument.as_str().into());
    };
    let (identity, slot) = reader.handshake.admit(services, ns, auth).await?;
    let id = granted(services, &identity, ns, path).map_err(|code| code.as_str().to_owned())?;
    if editors_open >= services.config.documents.max_documents_per_connection {
        return Err(Code::TooManyDocuments.as_str().into());
    }
    let doc = match services.documents.open(&id).await {
        Ok(doc) => doc,
        Err(e) => {
            tracing::warn!(doc = %id.key(), "cannot open the document: {e}");
            return Err(Code::DocumentUnavailable.as_str().into());
        }
    };
    let sid = Sid::new();
    let queue = hub.open_lean(
        Kind::Editor,
        &sid.to_string(),
        services.config.limits.socket_buffer_packets,
    );
    let editor = Arc::new(Editor {
        ns: ns.to_owned(),
        identity: identity.clone(),
        doc,
        clients: Mutex::default(),
        queued: queue.conn.clone(),
        greeted: AtomicBool::new(false),
        greet_ack: AtomicI64::new(-1),
        left: AtomicBool::new(false),
    });
    // In its identity room: a revocation (and a drain) reaches it.
    hub.join(
        &queue.conn,
        [identity_room(&identity.tenant, &identity.user_id).into_owned()],
    );
    if let Some(lean) = reader.editors.upgrade() {
        lean.add(&editor);
    }
    // The CONNECT answer first, then whatever the document sends.
    queue
        .conn
        .first(Arc::new(Frame::wire(sio::connected(ns, sid))));
    tracing::debug!(doc = %editor.doc.id.path(), "lean editor connected");
    let (fallback, ack) = (editor.clone(), reader.next_ack());
    tokio::spawn(async move {
        tokio::time::sleep(GREET_FALLBACK).await;
        if !fallback.left.load(Ordering::Acquire) {
            fallback.greet(ack).await;
        }
    });
    Ok(Sock {
        lifetime: Lifetime::of(services, identity.expires_at, false),
        role: Role::Editor(editor),
        queue,
        slot: Some(slot),
    })
}

/// An event of the editor's client: `sync-step-1` (with an ack), `sync-update`,
/// `awareness-update`, each carrying one binary. `Some` ends the socket.
pub(super) async fn event(
    editor: &Arc<Editor>,
    services: &Services,
    reader: &mut Reader,
    name: &str,
    data: Option<Bytes>,
    ack: Option<i64>,
) -> Option<sio::Leave> {
    let data = data?;
    match name {
        "sync-step-1" => {
            // A node that missed a published update catches up from the store first.
            if let Err(e) = services.documents.repair(&editor.doc).await {
                tracing::debug!("cannot read the stored document: {e}");
            }
            match editor.doc.diff(&data).await {
                Ok(update) => {
                    if let Some(id) = ack {
                        let (text, binary) = sio::binary_ack(&editor.ns, id, Bytes::from(update));
                        editor.send(Frame::binary(text, binary));
                    }
                    editor.greet(reader.next_ack()).await;
                    None
                }
                Err(e) => editor.refuse(&e),
            }
        }
        "sync-update" => editor.apply(services, &data).await,
        "awareness-update" => match services.documents.awareness(&editor.doc, &data).await {
            Ok(clients) => {
                if let Ok(mut mine) = editor.clients.lock() {
                    mine.extend(clients);
                }
                None
            }
            Err(e) => editor.refuse(&e),
        },
        _ => None,
    }
}

/// The client's ack of a server emit: the answer to the server's `sync-step-1`.
pub(super) async fn acked(
    editor: &Arc<Editor>,
    services: &Services,
    id: i64,
    data: Option<Bytes>,
) -> Option<sio::Leave> {
    if editor.greet_ack.load(Ordering::Acquire) != id {
        return None;
    }
    editor.apply(services, &data?).await
}

/// This node's lean editors by document, for [`DocSink`].
#[derive(Default)]
pub struct Editors(Mutex<HashMap<String, Vec<Weak<Editor>>>>);

impl Editors {
    fn add(&self, editor: &Arc<Editor>) {
        if let Ok(mut all) = self.0.lock() {
            let list = all.entry(editor.doc.id.key()).or_default();
            list.retain(|e| e.strong_count() > 0);
            list.push(Arc::downgrade(editor));
        }
    }

    /// The live editors of `id`.
    fn of(&self, id: &DocId) -> Vec<Arc<Editor>> {
        let Ok(mut all) = self.0.lock() else {
            return Vec::new();
        };
        let key = id.key();
        let Some(list) = all.get_mut(&key) else {
            return Vec::new();
        };
        list.retain(|e| e.strong_count() > 0);
        let live: Vec<Arc<Editor>> = list.iter().filter_map(Weak::upgrade).collect();
        if list.is_empty() {
            all.remove(&key);
        }
        live
    }
}

/// Hands document changes to socketioxide's editors and to the lean ones.
pub struct BothEditors {
    pub sessions: Arc<dyn DocSink>,
    pub lean: Arc<Editors>,
}

impl DocSink for BothEditors {
    fn emit<'a>(
        &'a self,
        id: &'a DocId,
        event: &'static str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let editors = self.lean.of(id);
            if !editors.is_empty() {
                let ns = format!("{}{}", crate::socket::yjs::PREFIX, id.path());
                let (text, binary) =
                    sio::binary_event(&ns, event, Bytes::from(payload.clone()), None);
                let frame = Arc::new(Frame::binary(text, binary));
                for editor in editors.iter().filter(|e| !e.left.load(Ordering::Acquire)) {
                    // A reader too slow closes its connection: its client syncs again.
                    editor
                        .queued
                        .push(frame.clone(), true, editor.queued.buffer());
                }
            }
            self.sessions.emit(id, event, payload).await;
        })
    }
}
