//! A backup's target directory (issue 17, life), checked before and
//! written only through opened directory handles.
//!
//! The target must not exist (it is then written as `NAME.partial`, made
//! 0700, and renamed to `NAME` once complete), or be an empty directory
//! owned by the controller's user that no one else may write. Its parent
//! must not be writable by others unless it is sticky (`/tmp`): there,
//! another local user could put a directory or a link of their own in its
//! place. Inside, every directory is made with `mkdirat` (0700) and opened
//! with `O_NOFOLLOW`, every file with `O_CREAT | O_EXCL | O_NOFOLLOW`
//! (0600), relative to the handle of its directory: a link put anywhere in
//! the tree is never written through.

use anyhow::{Context as _, Result, bail};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, mkdirat};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// Group or others may write.
const SHARED_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// The suffix of a target being written.
const PARTIAL: &str = ".partial";

/// The checks of `--to` that need no filesystem: the driver's.
pub fn check_path(to: &str) -> Result<PathBuf, String> {
    let target = PathBuf::from(to);
    if to.is_empty() || !target.is_absolute() {
        return Err(format!("--to {to:?} must be an absolute path on the controller's host"));
    }
    if target.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("--to {to:?} must not contain `..`"));
    }
    if target.file_name().is_none() {
        return Err(format!("--to {to:?} has no parent directory"));
    }
    Ok(target)
}

/// Checks a backup's target on the host (blocking: off the driver's task):
/// outside the data dir and not holding it; its parent exists and others
/// may not write it unless it is sticky; the target does not exist, or is
/// an empty directory of the controller's user that no one else may write.
/// Returns it with its parent resolved.
pub fn check(data_dir: &Path, to: &str) -> Result<PathBuf, String> {
    let target = check_path(to)?;
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let parent = target.parent().ok_or_else(|| format!("--to {to:?} has no parent directory"))?;
    let parent = std::fs::canonicalize(parent)
        .map_err(|e| format!("--to {to:?}: its parent directory is not usable on the controller's host: {e}"))?;
    let name = target.file_name().unwrap_or_default();
    let resolved = parent.join(name);
    if resolved.starts_with(&data) || data.starts_with(&resolved) {
        return Err(format!("--to {to:?} must be outside the controller's data dir {}", data.display()));
    }
    let stat = nix::sys::stat::stat(&parent).map_err(|e| format!("--to {to:?}: {e}"))?;
    shared_parent(&stat).map_err(|why| format!("--to {to:?}: its parent {} {why}", parent.display()))?;
    let partial = partial_name(name);
    if std::fs::symlink_metadata(parent.join(&partial)).is_ok() {
        return Err(format!(
            "--to {to:?}: {} is in the way (a backup that was cut off): remove it",
            parent.join(&partial).display()
        ));
    }
    match std::fs::symlink_metadata(&resolved) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(resolved),
        Err(e) => Err(format!("--to {to:?}: {e}")),
        Ok(meta) if meta.is_dir() => {
            use std::os::unix::fs::MetadataExt as _;
            existing_dir(meta.uid(), meta.mode()).map_err(|why| format!("--to {to:?} {why}"))?;
            match std::fs::read_dir(&resolved).map_err(|e| e.to_string())?.next() {
                None => Ok(resolved),
                Some(_) => {
                    Err(format!("--to {to:?} exists and is not an empty directory: a backup never overwrites anything"))
                }
            }
        }
        Ok(_) => Err(format!("--to {to:?} exists and is not an empty directory: a backup never overwrites anything")),
    }
}

/// Why a parent directory is unsafe to make a backup in, if it is.
fn shared_parent(stat: &FileStat) -> Result<(), String> {
    let mode = stat.st_mode;
    if mode & SHARED_WRITE != 0 && mode & STICKY == 0 {
        return Err(format!(
            "may be written by other users (mode {:o}) and is not sticky: one of them could put a directory or a link \
             of their own in the backup's place; choose a directory only the controller's user may write",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Why an existing directory may not take a backup, if so.
fn existing_dir(uid: u32, mode: u32) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if uid != me {
        return Err(format!("is owned by user {uid}, not the controller's ({me}): give a path that does not exist yet"));
    }
    if mode & SHARED_WRITE != 0 {
        return Err(format!("may be written by other users (mode {:o}): give a path that does not exist yet", mode & 0o777));
    }
    Ok(())
}

fn partial_name(name: &std::ffi::OsStr) -> OsString {
    let mut partial = name.to_os_string();
    partial.push(PARTIAL);
    partial
}

/// An opened target being written.
pub struct Target {
    /// The final path (for messages and the manifest).
    pub path: PathBuf,
    parent: OwnedFd,
    /// Its name in the parent now: `NAME.partial` until [`Target::finish`]
    /// when it was made new, else `NAME`.
    writing: OsString,
    name: OsString,
    /// Made by this backup (renamed at the end, removed on failure), not
    /// an empty directory that was given.
    made: bool,
    root: OwnedFd,
    /// Directories opened under the root, by relative path.
    dirs: HashMap<PathBuf, OwnedFd>,
}

fn open_dir(at: impl AsFd, name: &(impl nix::NixPath + ?Sized)) -> nix::Result<OwnedFd> {
    openat(at, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

impl Target {
    /// Opens (or makes) the target [`check`] returned, checking it again
    /// through its handle: it may have changed since.
    pub fn open(to: &Path) -> Result<Target> {
        let parent_path = to.parent().context("a target has a parent")?;
        let name = to.file_name().context("a target has a name")?.to_os_string();
        let parent =
            open_dir(nix::fcntl::AT_FDCWD, parent_path).with_context(|| format!("opening {}", parent_path.display()))?;
        shared_parent(&fstat(&parent)?).map_err(|why| anyhow::anyhow!("{} {why}", parent_path.display()))?;
        let (writing, made, root) = match open_dir(&parent, name.as_os_str()) {
            Err(nix::errno::Errno::ENOENT) => {
                let writing = partial_name(&name);
                mkdirat(&parent, writing.as_os_str(), Mode::from_bits_truncate(0o700))
                    .with_context(|| format!("making {}", parent_path.join(&writing).display()))?;
                let root = open_dir(&parent, writing.as_os_str())?;
                (writing, true, root)
            }
            Err(e @ (nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR)) => {
                bail!("{} is no longer an empty directory ({e}): a backup never overwrites anything", to.display())
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", to.display())),
            Ok(root) => {
                let stat = fstat(&root)?;
                existing_dir(stat.st_uid, stat.st_mode).map_err(|why| anyhow::anyhow!("{} {why}", to.display()))?;
                if std::fs::read_dir(proc_path(&root, Path::new("")))?.next().is_some() {
                    bail!("{} is no longer an empty directory: a backup never overwrites anything", to.display());
                }
                nix::sys::stat::fchmod(&root, Mode::from_bits_truncate(0o700))?;
                (name.clone(), false, root)
            }
        };
        Ok(Target { path: to.to_path_buf(), parent, writing, name, made, root, dirs: HashMap::new() })
    }

    /// The directory `rel` under the root, made (0700) where missing; a
    /// link in its way is refused.
    fn dir(&mut self, rel: &Path) -> Result<OwnedFd> {
        let mut current = self.root.try_clone()?;
        let mut prefix = PathBuf::new();
        for part in rel.components() {
            let Component::Normal(part) = part else { bail!("{} is not a plain relative path", rel.display()) };
            prefix.push(part);
            if let Some(open) = self.dirs.get(&prefix) {
                current = open.try_clone()?;
                continue;
            }
            match mkdirat(&current, part, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("making {}", self.path.join(&prefix).display())),
            }
            let opened =
                open_dir(&current, part).with_context(|| format!("opening {}", self.path.join(&prefix).display()))?;
            self.dirs.insert(prefix.clone(), opened.try_clone()?);
            current = opened;
        }
        Ok(current)
    }

    /// Creates the new file `rel` (0600); it must not exist.
    pub fn create(&mut self, rel: &Path) -> Result<std::fs::File> {
        let dir = self.dir(rel.parent().unwrap_or(Path::new("")))?;
        let name = rel.file_name().context("a file has a name")?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&dir, name, flags, Mode::from_bits_truncate(0o600))
            .with_context(|| format!("creating {}", self.path.join(rel).display()))?;
        Ok(std::fs::File::from(fd))
    }

    /// A path that reaches `rel` under the root through its handle, for
    /// the one writer that takes a path (SQLite's `VACUUM INTO`).
    pub fn reach(&self, rel: &Path) -> PathBuf {
        proc_path(&self.root, rel)
    }

    /// Makes a file a path writer made private and durable, and gives it
    /// its name: `from` and `to` are names in the root.
    pub fn seal(&self, from: &str, to: &str) -> Result<()> {
        let file = openat(&self.root, from, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("opening {}", self.path.join(from).display()))?;
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(0o600))?;
        std::fs::File::from(file).sync_all()?;
        nix::fcntl::renameat(&self.root, from, &self.root, to)?;
        Ok(())
    }

    /// Free bytes on the target's filesystem.
    pub fn free_bytes(&self) -> Result<u64> {
        let stat = nix::sys::statvfs::fstatvfs(&self.root)?;
        #[allow(clippy::useless_conversion)]
        Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
    }

    /// The target's filesystem.
    pub fn device(&self) -> Result<u64> {
        #[allow(clippy::useless_conversion)]
        Ok(u64::from(fstat(&self.root)?.st_dev))
    }

    /// Makes every directory durable, then (when made new) renames
    /// `NAME.partial` to `NAME`, refusing to replace anything there now.
    pub fn finish(self) -> Result<()> {
        for dir in self.dirs.values() {
            nix::unistd::fsync(dir)?;
        }
        nix::unistd::fsync(&self.root)?;
        if self.made {
            let flags = nix::fcntl::RenameFlags::RENAME_NOREPLACE;
            match nix::fcntl::renameat2(&self.parent, self.writing.as_os_str(), &self.parent, self.name.as_os_str(), flags) {
                Ok(()) => {}
                // A filesystem without RENAME_NOREPLACE: the name was free when checked.
                Err(nix::errno::Errno::EINVAL) => {
                    nix::fcntl::renameat(&self.parent, self.writing.as_os_str(), &self.parent, self.name.as_os_str())?
                }
                Err(e) => return Err(e).with_context(|| format!("renaming the finished backup to {}", self.path.display())),
            }
            nix::unistd::fsync(&self.parent)?;
        }
        Ok(())
    }

    /// Removes what was written: the whole directory when made new, its
    /// contents when it was given empty.
    pub fn abandon(self) {
        let result = if self.made {
            std::fs::remove_dir_all(proc_path(&self.parent, Path::new(&self.writing)))
        } else {
            std::fs::read_dir(proc_path(&self.root, Path::new(""))).and_then(|entries| {
                for entry in entries {
                    let entry = entry?;
                    match entry.file_type()?.is_dir() {
                        true => std::fs::remove_dir_all(entry.path())?,
                        false => std::fs::remove_file(entry.path())?,
                    }
                }
                Ok(())
            })
        };
        if let Err(e) = result {
            tracing::warn!(to = %self.path.display(), "removing a failed backup: {e}");
        }
    }
}

/// `/proc/self/fd/N/REL`: `rel` under the directory `fd` holds, whatever
/// has been renamed or linked along its path since it was opened.
fn proc_path(fd: &OwnedFd, rel: &Path) -> PathBuf {
    let base = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if rel.as_os_str().as_bytes().is_empty() { base } else { base.join(rel) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_target_whose_parent_or_self_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let at = |p: &str| dir.path().join(p).display().to_string();
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        mode(&dir.path().join("shared"), 0o777);
        let err = check(&data, &at("shared/backup")).unwrap_err();
        assert!(err.contains("may be written by other users") && err.contains("not sticky"), "{err}");
        // A sticky shared directory (as /tmp) is fine for a new target.
        mode(&dir.path().join("shared"), 0o1777);
        assert!(check(&data, &at("shared/backup")).is_ok());
        // An existing empty directory others may write, or someone else's.
        std::fs::create_dir(dir.path().join("open")).unwrap();
        mode(&dir.path().join("open"), 0o777);
        let err = check(&data, &at("open")).unwrap_err();
        assert!(err.contains("may be written by other users"), "{err}");
        if nix::unistd::geteuid().is_root() {
            std::fs::create_dir(dir.path().join("theirs")).unwrap();
            nix::unistd::chown(&dir.path().join("theirs"), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let err = check(&data, &at("theirs")).unwrap_err();
            assert!(err.contains("is owned by user 65534"), "{err}");
        }
        // A link to an empty directory is no directory of the controller's.
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("empty"), dir.path().join("link")).unwrap();
        assert!(check(&data, &at("link")).unwrap_err().contains("not an empty directory"));
        // A partial backup left by a cut-off one is in the way.
        std::fs::create_dir(dir.path().join("cut.partial")).unwrap();
        assert!(check(&data, &at("cut")).unwrap_err().contains("cut.partial is in the way"));
    }

    #[test]
    fn links_put_inside_the_target_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let mut target = Target::open(&dir.path().join("backup")).unwrap();
        let root = dir.path().join("backup.partial");
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        std::os::unix::fs::symlink(&elsewhere, root.join("ca")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("key"), root.join("secret.key")).unwrap();
        assert!(target.create(Path::new("ca/ca.key")).is_err());
        assert!(target.create(Path::new("secret.key")).is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written through a link");
        // Files are 0600 and directories 0700, whatever the umask.
        use std::io::Write as _;
        target.create(Path::new("artifacts/ab/blob")).unwrap().write_all(b"x").unwrap();
        assert_eq!(std::fs::metadata(root.join("artifacts/ab/blob")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(root.join("artifacts/ab")).unwrap().permissions().mode() & 0o777, 0o700);
        // A directory renamed away and replaced by a link: the handle still
        // writes into the one that was opened.
        std::fs::rename(&root, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &root).unwrap();
        target.create(Path::new("after")).unwrap();
        assert!(dir.path().join("moved/after").exists());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
