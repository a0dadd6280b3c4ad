//! The one place that ends the `sluice` process. Every way it stops goes
//! through [`Exit::now`], with its exit code; nothing else in the
//! controller calls `std::process::exit` or aborts.
//!
//! - A CLI command, the demo or a controller that was asked to stop
//!   ([`shutdown_signal`]: Ctrl-C or SIGTERM, after which the controller
//!   closes its fleet endpoint) ends with [`Exit::Finished`] or
//!   [`Exit::Failed`] and the command's code.
//! - The controller stops itself in two cases, both with [`SOFTWARE`] so
//!   that a supervisor restarts it and recovery replays the store: the
//!   driver task panicked ([`Exit::DriverPanicked`]; the API and the fleet
//!   would otherwise talk to a dead task, every request a 500), or a store
//!   write failed ([`Exit::StoreWriteFailed`]; the engine is then ahead of
//!   the store, and only the last committed state is safe to go on from).
//!
//! Tasks other than the driver (an API request, one agent's connection)
//! that fail or panic end alone; the process goes on.

use tracing::error;

/// Exit code of a controller that stopped itself so that a restart
/// recovers (`EX_SOFTWARE` of `sysexits.h`).
pub const SOFTWARE: i32 = 70;

/// Why the process ends.
#[derive(Debug)]
pub enum Exit {
    /// The command ran to its end, with its exit code.
    Finished(i32),
    /// The command failed: the message goes to stderr.
    Failed { code: i32, message: String },
    /// The driver task panicked.
    DriverPanicked,
    /// A store write failed; the error's text.
    StoreWriteFailed(String),
}

impl Exit {
    pub fn code(&self) -> i32 {
        match self {
            Self::Finished(code) | Self::Failed { code, .. } => *code,
            Self::DriverPanicked | Self::StoreWriteFailed(_) => SOFTWARE,
        }
    }

    /// Says why (where there is something to say) and ends the process.
    pub fn now(self) -> ! {
        match &self {
            Self::Finished(_) => {}
            Self::Failed { message, .. } => eprintln!("error: {message}"),
            Self::DriverPanicked => error!("the driver panicked; exiting so that a restart recovers from the store"),
            Self::StoreWriteFailed(e) => error!("store write failed, stopping so that a restart recovers: {e}"),
        }
        std::process::exit(self.code())
    }
}

/// Resolves on Ctrl-C or SIGTERM: the controller (or demo) awaiting it
/// then stops.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_that_stops_itself_asks_for_a_restart() {
        assert_eq!(Exit::DriverPanicked.code(), 70);
        assert_eq!(Exit::StoreWriteFailed("disk full".into()).code(), 70);
        assert_eq!(Exit::Finished(0).code(), 0);
        assert_eq!(Exit::Failed { code: 3, message: "no token".into() }.code(), 3);
    }
}
