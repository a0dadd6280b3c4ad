//! Custom action types and job workers in the driver: the operations
//! (`CreateCustomActionType` ... `PutJobFailureResult`, and the S3 subset's
//! `JobCredentials` and `RecordJobOutput`), worker actions' dispatches
//! turned into jobs, the jobs of actions that ended otherwise (stopped,
//! superseded, timed out) ended with them, and job timeouts. The rules are
//! in `crate::workers` (pure); this file feeds the engine and the store.

use super::Driver;
use crate::engine::{ActionResult, ActionStatus, AgentId, Dispatch, Event, Execution};
use crate::ops::{
    AcknowledgeJob, AcknowledgeJobOutput, ActionConfigurationProperty, ActionType, ActionTypeDeclaration,
    ActionTypeExecutor, ActionTypeId, ActionTypeProperty, ActionTypeUrls, ArtifactDetails, Context, CreateCustomActionType,
    CreateCustomActionTypeOutput, DeleteCustomActionType, EmptyOutput, GetActionType, GetActionTypeOutput, GetJobDetails,
    GetJobDetailsOutput, Handle, Job, JobCredentials, JobCredentialsOutput, JobDetails, ListActionTypes,
    ListActionTypesOutput, OpError, PollForJobs, PollForJobsOutput, PutJobFailureResult, PutJobSuccessResult,
    RecordJobOutput,
};
use crate::store::Change;
use crate::workers::{ACCOUNT_ID, ActionTypeRecord, BUCKET, JobStatus, Outcome, WorkerJob};
use anyhow::Result;
use base64::Engine as _;
use tracing::info;

/// Action types a `ListActionTypes` page holds.
const PAGE: usize = 100;

fn new_job_ids() -> (String, String) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let key: String = (0..16).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    (uuid::Uuid::new_v4().to_string(), format!("ASIA{key}"))
}

fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Driver {
    /// Start-up: custom action types and the jobs that had not ended.
    pub(super) fn recover_workers(&mut self) -> Result<()> {
        for record in self.store.action_types()? {
            self.workers.restore_type(record);
        }
        for job in self.store.unfinished_worker_jobs()? {
            self.workers.put_job(job);
        }
        Ok(())
    }

    /// Where a dispatch goes: a worker action's becomes a job that waits for
    /// a poll (unless its job survived a restart); any other waits for an agent.
    pub(super) fn route_dispatch(&mut self, now: u64, dispatch: Dispatch) {
        if self.take_pipeline_source(&dispatch) {
            return;
        }
        if !self.workers.is_worker_action(&dispatch) {
            self.pending.push_back(dispatch);
            return;
        }
        let category = self
            .workers
            .type_of(&dispatch.provider, &dispatch.provider_version)
            .map(|t| t.category.clone())
            .unwrap_or_default();
        if let Some(job) = self.workers.adopt(&dispatch.job_id, dispatch.lease_epoch) {
            info!(job = %job.id, action = %dispatch.action, "worker job kept across a restart");
            self.worker_changes.push(Change::WorkerJob(Box::new(job.clone())));
            self.workers.put_job(job);
            return;
        }
        let (id, key) = new_job_ids();
        if let Some(job) = self.workers.job_for(&dispatch, &category, id, key, now) {
            info!(job = %job.id, action = %dispatch.action, execution = %dispatch.execution_id, "worker job queued");
            self.worker_changes.push(Change::WorkerJob(Box::new(job.clone())));
            self.workers.put_job(job);
        }
    }

    /// Ends the live jobs of `execution` whose action is no longer the
    /// attempt they were made for (stopped, superseded, timed out, retried).
    pub(super) fn end_stale_worker_jobs(&mut self, now: u64, execution: &Execution) -> Vec<Change> {
        let stale: Vec<WorkerJob> = self
            .workers
            .jobs()
            .filter(|j| j.execution_id == execution.id.0)
            .filter_map(|j| {
                let run =
                    execution.stages.iter().find(|s| s.name == j.stage)?.actions.iter().find(|a| a.name == j.action)?;
                let current = run.status == Some(ActionStatus::InProgress)
                    && run.lease_epoch == j.lease_epoch
                    && run.job_id.as_deref() == Some(j.engine_job.as_str());
                (!current).then(|| {
                    let why = match (run.status, &run.error) {
                        (Some(status), Some(error)) if run.lease_epoch == j.lease_epoch => {
                            format!("the action ended ({}): {error}", status.as_str())
                        }
                        (Some(status), None) if run.lease_epoch == j.lease_epoch => {
                            format!("the action ended ({})", status.as_str())
                        }
                        _ => "the action attempt it belonged to ended".to_string(),
                    };
                    WorkerJob { status: JobStatus::Failed, ended_at: Some(now), message: Some(why), ..j.clone() }
                })
            })
            .collect();
        stale
            .into_iter()
            .map(|job| {
                info!(job = %job.id, "worker job ended with its action");
                self.workers.put_job(job.clone());
                Change::WorkerJob(Box::new(job))
            })
            .collect()
    }

    /// Jobs past their deadline time out, and so do their actions.
    pub(super) fn expire_worker_jobs(&mut self, now: u64) {
        let expired = self.workers.expired(now);
        if expired.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        for job in expired {
            let message = job.message.clone().unwrap_or_default();
            info!(job = %job.id, "{message}");
            self.workers.put_job(job.clone());
            let (job_id, lease_epoch) = (job.engine_job.clone(), job.lease_epoch);
            changes.push(Change::WorkerJob(Box::new(job)));
            self.feed(now, Event::ActionFinished { job_id, lease_epoch, result: ActionResult::Failed { message } });
        }
        if let Err(e) = self.commit(now, changes) {
            tracing::error!("committing timed-out worker jobs: {e:#}");
        }
    }

    /// A live job, or why there is none: an ended job is in the wrong
    /// state, an unknown one is not found.
    fn live_job(&self, id: &str) -> Result<WorkerJob, OpError> {
        if let Some(job) = self.workers.job(id) {
            return Ok(job.clone());
        }
        match self.store.worker_job(id)? {
            Some(job) => Err(OpError::InvalidJobState(format!(
                "job {id} is {}: {}",
                job.status.as_str(),
                job.message.unwrap_or_default()
            ))),
            None => Err(OpError::JobNotFound(format!("no job {id}"))),
        }
    }

    fn save_job(&mut self, job: WorkerJob) -> Change {
        self.workers.put_job(job.clone());
        Change::WorkerJob(Box::new(job))
    }

    fn plugin_action_types(&self) -> Vec<ActionType> {
        let mut plugins: Vec<(&String, &super::catalog::PluginEntry)> = self.catalog.0.iter().collect();
        plugins.sort_by(|a, b| a.0.cmp(b.0));
        plugins
            .into_iter()
            .filter_map(|(key, entry)| {
                let (provider, version) = key.rsplit_once('@')?;
                let count = |n: u32| n.min(crate::workers::MAX_ARTIFACTS);
                Some(ActionType {
                    id: ActionTypeId {
                        category: entry.info.category.clone(),
                        owner: "Sluice".into(),
                        provider: provider.into(),
                        version: version.into(),
                    },
                    settings: None,
                    action_configuration_properties: entry
                        .info
                        .configuration
                        .iter()
                        .map(|p| ActionConfigurationProperty {
                            name: p.name.clone(),
                            required: p.required,
                            key: false,
                            secret: p.secret,
                            queryable: false,
                            description: (!p.description.is_empty()).then(|| p.description.clone()),
                            kind: None,
                        })
                        .collect(),
                    input_artifact_details: ArtifactDetails {
                        minimum_count: count(entry.info.input_artifacts.0),
                        maximum_count: count(entry.info.input_artifacts.1),
                    },
                    output_artifact_details: ArtifactDetails {
                        minimum_count: count(entry.info.output_artifacts.0),
                        maximum_count: count(entry.info.output_artifacts.1),
                    },
                })
            })
            .collect()
    }
}

impl Handle<CreateCustomActionType> for Driver {
    fn handle(&mut self, op: CreateCustomActionType, ctx: &Context) -> Result<CreateCustomActionTypeOutput, OpError> {
        let plugin = self.catalog.0.contains_key(&format!("{}@{}", op.provider, op.version));
        let record = self.workers.create_type(op, plugin, ctx.now)?;
        self.workers.restore_type(record.clone());
        self.commit(ctx.now, vec![Change::ActionType(record.clone())])?;
        info!(category = %record.category, provider = %record.provider, version = %record.version, "custom action type created");
        Ok(CreateCustomActionTypeOutput { action_type: record.view(), tags: record.tags })
    }
}

impl Handle<DeleteCustomActionType> for Driver {
    fn handle(&mut self, op: DeleteCustomActionType, ctx: &Context) -> Result<EmptyOutput, OpError> {
        let record = self.workers.delete_type(&op.category, &op.provider, &op.version, ctx.now)?;
        self.refuse_deleting_a_type_in_use(&record)?;
        self.workers.restore_type(record.clone());
        self.commit(ctx.now, vec![Change::ActionType(record)])?;
        info!(category = %op.category, provider = %op.provider, version = %op.version, "custom action type deleted");
        Ok(EmptyOutput {})
    }
}

impl Handle<ListActionTypes> for Driver {
    fn handle(&mut self, op: ListActionTypes, _ctx: &Context) -> Result<ListActionTypesOutput, OpError> {
        let custom = || self.workers.types().map(ActionTypeRecord::view).collect::<Vec<_>>();
        let all: Vec<ActionType> = match op.action_owner_filter.as_deref() {
            None => custom().into_iter().chain(self.plugin_action_types()).collect(),
            Some("Custom") => custom(),
            Some("Sluice") => self.plugin_action_types(),
            Some("AWS" | "ThirdParty") => Vec::new(),
            Some(other) => {
                return Err(OpError::invalid(format!(
                    "actionOwnerFilter must be Custom, Sluice, AWS or ThirdParty, not {other:?}"
                )));
            }
        };
        let start = match &op.next_token {
            None => 0,
            Some(token) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("action-types:").and_then(|n| n.parse::<usize>().ok()))
                .filter(|n| *n <= all.len())
                .ok_or_else(|| OpError::InvalidNextToken("the nextToken is not one this controller gave".into()))?,
        };
        let end = (start + PAGE).min(all.len());
        let next_token = (end < all.len())
            .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("action-types:{end}")));
        Ok(ListActionTypesOutput { action_types: all[start..end].to_vec(), next_token })
    }
}

impl Handle<GetActionType> for Driver {
    fn handle(&mut self, op: GetActionType, _ctx: &Context) -> Result<GetActionTypeOutput, OpError> {
        let id = ActionTypeId { category: op.category, owner: op.owner, provider: op.provider, version: op.version };
        let found = match id.owner.as_str() {
            "Custom" => self.workers.types().find(|t| t.id() == id).map(ActionTypeRecord::view),
            "Sluice" => self.plugin_action_types().into_iter().find(|t| t.id == id),
            _ => None,
        };
        let t = found.ok_or_else(|| {
            OpError::ActionTypeNotFound(format!(
                "no action type {}/{}/{}/{}",
                id.category, id.owner, id.provider, id.version
            ))
        })?;
        let worker = t.id.owner == "Custom";
        let settings = t.settings.clone().unwrap_or_default();
        Ok(GetActionTypeOutput {
            action_type: ActionTypeDeclaration {
                description: None,
                executor: ActionTypeExecutor {
                    configuration: if worker {
                        serde_json::json!({ "jobWorkerExecutorConfiguration": {} })
                    } else {
                        serde_json::json!({})
                    },
                    kind: if worker { "JobWorker".into() } else { "Sluice".into() },
                    job_timeout: worker.then_some(self.workers.job_timeout_ms / 1000),
                },
                id: t.id,
                input_artifact_details: t.input_artifact_details,
                output_artifact_details: t.output_artifact_details,
                properties: t
                    .action_configuration_properties
                    .into_iter()
                    .map(|p| ActionTypeProperty {
                        name: p.name,
                        optional: !p.required,
                        key: p.key,
                        no_echo: p.secret,
                        queryable: p.queryable,
                        description: p.description,
                    })
                    .collect(),
                urls: t.settings.is_some().then_some(ActionTypeUrls {
                    configuration_url: settings.third_party_configuration_url,
                    entity_url_template: settings.entity_url_template,
                    execution_url_template: settings.execution_url_template,
                    revision_url_template: settings.revision_url_template,
                }),
            },
        })
    }
}

impl Handle<PollForJobs> for Driver {
    fn handle(&mut self, op: PollForJobs, ctx: &Context) -> Result<PollForJobsOutput, OpError> {
        let polled = self.workers.poll(
            &op.action_type_id,
            op.max_batch_size,
            &op.query_param,
            &ctx.caller.user,
            ctx.now,
            new_nonce,
        )?;
        let mut changes = Vec::new();
        let mut jobs = Vec::new();
        for job in polled {
            let (job_id, lease_epoch) = (job.engine_job.clone(), job.lease_epoch);
            let agent = AgentId(format!("worker:{}", ctx.caller.user));
            self.feed(ctx.now, Event::ActionAssigned { job_id: job_id.clone(), lease_epoch, agent: agent.clone() });
            self.feed(ctx.now, Event::ActionStarted { job_id, lease_epoch, agent });
            info!(job = %job.id, worker = %ctx.caller.user, "worker job polled");
            jobs.push(Job {
                id: job.id.clone(),
                data: self.workers.job_data(&job),
                nonce: job.nonce.clone().unwrap_or_default(),
                account_id: ACCOUNT_ID.into(),
            });
            changes.push(self.save_job(job));
        }
        self.commit(ctx.now, changes)?;
        Ok(PollForJobsOutput { jobs })
    }
}

impl Handle<AcknowledgeJob> for Driver {
    fn handle(&mut self, op: AcknowledgeJob, ctx: &Context) -> Result<AcknowledgeJobOutput, OpError> {
        let job = match self.workers.job(&op.job_id) {
            Some(job) => job.clone(),
            None => {
                // An ended job answers with how it ended, to its own worker.
                let job = self
                    .store
                    .worker_job(&op.job_id)?
                    .ok_or_else(|| OpError::JobNotFound(format!("no job {}", op.job_id)))?;
                self.workers.acknowledge(&WorkerJob { status: JobStatus::Failed, ..job.clone() }, &op.nonce, ctx.now)?;
                return Ok(AcknowledgeJobOutput { status: job.status.as_str().into() });
            }
        };
        let status = match self.workers.acknowledge(&job, &op.nonce, ctx.now)? {
            Some(changed) => {
                let status = changed.status;
                let change = self.save_job(changed);
                self.commit(ctx.now, vec![change])?;
                status
            }
            None => job.status,
        };
        Ok(AcknowledgeJobOutput { status: status.as_str().into() })
    }
}

impl Handle<GetJobDetails> for Driver {
    fn handle(&mut self, op: GetJobDetails, _ctx: &Context) -> Result<GetJobDetailsOutput, OpError> {
        let job = match self.workers.job(&op.job_id) {
            Some(job) => job.clone(),
            None => {
                self.store.worker_job(&op.job_id)?.ok_or_else(|| OpError::JobNotFound(format!("no job {}", op.job_id)))?
            }
        };
        Ok(GetJobDetailsOutput {
            job_details: JobDetails { id: job.id.clone(), data: self.workers.job_data(&job), account_id: ACCOUNT_ID.into() },
        })
    }
}

impl Handle<PutJobSuccessResult> for Driver {
    fn handle(&mut self, op: PutJobSuccessResult, ctx: &Context) -> Result<EmptyOutput, OpError> {
        let job = self.live_job(&op.job_id)?;
        let (ended, outcome) = self.workers.succeed(&job, &op, ctx.now, new_job_ids)?;
        self.finish_worker_job(ctx.now, ended, outcome)?;
        Ok(EmptyOutput {})
    }
}

impl Handle<PutJobFailureResult> for Driver {
    fn handle(&mut self, op: PutJobFailureResult, ctx: &Context) -> Result<EmptyOutput, OpError> {
        let job = self.live_job(&op.job_id)?;
        let (ended, outcome) = self.workers.fail(&job, &op.failure_details, ctx.now)?;
        self.finish_worker_job(ctx.now, ended, outcome)?;
        Ok(EmptyOutput {})
    }
}

impl Driver {
    /// Records an ended job and tells the engine what became of its action.
    fn finish_worker_job(&mut self, now: u64, ended: WorkerJob, outcome: Outcome) -> Result<(), OpError> {
        let (job_id, lease_epoch) = (ended.engine_job.clone(), ended.lease_epoch);
        info!(job = %ended.id, status = ended.status.as_str(), "worker job ended");
        let mut changes = vec![self.save_job(ended)];
        match outcome {
            Outcome::Continue(next) => {
                info!(job = %next.id, "worker job continues");
                changes.push(self.save_job(*next));
            }
            Outcome::Succeeded { summary, output_variables, external_url, outputs } => {
                let result = ActionResult::Succeeded { summary, output_variables, external_url, outputs };
                self.feed(now, Event::ActionFinished { job_id, lease_epoch, result });
            }
            Outcome::Failed { message } => {
                self.feed(now, Event::ActionFinished { job_id, lease_epoch, result: ActionResult::Failed { message } });
            }
        }
        self.commit(now, changes)?;
        Ok(())
    }
}

impl Handle<JobCredentials> for Driver {
    fn handle(&mut self, op: JobCredentials, _ctx: &Context) -> Result<JobCredentialsOutput, OpError> {
        let job = match self.workers.job_by_key(&op.access_key_id) {
            Some(job) => job.clone(),
            None => self
                .store
                .worker_job_by_key(&op.access_key_id)?
                .ok_or_else(|| OpError::Unauthorized(format!("no access key {}", op.access_key_id)))?,
        };
        let credentials = self.workers.credentials(&job);
        Ok(JobCredentialsOutput {
            job_id: job.id.clone(),
            secret_access_key: credentials.secret_access_key,
            session_token: credentials.session_token,
            active: job.status.is_running(),
            bucket: BUCKET.into(),
            objects: self.workers.grants(&job),
        })
    }
}

impl Handle<RecordJobOutput> for Driver {
    fn handle(&mut self, op: RecordJobOutput, ctx: &Context) -> Result<EmptyOutput, OpError> {
        let job =
            self.workers.job_by_key(&op.access_key_id).cloned().ok_or_else(|| {
                OpError::InvalidJobState(format!("access key {} belongs to no running job", op.access_key_id))
            })?;
        let changed = self.workers.record_output(&job, &op.key, op.artifact)?;
        info!(job = %job.id, key = %op.key, "worker job output stored");
        let change = self.save_job(changed);
        self.commit(ctx.now, vec![change])?;
        Ok(EmptyOutput {})
    }
}

/// The providers a declaration may use: Sluice's plugins, and custom
/// action types for owner `Custom` (a custom action type's provider and
/// version never name a plugin too: `CreateCustomActionType` refuses).
pub(super) struct Providers<'a> {
    catalog: &'a super::catalog::Catalog,
    workers: &'a crate::workers::Workers,
}

impl crate::pipeline::ProviderCatalog for Providers<'_> {
    fn provider(&self, owner: &str, provider: &str, version: &str) -> Option<crate::pipeline::ProviderInfo> {
        if owner == "Custom"
            && let Some(t) = self.workers.type_of(provider, version)
        {
            return Some(t.provider_info());
        }
        self.catalog.provider(owner, provider, version)
    }

    fn known(&self) -> Vec<String> {
        let mut known = self.catalog.known();
        known.extend(self.workers.types().map(|t| format!("{}@{}", t.provider, t.version)));
        known.sort();
        known
    }
}

impl Driver {
    pub(super) fn providers(&self) -> Providers<'_> {
        Providers { catalog: &self.catalog, workers: &self.workers }
    }
}

impl Driver {
    /// A custom action type is not deleted while a job of it is out or a
    /// pipeline's current version declares it: its jobs could no longer be
    /// polled, its secret properties no longer hidden, and new runs of the
    /// pipeline would look for a plugin of that name.
    fn refuse_deleting_a_type_in_use(&mut self, t: &ActionTypeRecord) -> Result<(), OpError> {
        let name = format!("{}/Custom/{}/{}", t.category, t.provider, t.version);
        let is_it = |category: &str, owner: &str, provider: &str, version: &str| {
            owner == "Custom" && category == t.category && provider == t.provider && version == t.version
        };
        let job_of_it = |j: &&WorkerJob| {
            let id = &j.action_type;
            is_it(&id.category, &id.owner, &id.provider, &id.version)
        };
        if let Some(job) = self.workers.jobs().find(job_of_it) {
            return Err(OpError::Conflict(format!(
                "action type {name} has a job out (pipeline {}, execution {}): stop the execution first",
                job.pipeline, job.execution_id
            )));
        }
        for record in self.store.pipelines().map_err(|e| OpError::Internal(format!("{e:#}")))? {
            let def = self.definition(&record.name, record.version).map_err(|e| OpError::Internal(format!("{e:#}")))?;
            let used = def.stages.iter().flat_map(|s| s.actions.iter()).find(|a| {
                let id = &a.action_type_id;
                is_it(&id.category, &id.owner, &id.provider, &id.version)
            });
            if let Some(action) = used {
                return Err(OpError::Conflict(format!(
                    "action type {name} is used by pipeline {} (action {}): remove it from the pipeline first",
                    record.name, action.name
                )));
            }
        }
        Ok(())
    }

    /// The names of the `secret` properties of the custom action type an
    /// action declares (`owner`, `provider`, `version` of its
    /// actionTypeId), deleted types included; none for any other action.
    pub(super) fn worker_secret_names(&self, owner: &str, provider: &str, version: &str) -> Vec<String> {
        if owner != "Custom" {
            return Vec::new();
        }
        self.workers
            .any_type_of(provider, version)
            .map(|t| t.properties.iter().filter(|p| p.secret).map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Hides the `secret` properties of custom actions in an execution's
    /// view (their resolved configuration), as GetPipeline hides them in
    /// the declaration.
    pub(super) fn hide_run_secrets(
        &self,
        view: &mut crate::ops::GetPipelineExecutionOutput,
        def: &crate::pipeline::Pipeline,
    ) {
        for stage in &mut view.stages {
            for run in &mut stage.actions {
                let Some(action) = def.stage(&stage.stage_name).and_then(|s| s.action(&run.action_name)) else {
                    continue;
                };
                let id = &action.action_type_id;
                hide_values(
                    &mut run.resolved_configuration,
                    &self.worker_secret_names(&id.owner, &id.provider, &id.version),
                );
            }
        }
    }

    /// UpdatePipeline: a `secret` property of a custom action sent back as
    /// GetPipeline showed it ([`HIDDEN`]) keeps the value the current
    /// version stores for that stage and action, as in CodePipeline.
    pub(super) fn keep_hidden_secrets(
        &self,
        new: &mut crate::pipeline::Pipeline,
        stored: &crate::pipeline::Pipeline,
    ) -> Result<(), OpError> {
        let mut problems = Vec::new();
        for stage in &mut new.stages {
            for action in &mut stage.actions {
                let id = &action.action_type_id;
                for name in self.worker_secret_names(&id.owner, &id.provider, &id.version) {
                    if action.configuration.get(&name) != Some(HIDDEN) {
                        continue;
                    }
                    let kept = stored
                        .stage(&stage.name)
                        .and_then(|s| s.action(&action.name))
                        .filter(|old| old.action_type_id == action.action_type_id)
                        .and_then(|old| old.configuration.get(&name))
                        .filter(|value| *value != HIDDEN);
                    match kept {
                        Some(value) => action.configuration.insert(name, value.to_string()),
                        None => problems.push(format!(
                            "stages[{}].actions[{}].configuration.{name}: {HIDDEN} keeps a stored secret value, and \
                             the current version has none for this action: give the value",
                            stage.name, action.name
                        )),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(OpError::Validation { message: "the pipeline declaration is invalid".into(), diagnostics: problems })
        }
    }

    /// An action's declared configuration as JSON, its `secret` properties
    /// hidden.
    pub(super) fn declared_configuration(
        &self,
        action: &crate::pipeline::Action,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut configuration = action.configuration.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        let id = &action.action_type_id;
        hide_values(&mut configuration, &self.worker_secret_names(&id.owner, &id.provider, &id.version));
        configuration
    }

    /// A pipeline as GetPipeline (and Create/UpdatePipeline) return it:
    /// the values of a custom action type's `secret` properties are hidden,
    /// as CodePipeline hides them from every call but the job worker's
    /// PollForJobs and GetJobDetails.
    pub(super) fn hide_worker_secrets(&self, mut pipeline: serde_json::Value) -> serde_json::Value {
        let stages = pipeline.get_mut("stages").and_then(|s| s.as_array_mut());
        for action in stages.into_iter().flatten().filter_map(|s| s.get_mut("actions")?.as_array_mut()).flatten() {
            let id = &action["actionTypeId"];
            let text = |field: &str| id[field].as_str().unwrap_or("").to_string();
            let secrets = self.worker_secret_names(&text("owner"), &text("provider"), &text("version"));
            if let Some(configuration) = action.get_mut("configuration").and_then(|c| c.as_object_mut()) {
                hide_values(configuration, &secrets);
            }
        }
        pipeline
    }
}

/// The value CodePipeline shows for a `secret` property of a custom action
/// type; an UpdatePipeline that sends it back keeps the stored value.
pub(super) const HIDDEN: &str = "****";

/// Replaces the values of `names` in a configuration map with [`HIDDEN`].
pub(super) fn hide_values(configuration: &mut serde_json::Map<String, serde_json::Value>, names: &[String]) {
    for name in names {
        if let Some(value) = configuration.get_mut(name) {
            *value = serde_json::Value::String(HIDDEN.into());
        }
    }
}
