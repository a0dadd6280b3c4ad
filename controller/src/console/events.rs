//! `GET /console/events`: the event stream of `/v1/events`, for a signed-in
//! browser (the session cookie instead of a bearer token). The same
//! filter applies: only events of pipelines the viewer may read, decided
//! per event; `?types=state` leaves out log lines.
//!
//! The stream lives only as long as its session: on every event and every
//! [`crate::api::ALIVE_TICK`] it asks whether the session is still open
//! (not signed out, expired or evicted) and its token or access key still
//! exists, and ends when not.

use super::Viewer;
use super::session::{self, Credential};
use crate::api::{Alive, ApiState};
use crate::ops::OpError;
use axum::extract::{Query, State};
use axum::response::IntoResponse;

pub async fn stream(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<crate::api::EventsQuery>,
) -> Result<axum::response::Response, OpError> {
    let secret = viewer.secret.clone();
    let alive: Alive = Box::new(move |state: &ApiState| session_stands(state, &secret));
    Ok(crate::api::subscribe(state, viewer.caller, q, alive).await?.into_response())
}

/// Whether the session of `secret` is open now and its credential still
/// resolves (without marking it used: a stream is not a visit).
fn session_stands(state: &ApiState, secret: &str) -> bool {
    let credential: Option<Credential> = state.console.sessions().peek(secret, session::now()).map(|s| s.credential);
    credential.is_some_and(|c| session::resolve(state, &c).is_some())
}
