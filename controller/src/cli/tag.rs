//! `sluice tag`: tags of pipelines and webhooks, named by their ARN
//! (`arn:aws:codepipeline:REGION:ACCOUNT:PIPELINE`, as the AWS API shows it).

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{ListTagsForResource, Tag, TagResource, UntagResource};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum TagCmd {
    /// Set tags (KEY=VALUE ...) on a resource.
    Add {
        arn: String,
        #[arg(required = true, value_parser = parse_tag)]
        tags: Vec<Tag>,
    },
    /// Remove tags by key.
    Remove {
        arn: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List a resource's tags.
    List { arn: String },
}

fn parse_tag(text: &str) -> Result<Tag, String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok(Tag { key: key.to_string(), value: value.to_string() })
}

pub async fn run(ctx: &Ctx, cmd: TagCmd) -> Result<i32, Failure> {
    match cmd {
        TagCmd::Add { arn, tags } => {
            let out = ctx.client()?.call(TagResource { resource_arn: arn.clone(), tags }).await?;
            ctx.output.print(&out, |_| format!("tags of {arn} set\n"));
        }
        TagCmd::Remove { arn, keys } => {
            let out = ctx.client()?.call(UntagResource { resource_arn: arn.clone(), tag_keys: keys }).await?;
            ctx.output.print(&out, |_| format!("tags of {arn} removed\n"));
        }
        TagCmd::List { arn } => {
            let op = ListTagsForResource { resource_arn: arn, max_results: None, next_token: None };
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, |out| tag_table().render(items(&out["tags"])));
        }
    }
    Ok(0)
}

fn tag_table() -> Table<Value> {
    columns![Value; ("KEY", |t| s(&t["key"])), ("VALUE", |t| s(&t["value"]))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_key_equals_value() {
        assert_eq!(parse_tag("team=ci=x").unwrap(), Tag { key: "team".into(), value: "ci=x".into() });
        assert_eq!(parse_tag("empty=").unwrap().value, "");
        assert!(parse_tag("novalue").is_err());
    }
}
