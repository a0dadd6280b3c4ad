//! Secrets granted to the action.
//!
//! ```no_run
//! use sluice_plugin_sdk::{ActionInfo, Category, Error, secrets};
//!
//! // Declared in describe() ...
//! let info = ActionInfo::new("notify", "1", Category::Invoke).secrets(["API_TOKEN"]);
//! // ... read in execute() (natively, from SLUICE_SECRET_API_TOKEN).
//! let token: Result<String, Error> = secrets::get("API_TOKEN");
//! ```

use crate::{Error, host};

/// The value of the secret `name`.
///
/// Fails unless the plugin declares the name in its capabilities, the action
/// grants it and the agent permits it. The host masks the value in every log.
pub fn get(name: &str) -> Result<String, Error> {
    // The host's messages name the secret already.
    host::secret(name).map_err(Error::new)
}
