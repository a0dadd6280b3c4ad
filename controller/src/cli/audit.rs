//! `sluice audit`: the audit log (issue 15, gov): list records by time,
//! user, pipeline and operation; verify the hash chain.

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure, Output};
use crate::ops::{ListAuditRecords, VerifyAudit, VerifyAuditOutput};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Records matching every filter given, oldest first (the newest --limit).
    List {
        /// From this time: RFC 3339 (2026-12-06T04:00:00Z) or a duration ago (15m, 2h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Before this time (same forms as --since).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Calls on this pipeline or anything in it (its stages, actions, executions).
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// An operation's name, e.g. PutApprovalResult, Authenticate, SigV4.
        #[arg(long, value_name = "NAME")]
        operation: Option<String>,
        /// How many of the newest matches (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Checks the whole chain: exit 0 with the count and head hash, or 1
    /// naming the first bad record.
    Verify {
        /// A head printed earlier and kept elsewhere (SEQ:HASH): also fail
        /// if that record is gone or differs (a cut tail, a rewritten chain).
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<i32, Failure> {
    match cmd {
        AuditCmd::List { since, until, user, pipeline, operation, limit } => {
            let op = ListAuditRecords { since, until, user, pipeline, operation, limit: Some(limit), before_seq: None };
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, |out| record_table().render(items(&out["records"])));
            Ok(0)
        }
        AuditCmd::Verify { expect_head } => {
            let reply = ctx.client()?.call(VerifyAudit { expect_head }).await?;
            let out: VerifyAuditOutput = serde_json::from_value(reply.clone())
                .map_err(|e| Failure::new(1, format!("the controller's answer to VerifyAudit is not understood: {e}")))?;
            match ctx.output {
                Output::Json => print!("{}", ctx.output.render(&reply, |_| String::new())),
                Output::Table if out.verified => {
                    println!("audit log verified: {} records from record {}", out.count, out.anchor_seq + 1);
                    println!("head: {}:{}", out.head_seq, out.head_hash);
                }
                Output::Table => {}
            }
            if out.verified {
                return Ok(0);
            }
            let problem = out.problem.unwrap_or_default();
            Err(Failure::new(
                1,
                format!(
                    "audit log does not verify: {problem} ({} records good, up to {}:{})",
                    out.count, out.head_seq, out.head_hash
                ),
            ))
        }
    }
}

fn record_table() -> Table<Value> {
    columns![Value;
        ("SEQ", |r| r["seq"].to_string()),
        ("TIME", |r| s(&r["time"])),
        ("USER", |r| s(&r["user"])),
        ("VIA", |r| s(&r["via"])),
        ("OPERATION", |r| s(&r["operation"])),
        ("RESOURCE", |r| s(&r["resource"])),
        ("RESULT", |r| s(&r["result"])),
        ("SOURCE", |r| s(&r["source"])),
        ("REQUEST", |r| s(&r["requestId"])),
    ]
}
