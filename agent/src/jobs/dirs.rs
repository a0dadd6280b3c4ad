//! Job directories, kept for the next job when a job leaves nothing behind.
//!
//! Creating a directory is the most expensive thing a noop job does on
//! ext4: allocating a directory inode searches the block groups, and it
//! showed as about half of the agent's CPU time in the throughput
//! benchmark. A job that leaves only its empty workspace gives its
//! directory back here; the next job takes it as it is instead of
//! creating one. A directory that holds anything else, or whose
//! permissions or owner changed, is removed as before, so a job never sees
//! what an earlier one left.
//!
//! Knows nothing of specs, plugins or the controller.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::warn;

/// The directory plugins see as `/workspace`, inside a job directory.
pub const WORKSPACE: &str = "workspace";

pub struct JobDirs {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Empty job directories, at most `keep` of them.
    spare: Mutex<Vec<PathBuf>>,
    keep: usize,
    /// Mode and owner of a directory the agent made: a kept directory
    /// must still have them.
    mode: u32,
    uid: u32,
}

impl JobDirs {
    /// `root` exists and was made by this agent; its mode and owner are
    /// what every job directory starts with. Keeps at most `keep` spares.
    pub fn new(root: &Path, keep: usize) -> std::io::Result<Self> {
        let meta = std::fs::metadata(root)?;
        Ok(Self {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                spare: Mutex::new(Vec::new()),
                keep,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
            }),
        })
    }

    /// A directory for a job: a spare one as it is, or `name` under the
    /// root, which does not exist yet (the job creates what it needs).
    ///
    /// A spare keeps the name it was made with: renaming it to the job
    /// was one metadata call in the agent's directory on the way to every
    /// action (issue 19), and nothing reads a job directory's name. Names
    /// are the agent's own counter, so they never say which job is inside.
    pub fn take(&self, name: &str) -> PathBuf {
        if let Some(spare) = self.inner.spare.lock().expect("job dirs lock").pop() {
            return spare;
        }
        self.inner.root.join(name)
    }

    /// Keeps the directory for another job when it holds only an empty,
    /// unchanged workspace; removes it otherwise.
    pub async fn give_back(&self, dir: PathBuf) {
        let inner = self.inner.clone();
        let check = dir.clone();
        let kept = tokio::task::spawn_blocking(move || {
            if !inner.reusable(&check) {
                return false;
            }
            let mut spare = inner.spare.lock().expect("job dirs lock");
            if spare.len() >= inner.keep {
                return false;
            }
            spare.push(check);
            true
        })
        .await
        .unwrap_or(false);
        if !kept {
            self.remove(dir).await;
        }
    }

    async fn remove(&self, dir: PathBuf) {
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %dir.display(), "removing the job directory: {e}");
        }
    }
}

impl Inner {
    fn unchanged(&self, meta: &Metadata) -> bool {
        meta.is_dir() && meta.mode() & 0o7777 == self.mode && meta.uid() == self.uid
    }

    /// Only an empty `workspace` inside, and both as the agent made them.
    fn reusable(&self, dir: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(dir) else { return false };
        if !self.unchanged(&meta) {
            return false;
        }
        let Ok(mut entries) = std::fs::read_dir(dir) else { return false };
        let only_workspace = match (entries.next(), entries.next()) {
            (Some(Ok(entry)), None) => entry.file_name() == WORKSPACE,
            _ => false,
        };
        if !only_workspace {
            return false;
        }
        let workspace = dir.join(WORKSPACE);
        let Ok(meta) = std::fs::symlink_metadata(&workspace) else { return false };
        self.unchanged(&meta) && std::fs::read_dir(&workspace).is_ok_and(|mut w| w.next().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn job_dir(dirs: &JobDirs, name: &str) -> PathBuf {
        let dir = dirs.take(name);
        std::fs::create_dir_all(dir.join(WORKSPACE)).unwrap();
        dir
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    fn setup(keep: usize) -> (tempfile::TempDir, JobDirs) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("jobs");
        std::fs::create_dir_all(&root).unwrap();
        let dirs = JobDirs::new(&root, keep).unwrap();
        (tmp, dirs)
    }

    #[test]
    fn an_empty_job_directory_is_reused_as_it_is() {
        let (_tmp, dirs) = setup(2);
        let first = job_dir(&dirs, "1");
        let ino = std::fs::metadata(&first).unwrap().ino();
        block_on(dirs.give_back(first.clone()));
        assert!(first.exists(), "kept as a spare");
        let second = dirs.take("2");
        assert_eq!(second, first, "the spare, not a new name");
        assert_eq!(std::fs::metadata(&second).unwrap().ino(), ino, "the same directory");
        assert!(second.join(WORKSPACE).is_dir());
        let third = dirs.take("3");
        assert_eq!(third, dirs.inner.root.join("3"), "no spare left: a fresh path");
        assert!(!third.exists());
    }

    #[test]
    fn a_directory_with_anything_left_in_it_is_removed() {
        let (_tmp, dirs) = setup(4);
        let left_file = job_dir(&dirs, "1-a");
        std::fs::write(left_file.join(WORKSPACE).join("secret"), "x").unwrap();
        let left_dir = job_dir(&dirs, "2-b");
        std::fs::create_dir(left_dir.join("downloads")).unwrap();
        let chmodded = job_dir(&dirs, "3-c");
        let other_mode = dirs.inner.mode ^ 0o020;
        std::fs::set_permissions(chmodded.join(WORKSPACE), std::fs::Permissions::from_mode(other_mode)).unwrap();
        let replaced = job_dir(&dirs, "4-d");
        std::fs::remove_dir(replaced.join(WORKSPACE)).unwrap();
        std::os::unix::fs::symlink("/", replaced.join(WORKSPACE)).unwrap();
        for dir in [&left_file, &left_dir, &chmodded, &replaced] {
            block_on(dirs.give_back(dir.clone()));
            assert!(!dir.exists(), "{} was kept", dir.display());
        }
        let fresh = dirs.take("5-e");
        assert!(!fresh.exists(), "no spare was kept, so the job gets a new path");
    }

    #[test]
    fn at_most_keep_spares() {
        let (_tmp, dirs) = setup(1);
        let a = job_dir(&dirs, "1-a");
        let b = job_dir(&dirs, "2-b");
        block_on(dirs.give_back(a.clone()));
        block_on(dirs.give_back(b.clone()));
        assert!(a.exists());
        assert!(!b.exists());
    }
}
