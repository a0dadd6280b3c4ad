//! Lines in the action's log, shown live while the action runs.
//!
//! Secret values are masked by the host. Anything the plugin writes to
//! stdout or stderr also lands in the log, but these functions carry a level.
//!
//! ```
//! use sluice_plugin_sdk::log;
//!
//! log::info("fetching the release notes");
//! log::warn(format!("{} retries left", 2));
//! ```

use crate::host::{self, Level};

/// Logs at trace level.
pub fn trace(message: impl AsRef<str>) {
    host::log(Level::Trace, message.as_ref())
}

/// Logs at debug level.
pub fn debug(message: impl AsRef<str>) {
    host::log(Level::Debug, message.as_ref())
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    host::log(Level::Info, message.as_ref())
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    host::log(Level::Warn, message.as_ref())
}

/// Logs at error level.
pub fn error(message: impl AsRef<str>) {
    host::log(Level::Error, message.as_ref())
}
