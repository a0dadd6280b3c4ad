//! The action's deadline (`sluice:plugin@0.2.0`).
//!
//! The host stops a plugin at its action's timeout, wherever it is. A plugin
//! that waits on something of its own (an HTTP request, a remote job) can
//! size the wait to fit with [`remaining`], and fail with its own message
//! instead of being stopped mid-way. [`crate::http`] already does.
//!
//! ```
//! use std::time::Duration;
//! use sluice_plugin_sdk::deadline;
//!
//! // Poll a remote job for at most a minute, and never past the deadline.
//! let wait = deadline::remaining().min(Duration::from_secs(60));
//! assert!(wait <= Duration::from_secs(60));
//! ```

use std::time::Duration;

/// Time left until the action's deadline. Natively (in `cargo test`) there
/// is none: [`Duration::MAX`].
pub fn remaining() -> Duration {
    match crate::host::remaining_ms() {
        u64::MAX => Duration::MAX,
        ms => Duration::from_millis(ms),
    }
}
