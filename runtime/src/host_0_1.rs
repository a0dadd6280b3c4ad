//! The imports of `sluice:plugin@0.1.0`, for plugins built against it: each
//! delegates to the newest version's implementation. 0.1.0's records are
//! generated as types of their own, so they are converted field by field;
//! a field the newest version lacks would not compile here, which is the
//! point.

use crate::bindings::sluice::plugin as newest;
use crate::bindings_0_1::sluice::plugin::{files, log, process, secrets};
use crate::host::HostState;

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => newest::log::Level::Trace,
            log::Level::Debug => newest::log::Level::Debug,
            log::Level::Info => newest::log::Level::Info,
            log::Level::Warn => newest::log::Level::Warn,
            log::Level::Error => newest::log::Level::Error,
        };
        newest::log::Host::log(self, level, message)
    }
}

impl files::Host for HostState {
    fn copy(&mut self, from: String, to: String) -> Result<u64, String> {
        newest::files::Host::copy(self, from, to)
    }
}

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<String, String> {
        newest::secrets::Host::get(self, name)
    }
}

impl process::Host for HostState {
    fn run(&mut self, command: process::Command) -> Result<process::Output, String> {
        let process::Command { program, args, cwd, env, stream_output } = command;
        let command = newest::process::Command { program, args, cwd, env, stream_output };
        let newest::process::Output { status, stdout, stderr } = newest::process::Host::run(self, command)?;
        Ok(process::Output { status, stdout, stderr })
    }

    fn host_path(&mut self, path: String) -> Result<String, String> {
        newest::process::Host::host_path(self, path)
    }
}
