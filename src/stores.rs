//! Where a node keeps what outlives a request: room history, idempotency answers,
//! presence, AI streams, task progress, locks and Yjs documents. The backend is chosen here,
//! once, from the config:
//! - memory: a single node without `[storage] path` (lost on restart);
//! - disk: a single node with `[storage] path`: history (room epochs, `seq`s, the events
//!   within retention), idempotency answers and documents in one redb file,
//!   `<path>/roomcast.redb`, each kept event, answer and document update committed
//!   (fsynced) before the publish is answered (the update forwarded);
//! - Redis: cluster mode (`cluster.redis_url`), shared by every node; `[storage]` is not
//!   used then (a warning says so at start).
//!
//! Presence is in memory on a single node either way: it describes live sockets, which a
//! restart ends. So are streams ([`crate::streams`]): a stream lives for minutes, and a
//! restart ends its producer's request anyway. And so is task progress ([`crate::tasks`]):
//! a restart loses a task's rate, which its next progress events rebuild. Locks too
//! ([`crate::locks`]): a restart ends every socket that held one; only their fencing
//! counter is kept in the file, so tokens keep growing across restarts.
//!
//! Why redb for the disk: one file, pure Rust, ACID write transactions whose commit is
//! durable (fsynced) by default, so "a `202` means the event is on disk" is one commit per
//! publish with nothing to tune, and no background compaction or journal thread. An LSM
//! store such as fjall writes faster under heavy load but makes durability a separate
//! journal-sync decision (per write or on a timer) and needs more moving parts for what is
//! here three small tables. At one small event per publish the cost is the fsync, which
//! any durable store pays (measured in BENCHMARKS.md, "Storage on disk").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socketioxide_redis::drivers::MessageStream;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::delivery::Deliver;
use crate::documents::{DiskDocuments, Documents, MemoryDocuments};
use crate::history::{DiskHistory, History, HistoryStore, RedisHistory};
use crate::idempotency::{DiskIdempotency, IdempotencyStore, MemoryIdempotency, RedisIdempotency};
use crate::locks::{Locks, RedisLocks, disk::DiskFence};
use crate::metrics::Counters;
use crate::presence::{MemoryStore, PresenceStore};
use crate::streams::Streams;
use crate::tasks::{RedisTasks, Tasks};
use crate::workers::Workers;

/// The file inside `[storage] path`.
pub const FILE: &str = "roomcast.redb";

/// The stores of a node.
pub struct Stores {
    pub history: HistoryStore,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub presence: Arc<dyn PresenceStore>,
    pub streams: Arc<Streams>,
    /// Task progress, behind `task.progress`'s rate and ETA.
    pub tasks: Arc<Tasks>,
    /// Locks for critical sections and their fencing counter.
    pub locks: Arc<Locks>,
    /// Yjs documents: the open ones of this node and where they are kept.
    pub documents: Arc<Documents>,
    /// Cluster mode: the other nodes' document changes, for [`Self::start`].
    document_messages: Option<MessageStream<(String, Vec<u8>)>>,
    /// The history's background work, started by [`Self::start`].
    worker: Option<Worker>,
    /// The streams' background work, started by [`Self::start`].
    streams_worker: Option<StreamsWorker>,
    /// Whether [`Self::start`] starts the tasks' sweeper (memory only: Redis expires idle
    /// tasks itself).
    tasks_sweeper: bool,
}

enum StreamsWorker {
    /// Drops ended and idle streams of this node.
    Sweeper,
    /// Delivers the deltas Redis published to this node's sockets.
    Deltas(MessageStream<(String, Vec<u8>)>),
}

enum Worker {
    /// Drops expired events and idle rooms of the local logs.
    Sweeper(Arc<History>),
    /// Delivers the events Redis numbered, in `seq` order, to this node's sockets.
    Numbered(Arc<RedisHistory>, MessageStream<(String, Vec<u8>)>),
}

impl Stores {
    /// Opens the stores `config` names (`cluster` is the node's cluster in cluster mode).
    pub fn open(config: &Config, cluster: Option<&Cluster>) -> anyhow::Result<Self> {
        let window = Duration::from_secs(config.publish.idempotency_window_secs);
        if let Some(cluster) = cluster {
            if let Some(path) = &config.storage.path {
                tracing::warn!(
                    path = %path.display(),
                    "storage.path is not used in cluster mode: history and idempotency keys are kept in Redis"
                );
            }
            let history = Arc::new(cluster.history(config.history.clone()));
            let (conn, prefix) = cluster.redis();
            let numbered = cluster.numbered_events(&history);
            let streams = Arc::new(cluster.streams());
            let deltas = cluster.stream_messages(&streams);
            let (documents, bus, document_messages) = cluster.documents();
            return Ok(Self {
                history: HistoryStore::Redis(history.clone()),
                idempotency: Arc::new(RedisIdempotency::new(conn.clone(), prefix, window)),
                presence: cluster.store.clone(),
                streams: Arc::new(Streams::redis(streams, config.streams.clone())),
                tasks: Arc::new(Tasks::redis(
                    RedisTasks::new(conn.clone(), prefix),
                    config.tasks.clone(),
                )),
                locks: Arc::new(Locks::redis(
                    RedisLocks::new(conn, prefix),
                    config.locks.clone(),
                )),
                documents: Arc::new(Documents::new(
                    Arc::new(documents),
                    config.documents.clone(),
                    Some(bus),
                )),
                document_messages: Some(document_messages),
                worker: Some(Worker::Numbered(history, numbered)),
                streams_worker: Some(StreamsWorker::Deltas(deltas)),
                tasks_sweeper: false,
            });
        }
        let (history, idempotency, locks, documents): (
            History,
            Arc<dyn IdempotencyStore>,
            Locks,
            Arc<dyn crate::documents::DocumentStore>,
        ) = match &config.storage.path {
            None => (
                History::new(config.history.clone()),
                Arc::new(MemoryIdempotency::new(window)),
                Locks::memory(config.locks.clone()),
                Arc::new(MemoryDocuments::default()),
            ),
            Some(path) => {
                let db = open_database(path)?;
                let history = History::open(config.history.clone(), DiskHistory::new(db.clone()))
                    .with_context(|| {
                    format!("storage.path {}: reading history", path.display())
                })?;
                let idempotency = DiskIdempotency::open(db.clone(), window).with_context(|| {
                    format!("storage.path {}: reading idempotency keys", path.display())
                })?;
                let locks = Locks::on_disk(config.locks.clone(), DiskFence::new(db.clone()))
                    .with_context(|| {
                        format!(
                            "storage.path {}: reading the locks' fencing counter",
                            path.display()
                        )
                    })?;
                let documents = DiskDocuments::open(db).with_context(|| {
                    format!("storage.path {}: opening the documents", path.display())
                })?;
                tracing::info!(
                    file = %path.join(FILE).display(),
                    "history, idempotency keys, the locks' fencing counter and documents are kept on disk"
                );
                (history, Arc::new(idempotency), locks, Arc::new(documents))
            }
        };
        let history = Arc::new(history);
        Ok(Self {
            history: HistoryStore::Local(history.clone()),
            idempotency,
            presence: Arc::new(MemoryStore::default()),
            streams: Arc::new(Streams::memory(config.streams.clone())),
            tasks: Arc::new(Tasks::memory(config.tasks.clone())),
            locks: Arc::new(locks),
            documents: Arc::new(Documents::new(documents, config.documents.clone(), None)),
            document_messages: None,
            worker: Some(Worker::Sweeper(history)),
            streams_worker: Some(StreamsWorker::Sweeper),
            tasks_sweeper: true,
        })
    }

    /// Starts the history's, the streams' and the tasks' background work (once; later calls do
    /// nothing).
    pub fn start(&mut self, workers: &Workers, io: Arc<dyn Deliver>, counters: Arc<Counters>) {
        match self.streams_worker.take() {
            Some(StreamsWorker::Sweeper) => {
                self.streams.deliver_later_through(&io);
                workers.start("streams_sweeper", self.streams.clone().run_sweeper());
            }
            Some(StreamsWorker::Deltas(messages)) => {
                workers.start(
                    "stream_delivery",
                    crate::streams::redis::deliver_loop(self.streams.clone(), messages, io.clone()),
                );
            }
            None => {}
        }
        if let Some(messages) = self.document_messages.take() {
            workers.start(
                "document_delivery",
                crate::documents::deliver_loop(self.documents.clone(), messages),
            );
        }
        if std::mem::take(&mut self.tasks_sweeper) {
            workers.start("tasks_sweeper", self.tasks.clone().run_sweeper());
        }
        match self.worker.take() {
            Some(Worker::Sweeper(history)) => {
                workers.start("history_sweeper", history.run_sweeper());
            }
            Some(Worker::Numbered(history, events)) => {
                workers.start(
                    "history_delivery",
                    crate::history::redis::deliver_loop(history, events, io, counters),
                );
            }
            None => {}
        }
    }
}

/// Opens (or creates) `<path>/roomcast.redb`.
fn open_database(path: &Path) -> anyhow::Result<Arc<redb::Database>> {
    std::fs::create_dir_all(path).with_context(|| {
        format!(
            "storage.path {}: cannot create the directory",
            path.display()
        )
    })?;
    let file = path.join(FILE);
    let db = redb::Database::create(&file).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
            "storage.path {}: {} is in use by another roomcast process (each server needs its own storage.path)",
            path.display(),
            file.display()
        ),
        e => anyhow::anyhow!("storage.path {}: cannot open {}: {e}", path.display(), file.display()),
    })?;
    Ok(Arc::new(db))
}
