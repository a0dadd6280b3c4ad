//! Custom roles (issue 15, policy): IAM-shaped policy documents, checked
//! when created, listed beside the built-in ones.

use super::Driver;
use super::teams::{check_name, grant_view};
use crate::ops::{
    Context, CreateRole, DeleteRole, DeleteRoleOutput, GetRole, Handle, ListRoles, ListRolesOutput, OpError, RoleView,
};
use crate::policy::records::{self, RoleRecord, Stored};
use crate::policy::{Policy, roles};
use tracing::info;

impl Driver {
    fn role_view(&self, stored: &Stored, name: &str) -> Result<RoleView, OpError> {
        let custom = stored.roles.iter().find(|r| r.name == name);
        let (policy, description, builtin) = match (roles::builtin(name), custom) {
            (Some(policy), _) => (policy.to_value(), builtin_description(name).to_string(), true),
            (None, Some(role)) => (role.policy.clone(), role.description.clone(), false),
            (None, None) => return Err(OpError::NotFound(format!("role \"{name}\" does not exist"))),
        };
        let users = self.store.users()?.into_iter().filter(|u| u.role == name).map(|u| u.name).collect();
        let grants = stored.grants.iter().filter(|g| g.role == name).map(grant_view).collect();
        Ok(RoleView { name: name.to_string(), builtin, description, policy, users, grants })
    }
}

fn builtin_description(name: &str) -> &'static str {
    match name {
        roles::ADMIN => "everything",
        roles::OPERATOR => "everything but users, tokens, access keys, teams, roles, join tokens, agent labels, publishers",
        roles::DEVELOPER => "reads; creates, edits and runs its team's pipelines",
        roles::APPROVER => "reads; approves or rejects manual approvals",
        roles::VIEWER => "reads",
        _ => "",
    }
}

impl Handle<CreateRole> for Driver {
    fn handle(&mut self, op: CreateRole, ctx: &Context) -> Result<RoleView, OpError> {
        check_name("role", &op.name)?;
        if roles::builtin(&op.name).is_some() || self.directory.snapshot().roles.contains_key(&op.name) {
            return Err(OpError::Conflict(format!("role \"{}\" already exists", op.name)));
        }
        let policy = Policy::from_value(&op.policy, roles::known_actions()).map_err(|e| OpError::invalid(e.to_string()))?;
        let record = RoleRecord {
            name: op.name.clone(),
            description: op.description,
            policy: op.policy,
            created_at: ctx.now,
            created_by: ctx.caller.user.clone(),
        };
        self.commit(ctx.now, vec![records::put(records::ROLE, &op.name, &record)])?;
        self.directory.update(|d| {
            d.roles.insert(op.name.clone(), policy);
        });
        info!(role = %op.name, by = %ctx.caller.user, "role created");
        let stored = Stored::read(self.store.directory_entries()?);
        self.role_view(&stored, &op.name)
    }
}

impl Handle<ListRoles> for Driver {
    fn handle(&mut self, _: ListRoles, _: &Context) -> Result<ListRolesOutput, OpError> {
        let stored = Stored::read(self.store.directory_entries()?);
        let names = roles::BUILTIN.iter().map(|r| r.to_string()).chain(stored.roles.iter().map(|r| r.name.clone()));
        let roles = names.map(|name| self.role_view(&stored, &name)).collect::<Result<_, _>>()?;
        Ok(ListRolesOutput { roles })
    }
}

impl Handle<GetRole> for Driver {
    fn handle(&mut self, op: GetRole, _: &Context) -> Result<RoleView, OpError> {
        let stored = Stored::read(self.store.directory_entries()?);
        self.role_view(&stored, &op.name)
    }
}

impl Handle<DeleteRole> for Driver {
    fn handle(&mut self, op: DeleteRole, ctx: &Context) -> Result<DeleteRoleOutput, OpError> {
        if roles::builtin(&op.name).is_some() {
            return Err(OpError::invalid(format!("role \"{}\" is built in and cannot be deleted", op.name)));
        }
        let stored = Stored::read(self.store.directory_entries()?);
        let view = self.role_view(&stored, &op.name)?;
        if !view.users.is_empty() || !view.grants.is_empty() {
            let grants: Vec<String> = view.grants.iter().map(|g| format!("team {} to team {}", g.owner, g.to)).collect();
            return Err(OpError::Conflict(format!(
                "role \"{}\" is in use (users: {}; grants: {}): give them another role first",
                op.name,
                if view.users.is_empty() { "none".into() } else { view.users.join(", ") },
                if grants.is_empty() { "none".into() } else { grants.join(", ") },
            )));
        }
        self.commit(ctx.now, vec![records::delete(records::ROLE, &op.name)])?;
        self.directory.update(|d| {
            d.roles.remove(&op.name);
        });
        info!(role = %op.name, by = %ctx.caller.user, "role deleted");
        Ok(DeleteRoleOutput { name: op.name, deleted: true })
    }
}
