//! Moving bytes between the agent and the controller: frames on QUIC
//! streams, plugin and artifact downloads and artifact uploads (each on its
//! own bidirectional stream, streamed through disk while hashing, never held
//! whole in memory), and the deterministic tar format of artifacts.
//!
//! Must not know about jobs, the control loop or the runtime: it is given a
//! connection, a request and a path, and checks sizes and digests.

use crate::hashed_file::{Chunks, Flush, HashedFile};
use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};
use sluice_protocol::{FrameDecoder, StreamReply, StreamRequest};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

/// Reads from disk and buffers writes to disk in pieces of this size: large
/// enough that a 256 MiB artifact costs few system calls, small enough to
/// keep many transfers cheap.
const IO_BUFFER: usize = 256 * 1024;

/// The connection to the controller, if one is up right now. Jobs outlive
/// connections; when they need a stream they wait for the next connection.
#[derive(Clone)]
pub struct Link {
    current: watch::Sender<Option<quinn::Connection>>,
}

impl Default for Link {
    fn default() -> Self {
        Self { current: watch::Sender::new(None) }
    }
}

impl Link {
    pub fn set(&self, connection: Option<quinn::Connection>) {
        self.current.send_replace(connection);
    }

    /// Forgets the connection; whether there was one.
    pub fn clear(&self) -> bool {
        self.current.send_replace(None).is_some()
    }

    /// Whether a live connection is up now (health, issue 17 obs).
    pub fn is_connected(&self) -> bool {
        self.current.borrow().as_ref().is_some_and(|c| c.close_reason().is_none())
    }

    /// The live connection, waiting for one if the agent is reconnecting.
    pub async fn connection(&self) -> quinn::Connection {
        let mut rx = self.current.subscribe();
        let found = rx
            .wait_for(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
            .await
            .expect("the link's sender lives as long as the link");
        (*found).clone().expect("checked above")
    }

    /// Runs a transfer on the live connection. When that connection dies
    /// during it (a network cut, a controller restart), the transfer starts
    /// again on the next connection, at most [`TRANSFER_ATTEMPTS`] times in
    /// all: a job does not fail because the link blinked.
    pub async fn transfer<T, F, Fut>(&self, what: &str, mut run: F) -> Result<T>
    where
        F: FnMut(quinn::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let connection = self.connection().await;
            match run(connection.clone()).await {
                Err(e) if connection.close_reason().is_some() && attempt < TRANSFER_ATTEMPTS => {
                    tracing::warn!(attempt, "{what} was cut off with the connection; trying again on the next: {e:#}");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// How often a transfer is tried when connections keep dying under it.
pub const TRANSFER_ATTEMPTS: u32 = 5;

/// Writes one frame.
pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, message: &T) -> Result<()> {
    let frame = sluice_protocol::encode(message)?;
    send.write_all(&frame).await?;
    Ok(())
}

/// Reads exactly one frame and nothing beyond it, so that raw bytes which
/// follow a frame on the same stream stay in the stream. `None` when the
/// peer finished the stream before the first byte of a frame.
pub async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<Option<T>> {
    let mut decoder = FrameDecoder::new();
    let mut started = false;
    loop {
        if let Some(message) = decoder.next_frame::<T>()? {
            return Ok(Some(message));
        }
        let mut buf = vec![0; decoder.needed()];
        match recv.read_exact(&mut buf).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) if !started => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(n)) => {
                bail!("stream ended in the middle of a frame ({n} of {} bytes)", buf.len())
            }
            Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
        }
        started = true;
        decoder.push(&buf);
    }
}

/// Hex sha256 digests name plugins and artifacts; anything else is refused
/// before it becomes part of a path or a request.
pub fn check_digest(digest: &str) -> Result<()> {
    if sluice_runtime::is_digest(digest) {
        Ok(())
    } else {
        bail!("{digest:?} is not a sha256 digest (64 lowercase hex digits)")
    }
}

/// Sends a fetch request on a new stream and streams the answer to `dest`
/// while hashing it. The controller answers `Ok{size}` then exactly `size`
/// raw bytes and finishes the stream, or `Error{message}`. Returns the size.
pub async fn fetch(
    connection: &quinn::Connection,
    request: &StreamRequest,
    expected_digest: &str,
    dest: &Path,
) -> Result<u64> {
    fetch_from(connection, request, expected_digest, dest, 0).await
}

/// Downloads an artifact to `dest`, going on from the bytes a download cut
/// off earlier left there: asks for the rest from that offset, hashes what
/// is on disk first, and checks the size and digest of the whole.
pub async fn fetch_artifact(connection: &quinn::Connection, digest: &str, dest: &Path) -> Result<u64> {
    let have = tokio::fs::metadata(dest).await.map(|m| m.len()).unwrap_or(0);
    let request = StreamRequest::FetchArtifact { digest: digest.to_string(), offset: have };
    let fetched = fetch_from(connection, &request, digest, dest, have).await;
    if fetched.is_err() && connection.close_reason().is_none() {
        // Not a cut: what is on disk is no good to resume from.
        tokio::fs::remove_file(dest).await.ok();
    }
    fetched
}

/// [`fetch`], keeping the first `offset` bytes already in `dest` (the
/// request asks for the rest).
async fn fetch_from(
    connection: &quinn::Connection,
    request: &StreamRequest,
    expected_digest: &str,
    dest: &Path,
    offset: u64,
) -> Result<u64> {
    check_digest(expected_digest)?;
    let mut hasher = Sha256::new();
    if offset > 0 {
        let mut file = tokio::fs::File::open(dest).await.with_context(|| format!("reopening {}", dest.display()))?;
        let mut buf = vec![0u8; IO_BUFFER];
        let mut hashed = 0u64;
        while hashed < offset {
            let n = file.read(&mut buf).await.with_context(|| format!("reading {}", dest.display()))?;
            if n == 0 {
                bail!("{} shrank while resuming", dest.display());
            }
            let n = n.min((offset - hashed) as usize);
            hasher.update(&buf[..n]);
            hashed += n as u64;
        }
    }
    let (mut send, mut recv) = connection.open_bi().await.context("opening a stream")?;
    write_frame(&mut send, request).await.context("sending the request")?;
    // Nothing more goes this way; finishing tells the controller so.
    let _ = send.finish();
    let size = match read_frame::<StreamReply>(&mut recv).await.context("reading the controller's answer")? {
        Some(StreamReply::Ok { size }) => size,
        Some(StreamReply::Error { message }) => bail!("controller refused: {message}"),
        None => bail!("controller closed the stream without an answer"),
    };
    if offset > size {
        bail!("cannot resume at byte {offset} of a {size}-byte blob");
    }
    let file = if offset > 0 {
        tokio::fs::OpenOptions::new().append(true).open(dest).await
    } else {
        tokio::fs::File::create(dest).await
    }
    .with_context(|| format!("creating {}", dest.display()))?;
    // Hashed and written on a thread while the stream is read (issue 19,
    // perf): quinn's own buffers go to the thread, never copied.
    let mut sink = HashedFile::start(file.into_std().await, hasher, Flush::Cached);
    let mut received = offset;
    let read = async {
        while let Some(chunk) = recv.next_chunk().await.context("receiving")? {
            received += chunk.len() as u64;
            if received > size {
                bail!("controller sent more than the {size} bytes it announced");
            }
            if sink.push(chunk).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    let written = sink.finish().await.with_context(|| format!("writing {}", dest.display()));
    read?;
    let (_, actual) = written?;
    if received != size {
        bail!("stream ended after {received} of {size} bytes");
    }
    if actual != expected_digest {
        bail!("digest mismatch: expected {expected_digest}, got {actual}");
    }
    Ok(size)
}

/// Asks how much of an artifact the controller already has.
async fn upload_offset(connection: &quinn::Connection, packed: &Packed) -> Result<u64> {
    let (mut send, mut recv) = connection.open_bi().await.context("opening a stream")?;
    write_frame(&mut send, &StreamRequest::UploadOffset { digest: packed.digest.clone(), size: packed.size }).await?;
    send.finish()?;
    match read_frame::<StreamReply>(&mut recv).await? {
        Some(StreamReply::Ok { size }) if size <= packed.size => Ok(size),
        Some(StreamReply::Ok { size }) => bail!("controller claims {size} bytes of a {}-byte artifact", packed.size),
        Some(StreamReply::Error { message }) => bail!("controller refused the upload: {message}"),
        None => bail!("controller closed the stream without an answer"),
    }
}

/// Uploads an archive: asks the controller how much it has (all of it when
/// the same artifact is stored already; the part an earlier, cut-off upload
/// sent), then `PutArtifact{digest, size, offset}` and the bytes from there;
/// the controller verifies the whole, stores and answers with a `StreamReply`.
pub async fn upload(connection: &quinn::Connection, packed: &Packed, path: &Path) -> Result<()> {
    use tokio::io::AsyncSeekExt as _;
    let offset = upload_offset(connection, packed).await?;
    if offset == packed.size && packed.size > 0 {
        return Ok(());
    }
    let (mut send, mut recv) = connection.open_bi().await.context("opening a stream")?;
    let request = StreamRequest::PutArtifact { digest: packed.digest.clone(), size: packed.size, offset };
    let sent = async {
        write_frame(&mut send, &request).await?;
        let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        file.seek(std::io::SeekFrom::Start(offset)).await.with_context(|| format!("seeking in {}", path.display()))?;
        let mut buf = vec![0; IO_BUFFER];
        let mut total = offset;
        loop {
            let n = file.read(&mut buf).await.with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            send.write_all(&buf[..n]).await?;
        }
        if total != packed.size {
            bail!("{} changed while uploading: {total} bytes instead of {}", path.display(), packed.size);
        }
        send.finish()?;
        anyhow::Ok(())
    }
    .await;
    // The controller may refuse early (and stop reading); its answer says
    // why better than our write error does.
    let reply = read_frame::<StreamReply>(&mut recv).await;
    match (sent, reply) {
        (_, Ok(Some(StreamReply::Error { message }))) => bail!("controller refused the upload: {message}"),
        (Err(e), _) => Err(e.context("sending")),
        (Ok(()), Ok(Some(StreamReply::Ok { .. }))) => Ok(()),
        (Ok(()), Ok(None)) => bail!("controller closed the stream without an answer"),
        (Ok(()), Err(e)) => Err(e.context("reading the controller's answer")),
    }
}

/// An archive written to disk, with what names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub digest: String,
    pub size: u64,
}

/// Passes writes through while hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly `remaining` bytes or fails, so that a file that shrinks
/// while packing cannot produce an archive whose header lies about its size.
struct Exactly<R> {
    inner: std::io::Take<R>,
    remaining: u64,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while being packed"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Every entry below `root`, as paths relative to it, in no particular order.
fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> Result<()> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let rel = rel.join(entry.file_name());
        let meta = entry.metadata().with_context(|| format!("reading {}", root.join(&rel).display()))?;
        let is_dir = meta.is_dir();
        out.push((rel.clone(), meta));
        if is_dir {
            walk(root, &rel, out)?;
        }
    }
    Ok(())
}

/// Packs the contents of `dir` into a tar archive at `dest` that depends only
/// on the tree: entries sorted by path bytes, mtime 0, uid and gid 0, no
/// user or group names, mode 0755 for directories and executable files and
/// 0644 for other files, symlinks kept as symlinks. Packing the same tree
/// twice gives the same digest. Blocking.
pub fn pack_dir(dir: &Path, dest: &Path) -> Result<Packed> {
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));

    let file = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let out = HashingWriter { inner: std::io::BufWriter::with_capacity(IO_BUFFER, file), hasher: Sha256::new(), written: 0 };
    let mut builder = tar::Builder::new(out);
    for (rel, meta) in entries {
        let path = dir.join(&rel);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let kind = meta.file_type();
        let appended = if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &rel, std::io::empty())
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).with_context(|| format!("reading link {}", path.display()))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, &rel, &target)
        } else if kind.is_file() {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(size);
            builder.append_data(&mut header, &rel, Exactly { inner: file.take(size), remaining: size })
        } else {
            bail!("{}: only files, directories and symlinks can be part of an artifact", path.display());
        };
        appended.with_context(|| format!("packing {}", path.display()))?;
    }
    let mut out = builder.into_inner().with_context(|| format!("writing {}", dest.display()))?;
    out.flush().with_context(|| format!("writing {}", dest.display()))?;
    Ok(Packed { digest: hex::encode(out.hasher.finalize()), size: out.written })
}

/// Unpacks a tar archive into `dest`. An entry with an absolute path or a
/// `..` component is an error (the `tar` crate alone would skip it
/// silently); links are checked by `unpack_in` not to lead writes outside
/// `dest`. Files get the time of unpacking, not the archive's mtime 0.
/// Blocking.
pub fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let file = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(IO_BUFFER, file));
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let path = entry.path().context("reading an entry's path")?.into_owned();
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            tar::EntryType::XGlobalHeader => continue,
            other => bail!("entry {}: unsupported entry type {other:?}", path.display()),
        }
        if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            bail!("entry {}: path leaves the artifact directory", path.display());
        }
        entry.set_preserve_mtime(false);
        let unpacked = entry.unpack_in(dest).with_context(|| format!("unpacking {}", path.display()))?;
        if !unpacked {
            bail!("entry {}: path leaves the artifact directory", path.display());
        }
    }
    Ok(())
}

/// Fails with an error naming `what` unless `name` is one plain path
/// component: artifact names become directory names.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(c)), None) if c == name && !name.contains('\\') => Ok(()),
        _ => Err(anyhow!("{what} name {name:?} cannot be used as a directory name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("empty/nested")).unwrap();
        fs::write(root.join("a.txt"), "alpha\n").unwrap();
        fs::write(root.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("bin/data"), vec![7u8; 100_000]).unwrap();
        fs::set_permissions(root.join("bin/data"), fs::Permissions::from_mode(0o600)).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(root.join(&long)).unwrap();
        fs::write(root.join(&long).join("f"), "deep").unwrap();
        symlink("bin/tool", root.join("link")).unwrap();
        symlink("../a.txt", root.join("bin/up")).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn packing_is_deterministic() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        tree(&one);
        // The same tree, created in another order, with other times and
        // modes that differ only in bits the format drops.
        tree_in_reverse(&two);
        let past = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for file in ["a.txt", "bin/tool", "bin/data"] {
            fs::File::options().write(true).open(two.join(file)).unwrap().set_modified(past).unwrap();
        }
        let a = pack_dir(&one, &tmp.path().join("one.tar")).unwrap();
        let b = pack_dir(&two, &tmp.path().join("two.tar")).unwrap();
        assert_eq!(a, b);
        let again = pack_dir(&one, &tmp.path().join("again.tar")).unwrap();
        assert_eq!(a, again);
        assert_eq!(a.size, fs::metadata(tmp.path().join("one.tar")).unwrap().len());
        assert_eq!(a.digest, hex::encode(Sha256::digest(fs::read(tmp.path().join("one.tar")).unwrap())));

        // Content matters.
        fs::write(one.join("a.txt"), "beta\n").unwrap();
        let changed = pack_dir(&one, &tmp.path().join("changed.tar")).unwrap();
        assert_ne!(changed.digest, a.digest);
        // So does the exec bit.
        fs::write(one.join("a.txt"), "alpha\n").unwrap();
        fs::set_permissions(one.join("a.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        let exec = pack_dir(&one, &tmp.path().join("exec.tar")).unwrap();
        assert_ne!(exec.digest, a.digest);
    }

    fn tree_in_reverse(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        symlink("../a.txt", root.join("bin/up")).unwrap();
        symlink("bin/tool", root.join("link")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(root.join(&long)).unwrap();
        fs::write(root.join(&long).join("f"), "deep").unwrap();
        fs::write(root.join("bin/data"), vec![7u8; 100_000]).unwrap();
        fs::write(root.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::create_dir_all(root.join("empty/nested")).unwrap();
        fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("a.txt"), "alpha\n").unwrap();
        fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o664)).unwrap();
    }

    #[test]
    fn unpack_round_trips_files_exec_bits_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        tree(&src);
        let packed = pack_dir(&src, &tmp.path().join("a.tar")).unwrap();
        let out = tmp.path().join("out");
        unpack(&tmp.path().join("a.tar"), &out).unwrap();

        assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "alpha\n");
        assert_eq!(fs::read(out.join("bin/data")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::read_to_string(out.join("d".repeat(120)).join("f")).unwrap(), "deep");
        assert!(out.join("empty/nested").is_dir());
        assert_eq!(mode(&out.join("bin/tool")) & 0o111, 0o111, "executable stays executable");
        assert_eq!(mode(&out.join("bin/data")) & 0o111, 0, "data stays not executable");
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("bin/tool"));
        assert_eq!(fs::read_link(out.join("bin/up")).unwrap(), Path::new("../a.txt"));
        assert_eq!(fs::read_to_string(out.join("bin/up")).unwrap(), "alpha\n");

        // Packing what was unpacked gives the same archive.
        let repacked = pack_dir(&out, &tmp.path().join("b.tar")).unwrap();
        assert_eq!(repacked, packed);
    }

    fn raw_archive(path: &Path, entry_path: &[u8]) {
        // The tar crate's builder refuses `..`, so write the name directly.
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..entry_path.len()].copy_from_slice(entry_path);
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
        builder.append(&header, &b"evil"[..]).unwrap();
        builder.finish().unwrap();
    }

    #[test]
    fn entries_leaving_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("inputs/src");
        for name in [&b"../x"[..], b"a/../../x", b"/etc/x"] {
            let archive = tmp.path().join("evil.tar");
            raw_archive(&archive, name);
            let err = unpack(&archive, &dest).unwrap_err();
            assert!(format!("{err:#}").contains("leaves the artifact directory"), "{err:#}");
        }
        assert!(!tmp.path().join("inputs/x").exists());
        assert!(!tmp.path().join("x").exists());
    }

    #[test]
    fn writes_through_a_symlink_out_of_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let archive = tmp.path().join("evil.tar");
        {
            let mut builder = tar::Builder::new(fs::File::create(&archive).unwrap());
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            builder.append_link(&mut link, "escape", &outside).unwrap();
            let mut file = tar::Header::new_gnu();
            file.set_size(4);
            file.set_mode(0o644);
            builder.append_data(&mut file, "escape/pwned", &b"evil"[..]).unwrap();
            builder.finish().unwrap();
        }
        unpack(&archive, &tmp.path().join("dest")).unwrap_err();
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn names_and_digests_are_checked() {
        check_name("artifact", "src").unwrap();
        check_name("artifact", "build.out-1@x").unwrap();
        for bad in ["", ".", "..", "a/b", "/abs", "a\\b"] {
            check_name("artifact", bad).unwrap_err();
        }
        check_digest(&"ab".repeat(32)).unwrap();
        check_digest(&"AB".repeat(32)).unwrap_err();
        check_digest("../../etc/passwd").unwrap_err();
    }
}
