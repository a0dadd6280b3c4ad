//! The pipelines the scenarios run: a git Source stage (the first stage
//! may hold only Source actions) followed by stages of `noop` actions. Only
//! the `noop` actions are measured; the Source action is there because
//! every pipeline needs one.

use serde_json::{Value, json};
use sluice_tests::{Cluster, git_pipeline, make_repo};
use std::path::PathBuf;

/// docs/design.md section 2 and `pipeline/limits.rs`: at most 50 actions in a stage.
const MAX_ACTIONS_PER_STAGE: usize = 50;

/// How the noop actions of a stage run.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    /// runOrder 1, 2, 3...: one after the other.
    Sequential,
    /// All runOrder 1: side by side.
    Parallel,
}

/// A repository for the Source action, in the cluster's temp dir.
pub fn repo(cluster: &Cluster) -> PathBuf {
    let repo = cluster.dir.path().join("repo");
    if !repo.exists() {
        make_repo(&repo, &[("README", "benchmark\n")]);
    }
    repo
}

/// Source, then `actions` noops in stages of at most 50, in `order`.
pub fn noop_pipeline(cluster: &Cluster, name: &str, actions: usize, order: Order, mode: &str) -> String {
    let stages: Vec<String> = (0..actions)
        .collect::<Vec<_>>()
        .chunks(MAX_ACTIONS_PER_STAGE)
        .enumerate()
        .map(|(s, chunk)| {
            let actions: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    json!({
                        "name": format!("N{}", i + 1),
                        "runOrder": match order { Order::Sequential => i + 1, Order::Parallel => 1 },
                        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
                    })
                })
                .collect();
            json!({"name": format!("Noop{}", s + 1), "actions": actions}).to_string()
        })
        .collect();
    let text = git_pipeline(name, "", &repo(cluster), &stages.join(",\n"));
    let mut decl: Value = serde_json::from_str(&text).expect("git_pipeline makes JSON");
    decl["pipeline"]["executionMode"] = json!(mode);
    decl.to_string()
}

/// Whether an action event is one of the measured noops.
pub fn is_noop(stage: &str) -> bool {
    stage.starts_with("Noop")
}
