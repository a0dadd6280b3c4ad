//! The host imports, and their stand-ins when the SDK is compiled for the
//! machine running `cargo test`.
//!
//! Inside a component (wasm32) every call goes to the host through the
//! generated bindings. Elsewhere there is no host, and the generated import
//! stubs would panic; so that plugin code can be unit-tested natively, logging
//! goes to stderr, programs run directly (no sandbox, no grants, sandbox paths
//! are host paths) and secrets are unavailable. Native builds are only ever
//! test builds: a plugin runs in production only as a component.

pub(crate) use crate::bindings::sluice::plugin::log::Level;
pub(crate) use crate::bindings::sluice::plugin::process::{Command, Output};

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::bindings::sluice::plugin::{files, log, process, secrets};

    pub(crate) fn copy(from: &str, to: &str) -> Result<u64, String> {
        files::copy(from, to)
    }

    pub(crate) fn log(level: Level, message: &str) {
        log::log(level, message)
    }

    pub(crate) fn run(command: &Command) -> Result<Output, String> {
        process::run(command)
    }

    pub(crate) fn host_path(path: &str) -> Result<String, String> {
        process::host_path(path)
    }

    pub(crate) fn secret(name: &str) -> Result<String, String> {
        secrets::get(name)
    }

    pub(crate) fn remaining_ms() -> u64 {
        crate::bindings::sluice::plugin::deadline::remaining_ms()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;
    use std::io::Write;

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let _ = writeln!(std::io::stderr(), "{level}: {message}");
    }

    pub(crate) fn run(command: &Command) -> Result<Output, String> {
        let mut native = std::process::Command::new(&command.program);
        native
            .args(&command.args)
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &command.cwd {
            native.current_dir(cwd);
        }
        let output = native
            .output()
            .map_err(|e| format!("cannot run {:?}: {e}", command.program))?;
        if command.stream_output {
            let mut stderr = std::io::stderr();
            let _ = stderr.write_all(&output.stdout);
            let _ = stderr.write_all(&output.stderr);
        }
        Ok(Output {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    pub(crate) fn host_path(path: &str) -> Result<String, String> {
        Ok(path.to_owned())
    }

    /// Natively, `std::fs::copy` keeps permission bits as the host does.
    pub(crate) fn copy(from: &str, to: &str) -> Result<u64, String> {
        fn tree(src: &std::path::Path, dst: &std::path::Path) -> std::io::Result<u64> {
            let meta = std::fs::symlink_metadata(src)?;
            if meta.is_dir() {
                std::fs::create_dir_all(dst)?;
                let mut n = 0;
                for entry in std::fs::read_dir(src)? {
                    let entry = entry?;
                    n += tree(&entry.path(), &dst.join(entry.file_name()))?;
                }
                return Ok(n);
            }
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if meta.file_type().is_symlink() {
                let _ = std::fs::remove_file(dst);
                std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
            } else {
                std::fs::copy(src, dst)?;
            }
            Ok(1)
        }
        tree(std::path::Path::new(from), std::path::Path::new(to))
            .map_err(|e| format!("copying {from:?} to {to:?}: {e}"))
    }

    /// Outside a host (a plugin's own unit tests), a secret comes from the
    /// environment variable `SLUICE_SECRET_<NAME>` if the test sets one.
    pub(crate) fn secret(name: &str) -> Result<String, String> {
        let var = format!("SLUICE_SECRET_{}", name.replace(['-', '.'], "_"));
        std::env::var(&var).map_err(|_| {
            format!("secret \"{name}\" is not available outside a sluice host (set {var} in a test)")
        })
    }

    /// Natively there is no action deadline.
    pub(crate) fn remaining_ms() -> u64 {
        u64::MAX
    }
}

pub(crate) use imp::*;
