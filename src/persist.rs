//! `--snapshot FILE`: the translation table kept on disk so that sessions survive a restart.
//!
//! The gateway restores the file at start (before its datapath threads run), rewrites it every
//! `--snapshot-interval` seconds (so a `kill -9` loses at most that much) and once more when it
//! stops on SIGTERM/SIGINT. Writes are atomic: a temporary file in the same directory, fsync,
//! rename over the old file, fsync of the directory. The format is documented in
//! [`crate::nat::snapshot`]. A missing file is a normal first start; an unreadable or corrupt one
//! is logged and ignored (the gateway starts with an empty table and overwrites it later).

use crate::nat::{Engine, Time, snapshot};
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The snapshot file of a running gateway.
pub struct SnapshotFile {
    path: PathBuf,
    interval: Duration,
    last: Instant,
}

/// Reads `path`; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a part,
/// and after a crash the file is one or the other. Mode 0600 (it holds the table's hash seed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The hash seed stored in the snapshot at `path`, if it holds a valid one: the gateway builds
/// its engine with it, so that paired pooling keeps each inside address on its public address.
pub fn seed(path: Option<&Path>) -> Option<u64> {
    let bytes = read(path?).ok()??;
    snapshot::seed(&bytes).ok()
}

impl SnapshotFile {
    pub fn new(path: PathBuf, interval_s: u64) -> SnapshotFile {
        SnapshotFile {
            path,
            interval: Duration::from_secs(interval_s),
            last: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Restores the file into `engine` (at start, engine time `now`) and logs what it did.
    pub fn restore(&self, engine: &Engine, now: Time) {
        let p = self.path.display();
        let bytes = match read(&self.path) {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::info!(file = %p, "no snapshot yet: starting with an empty table");
                return;
            }
            Err(e) => {
                tracing::warn!(file = %p, "cannot read the snapshot ({e}): starting empty");
                return;
            }
        };
        match engine.restore(&bytes, now) {
            Ok(r) => tracing::info!(
                file = %p, restored = r.sessions, mappings = r.mappings, dropped = r.dropped(),
                expired = r.expired, invalid = r.invalid, conflicts = r.conflicts,
                no_room = r.no_room, "snapshot restored"
            ),
            Err(e) => tracing::warn!(file = %p, "snapshot ignored: {e}; starting empty"),
        }
    }

    /// Writes the snapshot when the interval has passed since the last write (0: never).
    pub fn tick(&mut self, engine: &Engine, now: Time) {
        if !self.interval.is_zero() && self.last.elapsed() >= self.interval {
            self.save(engine, now);
        }
    }

    /// Writes the snapshot now; failures are logged (the gateway keeps running).
    pub fn save(&mut self, engine: &Engine, now: Time) -> bool {
        self.last = Instant::now();
        let bytes = engine.snapshot(now);
        let records = (bytes.len().saturating_sub(28)) / 46;
        match write_atomic(&self.path, &bytes) {
            Ok(()) => {
                tracing::debug!(file = %self.path.display(), sessions = records, "snapshot written");
                true
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "cannot write the snapshot: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("rnat-persist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("table.snap");
        assert_eq!(read(&f).unwrap(), None);
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(read(&f).unwrap().as_deref(), Some(&b"two"[..]));
        let names: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(seed(Some(&f)), None);
        assert!(write_atomic(&dir.join("missing/x"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
