//! CodePipeline operations Sluice had no verb for before the AWS API:
//! resource tags and the action-execution history.

use super::Driver;
use super::pipelines::not_found_pipeline;
use crate::ops::paging;
use crate::ops::{
    ActionExecutionDetail, ActionExecutionInputView, ActionExecutionOutputView, ActionExecutionResultView, Context, Handle,
    ListActionExecutions, ListActionExecutionsOutput, ListTagsForResource, ListTagsForResourceOutput, OpError, Resource,
    Tag, TagResource, TagResourceOutput, UntagResource, UntagResourceOutput, check_tags, parse_arn,
};
use crate::store::Change;
use crate::views;
use serde_json::json;
use tracing::info;

/// Action executions listed per page when the caller does not say (and at most).
const MAX_ACTION_EXECUTIONS: usize = 100;
/// Executions whose actions are listed when no execution is named.
const ACTION_HISTORY_EXECUTIONS: usize = 100;

impl Driver {
    /// The stored key of the resource an ARN names; it must exist.
    fn tagged_resource(&self, arn: &str) -> Result<String, OpError> {
        let account = crate::aws::account_id(self.ca.fingerprint());
        let resource = parse_arn(arn, &account)?;
        let exists = match &resource {
            Resource::Pipeline(name) => self.store.pipeline(name, None)?.is_some(),
            Resource::Webhook(name) => self.store.webhook_definitions()?.iter().any(|(_, definition)| {
                serde_json::from_str::<serde_json::Value>(definition).is_ok_and(|d| d["name"] == name.as_str())
            }),
        };
        if !exists {
            return Err(OpError::NotFound(format!("{arn} names no existing resource")));
        }
        Ok(resource.key())
    }
}

impl Handle<TagResource> for Driver {
    fn handle(&mut self, op: TagResource, ctx: &Context) -> Result<TagResourceOutput, OpError> {
        let resource = self.tagged_resource(&op.resource_arn)?;
        check_tags(&op.tags)?;
        let mut tags = self.store.tags(&resource)?;
        for tag in op.tags {
            match tags.iter_mut().find(|(k, _)| *k == tag.key) {
                Some(existing) => existing.1 = tag.value,
                None => tags.push((tag.key, tag.value)),
            }
        }
        let all: Vec<Tag> = tags.iter().map(|(key, value)| Tag { key: key.clone(), value: value.clone() }).collect();
        check_tags(&all)?;
        self.commit(ctx.now, vec![Change::Tags { resource: resource.clone(), tags }])?;
        info!(%resource, "tags set");
        Ok(TagResourceOutput {})
    }
}

impl Handle<UntagResource> for Driver {
    fn handle(&mut self, op: UntagResource, ctx: &Context) -> Result<UntagResourceOutput, OpError> {
        let resource = self.tagged_resource(&op.resource_arn)?;
        let mut tags = self.store.tags(&resource)?;
        tags.retain(|(k, _)| !op.tag_keys.contains(k));
        self.commit(ctx.now, vec![Change::Tags { resource: resource.clone(), tags }])?;
        info!(%resource, "tags removed");
        Ok(UntagResourceOutput {})
    }
}

impl Handle<ListTagsForResource> for Driver {
    fn handle(&mut self, op: ListTagsForResource, _: &Context) -> Result<ListTagsForResourceOutput, OpError> {
        let resource = self.tagged_resource(&op.resource_arn)?;
        let limit = paging::limit(op.max_results, 100, 100)?;
        let tags: Vec<(usize, Tag)> =
            self.store.tags(&resource)?.into_iter().map(|(key, value)| Tag { key, value }).enumerate().collect();
        let listing = format!("tags {resource}");
        let (page, next_token) = paging::page(tags, |(i, _)| format!("{i:08}"), &listing, limit, op.next_token.as_deref())?;
        Ok(ListTagsForResourceOutput { tags: page.into_iter().map(|(_, t)| t).collect(), next_token })
    }
}

impl Handle<ListActionExecutions> for Driver {
    fn handle(&mut self, op: ListActionExecutions, _: &Context) -> Result<ListActionExecutionsOutput, OpError> {
        let name = op.pipeline_name.as_str();
        let limit = paging::limit(op.max_results, MAX_ACTION_EXECUTIONS, MAX_ACTION_EXECUTIONS)?;
        if self.store.pipeline(name, None)?.is_none() {
            return Err(not_found_pipeline(name));
        }
        let executions = match &op.pipeline_execution_id {
            Some(id) => vec![self.execution(name, id)?],
            None => self.recent_executions(name, ACTION_HISTORY_EXECUTIONS)?,
        };
        let mut details = Vec::new();
        for e in &executions {
            let def = self.definition(name, e.version)?;
            let mut view = views::execution(e);
            self.hide_run_secrets(&mut view, &def);
            for stage in &view.stages {
                for run in stage.actions.iter().filter(|a| a.status.is_some()) {
                    let declared = def.stage(&stage.stage_name).and_then(|s| s.action(&run.action_name));
                    details.push(ActionExecutionDetail {
                        pipeline_execution_id: e.id.0.clone(),
                        action_execution_id: views::action_execution_id(
                            &e.id.0,
                            &stage.stage_name,
                            &run.action_name,
                            run.attempt,
                        ),
                        pipeline_version: e.version,
                        stage_name: stage.stage_name.clone(),
                        action_name: run.action_name.clone(),
                        start_time: run.start_time.clone(),
                        last_update_time: run.last_update_time.clone(),
                        status: run.status.clone(),
                        input: ActionExecutionInputView {
                            action_type_id: declared.map(|a| json!(a.action_type_id)).unwrap_or_default(),
                            configuration: declared.map(|a| self.declared_configuration(a)).unwrap_or_default(),
                            resolved_configuration: run.resolved_configuration.clone(),
                            input_artifacts: run.input_artifacts.clone(),
                            namespace: declared.and_then(|a| a.namespace.clone()),
                        },
                        output: ActionExecutionOutputView {
                            output_artifacts: run.output_artifacts.clone(),
                            execution_result: ActionExecutionResultView {
                                external_execution_summary: run.summary.clone(),
                                external_execution_url: run.external_execution_url.clone(),
                                error_details: run.error_details.clone(),
                            },
                            output_variables: run.output_variables.clone(),
                        },
                    });
                }
            }
        }
        // Newest execution first, each in stage order: page by position.
        let numbered: Vec<(usize, ActionExecutionDetail)> = details.into_iter().enumerate().collect();
        let listing = format!("action executions {name}");
        let (page, next_token) =
            paging::page(numbered, |(i, _)| format!("{i:08}"), &listing, limit, op.next_token.as_deref())?;
        Ok(ListActionExecutionsOutput { action_execution_details: page.into_iter().map(|(_, d)| d).collect(), next_token })
    }
}
