//! `[documents]`: Yjs documents (the `y-socket.io` protocol on `/yjs|<room>/<name>`, and
//! `GET`/`POST /api/v1/documents/{name}`): how large an update and a document may be, how
//! many documents one connection may open, and when the stored log is compacted.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentsConfig {
    /// The largest Yjs update (or awareness update) a client or backend may send, in bytes.
    /// A socket sending a larger one is sent `error` `{code: "update_too_large"}` and
    /// disconnected; the update is never applied. `POST` answers `413 update_too_large`.
    pub max_update_bytes: usize,
    /// The most a document may hold, in bytes of its stored (merged) state plus the updates
    /// appended since it was last compacted. An update past it is refused like an
    /// oversized one, with `document_too_large`.
    pub max_document_bytes: usize,
    /// How many documents one Engine.IO connection may open (namespaces `/yjs|...` on one
    /// Manager; the stock `SocketIOProvider` opens one connection per document). A connect
    /// past it is refused with `connect_error` `too_many_documents`.
    pub max_documents_per_connection: usize,
    /// After how many stored updates a document's log is merged into its state (also when
    /// its last editor leaves and at shutdown).
    pub compact_every: u64,
    /// Seconds a `/yjs|...` namespace with no socket is kept before it is deleted (refused
    /// connects delete theirs at once when it has no socket).
    pub idle_namespace_secs: u64,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self {
            max_update_bytes: 1024 * 1024,
            max_document_bytes: 16 * 1024 * 1024,
            max_documents_per_connection: 16,
            compact_every: 500,
            idle_namespace_secs: 30,
        }
    }
}

impl DocumentsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_update_bytes == 0
            || self.max_document_bytes == 0
            || self.max_documents_per_connection == 0
            || self.compact_every == 0
        {
            return Err(ConfigError::Invalid(
                "documents.max_update_bytes, max_document_bytes, max_documents_per_connection and compact_every must be at least 1"
                    .into(),
            ));
        }
        if self.max_update_bytes > self.max_document_bytes {
            return Err(ConfigError::Invalid(
                "documents.max_update_bytes must not exceed documents.max_document_bytes".into(),
            ));
        }
        Ok(())
    }
}
