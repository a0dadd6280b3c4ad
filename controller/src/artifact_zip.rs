//! Artifacts between Sluice and job workers: Sluice stores an artifact as a
//! deterministic tar archive (as agents pack it: entries sorted by path,
//! mtime 0, owner 0, modes 0755/0644, symlinks kept), CodePipeline's workers
//! exchange zip files. A plugin's output is served to a worker as a zip; a
//! worker's zip is converted into Sluice's archive so that the next action
//! consumes it like any other.
//!
//! A worker's zip is input from outside and is checked before anything is
//! stored: a malformed archive, an encrypted entry, a path that is absolute
//! or leaves the artifact (`..`, backslashes, NUL), a symlink, a duplicate
//! path, too many entries or too many bytes once inflated (a zip bomb:
//! counted while inflating, never trusting the sizes the archive claims)
//! is refused with an error naming the entry. Pure: bytes in, bytes out,
//! blocking (callers run it off the async runtime).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

/// Entries a worker's zip may hold.
pub const MAX_ENTRIES: usize = 20_000;

/// Bytes a worker's zip may inflate to, and the size of a zip this
/// controller builds for a worker: conversions happen in memory. Every
/// node of the tar (entries and the parents they imply) also costs its
/// header and path, so that a small zip of long, deep names cannot make a
/// huge tar.
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;

/// Longest path of an entry, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Most segments (directories deep) of an entry's path.
pub const MAX_PATH_SEGMENTS: usize = 256;

/// What a node of the tar costs beyond its data: a header block.
const NODE_OVERHEAD: u64 = 512;

/// Why a zip could not become an artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipRefused {
    #[error("not a zip archive: {0}")]
    Malformed(String),
    #[error("entry {entry:?}: {why}")]
    Entry { entry: String, why: String },
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("inflates to more than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Why a stored archive cannot be served as a zip: it will not change on
/// a retry (the same archive, the same limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unservable {
    #[error("the artifact is larger than {0} bytes: too large to serve as a zip")]
    TooLarge(u64),
    #[error("entry {entry:?} of the stored archive: {why}")]
    Entry { entry: String, why: String },
}

/// What a zip entry becomes in the tar.
enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
}

/// Converts a worker's zip into Sluice's deterministic tar archive.
pub fn zip_to_tar(zip: &[u8], max_unpacked: u64) -> Result<Vec<u8>, ZipRefused> {
    zip_to_tar_from(Cursor::new(zip), max_unpacked)
}

/// [`zip_to_tar`] of a zip read from a file (a completed multipart upload
/// is spooled on disk, not held in memory).
pub fn zip_to_tar_from<R: std::io::Read + std::io::Seek>(zip: R, max_unpacked: u64) -> Result<Vec<u8>, ZipRefused> {
    let mut archive = zip::ZipArchive::new(zip).map_err(|e| ZipRefused::Malformed(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(ZipRefused::TooManyEntries);
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| ZipRefused::Malformed(e.to_string()))?;
        let raw = file.name().map_err(|e| ZipRefused::Malformed(e.to_string()))?.into_owned();
        let refuse = |why: &str| ZipRefused::Entry { entry: raw.clone(), why: why.to_string() };
        if file.encrypted() {
            return Err(refuse("encrypted entries are not supported"));
        }
        if file.is_symlink() {
            return Err(refuse("symlinks are not accepted in an artifact from a job worker"));
        }
        let path = clean_path(&raw).map_err(|why| refuse(&why))?;
        // A name is paid for before its data: a zip of long names and no
        // data must not build a huge tar either.
        total += NODE_OVERHEAD + path.len() as u64;
        if total > max_unpacked {
            return Err(ZipRefused::TooLarge { limit: max_unpacked });
        }
        let node = if file.is_dir() {
            Node::Dir
        } else {
            let budget = max_unpacked.saturating_sub(total);
            let mut data = Vec::new();
            // One byte past the budget tells a bomb from a file that fits.
            (&mut file)
                .take(budget + 1)
                .read_to_end(&mut data)
                .map_err(|e| ZipRefused::Entry { entry: raw.clone(), why: format!("cannot inflate: {e}") })?;
            total += data.len() as u64;
            if total > max_unpacked {
                return Err(ZipRefused::TooLarge { limit: max_unpacked });
            }
            let executable = file.unix_mode().is_some_and(|m| m & 0o111 != 0);
            Node::File { data, executable }
        };
        // Every parent is a directory of the archive, as agents pack it.
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            match nodes.get(up) {
                Some(Node::File { .. }) => return Err(refuse("a file of the archive is used as a directory")),
                Some(Node::Dir) => {}
                None => {
                    // An implied parent is a node like any other.
                    total += NODE_OVERHEAD + up.len() as u64;
                    if total > max_unpacked {
                        return Err(ZipRefused::TooLarge { limit: max_unpacked });
                    }
                    nodes.insert(up.to_string(), Node::Dir);
                    if nodes.len() > MAX_ENTRIES {
                        return Err(ZipRefused::TooManyEntries);
                    }
                }
            }
            parent = up;
        }
        match (nodes.get(&path), &node) {
            (Some(Node::Dir), Node::Dir) => {}
            (Some(_), _) => return Err(refuse("the path appears twice")),
            (None, _) => {
                nodes.insert(path, node);
                if nodes.len() > MAX_ENTRIES {
                    return Err(ZipRefused::TooManyEntries);
                }
            }
        }
    }
    pack(nodes).map_err(|e| ZipRefused::Malformed(format!("packing: {e}")))
}

/// Rejects what must not reach a directory tree; `dir/` loses its slash.
fn clean_path(raw: &str) -> Result<String, String> {
    if raw.contains('\0') || raw.contains('\\') {
        return Err("NUL and backslash are not allowed in paths".into());
    }
    if raw.starts_with('/') || raw.get(1..2) == Some(":") {
        return Err("absolute paths are not allowed".into());
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(format!("the path is longer than {MAX_PATH_BYTES} bytes"));
    }
    let trimmed = raw.trim_end_matches('/');
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the path leaves the artifact (..)".into()),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err("the path is empty".into());
    }
    if parts.len() > MAX_PATH_SEGMENTS {
        return Err(format!("the path is more than {MAX_PATH_SEGMENTS} directories deep"));
    }
    Ok(parts.join("/"))
}

/// A stored archive's symlink target must stay inside the artifact: not
/// absolute, and no `..` climbing above the artifact's root from the
/// link's directory (a worker unpacking the zip would follow it out).
fn check_link_target(path: &str, target: &str) -> Result<(), String> {
    if target.starts_with('/') || target.contains('\\') || target.contains('\0') || target.get(1..2) == Some(":") {
        return Err(format!("symlink target {target:?} is absolute or not portable"));
    }
    let mut depth = path.trim_end_matches('/').split('/').filter(|p| !p.is_empty() && *p != ".").count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(format!("symlink target {target:?} leaves the artifact"));
        }
    }
    Ok(())
}

/// Writes the nodes, sorted by path bytes, as agents pack a directory.
fn pack(nodes: BTreeMap<String, Node>) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, node) in nodes {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match node {
            Node::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &path, std::io::empty())?;
            }
            Node::File { data, executable } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if executable { 0o755 } else { 0o644 });
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, &path, data.as_slice())?;
            }
        }
    }
    builder.into_inner()
}

/// Serves a stored artifact to a worker as a zip: files deflated with their
/// executable bit, directories, symlinks as zip symlinks. Errors when the
/// archive is not one Sluice wrote or is larger than `max_bytes`.
pub fn tar_to_zip(tar_bytes: &[u8], max_bytes: u64) -> anyhow::Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    tar_to_zip_into(tar_bytes, tar_bytes.len() as u64, &mut out, max_bytes)?;
    Ok(out.into_inner())
}

/// [`tar_to_zip`] from a reader of `tar_len` bytes into a file (or any
/// seekable writer): the same bytes, without holding them in memory.
pub fn tar_to_zip_into<W: std::io::Write + std::io::Seek>(
    tar: impl Read,
    tar_len: u64,
    out: W,
    max_bytes: u64,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use zip::write::SimpleFileOptions;
    let mut archive = tar::Archive::new(tar);
    let mut zip = zip::ZipWriter::new(out);
    let base = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::DEFAULT)
        .large_file(tar_len >= u32::MAX as u64);
    let mut total = 0u64;
    for entry in archive.entries().context("reading the stored archive")? {
        let mut entry = entry.context("reading the stored archive")?;
        let path = entry.path().context("reading an entry's path")?.to_string_lossy().into_owned();
        // Sluice wrote this archive, but a worker unpacks what it is served:
        // the same path rules as an upload (defence in depth).
        let unservable = |entry: &str, why: String| Unservable::Entry { entry: entry.to_string(), why };
        clean_path(&path).map_err(|why| unservable(&path, why))?;
        let mode = entry.header().mode().unwrap_or(0o644);
        match entry.header().entry_type() {
            tar::EntryType::Directory => zip.add_directory(path, base.unix_permissions(0o755))?,
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
                check_link_target(&path, &target).map_err(|why| unservable(&path, why))?;
                zip.add_symlink(path, target, base)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                total += entry.size();
                if total > max_bytes {
                    return Err(Unservable::TooLarge(max_bytes).into());
                }
                zip.start_file(path, base.unix_permissions(if mode & 0o111 != 0 { 0o755 } else { 0o644 }))?;
                std::io::copy(&mut entry, &mut zip)?;
            }
            tar::EntryType::XGlobalHeader => {}
            other => return Err(unservable(&path, format!("unsupported entry type {other:?}")).into()),
        }
    }
    zip.finish()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let options = SimpleFileOptions::default().unix_permissions(*mode);
            if name.ends_with('/') {
                zip.add_directory(*name, options).unwrap();
            } else {
                zip.start_file(*name, options).unwrap();
                zip.write_all(data).unwrap();
            }
        }
        zip.finish().unwrap().into_inner()
    }

    fn tar_entries(tar: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mode = e.header().mode().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, mode, data)
            })
            .collect()
    }

    #[test]
    fn a_workers_zip_becomes_a_deterministic_tar_and_back() {
        let zip = zip_of(&[("b/run.sh", b"#!/bin/sh\n", 0o700), ("a.txt", b"alpha", 0o600), ("b/c/", b"", 0o755)]);
        let tar = zip_to_tar(&zip, MAX_UNPACKED_BYTES).unwrap();
        let entries = tar_entries(&tar);
        let summary: Vec<(&str, u32)> = entries.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        assert_eq!(summary, [("a.txt", 0o644), ("b", 0o755), ("b/c", 0o755), ("b/run.sh", 0o755)]);
        assert_eq!(entries[0].2, b"alpha");
        // The same zip gives the same bytes (the same digest) every time.
        assert_eq!(zip_to_tar(&zip, MAX_UNPACKED_BYTES).unwrap(), tar);
        // Back to a zip, the files and their executable bit survive.
        let again = tar_to_zip(&tar, MAX_UNPACKED_BYTES).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(again)).unwrap();
        let mut script = archive.by_name("b/run.sh").unwrap();
        assert_eq!(script.unix_mode().unwrap() & 0o777, 0o755);
        let mut text = String::new();
        script.read_to_string(&mut text).unwrap();
        assert_eq!(text, "#!/bin/sh\n");
    }

    #[test]
    fn hostile_zips_are_refused_with_the_entry_named() {
        for (name, why) in [
            ("../evil", "leaves the artifact"),
            ("a/../../evil", "leaves the artifact"),
            ("/etc/passwd", "absolute"),
            ("C:/windows", "absolute"),
            ("a\\..\\evil", "backslash"),
        ] {
            let err = zip_to_tar(&zip_of(&[(name, b"x", 0o644)]), MAX_UNPACKED_BYTES).unwrap_err();
            assert!(matches!(&err, ZipRefused::Entry { entry, .. } if entry == name), "{name}: {err}");
            assert!(err.to_string().contains(why), "{name}: {err}");
        }
        let err = zip_to_tar(b"PK\x03\x04 this is not a zip", MAX_UNPACKED_BYTES).unwrap_err();
        assert!(matches!(err, ZipRefused::Malformed(_)), "{err}");
        let err = zip_to_tar(&zip_of(&[("a", b"1", 0o644), ("a/b", b"2", 0o644)]), MAX_UNPACKED_BYTES).unwrap_err();
        assert!(err.to_string().contains("used as a directory"), "{err}");
        let err = zip_to_tar(&zip_of(&[("a", b"1", 0o644), ("./a", b"2", 0o644)]), MAX_UNPACKED_BYTES).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn symlinks_and_bombs_are_refused() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.add_symlink("link", "/etc/passwd", SimpleFileOptions::default()).unwrap();
        let err = zip_to_tar(&zip.finish().unwrap().into_inner(), MAX_UNPACKED_BYTES).unwrap_err();
        assert!(err.to_string().contains("symlinks"), "{err}");
        // 8 MiB of zeros deflates to a few KiB: past a 1 MiB limit it is
        // refused while inflating, whatever sizes the archive claims.
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("zeros", options).unwrap();
        zip.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = zip.finish().unwrap().into_inner();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(zip_to_tar(&bomb, 1 << 20).unwrap_err(), ZipRefused::TooLarge { limit: 1 << 20 });
    }

    #[test]
    fn long_and_deep_paths_are_refused_with_the_entry_named() {
        for (name, why) in [
            (format!("d0/{}f", "a/".repeat(2100)), "longer than 4096 bytes"),
            (format!("{}f", "a/".repeat(256)), "more than 256 directories deep"),
        ] {
            let err = zip_to_tar(&zip_of(&[(&name, b"x", 0o644)]), MAX_UNPACKED_BYTES).unwrap_err();
            assert!(matches!(&err, ZipRefused::Entry { entry, .. } if *entry == name), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
        // At the limits, a path is still accepted.
        let name = format!("{}f", "a/".repeat(255));
        assert!(zip_to_tar(&zip_of(&[(&name, b"x", 0o644)]), MAX_UNPACKED_BYTES).is_ok());
    }

    #[test]
    fn implied_parents_count_against_the_entry_and_byte_limits() {
        // 100 entries, each implying 250 directories of its own: 25,100
        // nodes of the tar from a zip of 100 entries.
        let names: Vec<String> = (0..100).map(|i| format!("d{i}/{}f", "a/".repeat(249))).collect();
        let entries: Vec<(&str, &[u8], u32)> = names.iter().map(|n| (n.as_str(), &b""[..], 0o644)).collect();
        assert_eq!(zip_to_tar(&zip_of(&entries), MAX_UNPACKED_BYTES).unwrap_err(), ZipRefused::TooManyEntries);
        // Empty directories with long names inflate to nothing but are not
        // free: their headers and paths count against the byte limit.
        let names: Vec<String> = (0..64).map(|i| format!("{i}{}/", "b".repeat(1000))).collect();
        let entries: Vec<(&str, &[u8], u32)> = names.iter().map(|n| (n.as_str(), &b""[..], 0o755)).collect();
        let zip = zip_of(&entries);
        assert_eq!(zip_to_tar(&zip, 32 << 10).unwrap_err(), ZipRefused::TooLarge { limit: 32 << 10 });
        assert!(zip_to_tar(&zip, 1 << 20).is_ok());
    }

    fn tar_with_symlink(path: &str, target: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, path, target).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn stored_archives_with_escaping_symlinks_or_long_paths_are_not_served() {
        for (path, target) in [("link", "/etc/passwd"), ("a/link", "../../etc/passwd"), ("link", "x/../../y")] {
            let err = tar_to_zip(&tar_with_symlink(path, target), MAX_UNPACKED_BYTES).unwrap_err();
            assert!(format!("{err:#}").contains("symlink target"), "{path} -> {target}: {err:#}");
        }
        for (path, target) in [("a/link", "../b"), ("link", "b/c"), ("a/b/link", "../../c")] {
            assert!(tar_to_zip(&tar_with_symlink(path, target), MAX_UNPACKED_BYTES).is_ok(), "{path} -> {target}");
        }
        let long = format!("{}f", "a/".repeat(2100));
        let err = tar_to_zip(&tar_with_symlink(&long, "b"), MAX_UNPACKED_BYTES).unwrap_err();
        assert!(format!("{err:#}").contains("longer than 4096 bytes"), "{err:#}");
    }
}
