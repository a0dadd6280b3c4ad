//! The zips a job's input artifacts are served as: built once per stored
//! archive into a file under `DATA/s3-zips/`, then served (whole or by
//! range) from that file. boto3's `download_file` of an object above 8 MiB
//! reads it with parallel ranged GETs; building the zip per request would
//! cost a full deflate per range and hold it in memory. The conversion is
//! deterministic too ([`crate::artifact_zip::tar_to_zip`]), so a rebuilt zip
//! (after a restart or an idle sweep) has the same bytes and `ETag`.
//!
//! Concurrent requests for one archive wait for one build. An archive that
//! cannot be served ([`artifact_zip::Unservable`]: too large, a hostile
//! entry) is remembered as such: a retry gets the same refusal without a
//! rebuild. A zip unused for [`IDLE`] is removed ([`ServedZips::sweep`]);
//! the directory is emptied when the controller starts.

use crate::artifact_zip;
use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};

/// How long a zip nobody reads is kept.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// A zip ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: PathBuf,
    pub size: u64,
    /// S3's quoted tag: a hash of the zip's bytes.
    pub etag: String,
}

#[derive(Debug, Default)]
struct Entry {
    zip: tokio::sync::OnceCell<Served>,
    /// Milliseconds since the epoch of the last request; written under
    /// the map's lock, so that a sweep never sees an entry just handed out
    /// as idle.
    last_used: AtomicU64,
    /// The refusal of a build and the limit it was made under.
    refused: Mutex<Option<(u64, artifact_zip::Unservable)>>,
}

/// The built zips, by archive digest.
#[derive(Debug, Clone)]
pub struct ServedZips {
    root: PathBuf,
    entries: Arc<Mutex<HashMap<String, Arc<Entry>>>>,
}

impl ServedZips {
    /// Opens `root`, removing the zips of a previous run (rebuilt on demand).
    pub fn open(root: &Path) -> Result<Self> {
        if root.exists() {
            std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
        }
        crate::ca::create_private_dir(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self { root: root.to_path_buf(), entries: Default::default() })
    }

    /// The zip of the archive `digest` stored at `tar`, built on first use.
    /// An [`artifact_zip::Unservable`] error (downcast it) is the archive's:
    /// it is remembered and answered again without a rebuild.
    pub async fn get(&self, digest: &str, tar: PathBuf, max_bytes: u64, now_ms: u64) -> Result<Served> {
        let entry = {
            let mut entries = self.entries.lock().expect("served zips lock");
            let entry = entries.entry(digest.to_string()).or_default().clone();
            entry.last_used.store(now_ms, Ordering::Relaxed);
            entry
        };
        if let Some((limit, why)) = entry.refused.lock().expect("served zip refusal lock").clone()
            && limit == max_bytes
        {
            return Err(why.into());
        }
        let (root, digest) = (self.root.clone(), digest.to_string());
        let served = entry
            .zip
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || build(&root, &digest, &tar, max_bytes))
                    .await
                    .context("building a zip")?
            })
            .await;
        match served {
            Ok(served) => Ok(served.clone()),
            Err(e) => {
                if let Some(why) = e.downcast_ref::<artifact_zip::Unservable>() {
                    *entry.refused.lock().expect("served zip refusal lock") = Some((max_bytes, why.clone()));
                }
                Err(e)
            }
        }
    }

    /// Removes the zips unused since `now_ms - idle`.
    pub fn sweep(&self, now_ms: u64, idle: std::time::Duration) {
        let cutoff = now_ms.saturating_sub(idle.as_millis() as u64);
        let mut entries = self.entries.lock().expect("served zips lock");
        entries.retain(|digest, entry| {
            // An entry with neither a zip nor a refusal may be building.
            let building = entry.zip.get().is_none() && entry.refused.lock().is_ok_and(|r| r.is_none());
            let keep = entry.last_used.load(Ordering::Relaxed) >= cutoff || building;
            if !keep && let Some(served) = entry.zip.get() {
                debug!(%digest, "removing an idle served zip");
                if let Err(e) = std::fs::remove_file(&served.path) {
                    warn!(%digest, "removing an idle served zip: {e}");
                }
            }
            keep
        });
    }
}

/// Converts the archive into `ROOT/DIGEST.zip` and hashes the result.
fn build(root: &Path, digest: &str, tar: &Path, max_bytes: u64) -> Result<Served> {
    let source = std::fs::File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    let tar_len = source.metadata()?.len();
    let tmp = root.join(format!("{digest}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| -> Result<()> {
        let out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        artifact_zip::tar_to_zip_into(std::io::BufReader::new(source), tar_len, out, max_bytes)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let mut file = std::fs::File::open(&tmp)?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        size += n as u64;
    }
    let path = root.join(format!("{digest}.zip"));
    std::fs::rename(&tmp, &path)?;
    debug!(%digest, size, "served zip built");
    Ok(Served { path, size, etag: super::s3::etag_of(&hash.finalize()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(5);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, "hello.txt", &b"hello"[..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[tokio::test]
    async fn a_zip_is_built_once_the_same_as_in_memory_and_swept_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("archive.tar");
        std::fs::write(&tar, archive()).unwrap();
        std::fs::create_dir_all(dir.path().join("zips/left-over")).unwrap();
        let zips = ServedZips::open(&dir.path().join("zips")).unwrap();
        assert!(!dir.path().join("zips/left-over").exists());
        let digest = "ab".repeat(32);
        let (first, second) =
            tokio::join!(zips.get(&digest, tar.clone(), 1 << 20, 1_000), zips.get(&digest, tar.clone(), 1 << 20, 1_000));
        let first = first.unwrap();
        assert_eq!(first, second.unwrap());
        let bytes = std::fs::read(&first.path).unwrap();
        assert_eq!(bytes, artifact_zip::tar_to_zip(&archive(), 1 << 20).unwrap(), "the file is the in-memory zip");
        assert_eq!(first.size, bytes.len() as u64);
        assert_eq!(first.etag, super::super::s3::etag(&bytes));
        assert_eq!(std::fs::read_dir(dir.path().join("zips")).unwrap().count(), 1, "one build, no temporary file");

        zips.sweep(1_000 + 5_000, std::time::Duration::from_secs(10));
        assert!(first.path.exists(), "used recently");
        zips.sweep(1_000 + 20_000, std::time::Duration::from_secs(10));
        assert!(!first.path.exists(), "idle");
        let again = zips.get(&digest, tar.clone(), 1 << 20, 30_000).await.unwrap();
        assert_eq!((again.size, again.etag), (first.size, first.etag), "rebuilt with the same bytes");
        // Too large to serve: an error, and the next request tries again.
        let other = "cd".repeat(32);
        assert!(zips.get(&other, tar.clone(), 2, 30_000).await.is_err());
        assert!(zips.get(&other, tar, 1 << 20, 30_000).await.is_ok());
    }

    #[tokio::test]
    async fn a_refusal_is_remembered_not_rebuilt_on_every_retry() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("archive.tar");
        std::fs::write(&tar, archive()).unwrap();
        let zips = ServedZips::open(&dir.path().join("zips")).unwrap();
        let digest = "ef".repeat(32);
        let refused = |r: Result<Served>| r.unwrap_err().downcast::<artifact_zip::Unservable>().unwrap();
        assert_eq!(refused(zips.get(&digest, tar.clone(), 2, 1_000).await), artifact_zip::Unservable::TooLarge(2));
        // The archive is not read again: the retry gets the same refusal.
        std::fs::remove_file(&tar).unwrap();
        assert_eq!(refused(zips.get(&digest, tar.clone(), 2, 2_000).await), artifact_zip::Unservable::TooLarge(2));
        assert_eq!(std::fs::read_dir(dir.path().join("zips")).unwrap().count(), 0, "no temporary file left");
        // Idle refusals are swept like idle zips.
        zips.sweep(2_000, std::time::Duration::from_secs(10));
        assert_eq!(zips.entries.lock().unwrap().len(), 1, "used recently");
        zips.sweep(2_000 + 20_000, std::time::Duration::from_secs(10));
        assert!(zips.entries.lock().unwrap().is_empty(), "idle");
    }
}
