//! Content-addressed blob store: artifacts and plugin components, each
//! named by the sha256 of its bytes.
//!
//! Writes stream to a partial file while hashing and are renamed into
//! place only when size and digest match, so a reader never sees a partial
//! blob. An upload cut off with its connection keeps its partial file, and
//! the next upload of the same digest goes on from there; garbage
//! collection removes partial files nobody came back for. Knows nothing of
//! pipelines or agents.
//!
//! Where the bytes live is the store's [`Backend`]: the local directory
//! (the default), or S3-compatible object storage (`--artifacts
//! s3://bucket/prefix`, `blobs/s3.rs`), where the same promises hold: a
//! blob appears under its digest only once verified, an upload cut off
//! resumes (from its last whole part), reads are checked against the
//! digest, and garbage collection judges by the same rules. With S3 the
//! local directory is only a cache of blobs read whole (the AWS API's zips).

pub mod midstate;
pub mod s3;

use crate::hashed_file::{Chunks, Flush, HashedFile};
use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use sluice_runtime::is_digest;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long an upload waits for another upload of the same artifact.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Largest artifact the controller accepts; keeps one runaway action from
/// filling the disk.
pub const MAX_ARTIFACT_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone)]
pub struct BlobStore {
    /// The blobs (local backend), or the cache of blobs read whole (S3).
    root: PathBuf,
    backend: Backend,
    /// Digests being uploaded now.
    uploading: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Held by garbage collection around each removal, and by an upload
    /// that finds its blob stored while it marks the blob as just used:
    /// either the blob is gone before the upload looks (and is uploaded
    /// again), or it is marked young before the collection judges it.
    collecting: std::sync::Arc<std::sync::Mutex<()>>,
}

/// Releases a digest's upload slot when the upload ends, however it ends.
struct UploadGuard {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    digest: String,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.set.lock().expect("upload lock").remove(&self.digest);
    }
}

/// Where a store's bytes are persisted and read from. Every method of
/// [`BlobStore`] goes to one of these; a closed set, so an enum (the S3
/// methods are async, which a trait object could only give through boxed
/// futures).
#[derive(Debug, Clone)]
pub enum Backend {
    /// Files under the store's directory (today's behaviour).
    Local,
    /// Objects in a bucket; the directory is a cache.
    S3(std::sync::Arc<Remote>),
}

/// An S3 backend and the runtime its blocking calls run on: the driver
/// asks `contains`/`size_of` synchronously, and a request must not wait on
/// the thread it blocks.
#[derive(Debug)]
pub struct Remote {
    pub s3: s3::S3,
    runtime: Background,
}

/// A small runtime of its own, shut down without waiting when the last
/// store goes (dropping a runtime inside another one would panic).
#[derive(Debug)]
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The longest a synchronous question waits for the object store (a HEAD
/// from the driver's task: a bucket that hangs must not hang the driver).
const BLOCKING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest a synchronous write or collection waits (off the driver's
/// task, or a pushed plugin's one PUT).
const BLOCKING_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

impl Remote {
    /// Runs `work` on the backend's runtime and waits for it, from any
    /// thread (the driver's task included).
    fn block<T: Send + 'static>(
        &self,
        wait: std::time::Duration,
        work: impl FnOnce(s3::S3) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = work(self.s3.clone());
        let runtime = self.runtime.0.as_ref().expect("runtime until dropped");
        runtime.spawn(async move {
            let answer = tokio::time::timeout(wait, future)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the object store did not answer within {} s", wait.as_secs())));
            let _ = tx.send(answer);
        });
        rx.recv().map_err(|_| anyhow::anyhow!("the object store's runtime stopped"))?
    }
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("tmp")).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            backend: Backend::Local,
            uploading: Default::default(),
            collecting: Default::default(),
        })
    }

    /// A store whose blobs of `kind` (`artifacts`, `plugins`) live in S3;
    /// `cache` holds blobs read whole. Does not reach the bucket: see
    /// [`BlobStore::check`].
    pub fn open_s3(cache: &Path, config: s3::S3Config, kind: &str) -> Result<Self> {
        let mut store = Self::open(cache)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("sluice-s3-{kind}"))
            .enable_all()
            .build()
            .context("starting the object store's runtime")?;
        let s3 = s3::S3::new(config, kind)?;
        store.backend = Backend::S3(std::sync::Arc::new(Remote { s3, runtime: Background(Some(runtime)) }));
        Ok(store)
    }

    /// Whether the bytes are on this host's disk (the free-space floor
    /// applies to them) rather than in object storage.
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local)
    }

    /// The S3 backend, when the store has one.
    pub fn s3(&self) -> Option<&s3::S3> {
        match &self.backend {
            Backend::Local => None,
            Backend::S3(remote) => Some(&remote.s3),
        }
    }

    /// `s3://bucket/prefix/kind`, or the directory.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local => self.root.display().to_string(),
            Backend::S3(remote) => remote.s3.describe(),
        }
    }

    /// Whether the backend answers: the bucket is listed with the
    /// credentials given (a wrong key or bucket is said at start).
    pub async fn check(&self) -> Result<()> {
        match &self.backend {
            Backend::Local => Ok(()),
            Backend::S3(remote) => remote.block(BLOCKING_WAIT, |s3| Box::pin(async move { s3.check().await })),
        }
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        if !is_digest(digest) {
            bail!("{digest:?} is not a sha256 digest");
        }
        Ok(self.root.join(&digest[..2]).join(digest))
    }

    pub fn contains(&self, digest: &str) -> bool {
        if !self.is_local() {
            return self.size_of(digest).is_some();
        }
        self.path(digest).is_ok_and(|p| p.exists())
    }

    /// Whether the blob is stored, marking it as just used when it is: an
    /// upload that finds its bytes already here skips sending them, and
    /// the result that names them comes later. A collection that began
    /// before this (its cut-off is older than now) keeps the blob.
    pub fn claim_stored(&self, digest: &str) -> bool {
        let Ok(path) = self.path(digest) else { return false };
        if let Backend::S3(remote) = &self.backend {
            // The mark is the object's own time: the collection asks again
            // just before it removes (`S3::collect_garbage`).
            let digest = digest.to_string();
            return remote.block(BLOCKING_WAIT, move |s3| Box::pin(async move { s3.touch(&digest).await })).unwrap_or_else(
                |e| {
                    tracing::warn!(blob = %path.display(), "asking the object store for a blob: {e:#}");
                    false
                },
            );
        }
        let _collecting = self.collecting.lock().expect("collection lock");
        match std::fs::File::options().append(true).open(&path) {
            Ok(file) => file.set_modified(std::time::SystemTime::now()).is_ok() || path.exists(),
            Err(_) => false,
        }
    }

    /// Bytes free for unprivileged writers on the store's file system.
    /// With S3 that is the disk of the cache (and of the data dir): the
    /// uploads into the bucket are not held to it (see [`BlobStore::is_local`]).
    pub fn free_bytes(&self) -> Result<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root)
            .with_context(|| format!("reading the free space of {}", self.root.display()))?;
        // The field types are u64 on 64-bit Linux but not everywhere.
        #[allow(clippy::useless_conversion)]
        let (blocks, size) = (u64::from(stat.blocks_available()), u64::from(stat.fragment_size()));
        Ok(blocks.saturating_mul(size))
    }

    /// Stores bytes held in memory; returns the digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        if let Backend::S3(remote) = &self.backend {
            let bytes = bytes::Bytes::copy_from_slice(bytes);
            return remote.block(BLOCKING_WRITE_WAIT, move |s3| Box::pin(async move { s3.put_bytes(bytes).await }));
        }
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.path(&digest)?;
        if !path.exists() {
            std::fs::create_dir_all(path.parent().expect("has parent"))?;
            // Unique per put: two uploads of the same content at once each
            // write their own file, and either rename puts it in place.
            let tmp =
                self.root.join("tmp").join(format!("{digest}.{}.{}", std::process::id(), uuid::Uuid::new_v4().simple()));
            let written = std::fs::write(&tmp, bytes)
                .with_context(|| format!("writing {}", tmp.display()))
                .and_then(|()| std::fs::rename(&tmp, &path).with_context(|| format!("storing {}", path.display())));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
        }
        Ok(digest)
    }

    /// Streams `size` bytes from `reader` into the store, verifying them
    /// against `digest`.
    /// Where an upload of `digest` that was cut off keeps its bytes.
    fn partial(&self, digest: &str) -> Result<PathBuf> {
        self.path(digest)?;
        Ok(self.root.join("tmp").join(format!("{digest}.partial")))
    }

    /// The size of a stored blob, if it is stored.
    pub fn size_of(&self, digest: &str) -> Option<u64> {
        if let Backend::S3(remote) = &self.backend {
            self.path(digest).ok()?;
            let key = digest.to_string();
            return match remote.block(BLOCKING_WAIT, move |s3| Box::pin(async move { s3.head(&key).await })) {
                Ok(found) => found.map(|(size, _)| size),
                Err(e) => {
                    tracing::warn!(digest, "asking the object store for a blob: {e:#}");
                    None
                }
            };
        }
        std::fs::metadata(self.path(digest).ok()?).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Whether an upload of `digest` that was cut off left bytes here.
    pub fn has_partial(&self, digest: &str) -> bool {
        if let Backend::S3(remote) = &self.backend {
            if self.path(digest).is_err() {
                return false;
            }
            let key = digest.to_string();
            // Unknown counts as there: the booking stays until the store answers.
            return remote
                .block(BLOCKING_WAIT, move |s3| Box::pin(async move { s3.has_partial(&key).await }))
                .unwrap_or(true);
        }
        self.partial(digest).is_ok_and(|p| p.exists())
    }

    /// How many bytes of `digest` are here: all of them when it is stored,
    /// those of an upload cut off earlier, or 0.
    pub async fn upload_offset(&self, digest: &str, size: u64) -> Result<u64> {
        let partial = if let Backend::S3(remote) = &self.backend {
            self.path(digest)?;
            if remote.s3.touch(digest).await? {
                return Ok(size);
            }
            remote.s3.partial_bytes(digest, size).await?
        } else {
            if self.claim_stored(digest) {
                return Ok(size);
            }
            match tokio::fs::metadata(self.partial(digest)?).await {
                Ok(meta) if meta.len() <= size => meta.len(),
                _ => 0,
            }
        };
        // What a cut-off upload left is never the whole, even when it holds
        // every byte (cut off before its check, or another upload of the
        // same bytes in progress): only a `put_stream` stores the blob, so
        // the answer leaves it at least the last byte to send. "All of it"
        // means stored, and the sender then sends nothing and names a blob
        // that would never appear.
        Ok(partial.min(size.saturating_sub(1)))
    }

    /// Stores a blob streamed from `reader` without holding it in memory,
    /// from byte `offset` on (bytes before it came in an earlier upload that
    /// was cut off). Size and digest of the whole are checked before the
    /// blob appears; bytes received before a cut are kept for a resume, a
    /// wrong size or digest throws the upload away.
    pub async fn put_stream(
        &self,
        digest: &str,
        size: u64,
        offset: u64,
        reader: &mut (impl AsyncRead + Chunks + Unpin + Send),
    ) -> Result<()> {
        let path = self.path(digest)?;
        if size > MAX_ARTIFACT_BYTES {
            bail!("artifact of {size} bytes exceeds the limit of {MAX_ARTIFACT_BYTES} bytes");
        }
        let _guard = self.upload_lock(digest).await?;
        if let Backend::S3(remote) = &self.backend {
            if remote.s3.touch(digest).await? {
                // Stored by another upload while this one waited.
                tokio::io::copy(reader, &mut tokio::io::sink()).await.context("receiving the artifact")?;
                return Ok(());
            }
            return remote.s3.put_stream(digest, size, offset, reader).await;
        }
        let partial = self.partial(digest)?;
        if self.claim_stored(digest) {
            // Another upload of the same bytes finished while this one
            // waited: content-addressed, so this one is done too.
            tokio::io::copy(reader, &mut tokio::io::sink()).await.context("receiving the artifact")?;
            return Ok(());
        }
        let have = match tokio::fs::metadata(&partial).await {
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
        if offset > have {
            bail!("cannot resume at byte {offset}: {have} bytes of {digest} are here; ask for the offset again");
        }
        if offset < have {
            // Another upload of the same artifact left more; this sender
            // sends those bytes again.
            let file = tokio::fs::OpenOptions::new().write(true).open(&partial).await?;
            file.set_len(offset).await?;
        }
        let mut hasher = Sha256::new();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&partial)
            .await
            .with_context(|| format!("opening {}", partial.display()))?;
        // The hash covers the whole blob: read back what an earlier upload wrote.
        let mut buf = vec![0u8; 256 * 1024];
        let mut prefix = tokio::fs::File::open(&partial).await?;
        loop {
            let n = prefix.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        // Hashed and written on a thread while the stream is read (issue 19, perf).
        let mut sink = HashedFile::start(file.into_std().await, hasher, Flush::Behind);
        // What the file holds now: `have`, or `offset` when the tail was cut.
        let mut total = offset;
        let received = async {
            // The stream's own buffers go to the thread, never copied here.
            while let Some(chunk) = reader.next_chunk().await.context("receiving the artifact")? {
                total += chunk.len() as u64;
                if total > size {
                    bail!("artifact is longer than the announced {size} bytes");
                }
                if sink.push(chunk).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }
        .await;
        // A failed write shows here, whatever the stream did.
        let written = sink.finish().await.with_context(|| format!("writing {}", partial.display()));
        let verdict = match (received, written) {
            (Err(e), _) if total > size => Err(e),
            // Cut off, or a write failed: what arrived stays for the resume
            // (which hashes the file again).
            (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            // The sender said it was done: a short artifact is not resumable.
            (Ok(()), Ok(_)) if total != size => Err(anyhow::anyhow!("artifact ended after {total} of {size} bytes")),
            (Ok(()), Ok((file, got))) => {
                if got == digest {
                    Ok(file)
                } else {
                    Err(anyhow::anyhow!("artifact digest mismatch: announced {digest}, received {got}"))
                }
            }
        };
        let file = match verdict {
            Ok(file) => file,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
        };
        tokio::task::spawn_blocking(move || file.sync_all()).await??;
        tokio::fs::create_dir_all(path.parent().expect("has parent")).await?;
        tokio::fs::rename(&partial, &path).await?;
        Ok(())
    }

    /// One upload per digest at a time (two actions may produce the same
    /// artifact at once): a second waits for the first to end.
    async fn upload_lock(&self, digest: &str) -> Result<UploadGuard> {
        let deadline = tokio::time::Instant::now() + UPLOAD_WAIT;
        loop {
            if self.uploading.lock().expect("upload lock").insert(digest.to_string()) {
                return Ok(UploadGuard { set: self.uploading.clone(), digest: digest.to_string() });
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("artifact {digest} has been uploading by another stream for {UPLOAD_WAIT:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
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
        if let Backend::S3(remote) = &self.backend {
            let keep = keep.clone();
            let collected = remote
                .block(BLOCKING_WRITE_WAIT, move |s3| Box::pin(async move { s3.collect_garbage(&keep, before).await }))?;
            // The local cache: every copy not read since the cut-off.
            self.collect_local(&Default::default(), before)?;
            return Ok(collected);
        }
        self.collect_local(keep, before)
    }

    fn collect_local(
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
                if !tmp && (!is_digest(&name) || keep.contains(&name)) {
                    continue;
                }
                // Judged and removed under the lock an upload takes to
                // mark a blob it found as used (see `claim_stored`).
                let _collecting = self.collecting.lock().expect("collection lock");
                let Ok(meta) = entry.metadata() else { continue };
                if old(&meta) {
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

    /// Opens a blob for reading from byte `offset` on, with the whole
    /// blob's size. From S3 the bytes stream (a range request past 0) and,
    /// read from the start, end in an error if they are not the digest's.
    pub async fn open_blob(&self, digest: &str, offset: u64) -> Result<(Box<dyn AsyncRead + Send + Unpin>, u64)> {
        let path = self.path(digest)?;
        if let Backend::S3(remote) = &self.backend {
            let (reader, size) = remote.s3.open(digest, offset).await?;
            if offset > size {
                bail!("cannot resume at byte {offset}: blob {digest} has {size} bytes");
            }
            return Ok((reader, size));
        }
        let digest = digest.to_string();
        let (file, size) = tokio::task::spawn_blocking(move || open_local(&path, &digest, offset)).await??;
        Ok((Box::new(tokio::fs::File::from_std(file)), size))
    }

    /// A local blob read ahead on a thread from byte `offset` on, in
    /// chunks of `chunk` bytes, with the whole blob's size; `None` from
    /// object storage (read it with [`BlobStore::open_blob`]).
    ///
    /// Sending a blob was a loop of reading a chunk (a trip to tokio's
    /// blocking pool, and a copy out of its buffer) and then writing it to
    /// the stream (another copy): the stream waited for each read, and
    /// each byte was copied three times. Here the thread reads while the
    /// stream sends, and each chunk goes to the stream as it was read
    /// (issue 19, perf).
    pub async fn read_ahead(
        &self,
        digest: &str,
        offset: u64,
        chunk: usize,
    ) -> Result<Option<(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>, u64)>> {
        if !self.is_local() {
            return Ok(None);
        }
        use std::io::Read as _;
        let path = self.path(digest)?;
        let owned = digest.to_string();
        let (mut file, size) = tokio::task::spawn_blocking(move || open_local(&path, &owned, offset)).await??;
        // A few chunks ahead of the stream: enough to cover a read's pause.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = bytes::BytesMut::zeroed(chunk);
                let mut filled = 0;
                while filled < chunk {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                if tx.blocking_send(Ok(buf.freeze())).is_err() {
                    return;
                }
            }
        });
        Ok(Some((rx, size)))
    }

    /// A file holding the whole blob, for readers that need one (the AWS
    /// API's zips): the blob itself when local, else a copy downloaded
    /// into the cache, verified against the digest before it is used.
    pub async fn local_file(&self, digest: &str) -> Result<PathBuf> {
        let path = self.path(digest)?;
        if self.is_local() || tokio::fs::metadata(&path).await.is_ok() {
            if !self.is_local() {
                // Read now: the collection of the cache keeps it a while.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            }
            return Ok(path);
        }
        let (mut reader, _) = self.open_blob(digest, 0).await?;
        let tmp = self.root.join("tmp").join(format!("{digest}.{}", uuid::Uuid::new_v4().simple()));
        let copied = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            tokio::io::copy(&mut reader, &mut file).await?;
            file.sync_all().await?;
            tokio::fs::create_dir_all(path.parent().expect("has parent")).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(anyhow::Error::new(e).context(format!("reading blob {digest} from {}", self.describe())));
        }
        Ok(path)
    }
}

/// A local blob's file, read from byte `offset` on, and the blob's size.
fn open_local(path: &Path, digest: &str, offset: u64) -> Result<(std::fs::File, u64)> {
    use std::io::Seek as _;
    let mut file = std::fs::File::open(path).with_context(|| format!("no blob {digest}"))?;
    let size = file.metadata()?.len();
    if offset > size {
        bail!("cannot resume at byte {offset}: blob {digest} has {size} bytes");
    }
    file.seek(std::io::SeekFrom::Start(offset)).context("seeking in the blob")?;
    Ok((file, size))
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
        store.put_stream(&digest, data.len() as u64, 0, &mut &data[..]).await.unwrap();
        assert!(store.contains(&digest));

        let wrong = "0".repeat(64);
        let err = store.put_stream(&wrong, data.len() as u64, 0, &mut &data[..]).await.unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!store.contains(&wrong));
        let err = store.put_stream(&wrong, 99, 0, &mut &data[..]).await.unwrap_err();
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

    /// The race of issue 12: a collection takes its cut-off and the list of
    /// referenced artifacts, then an upload finds its artifact already
    /// stored (unreferenced, old) and skips sending it; the collection must
    /// not remove it under the result that is about to name it.
    #[tokio::test]
    async fn a_blob_an_upload_found_stored_outlives_a_collection_that_began_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"built yesterday".to_vec();
        let digest = store.put_bytes(&data).unwrap();
        let path = store.path(&digest).unwrap();
        let yesterday = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        std::fs::File::options().append(true).open(&path).unwrap().set_modified(yesterday).unwrap();
        // The collection begins: one hour's cut-off, nothing referenced.
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let keep = std::collections::HashSet::new();
        // The upload asks, finds it, and will not send it.
        assert_eq!(store.upload_offset(&digest, data.len() as u64).await.unwrap(), data.len() as u64);
        store.put_stream(&digest, data.len() as u64, 0, &mut &data[..]).await.unwrap();
        assert_eq!(store.collect_garbage(&keep, before).unwrap(), (0, 0));
        assert!(store.contains(&digest), "the blob the upload found was collected");
        // Without such an upload the same collection removes it.
        std::fs::File::options().append(true).open(&path).unwrap().set_modified(yesterday).unwrap();
        assert_eq!(store.collect_garbage(&keep, before).unwrap(), (1, data.len() as u64));
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.free_bytes().unwrap() > 0);
    }

    #[test]
    fn concurrent_puts_of_the_same_bytes_all_succeed_and_leave_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        for round in 0..20u32 {
            // 1 MiB, so that the writes overlap.
            let data: Vec<u8> = (0..1u32 << 20).map(|i| (i ^ round) as u8).collect();
            let barrier = std::sync::Barrier::new(8);
            let digests: Vec<String> = std::thread::scope(|scope| {
                let puts: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            store.put_bytes(&data)
                        })
                    })
                    .collect();
                puts.into_iter().map(|p| p.join().unwrap().expect("a concurrent put of the same bytes")).collect()
            });
            assert!(digests.iter().all(|d| *d == digests[0]));
            assert_eq!(std::fs::read(store.path(&digests[0]).unwrap()).unwrap(), data);
            assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no partial file left");
        }
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;
    use crate::hashed_file::ReadChunks;

    /// A reader that gives `n` bytes of `data`, then fails like a dropped connection.
    struct CutOff<'a> {
        data: &'a [u8],
        left: usize,
    }

    impl AsyncRead for CutOff<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.left == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")));
            }
            let n = self.left.min(buf.remaining()).min(self.data.len());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.left -= n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A rogue agent that sends more than it announced: refused as soon as
    /// a chunk goes past the size, and nothing of it is kept, neither the
    /// blob nor a partial upload to resume.
    #[tokio::test]
    async fn an_upload_longer_than_announced_is_refused_and_kept_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let announced = 100_000u64;
        let digest = hex::encode(Sha256::digest(&data[..announced as usize]));
        let err = store.put_stream(&digest, announced, 0, &mut &data[..]).await.unwrap_err();
        assert!(err.to_string().contains("longer than the announced 100000 bytes"), "{err}");
        assert!(!store.contains(&digest));
        assert!(!store.has_partial(&digest), "an overrun is not resumable");
        assert_eq!(store.upload_offset(&digest, announced).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_upload_cut_off_goes_on_from_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let digest = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        assert_eq!(store.upload_offset(&digest, size).await.unwrap(), 0);

        let err =
            store.put_stream(&digest, size, 0, &mut ReadChunks(CutOff { data: &data, left: 100_000 })).await.unwrap_err();
        assert!(format!("{err:#}").contains("receiving"), "{err:#}");
        assert!(!store.contains(&digest), "nothing half-written is visible");
        let offset = store.upload_offset(&digest, size).await.unwrap();
        assert_eq!(offset, 100_000);
        // A resume past what is here is refused and changes nothing.
        assert!(
            store
                .put_stream(&digest, size, 200_000, &mut &data[200_000..])
                .await
                .unwrap_err()
                .to_string()
                .contains("ask for the offset")
        );
        assert_eq!(store.upload_offset(&digest, size).await.unwrap(), offset);
        store.put_stream(&digest, size, offset, &mut &data[offset as usize..]).await.unwrap();
        assert!(store.contains(&digest));
        assert_eq!(std::fs::read(store.path(&digest).unwrap()).unwrap(), data);
        assert_eq!(store.upload_offset(&digest, size).await.unwrap(), size, "stored: nothing to send");

        // Bytes that do not hash to the digest are thrown away whole.
        let other: Vec<u8> = vec![7; 1000];
        let wrong = hex::encode(Sha256::digest(b"something else"));
        store.put_stream(&wrong, 1000, 0, &mut ReadChunks(CutOff { data: &other, left: 400 })).await.unwrap_err();
        assert!(store.put_stream(&wrong, 1000, 400, &mut &other[400..]).await.unwrap_err().to_string().contains("mismatch"));
        assert_eq!(store.upload_offset(&wrong, 1000).await.unwrap(), 0);
    }

    /// Every byte received, but the upload cut before its check: the blob is
    /// not stored, so the sender is not told "all of it" (it would send
    /// nothing and name a blob that never appears); it sends the last byte,
    /// and a sender resending from further back is counted from there.
    #[tokio::test]
    async fn a_partial_holding_every_byte_is_not_taken_for_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
        let digest = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        std::fs::write(store.partial(&digest).unwrap(), &data).unwrap();
        assert!(!store.contains(&digest));
        assert_eq!(store.upload_offset(&digest, size).await.unwrap(), size - 1);
        // A resend from before the end of what is here (the other sender's
        // bytes) replaces the tail and is counted from its offset.
        store.put_stream(&digest, size, 1_000, &mut &data[1_000..]).await.unwrap();
        assert!(store.contains(&digest));
        assert_eq!(std::fs::read(store.path(&digest).unwrap()).unwrap(), data);
        assert_eq!(store.upload_offset(&digest, size).await.unwrap(), size, "stored: nothing to send");

        // From the offset it answers, too.
        let other: Vec<u8> = vec![9; 3_000];
        let digest = hex::encode(Sha256::digest(&other));
        std::fs::write(store.partial(&digest).unwrap(), &other).unwrap();
        let offset = store.upload_offset(&digest, 3_000).await.unwrap();
        store.put_stream(&digest, 3_000, offset, &mut &other[offset as usize..]).await.unwrap();
        assert_eq!(std::fs::read(store.path(&digest).unwrap()).unwrap(), other);
    }

    #[tokio::test]
    async fn two_uploads_of_the_same_artifact_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let digest = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        let (mut first, mut second) = (&data[..], &data[..]);
        let (a, b) =
            tokio::join!(store.put_stream(&digest, size, 0, &mut first), store.put_stream(&digest, size, 0, &mut second),);
        a.unwrap();
        b.unwrap();
        assert_eq!(std::fs::read(store.path(&digest).unwrap()).unwrap(), data);
    }
}
