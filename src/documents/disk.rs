//! Documents on disk (a single node with `[storage] path`), in the redb file the history
//! shares: a state per document and the log of updates appended since, each append one
//! committed (fsynced) transaction before the update is forwarded; a compaction merges
//! both in one transaction.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};

use super::{DocError, DocumentStore, merge};

/// Document key -> merged state (Yjs update v1).
const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("document_states");
/// (document key, index) -> an update appended since the last compaction.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("document_log");

#[derive(Clone)]
pub struct DiskDocuments {
    db: Arc<Database>,
}

fn storage<E: Into<redb::Error>>(e: E) -> DocError {
    DocError::Unavailable(crate::disk::StorageError::from(e).to_string())
}

impl DiskDocuments {
    /// Creates the tables if needed.
    pub fn open(db: Arc<Database>) -> Result<Self, crate::disk::StorageError> {
        let tx = db.begin_write()?;
        tx.open_table(STATES)?;
        tx.open_table(LOG)?;
        tx.commit()?;
        Ok(Self { db })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, DocError> + Send + 'static,
    ) -> Result<T, DocError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| DocError::Unavailable(e.to_string()))?
    }
}

/// The stored state and the log after it, merged (`None` when neither exists).
fn read(
    states: &impl ReadableTable<&'static str, &'static [u8]>,
    log: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
) -> Result<(Option<Vec<u8>>, u64), DocError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if let Some(state) = states.get(key).map_err(storage)? {
        parts.push(state.value().to_vec());
    }
    let mut count = 0;
    for row in log.range((key, 0)..=(key, u64::MAX)).map_err(storage)? {
        let (_, update) = row.map_err(storage)?;
        parts.push(update.value().to_vec());
        count += 1;
    }
    if parts.is_empty() {
        return Ok((None, 0));
    }
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok((Some(merge(&parts)?), count))
}

impl DocumentStore for DiskDocuments {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, DocError>> {
        let key = key.to_owned();
        Box::pin(self.blocking(move |db| {
            let tx = db.begin_read().map_err(storage)?;
            let states = tx.open_table(STATES).map_err(storage)?;
            let log = tx.open_table(LOG).map_err(storage)?;
            Ok(read(&states, &log, &key)?.0)
        }))
    }

    fn append<'a>(
        &'a self,
        key: &'a str,
        update: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, DocError>> {
        let key = key.to_owned();
        let update = update.to_vec();
        Box::pin(self.blocking(move |db| {
            let tx = db.begin_write().map_err(storage)?;
            let count = {
                let mut log = tx.open_table(LOG).map_err(storage)?;
                let next = match log
                    .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                    .map_err(storage)?
                    .next_back()
                {
                    Some(row) => row.map_err(storage)?.0.value().1 + 1,
                    None => 0,
                };
                log.insert((key.as_str(), next), update.as_slice())
                    .map_err(storage)?;
                next + 1
            };
            tx.commit().map_err(storage)?;
            Ok(count)
        }))
    }

    fn compact<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), DocError>> {
        let key = key.to_owned();
        Box::pin(self.blocking(move |db| {
            let tx = db.begin_write().map_err(storage)?;
            {
                let mut states = tx.open_table(STATES).map_err(storage)?;
                let mut log = tx.open_table(LOG).map_err(storage)?;
                let (merged, count) = read(&states, &log, &key)?;
                if count == 0 {
                    return Ok(());
                }
                if let Some(merged) = merged {
                    states
                        .insert(key.as_str(), merged.as_slice())
                        .map_err(storage)?;
                }
                log.retain_in((key.as_str(), 0)..=(key.as_str(), u64::MAX), |_, _| false)
                    .map_err(storage)?;
            }
            tx.commit().map_err(storage)?;
            Ok(())
        }))
    }
}
