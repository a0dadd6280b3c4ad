//! The error a plugin returns from `execute`: a message and whether a retry
//! could succeed.

use std::fmt;

/// Why an action failed.
///
/// Returned as `Err` from [`Plugin::execute`](crate::Plugin::execute), it
/// becomes the `failed` outcome with this message and retry flag. `?` works on
/// every `std::error::Error` (its message and its chain of sources are kept),
/// so `std::fs::read(path)?` needs no conversion; add what was being done with
/// [`ResultExt::context`].
///
/// Like `anyhow::Error`, this type deliberately does not implement
/// `std::error::Error` itself: that is what makes the blanket `From` possible.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    retryable: bool,
}

impl Error {
    /// A failure that running the action again would not fix.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that running the action again could fix (a flaky network,
    /// a busy remote).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// The message, as the pipeline shows it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether running the action again could succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Marks this error retryable (or not), keeping the message.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Prefixes the message with what was being done: `"{context}: {message}"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Many errors repeat their source's text in their own message.
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Self::new(message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("message", &self.message)
            .field("retryable", &self.retryable)
            .finish()
    }
}

/// Adds what was being done to the error of a `Result`.
///
/// ```
/// use sluice_plugin_sdk::{Error, ResultExt};
/// fn read_manifest() -> Result<String, Error> {
///     std::fs::read_to_string("/no/such/manifest.json").context("reading \"manifest.json\"")
/// }
/// assert!(read_manifest().unwrap_err().message().starts_with("reading \"manifest.json\": "));
/// ```
pub trait ResultExt<T> {
    /// Prefixes the error message with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T, Error>;
    /// Prefixes the error message with the text `f` returns, computed only on error.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T, Error> {
        self.map_err(|e| e.into().context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_keeps_its_message_and_is_not_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err: Error = io.into();
        assert_eq!(err.message(), "no such file");
        assert!(!err.is_retryable());
    }

    #[test]
    fn context_prefixes_and_retryable_survives() {
        let err = Error::retryable("timed out").context("fetching \"origin\"");
        assert_eq!(err.to_string(), "fetching \"origin\": timed out");
        assert!(err.is_retryable());
        let res: Result<(), Error> = Err(Error::new("boom"));
        assert_eq!(
            res.with_context(|| "step 2").unwrap_err().message(),
            "step 2: boom"
        );
    }

    #[test]
    fn question_mark_converts_parse_errors() {
        fn parse(s: &str) -> Result<u32, Error> {
            Ok(s.parse::<u32>()?)
        }
        assert_eq!(
            parse("x").unwrap_err().message(),
            "invalid digit found in string"
        );
    }
}
