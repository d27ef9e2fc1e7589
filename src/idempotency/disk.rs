//! The single-node store with `[storage] path`: claims in memory, finished answers also on
//! disk (one committed, fsynced redb transaction before the answer counts), so a key
//! answered before a restart is still answered after it. A key whose publish was under way
//! at a crash is forgotten (its claim was never on disk): a retry publishes again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};

use super::{Claim, IdempotencyError, IdempotencyStore, MemoryIdempotency};
use crate::disk::{instant_of, now_ms};

/// Key -> (when it was answered, unix ms; the answer).
const ANSWERS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("idempotency_answers");
/// (when answered, key): the answers in age order, to forget them after the window.
const BY_AGE: TableDefinition<(u64, &str), ()> = TableDefinition::new("idempotency_by_age");

pub struct DiskIdempotency {
    memory: MemoryIdempotency,
    db: Arc<Database>,
    window: Duration,
}

impl DiskIdempotency {
    /// Opens the store in `db`, taking back every answer still within the window.
    pub fn open(db: Arc<Database>, window: Duration) -> Result<Self, crate::disk::StorageError> {
        let memory = MemoryIdempotency::new(window);
        let oldest = now_ms().saturating_sub(window.as_millis() as u64);
        let tx = db.begin_write()?;
        {
            let mut answers = tx.open_table(ANSWERS)?;
            let mut by_age = tx.open_table(BY_AGE)?;
            forget_older(&mut answers, &mut by_age, oldest)?;
            for row in by_age.iter()? {
                let (key, _) = row?;
                let (at, key) = key.value();
                if let Some(answer) = answers.get(key)? {
                    let (_, answer) = answer.value();
                    memory.restore(key.to_owned(), instant_of(at), answer.to_owned());
                }
            }
        }
        tx.commit()?;
        Ok(Self { memory, db, window })
    }
}

/// Writes `answer` and forgets the answers past the window, in one durable commit.
fn write(
    db: &Database,
    window: Duration,
    key: &str,
    answer: &str,
) -> Result<(), crate::disk::StorageError> {
    let now = now_ms();
    let tx = db.begin_write()?;
    {
        let mut answers = tx.open_table(ANSWERS)?;
        let mut by_age = tx.open_table(BY_AGE)?;
        forget_older(
            &mut answers,
            &mut by_age,
            now.saturating_sub(window.as_millis() as u64),
        )?;
        let old = answers.insert(key, (now, answer))?.map(|old| old.value().0);
        if let Some(at) = old {
            by_age.remove((at, key))?;
        }
        by_age.insert((now, key), ())?;
    }
    tx.commit()?;
    Ok(())
}

/// Removes the answers given before `oldest` (unix ms).
fn forget_older(
    answers: &mut redb::Table<&str, (u64, &str)>,
    by_age: &mut redb::Table<(u64, &str), ()>,
    oldest: u64,
) -> Result<(), crate::disk::StorageError> {
    let mut old = Vec::new();
    for row in by_age.range::<(u64, &str)>(..(oldest, ""))? {
        let (key, _) = row?;
        let (at, key) = key.value();
        old.push((at, key.to_owned()));
    }
    for (at, key) in old {
        by_age.remove((at, key.as_str()))?;
        answers.remove(key.as_str())?;
    }
    Ok(())
}

impl IdempotencyStore for DiskIdempotency {
    fn claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Claim, IdempotencyError>> {
        self.memory.claim(key)
    }

    fn finish<'a>(
        &'a self,
        key: &'a str,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        Box::pin(async move {
            let (db, window) = (self.db.clone(), self.window);
            let (k, a) = (key.to_owned(), answer.to_owned());
            let written = tokio::task::spawn_blocking(move || write(&db, window, &k, &a))
                .await
                .map_err(|e| IdempotencyError(e.to_string()))?;
            // Remembered in memory even when the disk refused it: this run still honours it.
            self.memory.finish(key, answer).await?;
            written.map_err(|e| IdempotencyError(e.to_string()))
        })
    }

    fn abandon<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        self.memory.abandon(key)
    }
}
