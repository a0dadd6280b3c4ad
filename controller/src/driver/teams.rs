//! Teams, their members and the roles they grant each other (issue 15,
//! policy), in the driver: checked, persisted, then mirrored into the
//! directory so that the next call is decided on them.

use super::Driver;
use super::access::Membership;
use crate::ops::{
    AddTeamMember, Context, CreateTeam, DeleteTeam, DeleteTeamOutput, GetTeam, GrantTeamRole, GrantView, Handle, ListTeams,
    ListTeamsOutput, OpError, RemoveTeamMember, RevokeTeamRole, RevokeTeamRoleOutput, TeamView,
};
use crate::policy::records::{self, GrantRecord, Stored, TeamRecord};
use crate::policy::{Grant, TeamEntry};
use crate::views;
use tracing::info;

/// Team and role names: letters, digits, `.`, `_`, `-`; 1 to 64 characters.
pub(super) fn check_name(kind: &str, name: &str) -> Result<(), OpError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err(OpError::invalid(format!("{kind} name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"))) }
}

pub(super) fn grant_view(g: &GrantRecord) -> GrantView {
    GrantView {
        owner: g.owner.clone(),
        to: g.to.clone(),
        role: g.role.clone(),
        created: views::time(g.created_at),
        granted_by: g.granted_by.clone(),
    }
}

impl Driver {
    fn stored_directory(&self) -> Result<Stored, OpError> {
        Ok(Stored::read(self.store.directory_entries()?))
    }

    fn team_view(&self, stored: &Stored, team: &TeamRecord) -> TeamView {
        let snapshot = self.directory.snapshot();
        let pipelines = snapshot.pipeline_teams.iter().filter(|(_, t)| **t == team.name).map(|(p, _)| p.clone()).collect();
        let given = stored.grants.iter().filter(|g| g.owner == team.name).map(grant_view).collect();
        let received = stored.grants.iter().filter(|g| g.to == team.name).map(grant_view).collect();
        TeamView {
            name: team.name.clone(),
            description: team.description.clone(),
            members: team.members.clone(),
            pipelines,
            grants_given: given,
            grants_received: received,
            created: views::time(team.created_at),
            created_by: team.created_by.clone(),
        }
    }

    fn change_membership(&mut self, team: &str, user: &str, how: Membership, now: u64) -> Result<TeamView, OpError> {
        let exists = self.store.users()?.iter().any(|u| u.name == user);
        if !exists && how == Membership::Join {
            return Err(OpError::NotFound(format!("user \"{user}\" does not exist")));
        }
        let before = self.team_record(team)?;
        if (how == Membership::Join) == before.members.iter().any(|m| m == user) {
            let state = if how == Membership::Join { "already" } else { "not" };
            return Err(OpError::Conflict(format!("user \"{user}\" is {state} a member of team \"{team}\"")));
        }
        self.commit(now, vec![self.team_with_member(team, user, how)?])?;
        self.directory.update(|d| {
            let members = &mut d.teams.entry(team.to_string()).or_default().members;
            match how {
                Membership::Join => members.insert(user.to_string()),
                Membership::Leave => members.remove(user),
            };
        });
        info!(%team, %user, ?how, "team membership changed");
        let stored = self.stored_directory()?;
        Ok(self.team_view(&stored, &self.team_record(team)?))
    }
}

impl Handle<CreateTeam> for Driver {
    fn handle(&mut self, op: CreateTeam, ctx: &Context) -> Result<TeamView, OpError> {
        check_name("team", &op.name)?;
        if self.directory.snapshot().teams.contains_key(&op.name) {
            return Err(OpError::Conflict(format!("team \"{}\" already exists", op.name)));
        }
        let record = TeamRecord {
            name: op.name.clone(),
            description: op.description,
            members: Vec::new(),
            created_at: ctx.now,
            created_by: ctx.caller.user.clone(),
        };
        self.commit(ctx.now, vec![records::put(records::TEAM, &op.name, &record)])?;
        self.directory.update(|d| {
            d.teams.insert(op.name.clone(), TeamEntry::default());
        });
        info!(team = %op.name, by = %ctx.caller.user, "team created");
        Ok(self.team_view(&Stored::default(), &record))
    }
}

impl Handle<ListTeams> for Driver {
    fn handle(&mut self, _: ListTeams, _: &Context) -> Result<ListTeamsOutput, OpError> {
        let stored = self.stored_directory()?;
        Ok(ListTeamsOutput { teams: stored.teams.iter().map(|t| self.team_view(&stored, t)).collect() })
    }
}

impl Handle<GetTeam> for Driver {
    fn handle(&mut self, op: GetTeam, _: &Context) -> Result<TeamView, OpError> {
        let stored = self.stored_directory()?;
        Ok(self.team_view(&stored, &self.team_record(&op.name)?))
    }
}

impl Handle<DeleteTeam> for Driver {
    fn handle(&mut self, op: DeleteTeam, ctx: &Context) -> Result<DeleteTeamOutput, OpError> {
        let team = self.team_record(&op.name)?;
        let snapshot = self.directory.snapshot();
        let owned: Vec<&String> = snapshot.pipeline_teams.iter().filter(|(_, t)| **t == team.name).map(|(p, _)| p).collect();
        if !owned.is_empty() {
            let list = owned.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
            return Err(OpError::Conflict(format!(
                "team \"{}\" owns pipelines ({list}); delete them or create them anew under another team first",
                team.name
            )));
        }
        // Its delegations, given and received, go with it.
        let stored = self.stored_directory()?;
        let mut changes = vec![records::delete(records::TEAM, &team.name)];
        for g in stored.grants.iter().filter(|g| g.owner == team.name || g.to == team.name) {
            changes.push(records::delete(records::GRANT, &GrantRecord::key(&g.owner, &g.to, &g.role)));
        }
        self.commit(ctx.now, changes)?;
        self.directory.update(|d| {
            d.teams.remove(&team.name);
            d.grants.retain(|g| g.owner != team.name && g.to != team.name);
        });
        info!(team = %team.name, by = %ctx.caller.user, "team deleted");
        Ok(DeleteTeamOutput { name: op.name, deleted: true })
    }
}

impl Handle<AddTeamMember> for Driver {
    fn handle(&mut self, op: AddTeamMember, ctx: &Context) -> Result<TeamView, OpError> {
        self.change_membership(&op.team, &op.user, Membership::Join, ctx.now)
    }
}

impl Handle<RemoveTeamMember> for Driver {
    fn handle(&mut self, op: RemoveTeamMember, ctx: &Context) -> Result<TeamView, OpError> {
        self.change_membership(&op.team, &op.user, Membership::Leave, ctx.now)
    }
}

impl Handle<GrantTeamRole> for Driver {
    fn handle(&mut self, op: GrantTeamRole, ctx: &Context) -> Result<GrantView, OpError> {
        self.team_record(&op.team)?;
        self.team_record(&op.to)?;
        self.check_role_exists(&op.role)?;
        if op.team == op.to {
            return Err(OpError::invalid(format!(
                "team \"{}\" cannot grant a role to itself: give its members the role instead",
                op.team
            )));
        }
        let grant = Grant { owner: op.team.clone(), to: op.to.clone(), role: op.role.clone() };
        if self.directory.snapshot().grants.contains(&grant) {
            return Err(OpError::Conflict(format!(
                "team \"{}\" already grants role {} to team \"{}\"",
                op.team, op.role, op.to
            )));
        }
        let record = GrantRecord {
            owner: op.team.clone(),
            to: op.to.clone(),
            role: op.role.clone(),
            created_at: ctx.now,
            granted_by: ctx.caller.user.clone(),
        };
        let key = GrantRecord::key(&op.team, &op.to, &op.role);
        self.commit(ctx.now, vec![records::put(records::GRANT, &key, &record)])?;
        self.directory.update(|d| {
            d.grants.insert(grant);
        });
        info!(owner = %op.team, to = %op.to, role = %op.role, by = %ctx.caller.user, "team role granted");
        Ok(grant_view(&record))
    }
}

impl Handle<RevokeTeamRole> for Driver {
    fn handle(&mut self, op: RevokeTeamRole, ctx: &Context) -> Result<RevokeTeamRoleOutput, OpError> {
        let grant = Grant { owner: op.team.clone(), to: op.to.clone(), role: op.role.clone() };
        if !self.directory.snapshot().grants.contains(&grant) {
            return Err(OpError::NotFound(format!("team \"{}\" grants no role {} to team \"{}\"", op.team, op.role, op.to)));
        }
        let key = GrantRecord::key(&op.team, &op.to, &op.role);
        self.commit(ctx.now, vec![records::delete(records::GRANT, &key)])?;
        self.directory.update(|d| {
            d.grants.remove(&grant);
        });
        info!(owner = %op.team, to = %op.to, role = %op.role, by = %ctx.caller.user, "team role revoked");
        Ok(RevokeTeamRoleOutput { owner: op.team, to: op.to, role: op.role, revoked: true })
    }
}
