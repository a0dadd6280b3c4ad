//! CodePipeline's pipeline operations, translated to and from the typed
//! operations of [`crate::ops`].

use super::{Call, epoch, input};
use crate::ops::{ListPipelines, OpError};
use serde_json::{Value, json};

pub async fn list_pipelines(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let _: serde_json::Map<String, Value> = input(value)?;
    let out = call.ask(ListPipelines {}).await?;
    let pipelines: Vec<Value> = out
        .pipelines
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "version": p.version,
                "created": epoch(&p.created),
                "updated": epoch(&p.updated),
            })
        })
        .collect();
    Ok(json!({ "pipelines": pipelines }))
}
