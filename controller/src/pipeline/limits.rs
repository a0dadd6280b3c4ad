//! Every limit a pipeline declaration is checked against, in one place.
//!
//! Most limits are AWS CodePipeline's, so that a declaration CodePipeline
//! accepts loads here unchanged. Where Sluice departs from CodePipeline, the
//! constant says so and why; Sluice only ever accepts more, never less, except
//! where accepting more would be unsafe (artifact names become directory names
//! on agents).

/// Longest pipeline, stage, action, artifact or namespace name, in characters.
/// CodePipeline's limit for every name in a declaration.
pub const NAME_MAX_LEN: usize = 100;

/// Fewest stages in a pipeline. CodePipeline requires a source stage plus at
/// least one stage that does something with what the source produced.
pub const MIN_STAGES: usize = 2;

/// Most stages in a pipeline. CodePipeline's limit.
pub const MAX_STAGES: usize = 50;

/// Fewest actions in a stage: an empty stage has nothing to run or to fail.
pub const MIN_ACTIONS_PER_STAGE: usize = 1;

/// Most actions in a stage. CodePipeline's limit.
pub const MAX_ACTIONS_PER_STAGE: usize = 50;

/// Lowest `runOrder`. CodePipeline's range is 1 to 999.
pub const MIN_RUN_ORDER: u32 = 1;

/// Highest `runOrder`. CodePipeline's range is 1 to 999.
pub const MAX_RUN_ORDER: u32 = 999;

/// The `runOrder` of an action that declares none, as in CodePipeline.
pub const DEFAULT_RUN_ORDER: u32 = 1;

/// Most pipeline variables. CodePipeline's limit.
pub const MAX_VARIABLES: usize = 50;

/// Longest pipeline variable name. CodePipeline's limit.
pub const VARIABLE_NAME_MAX_LEN: usize = 128;

/// Longest default value of a pipeline variable. CodePipeline's limit.
pub const VARIABLE_DEFAULT_MAX_LEN: usize = 1000;

/// Longest description of a pipeline variable. CodePipeline's limit.
pub const VARIABLE_DESCRIPTION_MAX_LEN: usize = 200;

/// Shortest `timeoutInMinutes`. CodePipeline's minimum is 5; Sluice accepts
/// down to 1 because self-hosted actions (tests, noop probes) are often short
/// and a tight deadline is the point.
pub const MIN_TIMEOUT_MINUTES: u32 = 1;

/// Longest `timeoutInMinutes`: 86,400 minutes (60 days), CodePipeline's
/// maximum, long enough for any manual approval.
pub const MAX_TIMEOUT_MINUTES: u32 = 86_400;

/// Timeout of an action that declares none (docs/design.md section 3).
pub const DEFAULT_TIMEOUT_MINUTES: u32 = 60;

/// Most distinct approvers a manual approval may require.
pub const MAX_REQUIRED_APPROVALS: u32 = 20;

/// How often a Source action is polled for changes by default, in seconds
/// (jittered by up to 10 % either way). `pollIntervalSeconds: 0` turns
/// polling off; otherwise 1 to [`MAX_POLL_INTERVAL_SECONDS`].
pub const DEFAULT_POLL_INTERVAL_SECONDS: u32 = 60;

/// Longest polling interval: a day.
pub const MAX_POLL_INTERVAL_SECONDS: u32 = 86_400;

/// Timeout of an `Approval` action that declares none: 7 days (docs/design.md
/// section 3), as for CodePipeline's manual approval.
pub const DEFAULT_APPROVAL_TIMEOUT_MINUTES: u32 = 7 * 24 * 60;

/// Longest configuration key. CodePipeline's limit.
pub const CONFIG_KEY_MAX_LEN: usize = 50;

/// Longest configuration value, in bytes. CodePipeline allows 1,000; Sluice
/// allows 16 KiB because built-in providers such as `shell` take whole scripts
/// inline. It stays bounded so that a declaration remains a small row in the
/// store and a job stays a small frame on the wire to the agent.
pub const CONFIG_VALUE_MAX_LEN: usize = 16 * 1024;

/// Largest declaration document accepted, in bytes. Far above any real
/// pipeline (50 stages of 50 actions with full configurations); it keeps a
/// hostile upload from costing the controller more than a bounded parse.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// `90m`, `2h`, `7d`: how a timeout in minutes reads in messages.
pub fn human_minutes(minutes: u32) -> String {
    if minutes >= 1440 && minutes.is_multiple_of(1440) {
        format!("{}d", minutes / 1440)
    } else if minutes >= 60 && minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}
