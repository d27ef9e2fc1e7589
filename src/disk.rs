//! What the disk backends of the stores share (`[storage] path`, one redb file): times as
//! the disk keeps them and the storage error. A leaf: the stores' backends and the module
//! that chooses among them ([`crate::stores`]) all import it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (what the disk keeps: an `Instant` does not
/// survive a restart).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `Instant` of a time read from disk (now, for a time before this machine's boot).
pub fn instant_of(at_ms: u64) -> Instant {
    let age = Duration::from_millis(now_ms().saturating_sub(at_ms));
    Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
}

/// A failed read or write of `[storage] path` (redb's error, boxed: it is large).
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for StorageError {
    fn from(e: E) -> Self {
        Self(Box::new(e.into()))
    }
}
