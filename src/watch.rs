//! Watches the declaration directories (not each file, so editors'
//! save-by-rename and `git checkout` are seen) and reports, debounced, the
//! set of paths that changed.
//!
//! It only reports: it never reads or parses a file. Bursts of events for one
//! file coalesce into one report.

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub struct DirWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Starts watching `dirs` (non-recursively). Each debounced burst is sent as
/// the sorted set of paths it touched; watcher errors are logged.
pub fn watch_dirs(
    dirs: &[PathBuf],
    debounce: Duration,
    tx: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> Result<DirWatcher, notify::Error> {
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let paths: BTreeSet<PathBuf> = events
                .iter()
                .filter(|e| !e.kind.is_access())
                .flat_map(|e| e.paths.iter().cloned())
                .collect();
            if !paths.is_empty() {
                let _ = tx.send(paths.into_iter().collect());
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "file watcher error");
            }
        }
    };
    // A tick of a quarter of the debounce keeps the added latency small.
    let mut debouncer = new_debouncer(debounce, Some(debounce / 4), handler)?;
    for dir in dirs {
        debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(DirWatcher {
        _debouncer: debouncer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_a_rename_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _w = watch_dirs(&[dir.path().to_path_buf()], Duration::from_millis(50), tx).unwrap();
        let tmp = dir.path().join(".a.kdl.swp");
        std::fs::write(&tmp, "x").unwrap();
        std::fs::rename(&tmp, dir.path().join("a.kdl")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            got.iter().any(|p| p.ends_with("a.kdl")),
            "changed paths: {got:?}"
        );
    }
}
