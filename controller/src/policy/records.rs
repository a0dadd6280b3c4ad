//! How the directory is stored: one row per team, custom role, delegation
//! and pipeline owner in the store's `directory` table (kind, name,
//! record JSON), read back into a [`Snapshot`] at start.

use super::{Grant, Policy, Snapshot, TeamEntry, UserEntry};
use crate::store::Change;
use serde::{Deserialize, Serialize};

pub const TEAM: &str = "team";
pub const ROLE: &str = "role";
pub const GRANT: &str = "grant";
pub const PIPELINE_TEAM: &str = "pipeline-team";
pub const SECRET_TEAM: &str = "secret-team";
/// Who set a pipeline's webhook secret (and so can start its executions).
pub const WEBHOOK_HOLDER: &str = "webhook-holder";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookHolderRecord {
    pub pipeline: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub members: Vec<String>,
    pub created_at: u64,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The policy document as given (checked when created).
    pub policy: serde_json::Value,
    pub created_at: u64,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    pub owner: String,
    pub to: String,
    pub role: String,
    pub created_at: u64,
    pub granted_by: String,
}

impl GrantRecord {
    pub fn key(owner: &str, to: &str, role: &str) -> String {
        format!("{owner}/{to}/{role}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTeamRecord {
    pub pipeline: String,
    pub team: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretTeamRecord {
    pub secret: String,
    pub team: String,
}

/// The change that stores `record` under `kind`/`name`.
pub fn put<T: Serialize>(kind: &str, name: &str, record: &T) -> Change {
    let record = serde_json::to_string(record).expect("directory records serialize");
    Change::Directory { kind: kind.into(), name: name.into(), record: Some(record) }
}

pub fn delete(kind: &str, name: &str) -> Change {
    Change::Directory { kind: kind.into(), name: name.into(), record: None }
}

/// Everything the store holds, typed; entries that do not read are
/// reported, not fatal (one bad row must not stop the controller: it just
/// grants nothing).
#[derive(Debug, Default)]
pub struct Stored {
    pub teams: Vec<TeamRecord>,
    pub roles: Vec<RoleRecord>,
    pub grants: Vec<GrantRecord>,
    pub pipeline_teams: Vec<PipelineTeamRecord>,
    pub secret_teams: Vec<SecretTeamRecord>,
    pub webhook_holders: Vec<WebhookHolderRecord>,
    pub unreadable: Vec<String>,
}

impl Stored {
    pub fn read(entries: Vec<(String, String, String)>) -> Self {
        let mut stored = Self::default();
        for (kind, name, record) in entries {
            let read = match kind.as_str() {
                TEAM => serde_json::from_str(&record).map(|r| stored.teams.push(r)),
                ROLE => serde_json::from_str(&record).map(|r| stored.roles.push(r)),
                GRANT => serde_json::from_str(&record).map(|r| stored.grants.push(r)),
                PIPELINE_TEAM => serde_json::from_str(&record).map(|r| stored.pipeline_teams.push(r)),
                SECRET_TEAM => serde_json::from_str(&record).map(|r| stored.secret_teams.push(r)),
                WEBHOOK_HOLDER => serde_json::from_str(&record).map(|r| stored.webhook_holders.push(r)),
                _ => Ok(()),
            };
            if let Err(e) = read {
                stored.unreadable.push(format!("{kind} {name}: {e}"));
            }
        }
        stored
    }

    /// The snapshot of these records and the users `(name, role)`.
    pub fn snapshot(&self, users: impl IntoIterator<Item = (String, String)>) -> Snapshot {
        let users = users.into_iter().map(|(name, role)| (name, UserEntry { role })).collect();
        let mut snapshot = Snapshot { users, ..Snapshot::default() };
        for team in &self.teams {
            snapshot.teams.insert(team.name.clone(), TeamEntry { members: team.members.iter().cloned().collect() });
        }
        for role in &self.roles {
            // Checked when created; a role that no longer reads (an action
            // renamed) grants nothing rather than stopping the controller.
            if let Ok(policy) = Policy::from_value(&role.policy, super::roles::known_actions()) {
                snapshot.roles.insert(role.name.clone(), policy);
            }
        }
        for g in &self.grants {
            snapshot.grants.insert(Grant { owner: g.owner.clone(), to: g.to.clone(), role: g.role.clone() });
        }
        for p in &self.pipeline_teams {
            snapshot.pipeline_teams.insert(p.pipeline.clone(), p.team.clone());
        }
        for s in &self.secret_teams {
            snapshot.secret_teams.insert(s.secret.clone(), s.team.clone());
        }
        snapshot
    }
}
