//! The cross-process suites, as one test binary (one link, one harness):
//! the real `sluice` and `sluice-agent` binaries on loopback, each test
//! with its own cluster. Build the binaries first:
//! `cargo build --workspace --bins`, then
//! `cargo test -p sluice-tests --test cross [MODULE::NAME]`.

mod aws;
mod cluster;
mod codebuild;
// The console's pipelines and pipeline page (issue 16, pipe).
mod console_pipe;
mod fleet;
// https (issue 15).
mod https;
// Approvals with separation of duties and the audit log (issue 15, gov).
mod gov;
mod jobs;
// Notifications (issue 15, notify).
mod notify;
// Metrics, logs and readiness (issue 17, obs).
mod obs;
mod rogue;
mod signing;
mod sources;
// Permissions (issue 15, policy).
mod policy;
// Data lifecycle (issue 17, life): schema upgrade, backup and restore, retention.
mod life;
// The web console in a real browser (issue 16, browser).
mod console;
// The web console's pages slice (issue 16, pages).
mod console_pages;
// Operators: configuration, packaging, doctor (issue 17, ops).
mod ops;
// Several controllers, one leader: agents and the CLI (issue 18, reach).
mod reach;
// High availability (issue 18, ha): leader kills and pauses, forwarding standbys.
mod ha;
// Artifacts in S3-compatible object storage (issue 18, s3).
mod s3;
// The controller on PostgreSQL (issue 18, pg).
mod pg;
// Pipelines that feed pipelines (issue 21, feed).
mod feed;
// The plugin authors' kit (issue 20, kit).
mod kit;
