//! The fencing counter of a single node with `[storage] path`, reserved in the redb file the
//! other stores use: before a token past the reserved count is granted, the next
//! [`BLOCK`] tokens are reserved with one durable commit, and a restart starts past the
//! reservation. So no token is ever granted twice, whatever the clock does, for one fsync
//! per [`BLOCK`] grants.

use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use crate::disk::StorageError;

/// `"fence"` → the first token not reserved yet.
const FENCE: TableDefinition<&str, u64> = TableDefinition::new("locks_fence");

/// How many tokens one commit reserves.
pub const BLOCK: u64 = 1024;

/// The counter's reservations in the database.
pub struct DiskFence {
    db: Arc<Database>,
}

impl DiskFence {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// The first token not reserved before (0 for a new file).
    pub fn reserved(&self) -> Result<u64, StorageError> {
        let tx = self.db.begin_write()?;
        let end = {
            let table = tx.open_table(FENCE)?;
            table.get("fence")?.map_or(0, |v| v.value())
        };
        tx.commit()?;
        Ok(end)
    }

    /// Reserves every token below `end`, durably.
    pub fn reserve(&self, end: u64) -> Result<(), StorageError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(FENCE)?;
            let old = table.get("fence")?.map_or(0, |v| v.value());
            table.insert("fence", end.max(old))?;
        }
        tx.commit()?;
        Ok(())
    }
}
