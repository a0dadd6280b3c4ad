//! Permissions in the driver (issue 15, policy): every call is checked
//! here, once, against the caller's policies on the operation's resource,
//! whatever transport brought it; and the directory the checks read is
//! loaded at start and kept in step with the store.

use super::Driver;
use crate::auth::Caller;
use crate::ops::{OpError, Request};
use crate::policy::records::{self, Stored, TeamRecord};
use anyhow::Result;
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
            _ => snapshot.owner_of(&resource),
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
    #[allow(dead_code)] // RemoveTeamMember, next commit
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
