//! Custom action types and the jobs of their actions, as CodePipeline's job
//! workers see them; pure.
//!
//! An action whose `actionTypeId` names a custom action type (owner
//! `Custom`, created with `CreateCustomActionType`) is not run on an agent:
//! the driver turns its dispatch into a [`WorkerJob`] that waits here until
//! a worker polls for it. A job goes `Queued` -> `Dispatched` (polled, with
//! a nonce) -> `InProgress` (acknowledged with that nonce) -> `Succeeded`,
//! `Failed` or `TimedOut`. A success with a continuation token ends the job
//! and queues a new one for the same action attempt, carrying the token.
//!
//! Each job has temporary credentials for the S3 subset: an access key id
//! of its own, and a secret and session token derived from the
//! controller's worker key and the job id (nothing secret is stored), good
//! only while the job is `Dispatched` or `InProgress` and only for the
//! job's own input and output objects.
//!
//! Knows nothing of the driver, the store or the engine's state; time,
//! ids and nonces come in as arguments.

use crate::engine::{ArtifactRef, Dispatch, JobId};
use crate::ops::{
    ActionConfigurationProperty, ActionTypeId, ActionTypeSettings, ActionTypeTag, ArtifactDetails, CreateCustomActionType,
    OpError,
};
use crate::pipeline::{PropertyInfo, ProviderInfo};
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The bucket every job's artifacts are in (path-style: `/sluice-artifacts/KEY`).
pub const BUCKET: &str = "sluice-artifacts";

/// The account id jobs report (CodePipeline's `accountId`): Sluice has
/// no accounts, and the model asks for twelve digits.
pub const ACCOUNT_ID: &str = "000000000000";

/// How long a job may take from its poll to its result unless
/// `sluice controller --worker-job-timeout` says otherwise. CodePipeline
/// gives a Lambda invoke action's reply the same 20 minutes and restarts the
/// timer when the function asks to continue; a continuation token here
/// likewise starts a new job with a timer of its own. The action as a whole
/// is bounded by its `timeoutInMinutes`.
pub const DEFAULT_JOB_TIMEOUT_MS: u64 = 20 * 60 * 1000;

/// CodePipeline's quota of custom action types per account and region.
pub const MAX_ACTION_TYPES: usize = 50;

/// CodePipeline's limits on a custom action type's declaration.
pub const MAX_PROPERTIES: usize = 10;
pub const MAX_ARTIFACTS: u32 = 5;
pub const MAX_TAGS: usize = 50;

/// Jobs one poll returns at most, whatever `maxBatchSize` asks.
pub const MAX_BATCH: u32 = 100;

/// A custom action type as stored. A deleted one stays, marked, so that
/// its version cannot be created again (CodePipeline's rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeRecord {
    pub category: String,
    pub provider: String,
    pub version: String,
    #[serde(default)]
    pub settings: Option<ActionTypeSettings>,
    #[serde(default)]
    pub properties: Vec<ActionConfigurationProperty>,
    pub input_artifact_details: ArtifactDetails,
    pub output_artifact_details: ArtifactDetails,
    #[serde(default)]
    pub tags: Vec<ActionTypeTag>,
    pub created_at: u64,
    #[serde(default)]
    pub deleted_at: Option<u64>,
}

impl ActionTypeRecord {
    pub fn id(&self) -> ActionTypeId {
        ActionTypeId {
            category: self.category.clone(),
            owner: "Custom".into(),
            provider: self.provider.clone(),
            version: self.version.clone(),
        }
    }

    pub fn view(&self) -> crate::ops::ActionType {
        crate::ops::ActionType {
            id: self.id(),
            settings: self.settings.clone(),
            action_configuration_properties: self.properties.clone(),
            input_artifact_details: self.input_artifact_details,
            output_artifact_details: self.output_artifact_details,
        }
    }

    /// What pipeline validation needs to know of it.
    pub fn provider_info(&self) -> ProviderInfo {
        ProviderInfo {
            category: self.category.clone(),
            properties: self
                .properties
                .iter()
                .map(|p| PropertyInfo { name: p.name.clone(), required: p.required })
                .collect(),
            inputs: (self.input_artifact_details.minimum_count, self.input_artifact_details.maximum_count),
            outputs: (self.output_artifact_details.minimum_count, self.output_artifact_details.maximum_count),
            digest: None,
        }
    }

    fn queryable(&self) -> Option<&str> {
        self.properties.iter().find(|p| p.queryable).map(|p| p.name.as_str())
    }
}

/// CodePipeline's job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Queued,
    Dispatched,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Dispatched => "Dispatched",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::TimedOut => "TimedOut",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::TimedOut)
    }

    /// Whether the job's credentials open anything.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Dispatched | Self::InProgress)
    }
}

/// One job of a custom action, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerJob {
    /// A UUID, as CodePipeline's job ids.
    pub id: String,
    pub access_key_id: String,
    /// The engine's job (the action attempt) and its lease epoch.
    pub engine_job: JobId,
    pub lease_epoch: u64,
    pub execution_id: String,
    pub pipeline: String,
    pub stage: String,
    pub action: String,
    pub attempt: u32,
    pub action_type: ActionTypeId,
    pub configuration: BTreeMap<String, String>,
    pub inputs: Vec<(String, ArtifactRef)>,
    pub outputs: Vec<String>,
    /// Outputs uploaded so far in this action attempt (continuation jobs
    /// carry them on).
    #[serde(default)]
    pub uploaded: BTreeMap<String, ArtifactRef>,
    #[serde(default)]
    pub continuation_token: Option<String>,
    pub status: JobStatus,
    #[serde(default)]
    pub nonce: Option<String>,
    /// The user whose key polled it.
    #[serde(default)]
    pub worker: Option<String>,
    pub created_at: u64,
    #[serde(default)]
    pub polled_at: Option<u64>,
    #[serde(default)]
    pub acknowledged_at: Option<u64>,
    #[serde(default)]
    pub ended_at: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
}

impl WorkerJob {
    /// The object key of an input artifact of this action attempt.
    pub fn input_key(&self, name: &str) -> String {
        format!("{}/in/{name}.zip", self.prefix())
    }

    /// The object key of an output artifact of this action attempt.
    pub fn output_key(&self, name: &str) -> String {
        format!("{}/out/{name}.zip", self.prefix())
    }

    fn prefix(&self) -> String {
        format!("{}/{}/{}/{}/{}", self.pipeline, self.execution_id, self.stage, self.action, self.attempt)
    }

    /// When the job times out, if it is running.
    pub fn deadline(&self, timeout_ms: u64) -> Option<u64> {
        self.status.is_running().then(|| self.polled_at.unwrap_or(self.created_at) + timeout_ms)
    }

    fn end(&mut self, now: u64, status: JobStatus, message: impl Into<String>) {
        self.status = status;
        self.ended_at = Some(now);
        self.message = Some(message.into());
    }
}

/// How a job asked to be finished, for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The action goes on: a new job (returned) carries the token.
    Continue(Box<WorkerJob>),
    Succeeded {
        summary: String,
        output_variables: BTreeMap<String, String>,
        external_url: Option<String>,
        outputs: Vec<(String, ArtifactRef)>,
    },
    Failed {
        message: String,
    },
}

/// Custom action types and the jobs not yet ended.
pub struct Workers {
    types: BTreeMap<(String, String, String), ActionTypeRecord>,
    jobs: HashMap<String, WorkerJob>,
    by_key: HashMap<String, String>,
    key: hmac::Key,
    pub job_timeout_ms: u64,
}

impl Workers {
    /// `secret` keys the derivation of every job's secret and session token.
    pub fn new(secret: &[u8], job_timeout_ms: u64) -> Self {
        Self {
            types: BTreeMap::new(),
            jobs: HashMap::new(),
            by_key: HashMap::new(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            job_timeout_ms,
        }
    }

    /// Start-up: a stored type.
    pub fn restore_type(&mut self, record: ActionTypeRecord) {
        let key = (record.category.clone(), record.provider.clone(), record.version.clone());
        self.types.insert(key, record);
    }

    /// Start-up and every change: a job, kept while it has not ended.
    pub fn put_job(&mut self, job: WorkerJob) {
        if job.status.is_final() {
            self.by_key.remove(&job.access_key_id);
            self.jobs.remove(&job.id);
        } else {
            self.by_key.insert(job.access_key_id.clone(), job.id.clone());
            self.jobs.insert(job.id.clone(), job);
        }
    }

    /// Live custom action types, in order.
    pub fn types(&self) -> impl Iterator<Item = &ActionTypeRecord> {
        self.types.values().filter(|t| t.deleted_at.is_none())
    }

    /// The live type of `provider@version` (a provider and version name at
    /// most one live custom type: see [`Workers::create_type`]).
    pub fn type_of(&self, provider: &str, version: &str) -> Option<&ActionTypeRecord> {
        self.types().find(|t| t.provider == provider && t.version == version)
    }

    /// The type of `provider@version`, live or deleted (the newest one):
    /// what hides the secret properties of actions stored while it lived.
    pub fn any_type_of(&self, provider: &str, version: &str) -> Option<&ActionTypeRecord> {
        self.types.values().filter(|t| t.provider == provider && t.version == version).max_by_key(|t| t.deleted_at.is_none())
    }

    /// Whether a dispatch is for a worker rather than an agent.
    pub fn is_worker_action(&self, d: &Dispatch) -> bool {
        d.owner == "Custom" && self.type_of(&d.provider, &d.provider_version).is_some()
    }

    /// Checks a CreateCustomActionType and builds its record. `plugin`
    /// says whether a plugin is registered as `provider@version`.
    pub fn create_type(&self, op: CreateCustomActionType, plugin: bool, now: u64) -> Result<ActionTypeRecord, OpError> {
        let mut problems = check_declaration(&op);
        let key = (op.category.clone(), op.provider.clone(), op.version.clone());
        let name = format!("{}/Custom/{}/{}", op.category, op.provider, op.version);
        match self.types.get(&key) {
            Some(t) if t.deleted_at.is_some() => problems.push(format!(
                "action type {name} was deleted, and a deleted version cannot be created again: use another version"
            )),
            Some(_) => problems.push(format!("action type {name} already exists")),
            None => {}
        }
        if let Some(other) = self.type_of(&op.provider, &op.version).filter(|t| t.category != op.category) {
            problems.push(format!(
                "{}@{} is already a custom action type of category {}: a provider and version name one type",
                op.provider, op.version, other.category
            ));
        }
        if plugin {
            problems.push(format!(
                "a plugin is registered as {}@{}: a custom action type needs a provider and version of its own",
                op.provider, op.version
            ));
        }
        if self.types().count() >= MAX_ACTION_TYPES {
            problems.push(format!("at most {MAX_ACTION_TYPES} custom action types may exist"));
        }
        if !problems.is_empty() {
            return Err(OpError::Validation { message: format!("action type {name} is invalid"), diagnostics: problems });
        }
        Ok(ActionTypeRecord {
            category: op.category,
            provider: op.provider,
            version: op.version,
            settings: op.settings,
            properties: op.configuration_properties,
            input_artifact_details: op.input_artifact_details,
            output_artifact_details: op.output_artifact_details,
            tags: op.tags,
            created_at: now,
            deleted_at: None,
        })
    }

    /// The record of a deleted type, or why not.
    pub fn delete_type(&self, category: &str, provider: &str, version: &str, now: u64) -> Result<ActionTypeRecord, OpError> {
        let key = (category.to_string(), provider.to_string(), version.to_string());
        match self.types.get(&key) {
            Some(t) if t.deleted_at.is_none() => Ok(ActionTypeRecord { deleted_at: Some(now), ..t.clone() }),
            _ => Err(OpError::ActionTypeNotFound(format!("no custom action type {category}/Custom/{provider}/{version}"))),
        }
    }

    /// A new job for a worker action's dispatch (`id`, `access_key_id` are
    /// fresh), unless one is already waiting or running for that attempt
    /// (after a restart, the engine hands the same attempt out again).
    pub fn job_for(&self, d: &Dispatch, category: &str, id: String, access_key_id: String, now: u64) -> Option<WorkerJob> {
        if self.jobs.values().any(|j| j.engine_job == d.job_id && j.lease_epoch == d.lease_epoch) {
            return None;
        }
        Some(WorkerJob {
            id,
            access_key_id,
            engine_job: d.job_id.clone(),
            lease_epoch: d.lease_epoch,
            execution_id: d.execution_id.0.clone(),
            pipeline: d.pipeline.clone(),
            stage: d.stage.clone(),
            action: d.action.clone(),
            attempt: d.attempt,
            action_type: ActionTypeId {
                category: category.to_string(),
                owner: "Custom".into(),
                provider: d.provider.clone(),
                version: d.provider_version.clone(),
            },
            configuration: d.configuration.iter().cloned().collect(),
            inputs: d.inputs.clone(),
            outputs: d.outputs.iter().map(|(name, _)| name.clone()).collect(),
            uploaded: BTreeMap::new(),
            continuation_token: None,
            status: JobStatus::Queued,
            nonce: None,
            worker: None,
            created_at: now,
            polled_at: None,
            acknowledged_at: None,
            ended_at: None,
            message: None,
        })
    }

    /// A live job of the engine's job `engine_job` (whatever its lease
    /// epoch) moved to `lease_epoch`, if it was on another: after a
    /// restart the engine hands the same attempt out again under a new
    /// epoch, and the worker holding the job goes on with it.
    pub fn adopt(&self, engine_job: &JobId, lease_epoch: u64) -> Option<WorkerJob> {
        self.jobs
            .values()
            .find(|j| &j.engine_job == engine_job && j.lease_epoch != lease_epoch)
            .map(|j| WorkerJob { lease_epoch, ..j.clone() })
    }

    pub fn job(&self, id: &str) -> Option<&WorkerJob> {
        self.jobs.get(id)
    }

    pub fn job_by_key(&self, access_key_id: &str) -> Option<&WorkerJob> {
        self.by_key.get(access_key_id).and_then(|id| self.jobs.get(id))
    }

    /// Live jobs, for sweeps.
    pub fn jobs(&self) -> impl Iterator<Item = &WorkerJob> {
        self.jobs.values()
    }

    /// PollForJobs: up to `max` queued jobs of the type whose queryable
    /// property matches, oldest first, marked dispatched with a nonce each
    /// from `nonce`. Returns the changed jobs.
    pub fn poll(
        &self,
        type_id: &ActionTypeId,
        max: Option<u32>,
        query: &BTreeMap<String, String>,
        worker: &str,
        now: u64,
        mut nonce: impl FnMut() -> String,
    ) -> Result<Vec<WorkerJob>, OpError> {
        let key = (type_id.category.clone(), type_id.provider.clone(), type_id.version.clone());
        let t = self.types.get(&key).filter(|t| t.deleted_at.is_none() && type_id.owner == "Custom").ok_or_else(|| {
            OpError::ActionTypeNotFound(format!(
                "no custom action type {}/{}/{}/{}",
                type_id.category, type_id.owner, type_id.provider, type_id.version
            ))
        })?;
        let max = max.unwrap_or(1);
        if max == 0 {
            return Err(OpError::invalid("maxBatchSize must be at least 1"));
        }
        let wanted = match (t.queryable(), query.len()) {
            (None, 0) => None,
            (None, _) => {
                return Err(OpError::invalid("this action type has no queryable property: queryParam must be empty"));
            }
            (Some(name), 1) => match query.get(name) {
                Some(value) => Some((name, value)),
                None => return Err(OpError::invalid(format!("queryParam must name the queryable property {name:?}"))),
            },
            (Some(name), _) => {
                return Err(OpError::invalid(format!("queryParam must name the queryable property {name:?}")));
            }
        };
        let mut queued: Vec<&WorkerJob> = self
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Queued && j.action_type.category == t.category)
            .filter(|j| j.action_type.provider == t.provider && j.action_type.version == t.version)
            .filter(|j| wanted.is_none_or(|(name, value)| j.configuration.get(name) == Some(value)))
            .collect();
        queued.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(queued
            .into_iter()
            .take(max.min(MAX_BATCH) as usize)
            .map(|j| WorkerJob {
                status: JobStatus::Dispatched,
                nonce: Some(nonce()),
                worker: Some(worker.to_string()),
                polled_at: Some(now),
                ..j.clone()
            })
            .collect())
    }

    /// AcknowledgeJob on a live job: the changed job (if it changed).
    pub fn acknowledge(&self, job: &WorkerJob, nonce: &str, now: u64) -> Result<Option<WorkerJob>, OpError> {
        let matches = job.nonce.as_deref().is_some_and(|n| constant_time_eq(n.as_bytes(), nonce.as_bytes()));
        if !matches {
            return Err(OpError::InvalidNonce(format!("the nonce is not the one job {} was polled with", job.id)));
        }
        match job.status {
            JobStatus::Dispatched => {
                Ok(Some(WorkerJob { status: JobStatus::InProgress, acknowledged_at: Some(now), ..job.clone() }))
            }
            _ => Ok(None),
        }
    }

    /// PutJobSuccessResult on a live job: the job as ended and what the
    /// action gets. `new_job` gives the id and access key of a
    /// continuation's job.
    pub fn succeed(
        &self,
        job: &WorkerJob,
        op: &crate::ops::PutJobSuccessResult,
        now: u64,
        new_job: impl FnOnce() -> (String, String),
    ) -> Result<(WorkerJob, Outcome), OpError> {
        running(job)?;
        check_variables(&op.output_variables)?;
        if let Some(token) = &op.continuation_token {
            if token.is_empty() || token.len() > 2048 {
                return Err(OpError::invalid("continuationToken must be 1 to 2048 characters"));
            }
            // CodePipeline's rule: variables come with the last job only.
            if !op.output_variables.is_empty() {
                return Err(OpError::invalid(
                    "outputVariables can be given only without a continuationToken (with the job that finishes the action)",
                ));
            }
            let (id, access_key_id) = new_job();
            let next = WorkerJob {
                id,
                access_key_id,
                continuation_token: Some(token.clone()),
                status: JobStatus::Queued,
                nonce: None,
                worker: None,
                created_at: now,
                polled_at: None,
                acknowledged_at: None,
                ended_at: None,
                message: None,
                ..job.clone()
            };
            let mut ended = job.clone();
            ended.end(now, JobStatus::Succeeded, format!("continued as job {}", next.id));
            return Ok((ended, Outcome::Continue(Box::new(next))));
        }
        let missing: Vec<String> = job
            .outputs
            .iter()
            .filter(|name| !job.uploaded.contains_key(*name))
            .map(|name| format!("{name:?} (s3://{BUCKET}/{})", job.output_key(name)))
            .collect();
        if !missing.is_empty() {
            return Err(OpError::invalid(format!(
                "job {}: output artifact {} not uploaded yet; upload it, then put the result again",
                job.id,
                missing.join(", ")
            )));
        }
        let details = op.execution_details.clone().unwrap_or_default();
        let summary = details.summary.unwrap_or_default().chars().take(crate::driver::intake::SUMMARY_MAX_CHARS).collect();
        let mut output_variables = op.output_variables.clone();
        if let Some(revision) = &op.current_revision {
            output_variables.entry("RevisionId".into()).or_insert_with(|| revision.revision.clone());
        }
        let template = self
            .type_of(&job.action_type.provider, &job.action_type.version)
            .and_then(|t| t.settings.as_ref().and_then(|s| s.execution_url_template.clone()));
        let external_url = match (template, details.external_execution_id) {
            (Some(template), Some(id)) => Some(template.replace("{ExternalExecutionId}", &id)),
            _ => None,
        };
        let outputs = job.outputs.iter().map(|name| (name.clone(), job.uploaded[name].clone())).collect();
        let mut ended = job.clone();
        ended.end(now, JobStatus::Succeeded, "succeeded");
        Ok((ended, Outcome::Succeeded { summary, output_variables, external_url, outputs }))
    }

    /// PutJobFailureResult on a live job.
    pub fn fail(
        &self,
        job: &WorkerJob,
        details: &crate::ops::FailureDetails,
        now: u64,
    ) -> Result<(WorkerJob, Outcome), OpError> {
        running(job)?;
        const TYPES: &[&str] = &[
            "JobFailed",
            "ConfigurationError",
            "PermissionError",
            "RevisionOutOfSync",
            "RevisionUnavailable",
            "SystemUnavailable",
        ];
        if !TYPES.contains(&details.kind.as_str()) {
            return Err(OpError::invalid(format!("failureDetails.type must be one of {}", TYPES.join(", "))));
        }
        if details.message.is_empty() {
            return Err(OpError::invalid("failureDetails.message must not be empty"));
        }
        let text: String = details.message.chars().take(crate::driver::intake::MESSAGE_MAX_CHARS).collect();
        let message = if details.kind == "JobFailed" { text } else { format!("{}: {text}", details.kind) };
        let mut ended = job.clone();
        ended.end(now, JobStatus::Failed, message.clone());
        Ok((ended, Outcome::Failed { message }))
    }

    /// Records an uploaded output on a running job: the changed job.
    pub fn record_output(&self, job: &WorkerJob, key: &str, artifact: ArtifactRef) -> Result<WorkerJob, OpError> {
        running(job)?;
        let name = job
            .outputs
            .iter()
            .find(|name| job.output_key(name) == key)
            .ok_or_else(|| OpError::AccessDenied(format!("job {} may not write {key}", job.id)))?;
        let mut changed = job.clone();
        changed.uploaded.insert(name.clone(), artifact);
        Ok(changed)
    }

    /// Jobs running past their deadline at `now`, ended as timed out.
    pub fn expired(&self, now: u64) -> Vec<WorkerJob> {
        let mut ended: Vec<WorkerJob> = self
            .jobs
            .values()
            .filter(|j| j.deadline(self.job_timeout_ms).is_some_and(|at| now >= at))
            .map(|j| {
                let human = human_ms(self.job_timeout_ms);
                let why = match j.status {
                    JobStatus::Dispatched => format!("job {} was not acknowledged within {human} of its poll", j.id),
                    _ => format!("job {} reported no result within {human} of its poll", j.id),
                };
                let mut j = j.clone();
                j.end(now, JobStatus::TimedOut, why);
                j
            })
            .collect();
        ended.sort_by(|a, b| a.id.cmp(&b.id));
        ended
    }

    /// The first deadline of a running job.
    pub fn next_deadline(&self) -> Option<u64> {
        self.jobs.values().filter_map(|j| j.deadline(self.job_timeout_ms)).min()
    }

    /// A job's temporary credentials: (access key id, secret, session token).
    pub fn credentials(&self, job: &WorkerJob) -> crate::ops::ArtifactCredentials {
        let derive = |what: &str| {
            let tag = hmac::sign(&self.key, format!("{what}\0{}", job.id).as_bytes());
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        };
        crate::ops::ArtifactCredentials {
            access_key_id: job.access_key_id.clone(),
            // 40 characters, as AWS secrets.
            secret_access_key: derive("secret")[..40].to_string(),
            session_token: format!("sluice-job-{}", derive("session-token")),
        }
    }

    /// The job as a worker sees it (PollForJobs, GetJobDetails).
    pub fn job_data(&self, job: &WorkerJob) -> crate::ops::JobData {
        use crate::ops::*;
        let location = |key: String| ArtifactLocation {
            kind: "S3".into(),
            s3_location: S3Location { bucket_name: BUCKET.into(), object_key: key },
        };
        JobData {
            action_type_id: job.action_type.clone(),
            action_configuration: ActionConfiguration { configuration: job.configuration.clone() },
            pipeline_context: PipelineContext {
                pipeline_name: job.pipeline.clone(),
                stage: NameContext { name: job.stage.clone() },
                action: ActionContext {
                    name: job.action.clone(),
                    action_execution_id: crate::views::action_execution_id(
                        &job.execution_id,
                        &job.stage,
                        &job.action,
                        job.attempt,
                    ),
                },
                pipeline_execution_id: job.execution_id.clone(),
            },
            input_artifacts: job
                .inputs
                .iter()
                .map(|(name, a)| JobArtifact {
                    name: name.clone(),
                    revision: Some(a.digest.clone()),
                    location: location(job.input_key(name)),
                })
                .collect(),
            output_artifacts: job
                .outputs
                .iter()
                .map(|name| JobArtifact { name: name.clone(), revision: None, location: location(job.output_key(name)) })
                .collect(),
            artifact_credentials: self.credentials(job),
            continuation_token: job.continuation_token.clone(),
        }
    }

    /// What a job's key may touch, for the S3 subset.
    pub fn grants(&self, job: &WorkerJob) -> Vec<crate::ops::ObjectGrant> {
        let inputs = job.inputs.iter().map(|(name, a)| crate::ops::ObjectGrant {
            key: job.input_key(name),
            writable: false,
            artifact: Some(a.clone()),
        });
        let outputs = job.outputs.iter().map(|name| crate::ops::ObjectGrant {
            key: job.output_key(name),
            writable: true,
            artifact: job.uploaded.get(name).cloned(),
        });
        inputs.chain(outputs).collect()
    }
}

/// A job must be polled and not ended to take a result.
fn running(job: &WorkerJob) -> Result<(), OpError> {
    if job.status.is_running() {
        Ok(())
    } else {
        Err(OpError::InvalidJobState(format!("job {} is {}, not in progress", job.id, job.status.as_str())))
    }
}

fn check_variables(variables: &BTreeMap<String, String>) -> Result<(), OpError> {
    use crate::driver::intake::{MAX_OUTPUT_VARIABLES, VARIABLE_NAME_MAX_CHARS, VARIABLE_VALUE_MAX_CHARS};
    if variables.len() > MAX_OUTPUT_VARIABLES {
        return Err(OpError::invalid(format!("at most {MAX_OUTPUT_VARIABLES} output variables, found {}", variables.len())));
    }
    for (name, value) in variables {
        let valid_name = !name.is_empty()
            && name.chars().count() <= VARIABLE_NAME_MAX_CHARS
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c));
        if !valid_name {
            return Err(OpError::invalid(format!("output variable name {name:?} is invalid")));
        }
        if value.chars().count() > VARIABLE_VALUE_MAX_CHARS {
            return Err(OpError::invalid(format!(
                "output variable {name:?} is longer than {VARIABLE_VALUE_MAX_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// Every problem of a CreateCustomActionType's declaration.
fn check_declaration(op: &CreateCustomActionType) -> Vec<String> {
    let mut problems = Vec::new();
    if !crate::pipeline::CATEGORIES.contains(&op.category.as_str()) {
        problems.push(format!("category must be one of {}", crate::pipeline::CATEGORIES.join(", ")));
    }
    for (field, value, max) in [("provider", &op.provider, 35), ("version", &op.version, 9)] {
        let valid = !value.is_empty()
            && value.len() <= max
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            problems.push(format!("{field} must be 1 to {max} characters of A-Z, a-z, 0-9, _ and -"));
        }
    }
    for (field, d) in
        [("inputArtifactDetails", op.input_artifact_details), ("outputArtifactDetails", op.output_artifact_details)]
    {
        if d.maximum_count > MAX_ARTIFACTS || d.minimum_count > d.maximum_count {
            problems.push(format!("{field}: counts run from 0 to {MAX_ARTIFACTS}, minimumCount at most maximumCount"));
        }
    }
    if op.configuration_properties.len() > MAX_PROPERTIES {
        problems.push(format!("at most {MAX_PROPERTIES} configurationProperties"));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in op.configuration_properties.iter().enumerate() {
        let at = format!("configurationProperties[{i}]");
        if p.name.is_empty() || p.name.chars().count() > 50 {
            problems.push(format!("{at}.name must be 1 to 50 characters"));
        }
        if !names.insert(p.name.as_str()) {
            problems.push(format!("{at}.name {:?} appears twice", p.name));
        }
        if p.queryable && (!p.required || p.secret) {
            problems.push(format!("{at}: a queryable property must be required and not secret"));
        }
        if p.description.as_ref().is_some_and(|d| d.is_empty() || d.chars().count() > 160) {
            problems.push(format!("{at}.description must be 1 to 160 characters"));
        }
        if p.kind.as_deref().is_some_and(|k| !["String", "Number", "Boolean"].contains(&k)) {
            problems.push(format!("{at}.type must be String, Number or Boolean"));
        }
    }
    if op.configuration_properties.iter().filter(|p| p.queryable).count() > 1 {
        problems.push("at most one configuration property may be queryable".into());
    }
    if let Some(s) = &op.settings {
        for (field, url) in [
            ("thirdPartyConfigurationUrl", &s.third_party_configuration_url),
            ("entityUrlTemplate", &s.entity_url_template),
            ("executionUrlTemplate", &s.execution_url_template),
            ("revisionUrlTemplate", &s.revision_url_template),
        ] {
            if url.as_ref().is_some_and(|u| u.is_empty() || u.len() > 2048) {
                problems.push(format!("settings.{field} must be 1 to 2048 characters"));
            }
        }
    }
    if op.tags.len() > MAX_TAGS {
        problems.push(format!("at most {MAX_TAGS} tags"));
    }
    for t in &op.tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            problems.push(format!("tag {:?}: keys are 1 to 128 characters, values at most 256", t.key));
        }
    }
    problems
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(60_000) { format!("{} min", ms / 60_000) } else { format!("{} s", ms.div_ceil(1000)) }
}

/// Compares secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
