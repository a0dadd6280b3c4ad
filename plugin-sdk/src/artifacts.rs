//! Moving files between artifact directories, the workspace and deploy targets.
//!
//! Patterns are globs over paths relative to the source directory, with `/`
//! separators: `*` and `?` stay within one path component, `**` crosses
//! them, `{a,b}` and `[abc]` work as in a shell. A pattern without wildcards
//! that names a directory takes every file below it (`dist` is `dist/**`);
//! `dist/*` takes only the files directly in `dist`.
//!
//! Symbolic links are followed: the files they point to are copied as plain
//! files, and a dangling link is an error naming it. WASI has no permission
//! bits, so copies are plain read-write files: a plugin that must keep the
//! executable bit copies with a host program instead.
//!
//! ```no_run
//! use sluice_plugin_sdk::{Context, Error, artifacts};
//!
//! fn package(ctx: &Context) -> Result<(), Error> {
//!     let (input, output) = (&ctx.inputs[0], &ctx.outputs[0]);
//!     let build = ctx.workspace.join("build");
//!     artifacts::copy_dir(&input.path, &build)?;
//!     // ... build in the workspace, then keep what the pipeline asked for:
//!     let n = artifacts::collect(&build, &output.files, &output.path)?;
//!     sluice_plugin_sdk::log::info(format!("{n} files in {}", output.name));
//!     Ok(())
//! }
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use crate::{Error, ResultExt};

/// Copies a file or directory tree through the host, keeping executable
/// bits and symlinks (a copy through WASI cannot: WASI has no permission
/// bits). `to` must lie in a writable directory of the action. Returns the
/// number of files copied.
pub fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<u64, Error> {
    let (from, to) = (from.as_ref(), to.as_ref());
    crate::host::copy(&from.to_string_lossy(), &to.to_string_lossy()).map_err(Error::new)
}

/// Copies every file and directory below `src` into `dst` (created if
/// needed) through WASI, keeping the layout; returns the number of files
/// copied. Executable bits are lost: use [`copy`] to keep them.
pub fn copy_dir(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<usize, Error> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    fs::create_dir_all(dst).with_context(|| format!("creating \"{}\"", dst.display()))?;
    let mut copied = 0;
    for entry in walk(src) {
        let (path, relative, is_dir) = entry?;
        let target = dst.join(&relative);
        if is_dir {
            fs::create_dir_all(&target)
                .with_context(|| format!("creating \"{}\"", target.display()))?;
        } else {
            copy_file(&path, &target)?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// The files below `src` matching any of `patterns` (all files when
/// `patterns` is empty), as `/`-separated paths relative to `src`, sorted.
///
/// A pattern that matches no file is an error
/// (`file pattern "dist/*.js" matched no file in "/ws"`), as is an
/// invalid pattern.
pub fn matching_files(src: impl AsRef<Path>, patterns: &[String]) -> Result<Vec<String>, Error> {
    let src = src.as_ref();
    let set = glob_set(patterns)?;
    let literal: Vec<bool> = patterns
        .iter()
        .map(|p| !p.contains(['*', '?', '[', '{']))
        .collect();
    let mut used = vec![false; patterns.len()];
    let mut files = Vec::new();
    for entry in walk(src) {
        let (_, relative, is_dir) = entry?;
        if is_dir {
            continue;
        }
        if patterns.is_empty() {
            files.push(relative);
            continue;
        }
        // The file itself, then each directory above it (`a/b/c`, `a/b`, `a`)
        // for the patterns that name a directory literally.
        let mut matched = false;
        let mut candidate = relative.as_str();
        let mut is_file = true;
        loop {
            for index in set.matches(candidate) {
                if is_file || literal[index] {
                    used[index] = true;
                    matched = true;
                }
            }
            is_file = false;
            match candidate.rfind('/') {
                Some(slash) => candidate = &candidate[..slash],
                None => break,
            }
        }
        if matched {
            files.push(relative);
        }
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(Error::new(format!(
            "file pattern \"{}\" matched no file in \"{}\"",
            patterns[unused],
            src.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// Copies the files below `src` matching any of `patterns` (all files when
/// empty) into `dst`, keeping their paths relative to `src`; returns how
/// many were copied. Fails as [`matching_files`] does.
pub fn collect(
    src: impl AsRef<Path>,
    patterns: &[String],
    dst: impl AsRef<Path>,
) -> Result<usize, Error> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let files = matching_files(src, patterns)?;
    fs::create_dir_all(dst).with_context(|| format!("creating \"{}\"", dst.display()))?;
    for relative in &files {
        let target = dst.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating \"{}\"", parent.display()))?;
        }
        copy_file(&src.join(relative), &target)?;
    }
    Ok(files.len())
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let normalized = pattern
            .trim()
            .trim_start_matches("./")
            .trim_end_matches('/');
        let glob = GlobBuilder::new(normalized)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::new(format!("invalid file pattern \"{pattern}\": {}", e.kind())))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::new(format!("invalid file patterns: {e}")))
}

/// Every entry below `root` (not `root` itself), links followed, in a stable
/// order: `(path, relative path with '/', is_dir)`.
fn walk(root: &Path) -> impl Iterator<Item = Result<(PathBuf, String, bool), Error>> + '_ {
    WalkDir::new(root)
        .min_depth(1)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .map(move |entry| {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(root).display().to_string();
                let dangling = e
                    .io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
                if dangling {
                    Error::new(format!("reading \"{path}\": dangling symbolic link"))
                } else {
                    Error::from(e).context(format!("reading \"{path}\""))
                }
            })?;
            let relative = entry
                .path()
                .strip_prefix(root)
                .expect("walkdir yields paths below its root");
            let relative = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            Ok((
                entry.path().to_path_buf(),
                relative,
                entry.file_type().is_dir(),
            ))
        })
}

fn copy_file(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying \"{}\" to \"{}\"", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, body) in [
            ("README.md", "readme"),
            ("src/main.rs", "fn main() {}"),
            ("src/lib/mod.rs", "mod x;"),
            ("dist/app.js", "js"),
            ("dist/css/site.css", "css"),
        ] {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        dir
    }

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_patterns_take_everything() {
        let src = tree();
        let files = matching_files(src.path(), &[]).unwrap();
        assert_eq!(
            files,
            [
                "README.md",
                "dist/app.js",
                "dist/css/site.css",
                "src/lib/mod.rs",
                "src/main.rs"
            ]
        );
    }

    #[test]
    fn globs_respect_separators_and_directories_take_their_files() {
        let src = tree();
        assert_eq!(
            matching_files(src.path(), &patterns(&["dist/*"])).unwrap(),
            ["dist/app.js"]
        );
        assert_eq!(
            matching_files(src.path(), &patterns(&["**/*.rs", "./README.md"])).unwrap(),
            ["README.md", "src/lib/mod.rs", "src/main.rs"]
        );
        assert_eq!(
            matching_files(src.path(), &patterns(&["dist/"])).unwrap(),
            ["dist/app.js", "dist/css/site.css"]
        );
        assert_eq!(
            matching_files(src.path(), &patterns(&["dist/c*/*"])).unwrap(),
            ["dist/css/site.css"]
        );
    }

    #[test]
    fn unmatched_and_invalid_patterns_fail() {
        let src = tree();
        let err = matching_files(src.path(), &patterns(&["dist/*", "build/**"])).unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "file pattern \"build/**\" matched no file in \"{}\"",
                src.path().display()
            )
        );
        let err = matching_files(src.path(), &patterns(&["src/[a"])).unwrap_err();
        assert!(
            err.message().starts_with("invalid file pattern \"src/[a\""),
            "{err}"
        );
    }

    #[test]
    fn collect_keeps_layout() {
        let src = tree();
        let dst = tempfile::tempdir().unwrap();
        let out = dst.path().join("out");
        assert_eq!(
            collect(src.path(), &patterns(&["src/**/*.rs"]), &out).unwrap(),
            2
        );
        assert_eq!(
            fs::read_to_string(out.join("src/lib/mod.rs")).unwrap(),
            "mod x;"
        );
        assert!(!out.join("README.md").exists());
    }

    #[cfg(unix)]
    #[test]
    fn copy_dir_follows_links_and_names_dangling_ones() {
        let src = tree();
        std::os::unix::fs::symlink("README.md", src.path().join("link.md")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        assert_eq!(copy_dir(src.path(), dst.path().join("copy")).unwrap(), 6);
        assert_eq!(
            fs::read_to_string(dst.path().join("copy/link.md")).unwrap(),
            "readme"
        );

        std::os::unix::fs::symlink("nowhere", src.path().join("broken")).unwrap();
        let err = copy_dir(src.path(), dst.path().join("again")).unwrap_err();
        assert!(
            err.message().contains("broken") && err.message().contains("dangling symbolic link"),
            "{err}"
        );
    }
}
