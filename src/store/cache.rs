//! The store's in-memory copy of the `hosts` table, so that the hot reads
//! (the boot path's point read on every `GET /ipxe/{mac}`, the
//! reconciler's full scan, the status counts) never wait for the
//! connection's mutex.
//!
//! SQLite keeps it exact: an update hook on the store's one connection
//! records the rowid of every `hosts` row any statement inserts, updates or
//! deletes, and after every write transaction ends (committed, rolled back
//! or failed) [`HostCache::sync`] re-reads exactly those rows, still under
//! the connection lock. It must never be changed any other way, and the
//! `hosts` table must be written only through the store's connection
//! (another connection's changes do not reach the hook). If a re-read
//! fails the cache is marked stale and the next read reloads the whole
//! table first, so a read never answers from a copy known to be wrong.

use super::{HOST_COLUMNS, HostRecord, HostRow, Result, StoreError, host_record, host_row};
use crate::state::HostState;
use rusqlite::hooks::Action;
use rusqlite::{Connection, OptionalExtension, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One cached row: its rowid and what reading it gives.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entry {
    pub(super) rowid: i64,
    pub(super) row: Cached,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Cached {
    Valid(HostRecord),
    /// A row that does not validate: reading it is an error, as it was when
    /// reads went to SQLite. The state and the retired flag are kept apart
    /// so that filters and counts behave as the SQL did.
    Corrupt {
        error: String,
        state: Option<HostState>,
        retired: bool,
    },
}

impl Cached {
    pub(super) fn record(&self) -> Result<&HostRecord> {
        match self {
            Cached::Valid(r) => Ok(r),
            Cached::Corrupt { error, .. } => Err(StoreError::Corrupt(error.clone())),
        }
    }

    pub(super) fn retired(&self) -> bool {
        match self {
            Cached::Valid(r) => r.retired,
            Cached::Corrupt { retired, .. } => *retired,
        }
    }

    pub(super) fn state(&self) -> Result<HostState> {
        match self {
            Cached::Valid(r) => Ok(r.state),
            Cached::Corrupt { state: Some(s), .. } => Ok(*s),
            Cached::Corrupt { error, .. } => Err(StoreError::Corrupt(error.clone())),
        }
    }
}

/// The cached table: every row by name (sorted as `ORDER BY name` sorts:
/// byte order), and which name each rowid holds (the hook reports rowids).
#[derive(Debug, Default)]
pub(super) struct HostTable {
    pub(super) by_name: BTreeMap<String, Entry>,
    pub(super) by_rowid: HashMap<i64, String>,
    /// The last sync failed or was interrupted: the copy may be wrong and
    /// must be reloaded before anyone reads it.
    stale: bool,
}

impl HostTable {
    /// Puts a row read from the table in place of whatever the cache had
    /// under its name.
    fn put(&mut self, rowid: i64, row: HostRow) {
        let name = row.0.clone();
        let entry = Entry {
            rowid,
            row: cached(row),
        };
        if let Some(prev) = self.by_name.insert(name.clone(), entry)
            && prev.rowid != rowid
            && self.by_rowid.get(&prev.rowid) == Some(&name)
        {
            // The name moved to another rowid (an `INSERT OR REPLACE`).
            self.by_rowid.remove(&prev.rowid);
        }
        self.by_rowid.insert(rowid, name);
    }
}

/// A row read from the table, validated the way reads always did.
pub(super) fn cached(row: HostRow) -> Cached {
    let retired = row.7.is_some();
    let state = row.2.parse::<HostState>().ok();
    match host_record(row) {
        Ok(r) => Cached::Valid(r),
        Err(e) => Cached::Corrupt {
            error: match e {
                StoreError::Corrupt(m) => m,
                other => other.to_string(),
            },
            state,
            retired,
        },
    }
}

/// The host columns followed by the rowid.
pub(super) fn keyed_row(r: &Row<'_>) -> rusqlite::Result<(i64, HostRow)> {
    Ok((r.get(8)?, host_row(r)?))
}

/// What the update hook saw since the last sync.
#[derive(Default)]
struct Changed {
    rowids: Vec<i64>,
    /// A row was deleted (no store method deletes hosts): the next sync
    /// reloads the whole table, which stays exact even if rowids were
    /// renumbered behind the cache's back (a `VACUUM` may do that).
    reload: bool,
}

pub(super) struct HostCache {
    table: RwLock<HostTable>,
    changed: Arc<Mutex<Changed>>,
}

fn lock_changed(m: &Mutex<Changed>) -> MutexGuard<'_, Changed> {
    // Only pushes and takes happen under this lock: nothing to repair.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HostCache {
    /// An empty cache marked stale: [`HostCache::reload`] fills it.
    pub(super) fn new() -> HostCache {
        HostCache {
            table: RwLock::new(HostTable {
                stale: true,
                ..HostTable::default()
            }),
            changed: Arc::default(),
        }
    }

    /// Registers the update hook that records changed `hosts` rows.
    pub(super) fn watch(&self, conn: &Connection) -> Result<()> {
        let changed = Arc::clone(&self.changed);
        conn.update_hook(Some(
            move |action: Action, db: &str, table: &str, rowid: i64| {
                if db != "main" || table != "hosts" {
                    return;
                }
                let mut c = lock_changed(&changed);
                match action {
                    Action::SQLITE_INSERT | Action::SQLITE_UPDATE => c.rowids.push(rowid),
                    _ => c.reload = true,
                }
            },
        ))?;
        Ok(())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HostTable> {
        // A panic while writing leaves `stale` set (see `sync`), so a
        // poisoned table is reloaded before it is read.
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The table, unless it is stale.
    pub(super) fn read(&self) -> Option<RwLockReadGuard<'_, HostTable>> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        (!t.stale).then_some(t)
    }

    /// As a failed sync leaves it.
    #[cfg(test)]
    pub(super) fn mark_stale(&self) {
        self.write().stale = true;
    }

    /// Replaces the copy with the whole table. The caller holds the
    /// connection lock, so no write runs meanwhile.
    pub(super) fn reload(&self, conn: &Connection) -> Result<()> {
        *lock_changed(&self.changed) = Changed::default();
        let mut fresh = HostTable::default();
        let mut stmt = conn.prepare(&format!("SELECT {HOST_COLUMNS}, rowid FROM hosts"))?;
        for row in stmt.query_map([], keyed_row)? {
            let (rowid, row) = row?;
            fresh.put(rowid, row);
        }
        *self.write() = fresh;
        Ok(())
    }

    /// Brings the copy up to date with the rows changed since the last
    /// sync. Called after every write transaction, whichever way it ended,
    /// with the connection lock held. A failure leaves the cache stale (the
    /// next read reloads it) rather than failing a write that happened.
    pub(super) fn sync(&self, conn: &Connection) {
        let Changed { mut rowids, reload } = std::mem::take(&mut *lock_changed(&self.changed));
        let stale = self.table.read().map_or(true, |t| t.stale);
        if rowids.is_empty() && !reload && !stale {
            return;
        }
        let result = if reload || stale {
            self.reload(conn)
        } else {
            rowids.sort_unstable();
            rowids.dedup();
            self.resync(conn, &rowids)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot refresh the host cache: reloading on the next read");
            self.write().stale = true;
        }
    }

    /// Re-reads the rows at `rowids`. SQLite is read first, without the
    /// cache's lock (only writers, which hold the connection lock as the
    /// caller does, change the cache), then the cache is updated in one
    /// short write lock, so readers never wait for a query.
    fn resync(&self, conn: &Connection, rowids: &[i64]) -> Result<()> {
        let mut by_rowid = conn.prepare_cached(&format!(
            "SELECT {HOST_COLUMNS}, rowid FROM hosts WHERE rowid = ?1"
        ))?;
        let fresh = rowids
            .iter()
            .map(|&id| Ok((id, by_rowid.query_row([id], keyed_row).optional()?)))
            .collect::<Result<Vec<_>>>()?;
        // A rowid that held another name before (a rename; or a rowid map
        // gone wrong): that name is re-read by name, so no host is lost.
        let renamed: Vec<String> = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            fresh
                .iter()
                .filter_map(|(id, row)| {
                    let old = t.by_rowid.get(id)?;
                    row.as_ref()
                        .is_none_or(|(_, r)| &r.0 != old)
                        .then(|| old.clone())
                })
                .collect()
        };
        let mut rechecked = Vec::new();
        if !renamed.is_empty() {
            let mut by_name = conn.prepare_cached(&format!(
                "SELECT {HOST_COLUMNS}, rowid FROM hosts WHERE name = ?1"
            ))?;
            for name in &renamed {
                rechecked.extend(by_name.query_row([name], keyed_row).optional()?);
            }
        }
        let mut t = self.write();
        // Stays set if this is ever interrupted by a panic.
        t.stale = true;
        for (id, _) in &fresh {
            t.by_rowid.remove(id);
        }
        for name in &renamed {
            t.by_name.remove(name);
        }
        for (id, row) in fresh.into_iter().filter_map(|(_, r)| r).chain(rechecked) {
            t.put(id, row);
        }
        t.stale = false;
        Ok(())
    }
}
