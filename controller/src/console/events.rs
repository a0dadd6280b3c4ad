//! `GET /console/events`: the event stream of `/v1/events`, for a signed-in
//! browser (the session cookie instead of a bearer token). The same
//! filter applies: only events of pipelines the viewer may read, decided
//! per event.

use super::Viewer;
use crate::api::ApiState;
use crate::ops::OpError;
use axum::extract::{Query, State};
use axum::response::IntoResponse;

pub async fn stream(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<crate::api::EventsQuery>,
) -> Result<axum::response::Response, OpError> {
    Ok(crate::api::subscribe(state, viewer.caller, q).await?.into_response())
}
