//! Idempotent publishing: a publish carrying an idempotency key (`Idempotency-Key`, or
//! GitHub's `X-GitHub-Delivery`) is done once per key within the window; a retry gets the
//! first answer and delivers nothing again. Backends: [`memory`] (a single node),
//! [`disk`] (a single node with `[storage] path`: answers survive a restart) and, in cluster
//! mode, [`redis`] (`SET NX`, shared by every node).

pub mod disk;
pub mod memory;
pub mod redis;

pub use disk::DiskIdempotency;
pub use memory::MemoryIdempotency;
pub use redis::RedisIdempotency;

use futures_util::future::BoxFuture;

/// Who publishes with an idempotency key. Each has its own namespace of keys, so no one
/// can claim another's: an API key's namespace is its `name` (unique, an id without `:`,
/// never one of [`Publisher::RESERVED`]: the config refuses the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher<'a> {
    /// An API key, by its name.
    ApiKey(&'a str),
    /// `POST /webhooks/github` (`X-GitHub-Delivery`).
    Github,
    /// The Redis stream ingest (an entry's `idempotency_key`, or its stream and id).
    Ingest,
}

impl Publisher<'_> {
    /// The namespaces of the internal publishers: names no API key may have.
    pub const RESERVED: &'static [&'static str] = crate::config::RESERVED_KEY_NAMES;

    /// The publisher's namespace.
    pub fn namespace(&self) -> &str {
        match self {
            Self::ApiKey(name) => name,
            Self::Github => Self::RESERVED[0],
            Self::Ingest => Self::RESERVED[1],
        }
    }

    /// The store key of the publisher's idempotency key `key` (the broadcaster adds the
    /// tenant in front).
    pub fn scoped(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace())
    }
}

/// What the store knows of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the caller publishes, then calls `finish` (or `abandon` on failure).
    New,
    /// Already published: the stored answer (JSON of [`crate::Published`]).
    Done(String),
    /// Another request with this key is publishing right now.
    Pending,
}

#[derive(Debug, thiserror::Error)]
#[error("idempotency store: {0}")]
pub struct IdempotencyError(pub String);

pub trait IdempotencyStore: Send + Sync + 'static {
    fn claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Claim, IdempotencyError>>;
    fn finish<'a>(
        &'a self,
        key: &'a str,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), IdempotencyError>>;
    fn abandon<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), IdempotencyError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_publishers_use_the_reserved_namespaces() {
        assert_eq!(Publisher::Github.scoped("d1"), "github:d1");
        assert_eq!(Publisher::Ingest.scoped("s/1-0"), "ingest:s/1-0");
        assert_eq!(Publisher::ApiKey("ci").scoped("x:a"), "ci:x:a");
        assert_eq!(
            Publisher::RESERVED,
            [Publisher::Github.namespace(), Publisher::Ingest.namespace()]
        );
    }
}
