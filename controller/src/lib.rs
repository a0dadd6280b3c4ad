//! Sluice controller: keeps the pipelines and schedules every action onto
//! agents. See ARCHITECTURE.md for the code map.

pub mod action_run;
pub mod api;
pub mod artifact_zip;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod backup;
pub mod blobs;
pub mod ca;
pub mod cli;
// Shared keys (issue 18, reach).
pub mod cluster_keys;
pub mod console;
pub mod demo;
pub mod driver;
pub mod engine;
pub mod exit;
pub mod ha;
// Pipelines that feed pipelines (issue 21, feed).
pub mod feed;
pub mod fleet;
pub mod hashed_file;
pub mod https;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod pipeline;
// Plugin authors' kit (issue 20, kit): `sluice plugin check`, shared with push.
pub mod plugin_check;
pub mod plugin_template;
pub mod policy;
pub mod retention;
pub mod secrets;
pub mod store;
pub mod udp;
pub mod views;
pub mod webhooks;
pub mod workers;
