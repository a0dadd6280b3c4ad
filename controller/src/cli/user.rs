//! `sluice user` (named users of the admin API) and `sluice token` (their
//! API tokens). Admin role only.

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{CreateApiToken, CreateUser, ListApiTokens, ListUsers, RevokeApiToken};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user (role operator unless --role admin).
    Create {
        name: String,
        #[arg(long, default_value = "operator", value_parser = ["operator", "admin"])]
        role: String,
    },
    /// List users.
    List,
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

pub async fn run(ctx: &Ctx, cmd: UserCmd) -> Result<i32, Failure> {
    match cmd {
        UserCmd::Create { name, role } => {
            let out = ctx.client()?.call(CreateUser { name: name.clone(), role: Some(role.clone()) }).await?;
            ctx.output.print(&out, |_| format!("user {name} created ({role})\n"));
        }
        UserCmd::List => {
            let out = ctx.client()?.call(ListUsers {}).await?;
            ctx.output.print(&out, |out| user_table().render(items(&out["users"])));
        }
    }
    Ok(0)
}

fn user_table() -> Table<Value> {
    columns![Value; ("NAME", |u| s(&u["name"])), ("ROLE", |u| s(&u["role"])), ("CREATED", |u| s(&u["created"]))]
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
    fn the_user_and_token_tables() {
        let users = json!([{"name": "admin", "role": "admin", "created": "c1"}, {"name": "alice", "role": "operator", "created": "c2"}]);
        assert_eq!(
            user_table().render(items(&users)),
            "NAME   ROLE      CREATED\nadmin  admin     c1\nalice  operator  c2\n"
        );
        let tokens = json!([{"id": "t1", "user": "alice", "created": "c", "revoked": null}]);
        assert_eq!(token_table().render(items(&tokens)), "ID  USER   CREATED  REVOKED\nt1  alice  c        -\n");
    }
}
