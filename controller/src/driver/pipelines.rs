//! Pipeline commands of the driver: create (which starts the first
//! execution), update, delete, get and list.

use super::Driver;
use crate::engine::{Event, TransitionState, Trigger};
use crate::ops::paging;
use crate::ops::{
    Context, CreatePipeline, CreatePipelineOutput, DeletePipeline, DeletePipelineOutput, GetPipeline, GetPipelineOutput,
    Handle, ListPipelines, ListPipelinesOutput, OpError, PipelineMetadata, PipelineSummary, UpdatePipeline,
    UpdatePipelineOutput, ValidatePipeline, ValidatePipelineOutput,
};
use crate::pipeline::{self, Declaration};
use crate::policy::{
    self,
    records::{self, PipelineTeamRecord},
};
use crate::store::{Change, PipelineRecord};
use crate::views;
use anyhow::Context as _;
use serde_json::{Value, json};

use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::info;

impl Handle<CreatePipeline> for Driver {
    fn handle(&mut self, op: CreatePipeline, ctx: &Context) -> Result<CreatePipelineOutput, OpError> {
        let now = ctx.now;
        let (text, by) = (&op.pipeline_declaration, &ctx.caller.user);
        let decl = pipeline::parse_and_validate(text, &self.providers()).map_err(invalid_declaration)?;
        self.check_secret_scopes(&decl)?;
        self.check_feeds(&ctx.caller, &decl)?;
        // The team it belongs to (permissions, issue 15).
        let team = self.team_for_new_pipeline(op.team.as_deref(), &ctx.caller)?;
        self.check_pipeline_edit(&ctx.caller, &decl, None, team.as_deref())?;
        let name = decl.pipeline.name.clone();
        #[cfg(debug_assertions)]
        if self.panic_on_pipeline.as_ref() == Some(&name) {
            panic!("SLUICE_DEBUG_DRIVER_PANIC_ON_PIPELINE: pipeline {name}");
        }
        // Readiness (issue 17, obs): a driver held up for real, as a stuck
        // disk or a runaway step would hold it, for `/readyz` to notice.
        #[cfg(debug_assertions)]
        if self.stall_on_pipeline.as_ref() == Some(&name) {
            std::thread::sleep(DEBUG_STALL);
        }
        if self.store.pipeline(&name, None)?.is_some() {
            return Err(OpError::PipelineNameInUse(format!("pipeline \"{name}\" already exists")));
        }
        let definition = pipeline::to_json(&decl);
        let record = PipelineRecord {
            name: name.clone(),
            version: 1,
            definition,
            created_at: now,
            updated_at: now,
            author: by.clone(),
        };
        let def = Arc::new(decl.pipeline.clone());
        self.definitions.insert(&name, 1, def);
        let mut changes = vec![Change::Pipeline(record)];
        if let Some(team) = &team {
            let owner = PipelineTeamRecord { pipeline: name.clone(), team: team.clone() };
            changes.push(records::put(records::PIPELINE_TEAM, &name, &owner));
        }
        // Creating a pipeline starts its first execution, as CodePipeline
        // does; both land in one transaction.
        let id = self.start_execution(
            now,
            &name,
            BTreeMap::new(),
            BTreeMap::new(),
            Trigger::new("CreatePipeline", format!("pipeline created by {by}")).by(by),
            changes,
        )?;
        if let Some(team) = team {
            self.directory.update(|d| {
                d.pipeline_teams.insert(name.clone(), team);
            });
        }
        self.refresh_polls(now, &name, 1)?;
        info!(pipeline = %name, execution = %id, "pipeline created");
        Ok(CreatePipelineOutput { pipeline: self.hide_worker_secrets(pipeline_value(&decl)), pipeline_execution_id: id.0 })
    }
}

impl Handle<ValidatePipeline> for Driver {
    fn handle(&mut self, op: ValidatePipeline, _: &Context) -> Result<ValidatePipelineOutput, OpError> {
        let decl = pipeline::parse_and_validate(&op.pipeline_declaration, &self.providers()).map_err(invalid_declaration)?;
        Ok(ValidatePipelineOutput { valid: true, pipeline_name: decl.pipeline.name })
    }
}

/// Stores a new version. Executions in flight keep the version they
/// started with; the next one uses this.
impl Handle<UpdatePipeline> for Driver {
    fn handle(&mut self, op: UpdatePipeline, ctx: &Context) -> Result<UpdatePipelineOutput, OpError> {
        let now = ctx.now;
        let (name, text) = (op.name.as_str(), &op.pipeline_declaration);
        let mut decl = pipeline::parse_and_validate(text, &self.providers()).map_err(invalid_declaration)?;
        self.check_secret_scopes(&decl)?;
        self.check_feeds(&ctx.caller, &decl)?;
        if decl.pipeline.name != name {
            return Err(OpError::invalid(format!(
                "the declaration names pipeline \"{}\", not \"{name}\": a pipeline cannot be renamed",
                decl.pipeline.name
            )));
        }
        let current = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let stored = self.definition(name, current.version).map_err(|e| OpError::Internal(format!("{e:#}")))?;
        self.keep_hidden_secrets(&mut decl.pipeline, &stored)?;
        self.check_pipeline_edit(&ctx.caller, &decl, Some(&stored), None)?;
        let version = current.version + 1;
        let record = PipelineRecord {
            name: name.to_string(),
            version,
            definition: pipeline::to_json(&decl),
            created_at: current.created_at,
            updated_at: now,
            author: ctx.caller.user.clone(),
        };
        self.commit(now, vec![Change::Pipeline(record)])?;
        self.refresh_polls(now, name, version)?;
        // Issue 21, feedfix: new sources, or a new author who may read an
        // upstream the previous one no longer could, judge the sets anew
        // (a hold may be over, or have another reason), as a restart would.
        if !crate::feed::subscriptions(&decl.pipeline).is_empty() {
            self.rejudge_feeds(now, Some(name));
        }
        info!(pipeline = %name, version, "pipeline updated");
        let mut pipeline = pipeline_value(&decl);
        pipeline["version"] = json!(version);
        Ok(UpdatePipelineOutput { pipeline: self.hide_worker_secrets(pipeline) })
    }
}

/// Deletes every version, execution and log of a pipeline. Refused
/// while an execution runs, so that nothing is cut off half-way.
impl Handle<DeletePipeline> for Driver {
    fn handle(&mut self, op: DeletePipeline, ctx: &Context) -> Result<DeletePipelineOutput, OpError> {
        let now = ctx.now;
        let name = op.name.as_str();
        let current = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let stored = self.definition(name, current.version).map_err(|e| OpError::Internal(format!("{e:#}")))?;
        self.check_pipeline_delete(&ctx.caller, &stored)?;
        let running = self.engine.executions().filter(|e| e.pipeline == name).count();
        if running > 0 {
            return Err(OpError::Conflict(format!(
                "pipeline \"{name}\" has {running} execution(s) in progress; wait for them to end before deleting it"
            )));
        }
        let changes = vec![
            Change::DeletePipeline(name.to_string()),
            records::delete(records::PIPELINE_TEAM, name),
            records::delete(records::WEBHOOK_HOLDER, name),
        ];
        self.commit(now, changes)?;
        self.directory.update(|d| {
            d.pipeline_teams.remove(name);
        });
        self.definitions.forget(name);
        self.forget_pipeline_sources(name);
        self.forget_pipeline_notifications(name);
        // Metrics (issue 17, obs): its series go with it.
        self.counts.forget_pipeline(name);
        let stages: Vec<String> = self.transitions.keys().filter(|(p, _)| p == name).map(|(_, s)| s.clone()).collect();
        for stage in stages {
            self.transitions.remove(&(name.to_string(), stage.clone()));
            let (pipeline, state) = (name.to_string(), TransitionState::Enabled);
            self.feed(now, Event::SetTransition { pipeline, stage, state });
        }
        info!(pipeline = %name, "pipeline deleted");
        Ok(DeletePipelineOutput { name: op.name, deleted: true })
    }
}

impl Handle<GetPipeline> for Driver {
    fn handle(&mut self, op: GetPipeline, _: &Context) -> Result<GetPipelineOutput, OpError> {
        let (name, version) = (op.name.as_str(), op.version);
        let record = self.store.pipeline(name, version)?.ok_or_else(|| match version {
            Some(v) => OpError::PipelineVersionNotFound(format!("pipeline \"{name}\" has no version {v}")),
            None => not_found_pipeline(name),
        })?;
        let mut value: Value = serde_json::from_str(&record.definition).context("stored pipeline is corrupt")?;
        let mut pipeline = value["pipeline"].take();
        pipeline["version"] = json!(record.version);
        Ok(GetPipelineOutput {
            pipeline: self.hide_worker_secrets(pipeline),
            metadata: PipelineMetadata {
                pipeline_arn: crate::aws::arn(crate::aws::REST_REGION, &crate::aws::account_id(self.ca.fingerprint()), name),
                created: views::time(record.created_at),
                updated: views::time(record.updated_at),
                team: self.directory.snapshot().pipeline_teams.get(name).cloned(),
            },
        })
    }
}

impl Handle<ListPipelines> for Driver {
    fn handle(&mut self, op: ListPipelines, ctx: &Context) -> Result<ListPipelinesOutput, OpError> {
        let limit = paging::limit(op.max_results, 1000, 1000)?;
        // Names and versions only, a page's range of them (scale, issue
        // 19): the declarations of the page come from the driver's cache.
        let (records, next_token) = self.visible_heads(ctx, "pipelines", limit, op.next_token.as_deref())?;
        let mut pipelines = Vec::with_capacity(records.len());
        for p in records {
            let def = self.definition(&p.name, p.version)?;
            pipelines.push(PipelineSummary {
                pipeline_type: def.pipeline_type.clone(),
                execution_mode: Some(def.execution_mode.as_str().to_string()),
                name: p.name,
                version: p.version,
                created: views::time(p.created_at),
                updated: views::time(p.updated_at),
            });
        }
        Ok(ListPipelinesOutput { pipelines, next_token })
    }
}

impl Driver {
    /// A page of the pipelines the caller may read (permissions, issue
    /// 15), by name, read from the store as a range (scale, issue 19).
    pub(super) fn visible_heads(
        &self,
        ctx: &Context,
        listing: &str,
        limit: usize,
        next_token: Option<&str>,
    ) -> Result<(Vec<crate::store::PipelineHead>, Option<String>), OpError> {
        let directory = self.directory.snapshot();
        let judge = directory.judge(&ctx.caller);
        paging::page_from(
            |after, n| self.store.pipeline_heads_after(after, n),
            |p| p.name.as_str(),
            |p| judge.allows("codepipeline:GetPipeline", &policy::pipeline(&p.name)),
            listing,
            limit,
            next_token,
        )
    }
}

pub(super) fn invalid_declaration(d: pipeline::Diagnostics) -> OpError {
    OpError::Validation {
        message: format!("pipeline declaration is invalid ({} problems)", d.0.len()),
        diagnostics: d.0.iter().map(|x| x.to_string()).collect(),
    }
}

pub(super) fn not_found_pipeline(name: &str) -> OpError {
    OpError::PipelineNotFound(format!("pipeline \"{name}\" does not exist"))
}

/// The declaration's `pipeline` object, as stored.
fn pipeline_value(decl: &Declaration) -> Value {
    let mut value: Value = serde_json::from_str(&pipeline::to_json(decl)).expect("a declaration serializes to JSON");
    value["pipeline"].take()
}

/// How long `SLUICE_DEBUG_DRIVER_STALL_ON_PIPELINE` holds the driver up:
/// past [`crate::metrics::READY_BOUND`].
#[cfg(debug_assertions)]
const DEBUG_STALL: std::time::Duration = std::time::Duration::from_secs(12);
