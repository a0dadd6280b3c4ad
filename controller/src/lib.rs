//! Sluice controller: keeps the pipelines and schedules every action onto
//! agents. See ARCHITECTURE.md for the code map.

pub mod action_run;
pub mod api;
pub mod artifact_zip;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod blobs;
pub mod ca;
pub mod cli;
pub mod demo;
pub mod driver;
pub mod engine;
// Notifications (issue 15, notify).
pub mod exit;
pub mod fleet;
pub mod console;
pub mod https;
// Metrics, logs and readiness (issue 17, obs).
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod pipeline;
// Data lifecycle (issue 17, life).
pub mod backup;
pub mod retention;
pub mod plugin_template;
pub mod policy;
pub mod secrets;
pub mod store;
pub mod views;
pub mod webhooks;
pub mod workers;
