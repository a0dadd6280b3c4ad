//! `sluice secret`: secrets granted to plugins. Values go in (from stdin
//! or a file, never the command line) and never come back out.

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{DeleteSecret, ListSecrets, SetSecret};
use clap::Subcommand;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Set a secret; the value is read from standard input (or --from-file),
    /// never from the command line, where other users could see it.
    Set {
        name: String,
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Pipelines that may grant the secret: names or glob patterns
        /// (`web`, `deploy-*`, `*` for all), comma-separated. Required for a
        /// new secret; an existing one keeps its pipelines when not given.
        #[arg(long, value_name = "PATTERN,...", value_delimiter = ',')]
        pipelines: Option<Vec<String>>,
        /// The team that owns it: its developers may grant it to their pipelines.
        #[arg(long)]
        team: Option<String>,
    },
    /// List secrets (names, pipelines and dates, never values).
    List,
    /// Delete a secret.
    Delete { name: String },
}

pub async fn run(ctx: &Ctx, cmd: SecretCmd) -> Result<i32, Failure> {
    match cmd {
        SecretCmd::Set { name, from_file, pipelines, team } => {
            let value = match &from_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", path.display())))?,
                None => {
                    let mut value = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                        .map_err(|e| Failure::new(2, format!("cannot read the value from standard input: {e}")))?;
                    value
                }
            };
            let set = SetSecret { name: name.clone(), value: without_line_end(&value).to_string(), pipelines, team };
            let out = ctx.client()?.call(set).await?;
            ctx.output.print(&out, |out| format!("secret {name} set (pipelines: {})\n", patterns(&out["pipelines"])));
        }
        SecretCmd::List => {
            let out = ctx.client()?.call(ListSecrets {}).await?;
            ctx.output.print(&out, |out| secret_table().render(items(&out["secrets"])));
        }
        SecretCmd::Delete { name } => {
            let out = ctx.client()?.call(DeleteSecret { name: name.clone() }).await?;
            ctx.output.print(&out, |_| format!("secret {name} deleted\n"));
        }
    }
    Ok(0)
}

/// A trailing newline from `echo` or an editor is not part of the value.
fn without_line_end(value: &str) -> &str {
    value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(value)
}

/// A secret's pipeline patterns as one column: `web,deploy-*`.
fn patterns(value: &Value) -> String {
    items(value).filter_map(Value::as_str).collect::<Vec<_>>().join(",")
}

fn secret_table() -> Table<Value> {
    columns![Value;
        ("NAME", |t| s(&t["name"])),
        ("PIPELINES", |t| patterns(&t["pipelines"])),
        ("CREATED", |t| s(&t["created"])),
        ("UPDATED", |t| s(&t["updated"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Output;
    use serde_json::json;

    #[test]
    fn secret_list_never_has_a_value_column_and_json_is_the_reply() {
        let reply =
            json!({"secrets": [{"name": "db-pass", "pipelines": ["demo", "deploy-*"], "created": "c", "updated": "u"}]});
        let prose = |out: &Value| secret_table().render(items(&out["secrets"]));
        assert_eq!(
            Output::Table.render(&reply, prose),
            "NAME     PIPELINES      CREATED  UPDATED\ndb-pass  demo,deploy-*  c        u\n"
        );
        let printed: Value = serde_json::from_str(&Output::Json.render(&reply, prose)).unwrap();
        assert_eq!(printed["secrets"][0]["pipelines"], json!(["demo", "deploy-*"]));
    }

    #[test]
    fn one_line_end_is_dropped_from_a_value() {
        assert_eq!(without_line_end("hunter2\n"), "hunter2");
        assert_eq!(without_line_end("hunter2\r\n"), "hunter2");
        assert_eq!(without_line_end("two\n\n"), "two\n");
        assert_eq!(without_line_end("none"), "none");
    }
}
