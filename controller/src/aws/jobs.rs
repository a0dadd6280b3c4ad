//! CodePipeline's custom action and job worker operations, translated to
//! and from the typed operations of [`crate::ops`] (which already have
//! CodePipeline's shapes): the job's `pipelineArn` and `accountId` are
//! this endpoint's.

use super::{Call, input};
use crate::ops::{
    AcknowledgeJob, CreateCustomActionType, DeleteCustomActionType, GetActionType, GetJobDetails, ListActionTypes, OpError,
    PollForJobs, PutJobFailureResult, PutJobSuccessResult,
};
use serde::Serialize;
use serde_json::Value;

fn output(value: impl Serialize) -> Result<Value, OpError> {
    serde_json::to_value(value).map_err(|e| OpError::Internal(format!("encoding the output: {e}")))
}

/// A job as the endpoint shows it: ARN and account of this endpoint.
fn localize(call: &Call<'_>, job: &mut Value) {
    if let Some(context) = job.pointer_mut("/data/pipelineContext")
        && let Some(name) = context.get("pipelineName").and_then(Value::as_str).map(str::to_string)
    {
        context["pipelineArn"] = Value::String(call.arn(&name));
    }
    if job.get("accountId").is_some() {
        job["accountId"] = Value::String(call.state.aws.account.clone());
    }
}

pub async fn create_custom_action_type(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<CreateCustomActionType>(value)?).await?)
}

pub async fn delete_custom_action_type(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<DeleteCustomActionType>(value)?).await?)
}

pub async fn get_action_type(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<GetActionType>(value)?).await?)
}

pub async fn list_action_types(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<ListActionTypes>(value)?).await?)
}

pub async fn poll_for_jobs(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let mut out = output(call.ask(input::<PollForJobs>(value)?).await?)?;
    if let Some(jobs) = out.get_mut("jobs").and_then(Value::as_array_mut) {
        jobs.iter_mut().for_each(|job| localize(call, job));
    }
    Ok(out)
}

pub async fn acknowledge_job(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<AcknowledgeJob>(value)?).await?)
}

pub async fn get_job_details(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let mut out = output(call.ask(input::<GetJobDetails>(value)?).await?)?;
    if let Some(details) = out.get_mut("jobDetails") {
        localize(call, details);
    }
    Ok(out)
}

pub async fn put_job_success_result(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<PutJobSuccessResult>(value)?).await?)
}

pub async fn put_job_failure_result(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    output(call.ask(input::<PutJobFailureResult>(value)?).await?)
}
