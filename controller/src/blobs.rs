//! Content-addressed blob store: artifacts and plugin components, each
//! named by the sha256 of its bytes.
//!
//! Writes stream to a temporary file while hashing and are renamed into
//! place only when size and digest match, so a reader never sees a partial
//! blob and a dropped upload leaves nothing behind. Knows nothing of
//! pipelines or agents.

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Largest artifact the controller accepts; keeps one runaway action from
/// filling the disk.
pub const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// Whether a string is a well-formed hex sha256, so it can name a file.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("tmp")).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self { root: root.to_path_buf() })
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        if !is_digest(digest) {
            bail!("{digest:?} is not a sha256 digest");
        }
        Ok(self.root.join(&digest[..2]).join(digest))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.exists())
    }

    /// Stores bytes held in memory; returns the digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.path(&digest)?;
        if !path.exists() {
            std::fs::create_dir_all(path.parent().expect("has parent"))?;
            let tmp = self.root.join("tmp").join(format!("{digest}.{}", std::process::id()));
            std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(digest)
    }

    /// Streams `size` bytes from `reader` into the store, verifying them
    /// against `digest`.
    pub async fn put_stream(&self, digest: &str, size: u64, reader: &mut (impl AsyncRead + Unpin)) -> Result<()> {
        let path = self.path(digest)?;
        if size > MAX_ARTIFACT_BYTES {
            bail!("artifact of {size} bytes exceeds the limit of {MAX_ARTIFACT_BYTES} bytes");
        }
        let tmp = self.root.join("tmp").join(format!("{digest}.{}", uuid::Uuid::new_v4()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = reader.read(&mut buf).await.context("receiving the artifact")?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > size {
                    bail!("artifact is longer than the announced {size} bytes");
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).await?;
            }
            if total != size {
                bail!("artifact ended after {total} of {size} bytes");
            }
            let got = hex::encode(hasher.finalize());
            if got != digest {
                bail!("artifact digest mismatch: announced {digest}, received {got}");
            }
            file.sync_all().await?;
            tokio::fs::create_dir_all(path.parent().expect("has parent")).await?;
            tokio::fs::rename(&tmp, &path).await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Removes blobs that `keep` does not name and that were written before
    /// `before` (younger ones may belong to a result still on its way), and
    /// temporary files of uploads that died before `before`. Returns how
    /// many blobs went and their bytes. Blocking: run it off the async
    /// threads.
    pub fn collect_garbage(
        &self,
        keep: &std::collections::HashSet<String>,
        before: std::time::SystemTime,
    ) -> Result<(usize, u64)> {
        let old = |meta: &std::fs::Metadata| meta.modified().is_ok_and(|m| m < before);
        let (mut count, mut bytes) = (0, 0);
        for dir in std::fs::read_dir(&self.root).with_context(|| format!("listing {}", self.root.display()))? {
            let dir = dir?.path();
            let tmp = dir.file_name().is_some_and(|n| n == "tmp");
            if !dir.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().to_string();
                let meta = entry.metadata()?;
                let garbage = if tmp { old(&meta) } else { is_digest(&name) && !keep.contains(&name) && old(&meta) };
                if garbage {
                    std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
                    if !tmp {
                        count += 1;
                        bytes += meta.len();
                    }
                }
            }
        }
        Ok((count, bytes))
    }

    /// Opens a blob for reading, with its size.
    pub async fn open_blob(&self, digest: &str) -> Result<(tokio::fs::File, u64)> {
        let path = self.path(digest)?;
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("no blob {digest}"))?;
        let size = file.metadata().await?.len();
        Ok((file, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_are_verified_before_they_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"hello artifact".to_vec();
        let digest = hex::encode(Sha256::digest(&data));
        store.put_stream(&digest, data.len() as u64, &mut &data[..]).await.unwrap();
        assert!(store.contains(&digest));

        let wrong = "0".repeat(64);
        let err = store.put_stream(&wrong, data.len() as u64, &mut &data[..]).await.unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!store.contains(&wrong));
        let err = store.put_stream(&wrong, 99, &mut &data[..]).await.unwrap_err();
        assert!(err.to_string().contains("ended after 14 of 99"), "{err}");
        assert!(store.path("../etc").is_err());
        // Nothing half-written is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(store.put_bytes(&data).unwrap(), digest);
    }

    #[test]
    fn garbage_is_what_nothing_keeps_and_what_is_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let kept = store.put_bytes(b"kept").unwrap();
        let dropped = store.put_bytes(b"dropped").unwrap();
        std::fs::write(dir.path().join("tmp").join("half-upload"), b"x").unwrap();
        let keep: std::collections::HashSet<String> = [kept.clone()].into();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        // Nothing is old enough yet.
        assert_eq!(store.collect_garbage(&keep, past).unwrap(), (0, 0));
        assert!(store.contains(&dropped));
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(store.collect_garbage(&keep, future).unwrap(), (1, 7));
        assert!(store.contains(&kept));
        assert!(!store.contains(&dropped));
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
