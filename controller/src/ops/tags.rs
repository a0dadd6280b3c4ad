//! Tags of resources (pipelines and webhooks), named by ARN as CodePipeline
//! names them: `arn:aws:codepipeline:REGION:ACCOUNT:NAME` for a pipeline,
//! `...:webhook:NAME` for a webhook. Any region is accepted; the account
//! must be this controller's.

use super::OpError;
use serde::{Deserialize, Serialize};

/// Most tags a resource holds, as CodePipeline allows.
pub const MAX_TAGS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// TagResource: adds tags, or replaces the values of keys it has.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagResource {
    pub resource_arn: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagResourceOutput {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UntagResource {
    pub resource_arn: String,
    pub tag_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UntagResourceOutput {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListTagsForResource {
    pub resource_arn: String,
    /// 1 to 100; all when absent.
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceOutput {
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// What an ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Pipeline(String),
    Webhook(String),
}

impl Resource {
    /// The key its tags are stored under.
    pub fn key(&self) -> String {
        match self {
            Self::Pipeline(name) => format!("pipeline:{name}"),
            Self::Webhook(name) => format!("webhook:{name}"),
        }
    }
}

/// Reads `arn:aws[-PARTITION]:codepipeline:REGION:ACCOUNT:RESOURCE` of
/// this controller's `account`.
pub fn parse_arn(arn: &str, account: &str) -> Result<Resource, OpError> {
    let bad = |why: &str| OpError::InvalidArn(format!("{arn:?} is not a CodePipeline ARN: {why}"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, owner, resource] = parts[..] else {
        return Err(bad("expected arn:aws:codepipeline:REGION:ACCOUNT:RESOURCE"));
    };
    if scheme != "arn" || !(partition == "aws" || partition.starts_with("aws-")) || service != "codepipeline" {
        return Err(bad("expected arn:aws:codepipeline:..."));
    }
    if region.is_empty() || owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected a region and a 12-digit account"));
    }
    if owner != account {
        return Err(OpError::NotFound(format!("{arn} names account {owner}; this controller's account is {account}")));
    }
    match resource.split_once(':') {
        None if !resource.is_empty() => Ok(Resource::Pipeline(resource.to_string())),
        Some(("webhook", name)) if !name.is_empty() => Ok(Resource::Webhook(name.to_string())),
        _ => Err(OpError::NotFound(format!("{arn} names no pipeline or webhook"))),
    }
}

/// Checks tags as CodePipeline does: keys of 1 to 128 characters, values
/// up to 256, no key in the reserved `aws:` namespace, no key twice.
pub fn check_tags(tags: &[Tag]) -> Result<(), OpError> {
    for (i, tag) in tags.iter().enumerate() {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            return Err(OpError::InvalidTags(format!("tag key {:?} must be 1 to 128 characters", tag.key)));
        }
        if tag.value.chars().count() > 256 {
            return Err(OpError::InvalidTags(format!("the value of tag {:?} is longer than 256 characters", tag.key)));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(OpError::InvalidTags(format!("tag key {:?} is in the reserved aws: namespace", tag.key)));
        }
        if tags[..i].iter().any(|t| t.key == tag.key) {
            return Err(OpError::InvalidTags(format!("tag key {:?} is given twice", tag.key)));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(OpError::TooManyTags(format!("{} tags; a resource holds at most {MAX_TAGS}", tags.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_name_pipelines_and_webhooks_of_this_account() {
        let account = "123456789012";
        assert_eq!(
            parse_arn("arn:aws:codepipeline:eu-west-1:123456789012:web", account),
            Ok(Resource::Pipeline("web".into()))
        );
        assert_eq!(
            parse_arn("arn:aws-cn:codepipeline:x:123456789012:webhook:gh", account),
            Ok(Resource::Webhook("gh".into()))
        );
        for bad in
            ["web", "arn:aws:s3:r:123456789012:web", "arn:aws:codepipeline:r:12:web", "arn:aws:codepipeline::123456789012:w"]
        {
            assert!(matches!(parse_arn(bad, account), Err(OpError::InvalidArn(_))), "{bad}");
        }
        assert!(matches!(parse_arn("arn:aws:codepipeline:r:999999999999:web", account), Err(OpError::NotFound(_))));
        assert!(matches!(parse_arn("arn:aws:codepipeline:r:123456789012:actiontype:x", account), Err(OpError::NotFound(_))));
    }

    #[test]
    fn tags_are_checked_as_codepipeline_checks_them() {
        let tag = |k: &str, v: &str| Tag { key: k.into(), value: v.into() };
        assert!(check_tags(&[tag("team", "ci"), tag("empty", "")]).is_ok());
        for bad in [
            vec![tag("", "x")],
            vec![tag("aws:x", "y")],
            vec![tag("a", "1"), tag("a", "2")],
            vec![tag("k", &"v".repeat(257))],
        ] {
            assert!(matches!(check_tags(&bad), Err(OpError::InvalidTags(_))), "{bad:?}");
        }
        let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(matches!(check_tags(&many), Err(OpError::TooManyTags(_))));
    }
}
