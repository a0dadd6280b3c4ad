//! `sluice team`, `sluice role`, `sluice whoami` and `sluice can`
//! (permissions, issue 15): who is in which team, what each role allows,
//! which team grants which role to which other, and what the caller may do.

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{
    AddTeamMember, CheckAccess, CreateRole, CreateTeam, DeleteRole, DeleteTeam, GetRole, GetTeam, GrantTeamRole, ListRoles,
    ListTeams, RemoveTeamMember, RevokeTeamRole, WhoAmI,
};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum TeamCmd {
    /// Create a team.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List teams.
    List,
    /// A team: members, pipelines, roles it grants and is granted.
    Show { name: String },
    /// Delete a team (refused while it owns pipelines).
    Delete { name: String },
    /// Add a user to a team.
    AddMember { team: String, user: String },
    /// Remove a user from a team.
    RemoveMember { team: String, user: String },
    /// Grant ROLE on OWNER's resources to the members of another team.
    Grant {
        /// The team whose resources (pipelines) the role covers.
        owner: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        role: String,
    },
    /// Revoke a grant.
    Revoke {
        owner: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Create a custom role from an IAM-shaped JSON policy file.
    Create {
        name: String,
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List roles, built-in and custom.
    List,
    /// A role's policy, and who holds it.
    Show { name: String },
    /// Delete a custom role (refused while in use).
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct CanArgs {
    /// An operation (StartPipelineExecution) or action (codepipeline:StartPipelineExecution).
    pub operation: String,
    /// A resource: pipeline/NAME, pipeline/NAME/STAGE/ACTION, secret/NAME, agent/ID, team/NAME, `*`.
    pub resource: String,
}

fn grants(v: &Value) -> String {
    let list: Vec<String> = items(v)
        .map(|g| format!("{} on team {}'s resources to team {}", s(&g["role"]), s(&g["owner"]), s(&g["to"])))
        .collect();
    if list.is_empty() { "-".into() } else { list.join("; ") }
}

fn list(v: &Value) -> String {
    let names: Vec<String> = items(v).map(s).collect();
    if names.is_empty() { "-".into() } else { names.join(", ") }
}

fn team_prose(t: &Value) -> String {
    format!(
        "team {}\n  members:  {}\n  pipelines: {}\n  grants given:    {}\n  grants received: {}\n",
        s(&t["name"]),
        list(&t["members"]),
        list(&t["pipelines"]),
        grants(&t["grantsGiven"]),
        grants(&t["grantsReceived"])
    )
}

fn team_table() -> Table<Value> {
    columns![Value;
        ("NAME", |t| s(&t["name"])),
        ("MEMBERS", |t| list(&t["members"])),
        ("PIPELINES", |t| list(&t["pipelines"])),
        ("DESCRIPTION", |t| s(&t["description"]))]
}

fn role_table() -> Table<Value> {
    columns![Value;
        ("NAME", |r| s(&r["name"])),
        ("BUILTIN", |r| s(&r["builtin"])),
        ("USERS", |r| list(&r["users"])),
        ("DESCRIPTION", |r| s(&r["description"]))]
}

pub async fn run_team(ctx: &Ctx, cmd: TeamCmd) -> Result<i32, Failure> {
    let client = ctx.client()?;
    let out = match cmd {
        TeamCmd::Create { name, description } => client.call(CreateTeam { name, description }).await?,
        TeamCmd::List => {
            let out = client.call(ListTeams {}).await?;
            ctx.output.print(&out, |out| team_table().render(items(&out["teams"])));
            return Ok(0);
        }
        TeamCmd::Show { name } => client.call(GetTeam { name }).await?,
        TeamCmd::Delete { name } => {
            let out = client.call(DeleteTeam { name: name.clone() }).await?;
            ctx.output.print(&out, |_| format!("team {name} deleted\n"));
            return Ok(0);
        }
        TeamCmd::AddMember { team, user } => client.call(AddTeamMember { team, user }).await?,
        TeamCmd::RemoveMember { team, user } => client.call(RemoveTeamMember { team, user }).await?,
        TeamCmd::Grant { owner, to, role } => {
            let out = client.call(GrantTeamRole { team: owner.clone(), to: to.clone(), role: role.clone() }).await?;
            ctx.output.print(&out, |_| format!("team {owner} grants role {role} on its resources to team {to}\n"));
            return Ok(0);
        }
        TeamCmd::Revoke { owner, to, role } => {
            let out = client.call(RevokeTeamRole { team: owner.clone(), to: to.clone(), role: role.clone() }).await?;
            ctx.output.print(&out, |_| format!("team {owner} no longer grants role {role} to team {to}\n"));
            return Ok(0);
        }
    };
    ctx.output.print(&out, team_prose);
    Ok(0)
}

pub async fn run_role(ctx: &Ctx, cmd: RoleCmd) -> Result<i32, Failure> {
    let client = ctx.client()?;
    match cmd {
        RoleCmd::Create { name, policy, description } => {
            let text = super::read_text(&policy).map_err(|e| Failure::new(2, format!("{e:#}")))?;
            let policy: Value = serde_json::from_str(&text)
                .map_err(|e| Failure::new(2, format!("{}: policy is not JSON: {e}", policy.display())))?;
            let out = client.call(CreateRole { name: name.clone(), description, policy }).await?;
            ctx.output.print(&out, |_| format!("role {name} created\n"));
        }
        RoleCmd::List => {
            let out = client.call(ListRoles {}).await?;
            ctx.output.print(&out, |out| role_table().render(items(&out["roles"])));
        }
        RoleCmd::Show { name } => {
            let out = client.call(GetRole { name }).await?;
            ctx.output.print(&out, |r| {
                format!(
                    "role {} ({})\n  users: {}\n  granted: {}\n{}\n",
                    s(&r["name"]),
                    if r["builtin"] == Value::Bool(true) { "built in" } else { "custom" },
                    list(&r["users"]),
                    grants(&r["grants"]),
                    serde_json::to_string_pretty(&r["policy"]).unwrap_or_default()
                )
            });
        }
        RoleCmd::Delete { name } => {
            let out = client.call(DeleteRole { name: name.clone() }).await?;
            ctx.output.print(&out, |_| format!("role {name} deleted\n"));
        }
    }
    Ok(0)
}

pub async fn run_whoami(ctx: &Ctx) -> Result<i32, Failure> {
    let out = ctx.client()?.call(WhoAmI {}).await?;
    ctx.output.print(&out, |w| {
        let mut text = format!(
            "user:  {}\nvia:   {}\nteams: {}\nroles: {}\nstatements:\n",
            s(&w["user"]),
            s(&w["via"]),
            list(&w["teams"]),
            list(&w["roles"])
        );
        for held in items(&w["statements"]) {
            text += &format!("  {}: {}\n", s(&held["through"]), held["statement"]);
        }
        text
    });
    Ok(0)
}

/// Exit 0 when allowed, 3 when not (as a refused call exits).
pub async fn run_can(ctx: &Ctx, args: CanArgs) -> Result<i32, Failure> {
    let out = ctx.client()?.call(CheckAccess { action: args.operation, resource: args.resource }).await?;
    let allowed = out["allowed"] == Value::Bool(true);
    ctx.output.print(&out, |c| {
        let verdict = if allowed { "allowed" } else { "denied" };
        format!("{verdict}: {} on {} ({})\n", s(&c["action"]), s(&c["resource"]), s(&c["decidedBy"]))
    });
    Ok(if allowed { 0 } else { 3 })
}
