//! Permissions in the driver (issue 15, policy): every call is checked
//! here, once, against the caller's policies on the operation's resource,
//! whatever transport brought it; and the directory the checks read is
//! loaded at start and kept in step with the store.

use super::Driver;
use crate::auth::Caller;
use crate::ops::{CheckAccess, CheckAccessOutput, Context, Handle, HeldStatement, OpError, Request, WhoAmI, WhoAmIOutput};
use crate::policy::Decision;
use crate::policy::records::{self, Stored, TeamRecord};
use anyhow::Result;
use std::collections::BTreeMap;
use tracing::warn;

impl Driver {
    /// Fills the directory at start from the store.
    pub(super) fn recover_directory(&mut self) -> Result<()> {
        let stored = Stored::read(self.store.directory_entries()?);
        for problem in &stored.unreadable {
            warn!("directory entry is unreadable and grants nothing: {problem}");
        }
        let users = self.store.users()?.into_iter().map(|u| (u.name, u.role));
        let snapshot = stored.snapshot(users);
        self.directory.update(|s| *s = snapshot);
        Ok(())
    }

    /// Whether `caller` may make `request`: its permission on its resource.
    /// A pipeline being created is checked as owned by the team it will
    /// belong to.
    pub(super) fn authorize_call(&self, request: &Request, caller: &Caller) -> Result<(), OpError> {
        let snapshot = self.directory.snapshot();
        let resource = request.resource();
        let owner = match request {
            Request::CreatePipeline(op) => self.team_for_new_pipeline(op.team.as_deref(), caller)?,
            _ => snapshot.owner_of(&resource).map(str::to_string),
        };
        snapshot.check_owned(caller, request.permission(), &resource, owner.as_deref())
    }

    /// The team a new pipeline gets: the one asked for (which must exist),
    /// else the creator's when it is in exactly one team, else none.
    pub(super) fn team_for_new_pipeline(&self, asked: Option<&str>, caller: &Caller) -> Result<Option<String>, OpError> {
        let snapshot = self.directory.snapshot();
        match asked {
            Some(team) if snapshot.teams.contains_key(team) => Ok(Some(team.to_string())),
            Some(team) => Err(OpError::NotFound(format!("team \"{team}\" does not exist"))),
            None => {
                let teams = snapshot.teams_of(&caller.user);
                Ok(if teams.len() == 1 { teams.into_iter().next() } else { None })
            }
        }
    }
}

/// Whether a user joins or leaves a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Membership {
    Join,
    Leave,
}

impl Driver {
    /// A role name that is built in or custom.
    pub(super) fn check_role_exists(&self, role: &str) -> Result<(), OpError> {
        if self.directory.snapshot().role(role).is_some() {
            return Ok(());
        }
        let custom: Vec<String> = self.directory.snapshot().roles.keys().cloned().collect();
        let mut known: Vec<String> = crate::policy::roles::BUILTIN.iter().map(|r| r.to_string()).collect();
        known.extend(custom);
        Err(OpError::invalid(format!("unknown role {role:?}; roles are {}", known.join(", "))))
    }

    /// The stored team `team` with `user` joining or leaving, as a change
    /// to commit; the team must exist.
    pub(super) fn team_with_member(&self, team: &str, user: &str, how: Membership) -> Result<crate::store::Change, OpError> {
        let mut record = self.team_record(team)?;
        record.members.retain(|m| m != user);
        if how == Membership::Join {
            record.members.push(user.to_string());
            record.members.sort();
        }
        Ok(records::put(records::TEAM, team, &record))
    }

    pub(super) fn team_record(&self, team: &str) -> Result<TeamRecord, OpError> {
        let stored = Stored::read(self.store.directory_entries()?);
        stored.teams.into_iter().find(|t| t.name == team).ok_or_else(|| {
            OpError::NotFound(format!("team \"{team}\" does not exist; create it with `sluice team create {team}`"))
        })
    }
}

impl Handle<WhoAmI> for Driver {
    fn handle(&mut self, _: WhoAmI, ctx: &Context) -> Result<WhoAmIOutput, OpError> {
        let snapshot = self.directory.snapshot();
        let caller = &ctx.caller;
        let (_, held) = snapshot.holdings(caller);
        let statements = held
            .iter()
            .flat_map(|h| {
                h.policy.statements.iter().map(|s| HeldStatement {
                    through: h.through.clone(),
                    only_team: h.only_owner.clone(),
                    statement: s.to_value(),
                })
            })
            .collect();
        Ok(WhoAmIOutput {
            user: caller.user.clone(),
            via: caller.via.to_string(),
            teams: snapshot.teams_of(&caller.user),
            roles: self.directory.roles_of(&caller.user),
            statements,
        })
    }
}

impl Handle<CheckAccess> for Driver {
    fn handle(&mut self, op: CheckAccess, ctx: &Context) -> Result<CheckAccessOutput, OpError> {
        // An operation's name stands for its permission.
        let action = match crate::ops::permission_of(&op.action) {
            Some(permission) => permission.to_string(),
            None if op.action.contains(':') => op.action.clone(),
            None => {
                return Err(OpError::invalid(format!(
                    "{:?} is neither an operation (StartPipelineExecution) nor an action (codepipeline:StartPipelineExecution)",
                    op.action
                )));
            }
        };
        if !crate::policy::roles::known_actions().contains(&action.as_str()) {
            return Err(OpError::invalid(format!("unknown action {action:?}")));
        }
        let decision = self.directory.snapshot().decide(&ctx.caller, &action, &op.resource);
        let decided_by = match &decision {
            Decision::Allowed(by) => format!("allowed by {by}"),
            Decision::Denied(by) => format!("denied by {by}"),
            Decision::NoAllow => "no statement allows it".to_string(),
        };
        Ok(CheckAccessOutput { allowed: decision.is_allowed(), action, resource: op.resource, decided_by })
    }
}

impl Driver {
    /// What creating or updating a pipeline needs beyond the operation's
    /// own permission: `sluice:UseSecret` on every secret it grants (each
    /// time, so that an update by someone without it cannot keep a grant
    /// someone else made), and, on an update, `sluice:EditApprovalAction`
    /// on every manual approval it adds, changes or removes.
    pub(super) fn check_pipeline_edit(
        &self,
        caller: &Caller,
        declaration: &crate::pipeline::Declaration,
        before: Option<&crate::pipeline::Pipeline>,
        new_team: Option<&str>,
    ) -> Result<(), OpError> {
        let snapshot = self.directory.snapshot();
        let name = &declaration.pipeline.name;
        // A pipeline being created has the team it is about to get.
        let owner = match before {
            Some(_) => snapshot.pipeline_teams.get(name).cloned(),
            None => new_team.map(str::to_string),
        };
        for secret in crate::secrets::granted(declaration) {
            let resource = crate::policy::named("secret", &secret);
            let secret_owner = snapshot.owner_of(&resource);
            // A team's secret in a pipeline of another team (or of none):
            // a holding limited to the secret's team (its developers, a
            // delegation from it) does not reach that far; only a grant of
            // UseSecret on the secret beyond team lines (operator, admin,
            // a custom role without the team condition) does.
            let owner = if secret_owner.is_some() && secret_owner != owner.as_deref() { None } else { secret_owner };
            snapshot.check_owned(caller, USE_SECRET, &resource, owner)?;
        }
        let Some(before) = before else { return Ok(()) };
        let (old, new) = (approvals(before), approvals(&declaration.pipeline));
        // An approval is edited out as surely by what surrounds it as by
        // removing it: a stage condition that skips its stage, an action
        // run before it in its stage, a stage moved ahead of it. So when
        // anything from the first approval's stage on changes, every
        // approval counts as touched; stages before it stay free to edit.
        let gates_changed = guarded_stages(before) != guarded_stages(&declaration.pipeline);
        let touched = old.keys().chain(new.keys()).filter(|key| gates_changed || old.get(*key) != new.get(*key));
        let touched: std::collections::BTreeSet<_> = touched.collect();
        check_edit_approvals(&snapshot, caller, name, owner.as_deref(), touched)
    }

    /// Deleting a pipeline drops its approvals with it: that needs
    /// `sluice:EditApprovalAction` on each, as removing them would.
    pub(super) fn check_pipeline_delete(&self, caller: &Caller, before: &crate::pipeline::Pipeline) -> Result<(), OpError> {
        let snapshot = self.directory.snapshot();
        let name = &before.name;
        let owner = snapshot.pipeline_teams.get(name).cloned();
        check_edit_approvals(&snapshot, caller, name, owner.as_deref(), approvals(before).keys())
    }
}

/// `sluice:EditApprovalAction` on each of `pipeline`'s approvals named.
fn check_edit_approvals<'a>(
    snapshot: &crate::policy::Snapshot,
    caller: &Caller,
    pipeline: &str,
    owner: Option<&str>,
    approvals: impl IntoIterator<Item = &'a (String, String)>,
) -> Result<(), OpError> {
    for (stage, action) in approvals {
        snapshot.check_owned(caller, EDIT_APPROVAL, &crate::policy::action(pipeline, stage, action), owner)?;
    }
    Ok(())
}

/// The stages an approval guards: from the first stage holding a manual
/// approval to the last (none when the pipeline has no approval).
fn guarded_stages(pipeline: &crate::pipeline::Pipeline) -> &[crate::pipeline::Stage] {
    let first = pipeline.stages.iter().position(|s| s.actions.iter().any(|a| a.action_type_id.category == "Approval"));
    first.map_or(&[], |i| &pipeline.stages[i..])
}

const USE_SECRET: &str = "sluice:UseSecret";
const EDIT_APPROVAL: &str = "sluice:EditApprovalAction";

/// The manual approval actions of a pipeline, by (stage, action).
fn approvals(pipeline: &crate::pipeline::Pipeline) -> BTreeMap<(String, String), &crate::pipeline::Action> {
    let mut found = BTreeMap::new();
    for stage in &pipeline.stages {
        for action in stage.actions.iter().filter(|a| a.action_type_id.category == "Approval") {
            found.insert((stage.name.clone(), action.name.clone()), action);
        }
    }
    found
}
