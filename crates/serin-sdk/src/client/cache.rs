//! The fail-static disk cache: one JSON file per env holding the last applied
//! snapshot with all its bundles, replaced atomically (temp file + rename).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serin_engine::decision::{CompiledSnapshot, LoadError, Snapshot};
use tokio::sync::watch;

/// Reads and compiles the cache file; `None` (with a warning) when it is
/// missing, unreadable, for another env, or does not compile.
pub(super) fn load(path: &Path, env: &str) -> Option<CompiledSnapshot> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the snapshot cache");
            return None;
        }
    };
    let snapshot = match CompiledSnapshot::from_json(&bytes) {
        Ok(s) => s,
        Err(e @ LoadError::Json(_)) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable snapshot cache");
            return None;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a snapshot cache that does not compile");
            return None;
        }
    };
    if snapshot.env() != env {
        tracing::warn!(path = %path.display(), cached = %snapshot.env(), env, "ignoring a snapshot cache of another env");
        return None;
    }
    Some(snapshot)
}

/// Writes `snapshot` to `path` atomically: a reader sees the old file or the
/// new one, never a mix.
pub(super) fn store(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        serde_json::to_writer(std::io::BufWriter::new(&mut file), snapshot)?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes every snapshot the stream task applies, off its path. Bursts
/// coalesce: only the newest pending snapshot is written.
pub(super) async fn writer(
    path: PathBuf,
    mut rx: watch::Receiver<Option<Arc<CompiledSnapshot>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            biased;
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => {
                // Flush a snapshot applied just before the stop, then quit.
                if !rx.has_changed().unwrap_or(false) {
                    return;
                }
                stopping = true;
            }
        }
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        let target = path.clone();
        let version = snapshot.version();
        let written =
            tokio::task::spawn_blocking(move || store(&target, snapshot.snapshot())).await;
        match written {
            Ok(Ok(())) => tracing::debug!(version, path = %path.display(), "snapshot cached"),
            Ok(Err(e)) => {
                tracing::warn!(version, path = %path.display(), error = %e, "cannot write the snapshot cache");
            }
            Err(e) => tracing::warn!(error = %e, "snapshot cache writer failed"),
        }
    }
}
