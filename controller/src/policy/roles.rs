//! The built-in roles, as policies (`sluice role show NAME` prints them).
//!
//! - admin: everything.
//! - operator: everything but who may do what and who may enroll or sign
//!   ([`ADMIN_ONLY`]): users, tokens, access keys, teams, roles,
//!   delegations, join tokens, agent labels, trusted publishers.
//! - developer: reads everything that is not a credential; creates, edits,
//!   runs, stops, retries, rolls back and gates the transitions of its
//!   team's pipelines, and grants its team's secrets to them. No
//!   approvals, no plugins, no agents, no setting secrets.
//! - approver: reads, and approves or rejects (`PutApprovalResult`) on any
//!   pipeline; an approval action's own approver list narrows that.
//! - viewer: reads, logs included (secret values are masked in logs and
//!   never returned by any operation).

use super::document::{Effect, Policy, Statement, TeamCondition};
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const ADMIN: &str = "admin";
pub const OPERATOR: &str = "operator";
pub const DEVELOPER: &str = "developer";
pub const APPROVER: &str = "approver";
pub const VIEWER: &str = "viewer";

pub const BUILTIN: &[&str] = &[ADMIN, OPERATOR, DEVELOPER, APPROVER, VIEWER];

/// Actions only admin has among the built-in roles.
pub const ADMIN_ONLY: &[&str] = &[
    "sluice:CreateUser",
    "sluice:DeleteUser",
    "sluice:SetUserRole",
    "sluice:CreateApiToken",
    "sluice:ListApiTokens",
    "sluice:RevokeApiToken",
    "sluice:CreateAccessKey",
    "sluice:ListAccessKeys",
    "sluice:RevokeAccessKey",
    // Who may enroll hosts, and which hosts a label like `env=prod` sends
    // work (and its secrets) to: an operator who could label a shared
    // host, or mint a token letting hosts claim a label, could route
    // another team's jobs onto a host they control.
    "sluice:CreateAgentToken",
    "sluice:RevokeAgentToken",
    "sluice:LabelAgent",
    // Whom the controller trusts to sign plugins.
    "sluice:AddPublisher",
    "sluice:RemovePublisher",
    // The audit log (issue 15, gov): who did what is the security
    // officer's to read, as CloudTrail is; operators are among the audited.
    "sluice:ListAuditRecords",
    "sluice:VerifyAudit",
    // Approvals are the release's gate: who may remove or change one (or
    // delete a pipeline holding one) is the admin's decision, or a custom
    // release-manager role's, not every operator's.
    "sluice:EditApprovalAction",
    // Who may do what.
    "sluice:CreateTeam",
    "sluice:DeleteTeam",
    "sluice:AddTeamMember",
    "sluice:RemoveTeamMember",
    "sluice:GrantTeamRole",
    "sluice:RevokeTeamRole",
    "sluice:CreateRole",
    "sluice:DeleteRole",
    // Data lifecycle (issue 17, life): a backup holds the CA's and the
    // secrets' keys, and is written where the caller says on the host.
    "sluice:CreateBackup",
];

/// Reads that would show a credential or a job's keys: not in the read set.
const NOT_READS: &[&str] = &[
    "sluice:ListApiTokens",
    "sluice:ListAccessKeys",
    "sluice:ListAgentTokens",
    "sluice:ListSecrets",
    "codepipeline:ListWebhooks",
    "codepipeline:GetJobDetails",
    // The audit log (issue 15, gov): not for viewers (see ADMIN_ONLY).
    "sluice:ListAuditRecords",
    // An artifact's bytes (issue 16): unlike logs they are not masked, so a
    // packaged `.env` would hand a granted secret to a viewer. Operators and
    // admins have it; developers on their own team's pipelines.
    "sluice:GetArtifact",
];

/// What a developer may do on its team's pipelines.
const DEVELOPER_ON_TEAM: &[&str] = &[
    "codepipeline:CreatePipeline",
    "codepipeline:UpdatePipeline",
    "codepipeline:StartPipelineExecution",
    "codepipeline:StopPipelineExecution",
    "codepipeline:RetryStageExecution",
    "codepipeline:RollbackStage",
    "codepipeline:DisableStageTransition",
    "codepipeline:EnableStageTransition",
    "codepipeline:PutWebhook",
    "codepipeline:DeleteWebhook",
    "codepipeline:TagResource",
    "codepipeline:UntagResource",
    // Not in the read set (see NOT_READS): their own team's artifacts only.
    "sluice:GetArtifact",
];

/// Every action a policy may name.
pub fn known_actions() -> &'static [&'static str] {
    static ACTIONS: OnceLock<Vec<&'static str>> = OnceLock::new();
    ACTIONS.get_or_init(crate::ops::actions)
}

/// Get*, List*, Describe* and validation, less [`NOT_READS`].
pub fn reads() -> Vec<String> {
    known_actions()
        .iter()
        .filter(|a| {
            let verb = a.split_once(':').map_or("", |(_, v)| v);
            (["Get", "List", "Describe"].iter().any(|p| verb.starts_with(p)) || *a == &"sluice:ValidatePipeline")
                && !NOT_READS.contains(a)
                && !a.starts_with("s3:")
        })
        .map(|a| a.to_string())
        .collect()
}

fn allow(actions: Vec<String>, resource: &str, sid: &str) -> Statement {
    Statement { sid: Some(sid.into()), effect: Effect::Allow, actions, resources: vec![resource.into()], team: None }
}

fn policies() -> &'static BTreeMap<&'static str, Policy> {
    static ROLES: OnceLock<BTreeMap<&'static str, Policy>> = OnceLock::new();
    ROLES.get_or_init(|| {
        let everything = vec!["*".to_string()];
        let operator: Vec<String> = known_actions()
            .iter()
            .filter(|a| !ADMIN_ONLY.contains(a) && !a.starts_with("s3:") && **a != "sluice:DeliverWebhook")
            .map(|a| a.to_string())
            .collect();
        let on_team = Statement {
            team: Some(TeamCondition::PrincipalTeam),
            ..allow(DEVELOPER_ON_TEAM.iter().map(|a| a.to_string()).collect(), "pipeline/*", "TeamPipelines")
        };
        let team_secrets = Statement {
            team: Some(TeamCondition::PrincipalTeam),
            ..allow(vec!["sluice:UseSecret".into()], "secret/*", "TeamSecrets")
        };
        let approve = allow(vec!["codepipeline:PutApprovalResult".into()], "pipeline/*", "Approve");
        BTreeMap::from([
            (ADMIN, Policy { statements: vec![allow(everything, "*", "Everything")] }),
            (OPERATOR, Policy { statements: vec![allow(operator, "*", "AllButAccess")] }),
            (DEVELOPER, Policy { statements: vec![allow(reads(), "*", "Read"), on_team, team_secrets] }),
            (APPROVER, Policy { statements: vec![allow(reads(), "*", "Read"), approve] }),
            (VIEWER, Policy { statements: vec![allow(reads(), "*", "Read")] }),
        ])
    })
}

/// A built-in role's policy.
pub fn builtin(name: &str) -> Option<&'static Policy> {
    policies().get(name)
}

/// What a webhook delivery may do: deliver.
pub fn webhook() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| Policy { statements: vec![allow(vec!["sluice:DeliverWebhook".into()], "pipeline/*", "Deliver")] })
}

/// What a job key may reach: the S3 subset (which checks the job's own grant).
pub fn job_key() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| Policy {
        statements: vec![allow(vec!["s3:GetObject".into(), "s3:PutObject".into()], "job/*", "JobArtifacts")],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roles_are_valid_documents_naming_real_actions() {
        for name in BUILTIN {
            let policy = builtin(name).unwrap();
            let text = policy.to_value().to_string();
            assert_eq!(&Policy::parse(&text, known_actions()).unwrap(), policy, "{name}");
        }
        for action in ADMIN_ONLY.iter().chain(NOT_READS).chain(DEVELOPER_ON_TEAM) {
            assert!(known_actions().contains(action), "{action} is not an operation's permission");
        }
        let reads = reads();
        assert!(reads.contains(&"codepipeline:GetPipelineState".to_string()));
        assert!(reads.contains(&"sluice:GetExecutionLogs".to_string()));
        assert!(!reads.iter().any(|r| r.contains("Secret") || r.contains("Token") || r.contains("AccessKey")));
    }

    #[test]
    fn artifacts_are_for_operators_admins_and_a_developer_on_its_team_not_viewers_or_approvers() {
        // Artifacts are not masked as logs are: a read role must not carry them.
        assert!(!reads().contains(&"sluice:GetArtifact".to_string()));
        assert!(reads().contains(&"sluice:GetExecutionLogs".to_string()));
        // Whether a statement of the role (with a team condition, or without) allows it.
        let has = |role: &str, on_team: bool| {
            builtin(role)
                .unwrap()
                .statements
                .iter()
                .any(|s| s.team.is_some() == on_team && s.actions.iter().any(|a| a == "*" || a == "sluice:GetArtifact"))
        };
        for role in [ADMIN, OPERATOR] {
            assert!(has(role, false), "{role}");
        }
        assert!(has(DEVELOPER, true), "a developer downloads its team's artifacts");
        assert!(!has(DEVELOPER, false), "but not another team's");
        for role in [VIEWER, APPROVER] {
            assert!(!has(role, true) && !has(role, false), "{role}");
        }
    }
}
