//! The guest-side SDK for Sluice action plugins.
//!
//! A Sluice plugin is a WebAssembly component (`wasm32-wasip2`) built against
//! the WIT package `sluice:plugin@0.2.0` in `wit/`. This crate hides the
//! generated bindings behind plain Rust: implement [`Plugin`] (and, for a
//! source plugin, `Source`), then export the type with [`export_plugin!`]
//! (or `export_source!`). An `Err(Error)` from `execute` becomes the `failed`
//! outcome; a panic traps, and the host fails the action.
//!
//! The SDK must not know anything about the host's implementation (the
//! agent, wasmtime, the controller): only the WIT contract, and WASI's
//! `wasi:http` for [`http`].
//!
//! Host services are in modules: [`log`], [`process`] (run granted host
//! programs, map sandbox paths to host paths), [`secrets`], [`http`]
//! (outgoing requests to granted destinations over `wasi:http`), and
//! [`artifacts`] for copying files between directories. Plain `std::fs`
//! works on the directories the host gives the action (read-only inputs,
//! writable outputs and workspace).
//!
//! # Worlds and the `source` feature
//!
//! A component must export exactly its world. Without features this crate
//! binds world `plugin` (exports `action`); with feature `source` it binds
//! `source-plugin` (exports `action` and `source`) and offers
//! `export_source!` instead of [`export_plugin!`]. Build source plugins in a
//! separate `cargo` invocation from the others so that the feature does not
//! unify across them.
//!
//! # Example
//!
//! ```no_run
//! use sluice_plugin_sdk::{
//!     ActionInfo, Category, Context, Error, Outcome, Plugin, Property, PropertyType, ResultExt,
//!     artifacts, log, process::Command,
//! };
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! struct Config {
//!     target: String,
//!     #[serde(default)]
//!     jobs: Option<u32>,
//! }
//!
//! struct Make;
//!
//! impl Plugin for Make {
//!     fn describe() -> ActionInfo {
//!         ActionInfo::new("make", "1", Category::Build)
//!             .description("Runs make on the input artifact")
//!             .property(Property::required("Target", "The make target"))
//!             .property(Property::optional("Jobs", "Parallel jobs").kind(PropertyType::Number))
//!             .inputs(1, 1)
//!             .outputs(1, 1)
//!             .exec(["make"])
//!     }
//!
//!     fn execute(ctx: Context) -> Result<Outcome, Error> {
//!         let config: Config = ctx.config.parse()?;
//!         let (input, output) = (&ctx.inputs[0], &ctx.outputs[0]);
//!         let build = ctx.workspace.join("build");
//!         artifacts::copy_dir(&input.path, &build)?;
//!         log::info(format!("making {}", config.target));
//!         Command::new("make")
//!             .arg(&config.target)
//!             .arg(format!("-j{}", config.jobs.unwrap_or(1)))
//!             .cwd(&build)
//!             .env("PATH", "/usr/bin:/bin")
//!             .stream_output(true)
//!             .run_checked()?;
//!         let files = artifacts::collect(&build, &output.files, &output.path)
//!             .context("collecting the output")?;
//!         Ok(Outcome::succeeded(format!("made {} ({files} files)", config.target))
//!             .variable("Target", config.target))
//!     }
//! }
//!
//! # #[cfg(not(feature = "source"))] // the example doubles as a test of both builds
//! sluice_plugin_sdk::export_plugin!(Make);
//! ```
//!
//! Build it as a `cdylib` with `cargo build --release --target wasm32-wasip2`.
//!
//! # Testing plugins natively
//!
//! Compiled for the machine running `cargo test` (not wasm32), the host
//! imports are stood in for: logs go to stderr, [`process::Command`] runs the
//! program directly with no sandbox and no grant checks,
//! [`process::host_path`] returns its argument, [`secrets::get`] reads
//! `SLUICE_SECRET_<NAME>` from the environment or fails, and [`http`]
//! speaks plain `http://` over TCP (to an [`http::testing::Server`], say).
//! That lets a plugin's `execute` be unit-tested against temporary
//! directories; the sandbox itself is tested by the host.
//!
//! # Testing the component
//!
//! With feature `testing` (in `[dev-dependencies]`), `testing` builds the
//! crate for `wasm32-wasip2` and runs the component under
//! `sluice action run`, in the sandbox an agent uses, against fixture
//! directories: the outcome, output variables, log and output files are
//! there to assert on.
//!
//! # Versions
//!
//! SDK 0.2.x speaks `sluice:plugin@0.2.0`, whose WIT is vendored in the
//! crate (`wit/plugin.wit`); a new WIT minor version is a new SDK minor
//! version, and hosts keep running every released WIT version.

#![deny(missing_docs)]

pub mod artifacts;
mod config;
pub mod deadline;
mod context;
mod error;
mod host;
pub mod http;
mod info;
pub mod log;
pub mod process;
pub mod secrets;
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

pub use config::Config;
pub use context::{Artifact, Context, Outcome, PINNED_REVISION_VARIABLE, Revision};
pub use error::{Error, ResultExt};
pub use info::{ActionInfo, Bounds, Capabilities, Category, Property, PropertyType};

/// The generated bindings. Not part of the API: use the types above.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod bindings {
    #[cfg(not(feature = "source"))]
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "sluice_plugin_sdk::bindings",
    });

    #[cfg(feature = "source")]
    wit_bindgen::generate!({
        path: "wit",
        world: "source-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "sluice_plugin_sdk::bindings",
    });
}

/// An action plugin: what it is and what it does.
pub trait Plugin {
    /// What the plugin is. Called once when the plugin is registered; must
    /// not touch the host (no files, no programs).
    fn describe() -> ActionInfo;

    /// Runs the action once. `Ok` is succeeded or in-progress; `Err` is the
    /// failed outcome with the error's message and retry flag.
    fn execute(ctx: Context) -> Result<Outcome, Error>;
}

/// A source plugin: it also finds the newest revision of its source, for
/// change detection. Needs feature `source` and [`export_source!`].
#[cfg(feature = "source")]
pub trait Source: Plugin {
    /// The newest revision for this configuration. It runs without artifacts
    /// or workspace, with the plugin's granted capabilities only.
    fn latest_revision(config: &Config) -> Result<Revision, Error>;
}

/// The glue the export macros expand to. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::exports::sluice::plugin::action::Guest as ActionGuest;
    #[cfg(feature = "source")]
    pub use crate::bindings::exports::sluice::plugin::source::Guest as SourceGuest;
    use crate::bindings::sluice::plugin::types as wit;
    pub use crate::bindings::sluice::plugin::types::{
        ActionInfo as WitActionInfo, Context as WitContext, Outcome as WitOutcome,
        Revision as WitRevision,
    };

    pub fn describe<T: crate::Plugin>() -> WitActionInfo {
        T::describe().into_wit()
    }

    pub fn execute<T: crate::Plugin>(ctx: WitContext) -> WitOutcome {
        match T::execute(crate::Context::from_wit(ctx)) {
            Ok(outcome) => outcome.into_wit(),
            Err(error) => wit::Outcome::Failed(wit::Failure {
                retryable: error.is_retryable(),
                message: error.message().to_owned(),
            }),
        }
    }

    #[cfg(feature = "source")]
    pub fn latest_revision<T: crate::Source>(
        configuration: Vec<(String, String)>,
    ) -> Result<WitRevision, String> {
        T::latest_revision(&crate::Config::from(configuration))
            .map(crate::Revision::into_wit)
            .map_err(|e| e.message().to_owned())
    }
}

/// Exports a [`Plugin`] as the component's `sluice:plugin/action` interface.
/// Use it once, at the crate root of a `cdylib`: `export_plugin!(MyPlugin);`
/// (see the example in the crate documentation).
#[cfg(not(feature = "source"))]
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct SluicePluginExport;

            impl $crate::__private::ActionGuest for SluicePluginExport {
                fn describe() -> $crate::__private::WitActionInfo {
                    $crate::__private::describe::<$plugin>()
                }

                fn execute(ctx: $crate::__private::WitContext) -> $crate::__private::WitOutcome {
                    $crate::__private::execute::<$plugin>(ctx)
                }
            }

            $crate::__private::bindings::__export_world!(
                SluicePluginExport with_types_in $crate::__private::bindings
            );
        };
    };
}

/// With feature `source` the component must also export `source`: use
/// `export_source!`.
#[cfg(feature = "source")]
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        ::core::compile_error!(
            "sluice-plugin-sdk is built with feature `source`: export with `export_source!`"
        );
    };
}

/// Exports a [`Source`] plugin as the component's `sluice:plugin/action`
/// and `sluice:plugin/source` interfaces. Use it once, at the crate root of
/// a `cdylib` built with the SDK's `source` feature:
/// `export_source!(MyPlugin);` where `MyPlugin` implements [`Plugin`] and
/// [`Source`].
#[cfg(feature = "source")]
#[macro_export]
macro_rules! export_source {
    ($plugin:ty) => {
        const _: () = {
            struct SluicePluginExport;

            impl $crate::__private::ActionGuest for SluicePluginExport {
                fn describe() -> $crate::__private::WitActionInfo {
                    $crate::__private::describe::<$plugin>()
                }

                fn execute(ctx: $crate::__private::WitContext) -> $crate::__private::WitOutcome {
                    $crate::__private::execute::<$plugin>(ctx)
                }
            }

            impl $crate::__private::SourceGuest for SluicePluginExport {
                fn latest_revision(
                    configuration: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<$crate::__private::WitRevision, ::std::string::String>
                {
                    $crate::__private::latest_revision::<$plugin>(configuration)
                }
            }

            $crate::__private::bindings::__export_world!(
                SluicePluginExport with_types_in $crate::__private::bindings
            );
        };
    };
}
