//! Yjs documents: the open documents of this node, each a `yrs` [`Doc`] with the awareness
//! states of its editors, and the [`DocumentStore`] that keeps them (one backend per file:
//! [`memory`], [`disk`] in `[storage] path`'s redb file, [`redis`] in cluster mode).
//!
//! A document is `<room>/<name>` within a tenant ([`DocId`]). It is loaded when its first
//! editor (or an HTTP call) opens it and unloaded, compacted, when the last one leaves.
//! Every update that changes it is appended to the store *before* it is forwarded to the
//! other editors, so what an editor has seen is stored, even across a SIGKILL. The store
//! keeps a merged state and a log of the updates since; [`DocumentStore::compact`] merges
//! the log into the state every `documents.compact_every` updates, when the document is
//! unloaded and at shutdown.
//!
//! In a cluster the updates and awareness changes a node applies are published on the
//! `<prefix>:documents` Redis channel; the other nodes apply them to their open copy and
//! hand them to their editors ([`deliver_loop`]). Pub/sub is lossy, so a node also merges
//! the stored state when it opens a document and whenever an editor sends `sync-step-1`
//! (applying a Yjs update twice changes nothing).

pub mod disk;
pub mod memory;
pub mod redis;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact, Update};

use crate::config::DocumentsConfig;
use crate::rooms::{Id, RoomName, Tenant};

pub use disk::DiskDocuments;
pub use memory::MemoryDocuments;
pub use redis::{RedisBus, RedisDocuments};

/// A document: `<room>/<name>` in a tenant. The room is a [`RoomName`], the name an [`Id`]
/// (1 to 128 characters of `[A-Za-z0-9_.-]`, so no `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocId {
    pub tenant: Tenant,
    pub room: RoomName,
    pub name: Id,
}

impl DocId {
    /// Parses `<room>/<name>`.
    pub fn parse(tenant: Tenant, path: &str) -> Option<Self> {
        let (room, name) = path.split_once('/')?;
        Some(Self {
            tenant,
            room: RoomName::parse(room)?,
            name: Id::parse(name)?,
        })
    }

    /// `<room>/<name>`, as clients name it.
    pub fn path(&self) -> String {
        format!("{}/{}", self.room, self.name)
    }

    /// `<tenant>/<room>/<name>`: the store key (the tenant charset has no `/`).
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.room, self.name)
    }
}

/// Why an update or a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("not a Yjs update (v1) or awareness update")]
    InvalidUpdate,
    #[error("the update is larger than {limit} bytes")]
    UpdateTooLarge { limit: usize },
    #[error("the document would grow past {limit} bytes")]
    DocumentTooLarge { limit: usize },
    #[error("document storage: {0}")]
    Unavailable(String),
}

/// Where documents are kept. `load` answers the merged state (stored state and the log
/// after it), `append` adds one update to the log and answers how many the log holds,
/// `compact` replaces state and log with their merge without losing an update appended
/// meanwhile.
pub trait DocumentStore: Send + Sync {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, DocError>>;
    fn append<'a>(&'a self, key: &'a str, update: &'a [u8])
    -> BoxFuture<'a, Result<u64, DocError>>;
    fn compact<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DocError>>;
}

/// Merges Yjs updates (v1) into one (`yrs::merge_updates_v1`: no document needed, and
/// updates whose dependencies are missing are kept, not dropped).
pub fn merge(parts: &[&[u8]]) -> Result<Vec<u8>, DocError> {
    match parts {
        [] => Ok(Vec::new()),
        [one] => Ok(one.to_vec()),
        _ => yrs::merge_updates_v1(parts.iter().copied()).map_err(|_| DocError::InvalidUpdate),
    }
}

/// What the socket side hands an open document's editors on this node: `sync-update` and
/// `awareness-update`, binary.
pub trait DocSink: Send + Sync {
    fn emit<'a>(
        &'a self,
        id: &'a DocId,
        event: &'static str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, ()>;
}

/// An awareness state: its clock and JSON (`"null"` once removed).
type States = HashMap<u64, (u32, Arc<str>)>;

/// A document open on this node.
pub struct OpenDoc {
    pub id: DocId,
    key: String,
    /// Everything that reads or changes the `yrs` document goes through this lock, so
    /// updates are applied, stored and forwarded in one order.
    inner: tokio::sync::Mutex<Inner>,
    loaded: tokio::sync::OnceCell<()>,
    awareness: Mutex<States>,
    /// Editors and HTTP calls holding the document open (changed under the registry lock).
    holders: Mutex<usize>,
}

struct Inner {
    doc: Doc,
    /// The stored state's size plus what was appended since: what `max_document_bytes`
    /// bounds.
    size: usize,
}

impl OpenDoc {
    fn new(id: DocId) -> Self {
        Self {
            key: id.key(),
            id,
            inner: tokio::sync::Mutex::new(Inner {
                doc: Doc::new(),
                size: 0,
            }),
            loaded: tokio::sync::OnceCell::new(),
            awareness: Mutex::default(),
            holders: Mutex::new(0),
        }
    }

    /// The document's state vector (v1).
    pub async fn state_vector(&self) -> Vec<u8> {
        let inner = self.inner.lock().await;
        inner.doc.transact().state_vector().encode_v1()
    }

    /// What the holder of `state_vector` lacks, as an update (v1).
    pub async fn diff(&self, state_vector: &[u8]) -> Result<Vec<u8>, DocError> {
        let sv = decode::<StateVector>(state_vector)?;
        let inner = self.inner.lock().await;
        Ok(inner.doc.transact().encode_state_as_update_v1(&sv))
    }

    /// Every known awareness state, as one awareness update (`None` when there is none).
    pub fn awareness_all(&self) -> Option<Vec<u8>> {
        let states = self.awareness.lock().ok()?;
        let clients: HashMap<_, _> = states
            .iter()
            .filter(|(_, (_, json))| &**json != "null")
            .map(|(id, (clock, json))| {
                (
                    yrs::block::ClientID::new(*id),
                    AwarenessUpdateEntry {
                        clock: *clock,
                        json: json.clone(),
                    },
                )
            })
            .collect();
        (!clients.is_empty()).then(|| AwarenessUpdate { clients }.encode_v1())
    }

    /// Applies an update that was stored elsewhere (another node, the store); answers the
    /// part that was new here, if any.
    async fn apply_stored(&self, update: &[u8]) -> Result<Option<Vec<u8>>, DocError> {
        let inner = self.inner.lock().await;
        let update = decode::<Update>(update)?;
        Ok(apply(&inner.doc, update))
    }

    /// Applies an awareness update; answers the client ids it names and whether any state
    /// changed.
    fn apply_awareness(&self, update: &AwarenessUpdate) -> bool {
        let Ok(mut states) = self.awareness.lock() else {
            return false;
        };
        let mut changed = false;
        for (client, entry) in &update.clients {
            let id = client.get();
            let newer = match states.get(&id) {
                Some((clock, json)) => {
                    entry.clock > *clock
                        || (entry.clock == *clock && &*entry.json == "null" && &**json != "null")
                }
                None => true,
            };
            if newer {
                changed = true;
                if &*entry.json == "null" {
                    states.remove(&id);
                } else {
                    states.insert(id, (entry.clock, entry.json.clone()));
                }
            }
        }
        changed
    }
}

/// The smallest encoding of one entry counted by the leading number of each format: a
/// client of an update (blocks, client, clock), of a state vector (client, clock), of an
/// awareness update (client, clock, state length).
trait Entries {
    const MIN_ENTRY_BYTES: usize;
}

impl Entries for Update {
    const MIN_ENTRY_BYTES: usize = 3;
}

impl Entries for StateVector {
    const MIN_ENTRY_BYTES: usize = 2;
}

impl Entries for AwarenessUpdate {
    const MIN_ENTRY_BYTES: usize = 3;
}

/// Whether the leading count (a lib0 varuint) of `bytes` could be true: `yrs` reserves a
/// hash map of that many entries before reading them, so 20 bytes claiming a hundred
/// million entries would cost a gigabyte and a second of CPU.
fn plausible_count(bytes: &[u8], min_entry: usize) -> bool {
    let mut count: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        count |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let rest = (bytes.len() - i - 1) as u64;
            return count.saturating_mul(min_entry as u64) <= rest;
        }
    }
    false
}

/// Decodes a client's bytes (v1); a count the bytes cannot hold, or a panic inside `yrs`, is
/// an invalid update.
fn decode<T: Decode + Entries>(bytes: &[u8]) -> Result<T, DocError> {
    if !plausible_count(bytes, T::MIN_ENTRY_BYTES) {
        return Err(DocError::InvalidUpdate);
    }
    std::panic::catch_unwind(|| T::decode_v1(bytes))
        .ok()
        .and_then(Result::ok)
        .ok_or(DocError::InvalidUpdate)
}

/// Applies `update` to `doc`; the changes it made, as an update, when it made any. A
/// panic inside `yrs` on a hostile update is caught and taken as no change: a client's
/// bytes never take the server down.
fn apply(doc: &Doc, update: Update) -> Option<Vec<u8>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut txn = doc.try_transact_mut().ok()?;
        if txn.apply_update(update).is_err() {
            return None;
        }
        let changed = txn.before_state() != txn.after_state() || !txn.delete_set().is_empty();
        changed.then(|| txn.encode_update_v1())
    }))
    .ok()
    .flatten()
}

/// A handle on an open document; give it back with [`Documents::release`].
pub type Handle = Arc<OpenDoc>;

/// This node's open documents and the store behind them.
pub struct Documents {
    store: Arc<dyn DocumentStore>,
    config: DocumentsConfig,
    open: Mutex<HashMap<String, Handle>>,
    sink: OnceLock<Arc<dyn DocSink>>,
    /// Cluster mode: where applied changes go to the other nodes.
    bus: Option<RedisBus>,
    /// Updates applied (from editors and HTTP), for the metrics.
    pub updates: AtomicU64,
}

impl Documents {
    pub fn new(
        store: Arc<dyn DocumentStore>,
        config: DocumentsConfig,
        bus: Option<RedisBus>,
    ) -> Self {
        Self {
            store,
            config,
            open: Mutex::default(),
            sink: OnceLock::new(),
            bus,
            updates: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &DocumentsConfig {
        &self.config
    }

    /// Where changes go to this node's editors (set once the Socket.IO server exists).
    pub fn deliver_through(&self, sink: Arc<dyn DocSink>) {
        let _ = self.sink.set(sink);
    }

    /// How many documents are open on this node.
    pub fn open_count(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    /// Opens `id` (loading it from the store the first time); the caller holds it until
    /// [`Self::release`].
    pub async fn open(&self, id: &DocId) -> Result<Handle, DocError> {
        let key = id.key();
        let doc = {
            let mut open = self.open.lock().map_err(|_| poisoned())?;
            let doc = open
                .entry(key)
                .or_insert_with(|| Arc::new(OpenDoc::new(id.clone())))
                .clone();
            *doc.holders.lock().map_err(|_| poisoned())? += 1;
            doc
        };
        let loaded = doc
            .loaded
            .get_or_try_init(|| async {
                let stored = self.store.load(&doc.key).await?;
                if let Some(stored) = stored {
                    let size = stored.len();
                    doc.apply_stored(&stored).await?;
                    doc.inner.lock().await.size = size;
                }
                Ok::<(), DocError>(())
            })
            .await;
        if let Err(e) = loaded {
            self.release(&doc).await;
            return Err(e);
        }
        Ok(doc)
    }

    /// Gives back a handle; the last one unloads the document after compacting it.
    pub async fn release(&self, doc: &Handle) {
        let last = {
            let Ok(mut open) = self.open.lock() else {
                return;
            };
            let Ok(mut holders) = doc.holders.lock() else {
                return;
            };
            *holders = holders.saturating_sub(1);
            let last = *holders == 0;
            if last && open.get(&doc.key).is_some_and(|d| Arc::ptr_eq(d, doc)) {
                open.remove(&doc.key);
            }
            last
        };
        if last
            && doc.loaded.initialized()
            && let Err(e) = self.store.compact(&doc.key).await
        {
            tracing::warn!(doc = %doc.key, "cannot compact the document: {e}");
        }
    }

    /// Compacts every open document (at shutdown).
    pub async fn compact_all(&self) {
        let keys: Vec<String> = self
            .open
            .lock()
            .map(|open| open.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            if let Err(e) = self.store.compact(&key).await {
                tracing::warn!(doc = %key, "cannot compact the document: {e}");
            }
        }
    }

    /// Applies an editor's (or a backend's) update: checked, applied, stored, then handed
    /// to this node's editors and the other nodes. Answers whether it changed anything.
    pub async fn update(&self, doc: &Handle, update: &[u8]) -> Result<bool, DocError> {
        let limit = self.config.max_update_bytes;
        if update.len() > limit {
            return Err(DocError::UpdateTooLarge { limit });
        }
        let mut inner = doc.inner.lock().await;
        let limit = self.config.max_document_bytes;
        if inner.size + update.len() > limit {
            return Err(DocError::DocumentTooLarge { limit });
        }
        let decoded = decode::<Update>(update)?;
        let Some(delta) = apply(&inner.doc, decoded) else {
            return Ok(false);
        };
        inner.size += delta.len();
        let appended = self.store.append(&doc.key, &delta).await?;
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.forward(doc, "sync-update", delta).await;
        drop(inner);
        if appended >= self.config.compact_every {
            self.compact_in_background(doc);
        }
        Ok(true)
    }

    /// Applies a change made on the server's own copy (`edit` runs in a transaction), as
    /// [`Self::update`] does an editor's.
    pub async fn edit(
        &self,
        doc: &Handle,
        edit: impl FnOnce(&Doc) -> Option<Vec<u8>>,
    ) -> Result<bool, DocError> {
        let mut inner = doc.inner.lock().await;
        let Some(delta) = edit(&inner.doc) else {
            return Ok(false);
        };
        let limit = self.config.max_document_bytes;
        if inner.size + delta.len() > limit {
            return Err(DocError::DocumentTooLarge { limit });
        }
        inner.size += delta.len();
        let appended = self.store.append(&doc.key, &delta).await?;
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.forward(doc, "sync-update", delta).await;
        drop(inner);
        if appended >= self.config.compact_every {
            self.compact_in_background(doc);
        }
        Ok(true)
    }

    fn compact_in_background(&self, doc: &Handle) {
        let store = self.store.clone();
        let key = doc.key.clone();
        tokio::spawn(async move {
            if let Err(e) = store.compact(&key).await {
                tracing::warn!(doc = %key, "cannot compact the document: {e}");
            }
        });
    }

    /// Hands a change to this node's editors and publishes it to the other nodes.
    async fn forward(&self, doc: &OpenDoc, event: &'static str, payload: Vec<u8>) {
        if let Some(bus) = &self.bus {
            bus.publish(event, &doc.id, &payload).await;
        }
        if let Some(sink) = self.sink.get() {
            sink.emit(&doc.id, event, payload).await;
        }
    }

    /// Applies an editor's awareness update and relays it; answers the client ids it names
    /// (the socket's, removed when it leaves).
    pub async fn awareness(&self, doc: &Handle, update: &[u8]) -> Result<Vec<u64>, DocError> {
        let limit = self.config.max_update_bytes;
        if update.len() > limit {
            return Err(DocError::UpdateTooLarge { limit });
        }
        let decoded = decode::<AwarenessUpdate>(update)?;
        let clients = decoded.clients.keys().map(|c| c.get()).collect();
        if doc.apply_awareness(&decoded) {
            self.forward(doc, "awareness-update", update.to_vec()).await;
        }
        Ok(clients)
    }

    /// The editor that announced `clients` left: their states are removed (`null` with a
    /// newer clock), here and for every other editor.
    pub async fn awareness_gone(&self, doc: &Handle, clients: &HashSet<u64>) {
        let update = {
            let Ok(states) = doc.awareness.lock() else {
                return;
            };
            let gone: HashMap<_, _> = clients
                .iter()
                .filter_map(|id| {
                    let (clock, _) = states.get(id)?;
                    Some((
                        yrs::block::ClientID::new(*id),
                        AwarenessUpdateEntry {
                            clock: clock.saturating_add(1),
                            json: "null".into(),
                        },
                    ))
                })
                .collect();
            if gone.is_empty() {
                return;
            }
            AwarenessUpdate { clients: gone }
        };
        if doc.apply_awareness(&update) {
            self.forward(doc, "awareness-update", update.encode_v1())
                .await;
        }
    }

    /// Cluster mode: merges the stored state into this node's copy (it may have missed a
    /// published update) and hands what was new to this node's editors.
    pub async fn repair(&self, doc: &Handle) -> Result<(), DocError> {
        if self.bus.is_none() {
            return Ok(());
        }
        if let Some(stored) = self.store.load(&doc.key).await?
            && let Some(delta) = doc.apply_stored(&stored).await?
            && let Some(sink) = self.sink.get()
        {
            sink.emit(&doc.id, "sync-update", delta).await;
        }
        Ok(())
    }

    /// The whole document as one update (v1), from this node's copy when it is open, else
    /// from the store; `None` when it was never stored.
    pub async fn read(&self, id: &DocId) -> Result<Option<Vec<u8>>, DocError> {
        let open = self
            .open
            .lock()
            .ok()
            .and_then(|open| open.get(&id.key()).cloned());
        if let Some(doc) = open.filter(|d| d.loaded.initialized()) {
            return doc
                .diff(&StateVector::default().encode_v1())
                .await
                .map(Some);
        }
        let stored = self.store.load(&id.key()).await?;
        // A merged log is an update; through a document it is the compact form.
        Ok(match stored {
            Some(stored) => {
                let doc = Doc::new();
                let update = decode::<Update>(&stored)?;
                apply(&doc, update);
                Some(
                    doc.transact()
                        .encode_state_as_update_v1(&StateVector::default()),
                )
            }
            None => None,
        })
    }

    /// A change another node applied (`event` `sync-update` or `awareness-update`).
    async fn apply_other_node(&self, event: &str, key: &str, payload: &[u8]) {
        let Some(doc) = self
            .open
            .lock()
            .ok()
            .and_then(|open| open.get(key).cloned())
        else {
            return;
        };
        if !doc.loaded.initialized() {
            return;
        }
        match event {
            "sync-update" => {
                if let Ok(Some(delta)) = doc.apply_stored(payload).await
                    && let Some(sink) = self.sink.get()
                {
                    sink.emit(&doc.id, "sync-update", delta).await;
                }
            }
            "awareness-update" => {
                if let Ok(update) = decode::<AwarenessUpdate>(payload)
                    && doc.apply_awareness(&update)
                    && let Some(sink) = self.sink.get()
                {
                    sink.emit(&doc.id, "awareness-update", payload.to_vec())
                        .await;
                }
            }
            _ => {}
        }
    }
}

fn poisoned() -> DocError {
    DocError::Unavailable("a lock was poisoned".into())
}

/// The JSON view of a document: each root as a string (`Y.Text`), an object (`Y.Map`) or an
/// array (`Y.Array`). Yjs updates do not record a root's type: `text` and `map` name the
/// roots to read as such; any other root's type is inferred from its content (an empty
/// root reads as `{}`; XML roots as their text).
pub fn to_json(
    update: &[u8],
    text: &[&str],
    map: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, DocError> {
    use yrs::types::AsPrelim;
    use yrs::types::ToJson;
    use yrs::{In, Out};
    let doc = Doc::new();
    apply(&doc, decode::<Update>(update)?);
    let mut names: Vec<(String, Kind)> = Vec::new();
    {
        let txn = doc.transact();
        for (name, value) in txn.root_refs() {
            let kind = if text.contains(&name) {
                Kind::Text
            } else if map.contains(&name) {
                Kind::Map
            } else {
                match value {
                    Out::YText(_) => Kind::Text,
                    Out::YMap(_) => Kind::Map,
                    Out::YArray(_) => Kind::Array,
                    Out::UndefinedRef(_) => match value.as_prelim(&txn) {
                        In::Text(_) | In::XmlText(_) => Kind::Text,
                        In::Array(_) => Kind::Array,
                        In::Map(_) => Kind::Map,
                        _ => Kind::Other,
                    },
                    _ => Kind::Other,
                }
            };
            names.push((name.to_owned(), kind));
        }
    }
    let mut roots = serde_json::Map::new();
    for (name, kind) in names {
        let value = match kind {
            Kind::Text => {
                let text = doc.get_or_insert_text(name.as_str());
                serde_json::Value::String(text.get_string(&doc.transact()))
            }
            Kind::Map => {
                let map = doc.get_or_insert_map(name.as_str());
                any_to_json(&map.to_json(&doc.transact()))
            }
            Kind::Array => {
                let array = doc.get_or_insert_array(name.as_str());
                any_to_json(&array.to_json(&doc.transact()))
            }
            Kind::Other => serde_json::Value::Null,
        };
        roots.insert(name, value);
    }
    Ok(roots)
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Map,
    Array,
    Other,
}

fn any_to_json(any: &yrs::Any) -> serde_json::Value {
    let mut out = String::new();
    any.to_json(&mut out);
    serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
}

/// Cluster mode: applies the changes other nodes published to this node's open copies and
/// hands them to its editors.
pub async fn deliver_loop(
    documents: Arc<Documents>,
    mut messages: socketioxide_redis::drivers::MessageStream<(String, Vec<u8>)>,
) {
    let Some(node) = documents.bus.as_ref().map(|b| b.node_id().to_owned()) else {
        return;
    };
    while let Some((_, message)) = messages.next().await {
        if let Some((event, from, key, payload)) = redis::parse(&message)
            && from != node
        {
            documents.apply_other_node(event, key, payload).await;
        }
    }
}
