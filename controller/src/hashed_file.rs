//! Bytes arriving from the network, written to a file and hashed on a
//! thread of their own (issue 19, perf).
//!
//! Receiving an artifact was one loop: read from the stream, hash, write
//! (a trip to tokio's blocking pool and a copy per write), read again. The
//! stream waited while the bytes were hashed and written, and the hashing
//! waited while the stream was read. Here the reader fills large buffers
//! and hands them over; one thread hashes each buffer and writes it with
//! plain blocking writes, while the reader goes on filling the next. Each
//! byte is hashed once and copied once (from the stream's buffers into
//! ours). With [`Flush::Behind`] a second thread syncs what was written
//! every few MiB, while the first goes on, so the final sync finds little
//! left to do.
//!
//! The controller uses it for uploads (`BlobStore::put_stream`), the agent
//! for downloads (the agent compiles this file as its own module).

use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use tokio::sync::mpsc;

/// Bytes per buffer handed to the thread.
const BUFFER: usize = 1 << 20;
/// Buffers in flight between the reader and the thread: the memory one
/// transfer may hold beyond what is written.
const IN_FLIGHT: usize = 8;
/// With [`Flush::Behind`]: the disk is asked to write after every this many bytes.
const SYNC_EVERY: u64 = 16 << 20;

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
    buffer: Vec<u8>,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    worker: tokio::task::JoinHandle<std::io::Result<(std::fs::File, Sha256)>>,
}

impl HashedFile {
    /// Starts the thread, appending to `file` and going on from `hasher`
    /// (which holds the digest state of bytes already in the file).
    pub fn start(file: std::fs::File, hasher: Sha256, flush: Flush) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
        let worker = tokio::task::spawn_blocking(move || {
            let (mut file, mut hasher) = (file, hasher);
            let syncer = if flush == Flush::Behind { Some(Syncer::start(&file)?) } else { None };
            let mut unsynced = 0u64;
            while let Some(buffer) = rx.blocking_recv() {
                hasher.update(&buffer);
                file.write_all(&buffer)?;
                unsynced += buffer.len() as u64;
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
        Self { buffer: Vec::with_capacity(BUFFER), tx: Some(tx), worker }
    }

    /// The buffer to read into: its spare capacity is what the next read
    /// may fill (`AsyncReadExt::read_buf`); call [`HashedFile::filled`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Hands the buffer over once it is full. An error means the thread
    /// stopped: [`HashedFile::finish`] says why.
    pub async fn filled(&mut self) -> Result<(), Stopped> {
        if self.buffer.len() < self.buffer.capacity() {
            return Ok(());
        }
        self.hand_over().await
    }

    /// Copies `bytes` in, handing over each buffer that fills (the tests'
    /// way of feeding pieces of chosen sizes).
    #[cfg(test)]
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Stopped> {
        while !bytes.is_empty() {
            let room = self.buffer.capacity() - self.buffer.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = rest;
            self.filled().await?;
        }
        Ok(())
    }

    async fn hand_over(&mut self) -> Result<(), Stopped> {
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(BUFFER));
        match &self.tx {
            Some(tx) => tx.send(full).await.map_err(|_| Stopped),
            None => Err(Stopped),
        }
    }

    /// Writes what is left and waits for the thread: the file and the hex
    /// sha256 of everything it was given (the `hasher`'s bytes first).
    pub async fn finish(mut self) -> std::io::Result<(std::fs::File, String)> {
        if !self.buffer.is_empty() {
            // A stopped thread says why below.
            let _ = self.hand_over().await;
        }
        self.tx = None;
        let (file, hasher) = self.worker.await.map_err(std::io::Error::other)??;
        Ok((file, hex::encode(hasher.finalize())))
    }
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
        // Pieces of odd sizes, across buffer boundaries.
        for piece in body.chunks(70_001) {
            sink.write(piece).await.unwrap();
        }
        let (_, digest) = sink.finish().await.unwrap();
        let mut whole = b"prefix-".to_vec();
        whole.extend_from_slice(&body);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        assert_eq!(digest, hex::encode(Sha256::digest(&whole)));
    }

    #[tokio::test]
    async fn reads_fill_the_buffer_in_place() {
        use tokio::io::AsyncReadExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let file = std::fs::File::create(&path).unwrap();
        let body: Vec<u8> = (0..(2 * BUFFER + 7)).map(|i| (i % 13) as u8).collect();
        let mut reader = &body[..];
        let mut sink = HashedFile::start(file, Sha256::new(), Flush::Cached);
        while reader.read_buf(sink.buffer()).await.unwrap() > 0 {
            sink.filled().await.unwrap();
        }
        let (_, digest) = sink.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(digest, hex::encode(Sha256::digest(&body)));
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
            stopped |= sink.write(&vec![1u8; BUFFER]).await.is_err();
        }
        assert!(stopped, "the reader learns that the thread stopped");
        assert!(sink.finish().await.is_err());
    }
}
