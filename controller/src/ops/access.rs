//! Permissions (issue 15, policy): teams and their members, custom roles,
//! delegations between teams, users' roles, and what a caller may do.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CreateTeam.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListTeams {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListTeamsOutput {
    pub teams: Vec<TeamView>,
}

/// GetTeam: members, pipelines, and the delegations given and received.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetTeam {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamView {
    pub name: String,
    pub description: String,
    pub members: Vec<String>,
    pub pipelines: Vec<String>,
    /// Roles this team grants other teams on its resources.
    pub grants_given: Vec<GrantView>,
    /// Roles other teams grant this team on theirs.
    pub grants_received: Vec<GrantView>,
    pub created: String,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    /// The team whose resources the role covers.
    pub owner: String,
    /// The team whose members hold it.
    pub to: String,
    pub role: String,
    pub created: String,
    pub granted_by: String,
}

/// DeleteTeam: refused while it owns pipelines; its delegations go with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteTeam {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteTeamOutput {
    pub name: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddTeamMember {
    pub team: String,
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveTeamMember {
    pub team: String,
    pub user: String,
}

/// GrantTeamRole: `team` grants `role` on its resources to the members of
/// `to` (CodePipeline's cross-account role).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantTeamRole {
    pub team: String,
    pub to: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeTeamRole {
    pub team: String,
    pub to: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeTeamRoleOutput {
    pub owner: String,
    pub to: String,
    pub role: String,
    pub revoked: bool,
}

/// CreateRole: a custom role from an IAM-shaped policy document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub policy: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRoles {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListRolesOutput {
    pub roles: Vec<RoleView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRole {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    pub name: String,
    pub builtin: bool,
    pub description: String,
    pub policy: Value,
    /// Users holding it directly.
    pub users: Vec<String>,
    /// Delegations that grant it.
    pub grants: Vec<GrantView>,
}

/// DeleteRole: refused while a user holds it or a delegation grants it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRole {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRoleOutput {
    pub name: String,
    pub deleted: bool,
}

/// DeleteUser: its tokens and access keys stop working at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteUser {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteUserOutput {
    pub name: String,
    pub deleted: bool,
}

/// SetUserRole: the user's own role; follows at once on every interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetUserRole {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhoAmI {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmIOutput {
    pub user: String,
    /// How the caller proved who it is: `token`, `access-key:ID`.
    pub via: String,
    pub teams: Vec<String>,
    pub roles: Vec<String>,
    /// Every statement the caller holds, and through what.
    pub statements: Vec<HeldStatement>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldStatement {
    /// `role developer`, `role approver granted by team web to team qa`.
    pub through: String,
    /// Delegated roles cover only this team's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_team: Option<String>,
    pub statement: Value,
}

/// CheckAccess (`sluice can`): whether the caller may use `action` (an
/// action such as `codepipeline:StartPipelineExecution`, or an operation
/// name) on `resource`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckAccess {
    pub action: String,
    pub resource: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckAccessOutput {
    pub allowed: bool,
    pub action: String,
    pub resource: String,
    /// `allowed by ...`, `denied by ...`, or `no statement allows it`.
    pub decided_by: String,
}
