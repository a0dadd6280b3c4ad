//! `files.copy`: host-side copies that keep executable bits and symlinks,
//! which WASI cannot express, confined to the action's directories.
//!
//! Both ends are checked after symlinks are resolved, so a symlink planted
//! inside a mount cannot lead the copy outside it; inside a tree, symlinks
//! are copied as symlinks and never followed.

use crate::host::HostState;
use std::path::{Path, PathBuf};

pub(crate) fn copy(state: &HostState, from: &str, to: &str) -> Result<u64, String> {
    let src = state.host_path(from, false)?;
    let dst = state.host_path(to, true)?;
    let src_root = state.mount_root(from)?;
    let dst_root = state.mount_root(to)?;
    let real_src = src.canonicalize().map_err(|e| format!("cannot copy {from:?}: {e}"))?;
    if !real_src.starts_with(&src_root) {
        return Err(format!("cannot copy {from:?}: it leads outside the action's directories"));
    }
    let existing = nearest_existing(&dst).ok_or_else(|| format!("cannot copy to {to:?}: no such directory"))?;
    if !existing.starts_with(&dst_root) {
        return Err(format!("cannot copy to {to:?}: it leads outside the action's directories"));
    }
    copy_tree(&real_src, &dst).map_err(|e| format!("copying {from:?} to {to:?}: {e}"))
}

/// The nearest ancestor of `path` (itself included) that exists, resolved.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().find_map(|p| p.canonicalize().ok())
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(src)?;
    // Never write through a symlink at the destination: one planted there
    // (relative ones are allowed inside a mount) could lead anywhere.
    if std::fs::symlink_metadata(dst).is_ok_and(|m| m.file_type().is_symlink()) {
        if meta.is_dir() {
            return Err(std::io::Error::other(format!("destination {} is a symlink", dst.display())));
        }
        std::fs::remove_file(dst)?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut n = 0;
        for entry in entries {
            n += copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        return Ok(n);
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::symlink_metadata(dst).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(dst)?;
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else {
        // std::fs::copy keeps the permission bits.
        std::fs::copy(src, dst)?;
    }
    Ok(1)
}

/// The bytes of the regular files under `dir` (symlinks count as nothing
/// and are not followed); stops counting once past `stop_after`.
pub(crate) fn tree_size(dir: &Path, stop_after: u64) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
                if total > stop_after {
                    return Ok(total);
                }
            }
        }
    }
    Ok(total)
}
