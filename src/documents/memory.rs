//! Documents in memory (a single node without `[storage] path`): lost on restart.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{DocError, DocumentStore, merge};

/// Key -> (state, updates appended since).
type Docs = HashMap<String, (Vec<u8>, Vec<Vec<u8>>)>;

#[derive(Default)]
pub struct MemoryDocuments {
    docs: Mutex<Docs>,
}

impl MemoryDocuments {
    fn with<T>(&self, f: impl FnOnce(&mut Docs) -> Result<T, DocError>) -> Result<T, DocError> {
        let mut docs = self
            .docs
            .lock()
            .map_err(|_| DocError::Unavailable("a lock was poisoned".into()))?;
        f(&mut docs)
    }
}

fn merged(state: &[u8], log: &[Vec<u8>]) -> Result<Vec<u8>, DocError> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(log.len() + 1);
    if !state.is_empty() {
        parts.push(state);
    }
    parts.extend(log.iter().map(Vec::as_slice));
    merge(&parts)
}

impl DocumentStore for MemoryDocuments {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, DocError>> {
        Box::pin(async move {
            self.with(|docs| match docs.get(key) {
                Some((state, log)) => merged(state, log).map(Some),
                None => Ok(None),
            })
        })
    }

    fn append<'a>(
        &'a self,
        key: &'a str,
        update: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, DocError>> {
        Box::pin(async move {
            self.with(|docs| {
                let (_, log) = docs.entry(key.to_owned()).or_default();
                log.push(update.to_vec());
                Ok(log.len() as u64)
            })
        })
    }

    fn compact<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DocError>> {
        Box::pin(async move {
            self.with(|docs| {
                if let Some((state, log)) = docs.get_mut(key)
                    && !log.is_empty()
                {
                    *state = merged(state, log)?;
                    log.clear();
                }
                Ok(())
            })
        })
    }
}
