//! `sluice agent` (the fleet: list, drain, disable, enable, revoke, label)
//! and `sluice agent-token` (join tokens for enrolling agents).

use super::output::{Table, columns, items, labels, s};
use super::{Ctx, Failure, parse_duration, parse_label_changes, parse_labels};
use crate::ops::{
    CreateAgentToken, DisableAgent, DrainAgent, EnableAgent, LabelAgent, ListAgentTokens, ListAgents, RevokeAgent,
    RevokeAgentToken,
};
use clap::Subcommand;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// List enrolled agents.
    List,
    /// Let the agent finish what it runs and give it nothing new.
    Drain { id: String },
    /// Cut the agent off now; it is refused until enabled again.
    Disable { id: String },
    /// Let a drained or disabled agent take work again.
    Enable { id: String },
    /// Revoke the agent for good: its certificates go on the revocation
    /// list, its live connection is closed and every later handshake is
    /// refused. The host must enroll again with a join token.
    Revoke { id: String },
    /// Set or remove an agent's labels: `KEY=VALUE` sets, `KEY-` removes.
    /// These (and the join token's) are the labels scheduling trusts; `os`
    /// and `arch` are observed from the host and cannot be set. Admin
    /// role only.
    Label {
        id: String,
        #[arg(value_name = "KEY=VALUE|KEY-", required = true)]
        changes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentTokenCmd {
    /// Create a join token; prints it alone (admin role only).
    Create {
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many agents may enroll with it (default: unlimited until expiry).
        #[arg(long)]
        uses: Option<u32>,
        /// Labels given to agents enrolled with it (k=v,...).
        #[arg(long, value_name = "K=V,...")]
        labels: Option<String>,
        /// Label keys an agent enrolled with it may set for itself with
        /// `sluice-agent --labels`; other keys it claims are ignored.
        #[arg(long, value_name = "KEY,...", value_delimiter = ',')]
        allow_agent_labels: Vec<String>,
    },
    /// List join tokens (never their secrets).
    List,
    /// Revoke a join token: no agent can enroll with it any more (admin
    /// role only).
    Revoke { id: String },
}

pub async fn run(ctx: &Ctx, cmd: AgentCmd) -> Result<i32, Failure> {
    let c = ctx.client()?;
    let (id, out) = match cmd {
        AgentCmd::List => {
            let out = c.call(ListAgents {}).await?;
            ctx.output.print(&out, |out| agent_table().render(items(&out["agents"])));
            return Ok(0);
        }
        AgentCmd::Label { id, changes } => {
            let (set, remove) = parse_label_changes(&changes).map_err(|e| Failure::new(2, e))?;
            let out = c.call(LabelAgent { id: id.clone(), set, remove }).await?;
            ctx.output.print(&out, |out| format!("agent {id} labels: {}\n", labels(&out["labels"])));
            return Ok(0);
        }
        AgentCmd::Drain { id } => (id.clone(), c.call(DrainAgent { id }).await?),
        AgentCmd::Disable { id } => (id.clone(), c.call(DisableAgent { id }).await?),
        AgentCmd::Enable { id } => (id.clone(), c.call(EnableAgent { id }).await?),
        AgentCmd::Revoke { id } => (id.clone(), c.call(RevokeAgent { id }).await?),
    };
    ctx.output.print(&out, |out| format!("agent {id} is {}\n", s(&out["state"])));
    Ok(0)
}

fn agent_table() -> Table<Value> {
    columns![Value;
        ("ID", |a| s(&a["id"])),
        ("HOSTNAME", |a| s(&a["hostname"])),
        ("CONNECTION", |a| if a["connected"] == json!(true) { "connected".into() } else { "offline".into() }),
        ("STATE", |a| s(&a["state"])),
        ("RUNNING", |a| format!("{}/{}", s(&a["running"]), s(&a["slots"]))),
        ("LABELS", |a| labels(&a["labels"])),
    ]
}

pub async fn run_token(ctx: &Ctx, cmd: AgentTokenCmd) -> Result<i32, Failure> {
    match cmd {
        AgentTokenCmd::List => {
            let out = ctx.client()?.call(ListAgentTokens {}).await?;
            ctx.output.print(&out, |out| token_table().render(items(&out["agentTokens"])));
        }
        AgentTokenCmd::Revoke { id } => {
            let out = ctx.client()?.call(RevokeAgentToken { id: id.clone() }).await?;
            ctx.output.print(&out, |_| format!("join token {id} revoked\n"));
        }
        AgentTokenCmd::Create { ttl, uses, labels, allow_agent_labels } => {
            let labels = parse_labels(labels.as_deref().unwrap_or("")).map_err(|e| Failure::new(2, e))?;
            let allow: Vec<String> =
                allow_agent_labels.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
            let create = CreateAgentToken { ttl_seconds: ttl.as_secs(), uses, labels, allow_agent_labels: allow };
            let out = ctx.client()?.call(create).await?;
            ctx.output.print(&out, |out| format!("{}\n", s(&out["token"])));
        }
    }
    Ok(0)
}

fn token_table() -> Table<Value> {
    columns![Value;
        ("ID", |t| s(&t["id"])),
        ("STATE", |t| s(&t["state"])),
        ("USES LEFT", |t| s(&t["usesLeft"])),
        ("EXPIRES", |t| s(&t["expires"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_table_shows_connection_slots_and_labels() {
        let reply = json!({"agents": [
            {"id": "ag-1", "hostname": "vm", "connected": true, "state": "enabled", "running": 1, "slots": 2,
             "labels": {"arch": "x86_64", "os": "linux"}},
            {"id": "ag-22", "hostname": "build-2", "connected": false, "state": "draining", "running": 0, "slots": 4, "labels": {}}]});
        assert_eq!(
            agent_table().render(items(&reply["agents"])),
            "ID     HOSTNAME  CONNECTION  STATE     RUNNING  LABELS\n\
             ag-1   vm        connected   enabled   1/2      arch=x86_64,os=linux\n\
             ag-22  build-2   offline     draining  0/4\n"
        );
    }
}
