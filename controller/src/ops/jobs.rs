//! Custom action types and job workers, in CodePipeline's shapes:
//! `CreateCustomActionType`, `DeleteCustomActionType`, `GetActionType`,
//! `ListActionTypes`, and the job worker's `PollForJobs`, `AcknowledgeJob`,
//! `GetJobDetails`, `PutJobSuccessResult` and `PutJobFailureResult`.
//! `JobCredentials` and `RecordJobOutput` are internal: the S3 subset asks
//! them on behalf of a job's temporary credentials.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// CodePipeline's `ActionTypeId`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeId {
    pub category: String,
    pub owner: String,
    pub provider: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_party_configuration_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_url_template: Option<String>,
    /// `{ExternalExecutionId}` in it is replaced by the job's
    /// `executionDetails.externalExecutionId`: the action's link in state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_url_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_url_template: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionConfigurationProperty {
    pub name: String,
    pub required: bool,
    pub key: bool,
    pub secret: bool,
    #[serde(default)]
    pub queryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `String`, `Number` or `Boolean`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactDetails {
    pub minimum_count: u32,
    pub maximum_count: u32,
}

/// A tag of a custom action type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTypeTag {
    pub key: String,
    pub value: String,
}

/// CodePipeline's `ActionType`, as `ListActionTypes` and
/// `CreateCustomActionType` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionType {
    pub id: ActionTypeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ActionTypeSettings>,
    #[serde(default)]
    pub action_configuration_properties: Vec<ActionConfigurationProperty>,
    pub input_artifact_details: ArtifactDetails,
    pub output_artifact_details: ArtifactDetails,
}

/// CreateCustomActionType: an action type whose actions wait for a job
/// worker instead of running on an agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCustomActionType {
    pub category: String,
    pub provider: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ActionTypeSettings>,
    #[serde(default)]
    pub configuration_properties: Vec<ActionConfigurationProperty>,
    pub input_artifact_details: ArtifactDetails,
    pub output_artifact_details: ArtifactDetails,
    #[serde(default)]
    pub tags: Vec<ActionTypeTag>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCustomActionTypeOutput {
    pub action_type: ActionType,
    #[serde(default)]
    pub tags: Vec<ActionTypeTag>,
}

/// DeleteCustomActionType: the type can no longer be used by new
/// declarations; as in CodePipeline, the same version cannot be created
/// again (a new version can).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteCustomActionType {
    pub category: String,
    pub provider: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmptyOutput {}

/// GetActionType: one action type, as CodePipeline's `ActionTypeDeclaration`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetActionType {
    pub category: String,
    pub owner: String,
    pub provider: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetActionTypeOutput {
    pub action_type: ActionTypeDeclaration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeDeclaration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub executor: ActionTypeExecutor,
    pub id: ActionTypeId,
    pub input_artifact_details: ArtifactDetails,
    pub output_artifact_details: ArtifactDetails,
    #[serde(default)]
    pub properties: Vec<ActionTypeProperty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<ActionTypeUrls>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeExecutor {
    pub configuration: serde_json::Value,
    /// `JobWorker` for custom action types; Sluice's plugins say `Sluice`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds a job may take from its poll to its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_timeout: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeProperty {
    pub name: String,
    pub optional: bool,
    pub key: bool,
    pub no_echo: bool,
    #[serde(default)]
    pub queryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeUrls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_url_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_url_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_url_template: Option<String>,
}

/// ListActionTypes: custom action types (owner `Custom`) and Sluice's
/// registered plugins (owner `Sluice`), a page at a time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListActionTypes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_owner_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// Accepted and ignored: a controller has one region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_filter: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListActionTypesOutput {
    pub action_types: Vec<ActionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// PollForJobs: jobs of one custom action type waiting for a worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollForJobs {
    pub action_type_id: ActionTypeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// Matched against the action's queryable configuration property.
    #[serde(default)]
    pub query_param: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollForJobsOutput {
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    pub data: JobData,
    pub nonce: String,
    pub account_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobData {
    pub action_type_id: ActionTypeId,
    pub action_configuration: ActionConfiguration,
    pub pipeline_context: PipelineContext,
    pub input_artifacts: Vec<JobArtifact>,
    pub output_artifacts: Vec<JobArtifact>,
    pub artifact_credentials: ArtifactCredentials,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionConfiguration {
    pub configuration: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineContext {
    pub pipeline_name: String,
    pub stage: NameContext,
    pub action: ActionContext,
    pub pipeline_execution_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameContext {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionContext {
    pub name: String,
    pub action_execution_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobArtifact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub location: ArtifactLocation,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactLocation {
    /// Always `S3`.
    #[serde(rename = "type")]
    pub kind: String,
    pub s3_location: S3Location,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    pub bucket_name: String,
    pub object_key: String,
}

/// Temporary credentials: valid while the job runs, for its own objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

/// AcknowledgeJob: the worker that polled the job (it holds the nonce)
/// takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcknowledgeJob {
    pub job_id: String,
    pub nonce: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcknowledgeJobOutput {
    /// `Created`, `Queued`, `Dispatched`, `InProgress`, `TimedOut`,
    /// `Succeeded` or `Failed`.
    pub status: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetJobDetails {
    pub job_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetJobDetailsOutput {
    pub job_details: JobDetails,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDetails {
    pub id: String,
    pub data: JobData,
    pub account_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CurrentRevision {
    pub revision: String,
    pub change_identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_summary: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<u32>,
}

/// PutJobSuccessResult: the job succeeded; with a `continuationToken` the
/// action stays in progress and a new job carrying the token is queued.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutJobSuccessResult {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<CurrentRevision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_details: Option<ExecutionDetails>,
    #[serde(default)]
    pub output_variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureDetails {
    /// `JobFailed`, `ConfigurationError`, `PermissionError`,
    /// `RevisionOutOfSync`, `RevisionUnavailable` or `SystemUnavailable`.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_execution_id: Option<String>,
}

/// PutJobFailureResult: the job, and its action, failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutJobFailureResult {
    pub job_id: String,
    pub failure_details: FailureDetails,
}

/// Internal: what a job's temporary access key may do, for the S3 subset
/// to check a signature and a grant. Unknown keys and ended jobs answer
/// with an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCredentials {
    pub access_key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCredentialsOutput {
    pub job_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Whether the job still runs; an ended job's key opens nothing.
    pub active: bool,
    pub bucket: String,
    pub objects: Vec<ObjectGrant>,
}

/// One object a job's key may read (an input, or an output it uploaded)
/// or write (an output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectGrant {
    pub key: String,
    pub writable: bool,
    /// The Sluice archive behind it, once there is one.
    pub artifact: Option<crate::engine::ArtifactRef>,
}

/// Internal: an output a job uploaded, converted and stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordJobOutput {
    pub access_key_id: String,
    pub key: String,
    pub artifact: crate::engine::ArtifactRef,
}
