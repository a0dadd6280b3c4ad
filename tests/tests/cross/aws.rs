//! The AWS-compatible API driven by the real AWS SDK for Python (boto3)
//! and the real AWS CLI, against real controller and agent processes;
//! with each user's test, the attacker's beside it.

use serde_json::Value;
use sluice_tests::Cluster;
use sluice_tests::aws::{access_key, script_json};

#[test]
fn boto3_lists_pipelines_with_an_access_key() {
    let cluster = Cluster::new().start().unwrap();
    let key = access_key(&cluster, "ann", "operator").unwrap();
    let listed: Value = script_json(&cluster, &key, "list_pipelines.py", &[]).unwrap();
    assert_eq!(listed["names"], serde_json::json!([]));
}
