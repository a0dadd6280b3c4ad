//! Secrets granted to the action.

use crate::{Error, host};

/// The value of the secret `name`.
///
/// Fails unless the plugin declares the name in its capabilities, the action
/// grants it and the agent permits it. The host masks the value in every log.
pub fn get(name: &str) -> Result<String, Error> {
    // The host's messages name the secret already.
    host::secret(name).map_err(Error::new)
}
