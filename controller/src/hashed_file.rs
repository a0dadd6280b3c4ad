//! Bytes arriving from the network, written to a file and hashed on a
//! thread of their own (issue 19, perf).
//!
//! Receiving an artifact was one loop: read from the stream, hash, write
//! (a trip to tokio's blocking pool and a copy per write), read again. The
//! stream waited while the bytes were hashed and written, and the hashing
//! waited while the stream was read. Here the reader takes the stream's own
//! buffers ([`Chunks`]: a QUIC stream hands over the decrypted packets'
//! bytes as they are) and hands them over in batches of about a MiB; one
//! thread hashes each batch and writes it with one vectored write, while
//! the reader goes on with the next. No byte is copied between the socket's
//! buffers and the file. With [`Flush::Behind`] a second thread syncs what
//! was written every few MiB, while the first goes on, so the final sync
//! finds little left to do.
//!
//! The controller uses it for uploads (`BlobStore::put_stream`), the agent
//! for downloads (the agent compiles this file as its own module).

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::io::{IoSlice, Write as _};
use tokio::sync::mpsc;

/// Bytes per batch handed to the thread.
const BUFFER: usize = 1 << 20;
/// Batches in flight between the reader and the thread: the memory one
/// transfer may hold beyond what is written.
const IN_FLIGHT: usize = 8;
/// With [`Flush::Behind`]: the disk is asked to write after every this many bytes.
const SYNC_EVERY: u64 = 16 << 20;

/// A stream read as the chunks it already holds, without copying them.
pub trait Chunks {
    /// The next chunk; `None` at the end of the stream.
    fn next_chunk(&mut self) -> impl Future<Output = std::io::Result<Option<Bytes>>> + Send;
}

impl Chunks for quinn::RecvStream {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        match self.read_chunk(usize::MAX, true).await {
            Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Bytes in memory (the tests' and local callers' streams), in pieces of
/// at most 64 KiB.
impl Chunks for &[u8] {
    fn next_chunk(&mut self) -> impl Future<Output = std::io::Result<Option<Bytes>>> + Send {
        let (now, rest) = self.split_at(self.len().min(64 << 10));
        *self = rest;
        let chunk = (!now.is_empty()).then(|| Bytes::copy_from_slice(now));
        std::future::ready(Ok(chunk))
    }
}

/// Any reader as chunks, its bytes copied once as a read copies them (a
/// reader that is not a QUIC stream: tests, a cut-off stream).
// The agent, which compiles this file too, reads only QUIC streams.
#[allow(dead_code)]
pub struct ReadChunks<R>(pub R);

impl<R: tokio::io::AsyncRead + Unpin + Send> Chunks for ReadChunks<R> {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut buf = bytes::BytesMut::with_capacity(64 << 10);
        let n = tokio::io::AsyncReadExt::read_buf(&mut self.0, &mut buf).await?;
        Ok((n > 0).then(|| buf.freeze()))
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ReadChunks<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// Whether the thread starts the disk's writes while the bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// The caller syncs at the end and wants that to be short.
    Behind,
    /// Left to the page cache.
    Cached,
}

/// A file being written by the thread, and the digest of what it was given.
pub struct HashedFile {
    batch: Vec<Bytes>,
    batched: usize,
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    worker: tokio::task::JoinHandle<std::io::Result<(std::fs::File, Sha256)>>,
}

impl HashedFile {
    /// Starts the thread, appending to `file` and going on from `hasher`
    /// (which holds the digest state of bytes already in the file).
    pub fn start(file: std::fs::File, hasher: Sha256, flush: Flush) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(IN_FLIGHT);
        let worker = tokio::task::spawn_blocking(move || {
            let (mut file, mut hasher) = (file, hasher);
            let syncer = if flush == Flush::Behind { Some(Syncer::start(&file)?) } else { None };
            let mut unsynced = 0u64;
            while let Some(batch) = rx.blocking_recv() {
                for chunk in &batch {
                    hasher.update(chunk);
                }
                unsynced += write_all(&mut file, &batch)? as u64;
                if let Some(syncer) = &syncer
                    && unsynced >= SYNC_EVERY
                {
                    syncer.nudge();
                    unsynced = 0;
                }
            }
            if let Some(syncer) = syncer {
                syncer.stop();
            }
            Ok((file, hasher))
        });
        Self { batch: Vec::new(), batched: 0, tx: Some(tx), worker }
    }

    /// Takes a chunk of the stream, handing the batch over once it holds
    /// [`BUFFER`] bytes. An error means the thread stopped:
    /// [`HashedFile::finish`] says why.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), Stopped> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched < BUFFER {
            return Ok(());
        }
        self.hand_over().await
    }

    async fn hand_over(&mut self) -> Result<(), Stopped> {
        let full = std::mem::take(&mut self.batch);
        self.batched = 0;
        match &self.tx {
            Some(tx) => tx.send(full).await.map_err(|_| Stopped),
            None => Err(Stopped),
        }
    }

    /// Writes what is left and waits for the thread: the file and the hex
    /// sha256 of everything it was given (the `hasher`'s bytes first).
    pub async fn finish(mut self) -> std::io::Result<(std::fs::File, String)> {
        if !self.batch.is_empty() {
            // A stopped thread says why below.
            let _ = self.hand_over().await;
        }
        self.tx = None;
        let (file, hasher) = self.worker.await.map_err(std::io::Error::other)??;
        Ok((file, hex::encode(hasher.finalize())))
    }
}

/// Writes every chunk, as few vectored writes as the kernel takes; the
/// bytes written.
fn write_all(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<usize> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().filter(|c| !c.is_empty()).map(|c| IoSlice::new(c)).collect();
    let total = slices.iter().map(|s| s.len()).sum();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// A second thread that syncs the file while the first goes on hashing and
/// writing: a sync in the writing thread held it up for as long as the
/// disk took (a 32 MiB sync is about 36 ms here), and the stream waited
/// with it; uploads ran at half of raw quinn's rate (issue 19, perf).
struct Syncer {
    tx: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    fn start(file: &std::fs::File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        // One sync asked for while another runs is enough: it covers
        // everything written before it starts.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new().name("sluice-sync".into()).spawn(move || {
            while rx.recv().is_ok() {
                // A failure here shows again in the caller's final sync.
                let _ = file.sync_data();
            }
        })?;
        Ok(Self { tx, thread })
    }

    /// Asks for a sync of what is written so far, without waiting.
    fn nudge(&self) {
        let _ = self.tx.try_send(());
    }

    /// Waits for the sync under way, if any; the caller syncs what is left.
    fn stop(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// The thread stopped (a write failed); [`HashedFile::finish`] has the error.
#[derive(Debug)]
pub struct Stopped;

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `piece` bytes.
    async fn feed(sink: &mut HashedFile, body: &[u8], piece: usize) -> Result<(), Stopped> {
        for piece in body.chunks(piece) {
            sink.push(Bytes::copy_from_slice(piece)).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_file_holds_every_byte_and_the_digest_covers_the_prefix_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"prefix-").unwrap();
        let file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(b"prefix-");
        let mut sink = HashedFile::start(file, hasher, Flush::Behind);
        let body: Vec<u8> = (0..(3 * BUFFER + 12345)).map(|i| (i % 251) as u8).collect();
        // Pieces of odd sizes, across batch boundaries.
        feed(&mut sink, &body, 70_001).await.unwrap();
        let (_, digest) = sink.finish().await.unwrap();
        let mut whole = b"prefix-".to_vec();
        whole.extend_from_slice(&body);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        assert_eq!(digest, hex::encode(Sha256::digest(&whole)));
    }

    #[tokio::test]
    async fn packet_sized_chunks_and_empty_ones_arrive_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let file = std::fs::File::create(&path).unwrap();
        // About a QUIC packet's payload each: a batch is over a thousand
        // chunks, more than one vectored write takes (IOV_MAX, 1024).
        let body: Vec<u8> = (0..(2 * BUFFER + 7)).map(|i| (i % 13) as u8).collect();
        let mut sink = HashedFile::start(file, Sha256::new(), Flush::Cached);
        for (i, piece) in body.chunks(977).enumerate() {
            if i % 100 == 0 {
                sink.push(Bytes::new()).await.unwrap();
            }
            sink.push(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let (_, digest) = sink.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(digest, hex::encode(Sha256::digest(&body)));
    }

    #[tokio::test]
    async fn a_byte_slice_gives_its_bytes_as_chunks() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut source = &body[..];
        let mut got = Vec::new();
        while let Some(chunk) = source.next_chunk().await.unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= 64 << 10);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, body);
    }

    #[tokio::test]
    async fn a_failed_write_is_said_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"").unwrap();
        // Read-only: every write fails.
        let file = std::fs::File::open(&path).unwrap();
        let mut sink = HashedFile::start(file, Sha256::new(), Flush::Cached);
        let mut stopped = false;
        for _ in 0..(IN_FLIGHT + 4) {
            stopped |= feed(&mut sink, &vec![1u8; BUFFER], BUFFER).await.is_err();
        }
        assert!(stopped, "the reader learns that the thread stopped");
        assert!(sink.finish().await.is_err());
    }
}
