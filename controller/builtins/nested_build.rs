//! The nested build of `plugins/` for wasm32-wasip2, shared by the build
//! scripts of `sluice-builtins` (the plugins embedded in `sluice`) and
//! `sluice-test-plugins` (the plugins only tests use), which include this
//! file with `#[path]`. A nested cargo builds the plugins workspace, as
//! wasmtime's `crates/test-programs/artifacts/build.rs` does, and the
//! components are copied into `OUT_DIR`.
//!
//! The nested build has its own target directory, `<target>/wasm-plugins`,
//! shared by every profile of the outer build and by both build scripts
//! (cargo's lock on it makes them take turns), and kept across rebuilds so
//! that it is incremental.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

pub const TARGET: &str = "wasm32-wasip2";

/// Variables the outer cargo sets that must not reach the nested one: they
/// describe the host build (flags, target, target directory, wrappers).
/// `CARGO_MAKEFLAGS` stays, so that the nested cargo joins the jobserver.
const LEAKING_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_PATH",
];

/// Where one build script reads and writes.
pub struct Nested {
    /// The repository root.
    pub repo: PathBuf,
    /// This crate's `OUT_DIR`, where the components end up.
    pub out_dir: PathBuf,
    /// `<target>/wasm-plugins`; its siblings hold the Python and
    /// JavaScript toolchains of the test plugins.
    pub target_dir: PathBuf,
    watched: BTreeSet<String>,
}

impl Nested {
    /// `repo_from_manifest` is the path from this crate's manifest
    /// directory to the repository root.
    pub fn new(repo_from_manifest: &str) -> Self {
        let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
        let target_dir =
            out_dir.ancestors().nth(4).map(|t| t.join("wasm-plugins")).unwrap_or_else(|| out_dir.join("wasm-plugins"));
        let mut nested = Self { repo: manifest_dir.join(repo_from_manifest), out_dir, target_dir, watched: BTreeSet::new() };
        check_target();
        nested.watch_sources();
        nested
    }

    /// Builds `builds` (cargo invocations, each a set of packages built
    /// together) and copies every component into `OUT_DIR` (the `.wasm`
    /// file uses `_` for `-`).
    pub fn build(&mut self, builds: &[&[&str]]) {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        for packages in builds {
            let mut command = Command::new(&cargo);
            command
                .arg("build")
                .arg("--release")
                .arg("--locked")
                .arg(format!("--target={TARGET}"))
                .arg("--manifest-path")
                .arg(self.repo.join("plugins/Cargo.toml"))
                .arg("--target-dir")
                .arg(&self.target_dir);
            for package in *packages {
                command.arg("--package").arg(package);
            }
            for var in LEAKING_ENV {
                command.env_remove(var);
            }
            eprintln!("running: {command:?}");
            let status = command.status().unwrap_or_else(|e| fail(&format!("cannot run cargo: {e}")));
            if !status.success() {
                fail(&format!("building plugins {packages:?} for {TARGET} failed ({status})"));
            }
        }

        let built = self.target_dir.join(TARGET).join("release");
        for name in builds.iter().flat_map(|packages| packages.iter()) {
            let file = format!("{}.wasm", name.replace('-', "_"));
            let from = built.join(&file);
            copy_if_changed(&from, &self.out_dir.join(&file));
            self.read_deps_of(&from.with_extension("d"));
        }
    }

    fn watch(&mut self, path: &Path) {
        let path = path.display().to_string();
        if self.watched.insert(path.clone()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }

    /// Reruns the build script when a plugin, the SDK or the WIT changes.
    /// Only sources and manifests are watched: a watched directory is
    /// scanned recursively, and the nested target directories change on
    /// every build.
    fn watch_sources(&mut self) {
        let plugins = self.repo.join("plugins");
        self.watch(&plugins.join("Cargo.toml"));
        self.watch(&plugins.join("Cargo.lock"));
        let entries = fs::read_dir(&plugins).unwrap_or_else(|e| fail(&format!("reading \"{}\": {e}", plugins.display())));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("Cargo.toml").is_file() {
                self.watch(&path.join("Cargo.toml"));
                self.watch(&path.join("src"));
            }
        }
        let repo = self.repo.clone();
        self.watch(&repo.join("plugin-sdk/Cargo.toml"));
        self.watch(&repo.join("plugin-sdk/src"));
        // The WIT the SDK binds, vendored so that it can be published alone.
        self.watch(&repo.join("plugin-sdk/wit"));
        self.watch(&repo.join("wit"));
    }

    /// Watches every file a component was compiled from, as listed in its
    /// dep-info (`.d`) file, the Makefile-like format cargo writes.
    fn read_deps_of(&mut self, deps_file: &Path) {
        let Ok(contents) = fs::read_to_string(deps_file) else {
            return;
        };
        for line in contents.lines() {
            let Some(pos) = line.find(": ") else { continue };
            let mut parts = line[pos + 2..].split_whitespace();
            while let Some(part) = parts.next() {
                let mut file = part.to_owned();
                // A backslash escapes a space inside a path.
                while file.ends_with('\\') {
                    file.pop();
                    file.push(' ');
                    file.push_str(parts.next().unwrap_or_default());
                }
                self.watch(Path::new(&file));
            }
        }
    }
}

/// Fails with the message users need when the target is not installed.
fn check_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).args(["--print", "sysroot"]).output();
    let sysroot = match output {
        Ok(out) if out.status.success() => PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        _ => return, // Let the nested build report whatever is wrong.
    };
    if !sysroot.join("lib/rustlib").join(TARGET).exists() {
        fail("wasm32-wasip2 target missing: run rustup target add wasm32-wasip2");
    }
}

/// Copies `from` to `to` unless `to` already has the same bytes, so that an
/// unchanged plugin does not change this crate's inputs.
pub fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = fs::read(from).unwrap_or_else(|e| fail(&format!("reading \"{}\": {e}", from.display())));
    if fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
        fs::write(to, &bytes).unwrap_or_else(|e| fail(&format!("writing \"{}\": {e}", to.display())));
    }
}

pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
