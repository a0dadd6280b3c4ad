//! `sluice user` (named users of the admin API), `sluice token` (their
//! API tokens) and `sluice access-key` (their keys for the AWS CLI and
//! SDKs). Admin role only.

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{
    CreateAccessKey, CreateApiToken, CreateUser, DeleteUser, ListAccessKeys, ListApiTokens, ListUsers, RevokeAccessKey,
    RevokeApiToken, SetUserRole,
};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user with a role (built-in: admin, operator, developer,
    /// approver, viewer; or a custom role), optionally in a team.
    Create {
        name: String,
        #[arg(long, default_value = "operator")]
        role: String,
        /// A team the user joins.
        #[arg(long)]
        team: Option<String>,
    },
    /// List users.
    List,
    /// Delete a user: its tokens and access keys stop working at once.
    Delete { name: String },
    /// Give a user another role (built-in or custom); follows at once.
    SetRole { name: String, role: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create an API token for a user; prints it alone, once.
    Create {
        #[arg(long)]
        user: String,
    },
    /// List API tokens (never their secrets).
    List,
    /// Revoke an API token: it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum AccessKeyCmd {
    /// Create an access key for a user; prints its id and secret, once.
    Create {
        #[arg(long)]
        user: String,
    },
    /// List access keys (never their secrets).
    List,
    /// Revoke an access key: requests signed with it fail at once.
    Revoke { id: String },
}

pub async fn run(ctx: &Ctx, cmd: UserCmd) -> Result<i32, Failure> {
    match cmd {
        UserCmd::Create { name, role, team } => {
            let out = ctx.client()?.call(CreateUser { name: name.clone(), role: Some(role.clone()), team }).await?;
            ctx.output.print(&out, |_| format!("user {name} created ({role})\n"));
        }
        UserCmd::List => {
            let out = ctx.client()?.call(ListUsers {}).await?;
            ctx.output.print(&out, |out| user_table().render(items(&out["users"])));
        }
        UserCmd::Delete { name } => {
            let out = ctx.client()?.call(DeleteUser { name: name.clone() }).await?;
            ctx.output.print(&out, |_| format!("user {name} deleted; its tokens and access keys are revoked\n"));
        }
        UserCmd::SetRole { name, role } => {
            let out = ctx.client()?.call(SetUserRole { name: name.clone(), role: role.clone() }).await?;
            ctx.output.print(&out, |_| format!("user {name} now has role {role}\n"));
        }
    }
    Ok(0)
}

fn user_table() -> Table<Value> {
    let teams = |u: &Value| {
        let names: Vec<String> = items(&u["teams"]).map(s).collect();
        if names.is_empty() { "-".to_string() } else { names.join(",") }
    };
    columns![Value;
        ("NAME", |u| s(&u["name"])),
        ("ROLE", |u| s(&u["role"])),
        ("TEAMS", teams),
        ("CREATED", |u| s(&u["created"]))]
}

pub async fn run_token(ctx: &Ctx, cmd: TokenCmd) -> Result<i32, Failure> {
    match cmd {
        TokenCmd::Create { user } => {
            let out = ctx.client()?.call(CreateApiToken { user }).await?;
            ctx.output.print(&out, |out| format!("{}\n", s(&out["token"])));
        }
        TokenCmd::List => {
            let out = ctx.client()?.call(ListApiTokens {}).await?;
            ctx.output.print(&out, |out| token_table().render(items(&out["tokens"])));
        }
        TokenCmd::Revoke { id } => {
            let out = ctx.client()?.call(RevokeApiToken { id: id.clone() }).await?;
            ctx.output.print(&out, |_| format!("token {id} revoked\n"));
        }
    }
    Ok(0)
}

pub async fn run_access_key(ctx: &Ctx, cmd: AccessKeyCmd) -> Result<i32, Failure> {
    match cmd {
        AccessKeyCmd::Create { user } => {
            let out = ctx.client()?.call(CreateAccessKey { user }).await?;
            ctx.output.print(&out, access_key_prose);
        }
        AccessKeyCmd::List => {
            let out = ctx.client()?.call(ListAccessKeys {}).await?;
            ctx.output.print(&out, |out| access_key_table().render(items(&out["accessKeys"])));
        }
        AccessKeyCmd::Revoke { id } => {
            let out = ctx.client()?.call(RevokeAccessKey { id: id.clone() }).await?;
            ctx.output.print(&out, |_| format!("access key {id} revoked\n"));
        }
    }
    Ok(0)
}

/// The two lines `aws configure` asks for.
fn access_key_prose(out: &Value) -> String {
    format!("aws_access_key_id = {}\naws_secret_access_key = {}\n", s(&out["accessKeyId"]), s(&out["secretAccessKey"]))
}

fn access_key_table() -> Table<Value> {
    columns![Value;
        ("ACCESS KEY ID", |k| s(&k["accessKeyId"])),
        ("USER", |k| s(&k["user"])),
        ("CREATED", |k| s(&k["created"])),
        ("REVOKED", |k| s(&k["revoked"])),
    ]
}

fn token_table() -> Table<Value> {
    columns![Value;
        ("ID", |t| s(&t["id"])),
        ("USER", |t| s(&t["user"])),
        ("CREATED", |t| s(&t["created"])),
        ("REVOKED", |t| s(&t["revoked"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Output;
    use serde_json::json;

    #[test]
    fn token_create_prints_the_secret_alone_or_the_reply() {
        let reply = json!({"id": "tok-1", "user": "alice", "token": "sl_secret"});
        let prose = |out: &Value| format!("{}\n", s(&out["token"]));
        assert_eq!(Output::Table.render(&reply, prose), "sl_secret\n");
        let printed: Value = serde_json::from_str(&Output::Json.render(&reply, prose)).unwrap();
        assert_eq!(printed, reply);
    }

    #[test]
    fn access_key_create_prints_the_credentials_file_lines_or_the_reply() {
        let reply = json!({"accessKeyId": "AKSLX", "secretAccessKey": "s/k", "user": "ann"});
        assert_eq!(
            Output::Table.render(&reply, access_key_prose),
            "aws_access_key_id = AKSLX\naws_secret_access_key = s/k\n"
        );
        let printed: Value = serde_json::from_str(&Output::Json.render(&reply, access_key_prose)).unwrap();
        assert_eq!(printed, reply);
        let keys = json!([{"accessKeyId": "AKSLX", "user": "ann", "created": "c", "revoked": false}]);
        assert_eq!(
            access_key_table().render(items(&keys)),
            "ACCESS KEY ID  USER  CREATED  REVOKED\nAKSLX          ann   c        false\n"
        );
    }

    #[test]
    fn the_user_and_token_tables() {
        let users = json!([{"name": "admin", "role": "admin", "created": "c1"},
                           {"name": "alice", "role": "operator", "created": "c2", "teams": ["web", "qa"]}]);
        assert_eq!(
            user_table().render(items(&users)),
            "NAME   ROLE      TEAMS   CREATED\nadmin  admin     -       c1\nalice  operator  web,qa  c2\n"
        );
        let tokens = json!([{"id": "t1", "user": "alice", "created": "c", "revoked": null}]);
        assert_eq!(token_table().render(items(&tokens)), "ID  USER   CREATED  REVOKED\nt1  alice  c        -\n");
    }
}
