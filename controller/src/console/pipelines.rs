//! The pipelines (`/`) and one pipeline (`/pipelines/{name}`): what the
//! CLI's `pipeline state` shows, as stages side by side joined by arrows.
//!
//! Data comes from the same reads as the CLI's (ListPipelines,
//! GetPipelineState, GetPipeline, GetPipelineExecution), asked as the
//! viewer; the changes the page offers are the forms of [`super::steer`],
//! each shown only to a viewer whom the directory allows its operation.
//! Shaping and rendering are plain functions of those outputs (tested
//! below); the handlers only gather.

use super::layout::{self, Live, Page, Section, Tone};
use super::{ConsoleError, Viewer, enc};
use crate::api::ApiState;
use crate::engine::ApprovalState;
use crate::ops::{
    self, ActionState, ExecutionSummary, GetPipelineExecution, GetPipelineExecutionOutput, GetPipelineState,
    GetPipelineStateOutput, Operation, StageState,
};
use crate::policy;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use std::collections::BTreeMap;

/// The most executions a pipeline page reads to show its stages (stages
/// each show the execution that last entered them: usually one or two).
const MAX_RUNS: usize = 8;

/// Whether the viewer may call an operation (its permission) on a
/// resource: what decides which buttons a page shows.
pub type Allows<'a> = &'a dyn Fn(&str, &str) -> bool;

/// A pipeline's row on the list: its state, or why it cannot be read.
pub struct Row {
    pub name: String,
    pub state: Result<GetPipelineStateOutput, String>,
    /// The source revisions of each execution a stage last ran, by id.
    pub revisions: BTreeMap<String, Vec<ops::SourceRevisionView>>,
}

/// `GET /`: every pipeline with each stage's latest status and the
/// revision its latest execution carries.
pub async fn list(State(state): State<ApiState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    // One read (one audit record) per page of up to 1000 pipelines.
    let mut rows = Vec::new();
    let mut next_token = None;
    loop {
        let op = ops::ListPipelineStates { max_results: None, next_token: next_token.take() };
        let page = crate::api::ask(&state, op, viewer.caller.clone()).await?;
        rows.extend(page.pipeline_states.into_iter().map(|p| Row {
            name: p.pipeline_name,
            state: p.state.ok_or_else(|| p.error.unwrap_or_default()),
            revisions: p.revisions,
        }));
        match page.next_token {
            Some(token) => next_token = Some(token),
            None => break,
        }
    }
    let page = Page::new("Pipelines", Section::Pipelines, render_list(&rows));
    Ok(page.live(Live::All).render(&state, &viewer))
}

/// The list of pipelines.
pub fn render_list(rows: &[Row]) -> Markup {
    html! {
        div #pipelines data-refresh {
            @if rows.is_empty() {
                p { "No pipelines yet." }
            } @else {
                div.table-wrap {
                    table.pipelines {
                        caption.visually-hidden { "Pipelines" }
                        thead { tr {
                            th scope="col" { "Pipeline" }
                            th scope="col" { "Latest execution" }
                            th scope="col" { "Stages" }
                            th scope="col" { "Revision" }
                            th scope="col" { "Updated" }
                        } }
                        tbody {
                            @for row in rows { (list_row(row)) }
                        }
                    }
                }
            }
        }
    }
}

fn list_row(row: &Row) -> Markup {
    let link = format!("/pipelines/{}", enc(&row.name));
    html! {
        tr data-pipeline=(row.name) {
            th scope="row" { a href=(link) { (row.name) } }
            @match &row.state {
                Err(why) => td colspan="4" .muted data-label="State" { (why) },
                Ok(state) => {
                    td data-label="Latest execution" {
                        @match &state.latest_execution {
                            Some(latest) => {
                                (layout::status(&latest.status)) " "
                                a.mono href=(execution_url(&row.name, &latest.pipeline_execution_id)) {
                                    (short(&latest.pipeline_execution_id))
                                }
                            }
                            None => span.muted { "Never run" },
                        }
                    }
                    td data-label="Stages" { (stage_strip(state, &row.revisions)) }
                    td data-label="Revision" { (revisions(state.latest_execution.as_ref())) }
                    // The latest execution's last change, else the declaration's.
                    td data-label="Updated" { (layout::time(state.latest_execution.as_ref().map_or(&state.updated, |l| &l.last_update_time))) }
                }
            }
        }
    }
}

/// Each stage's name, latest status and the commit it carries (that of
/// the execution it last ran), in order, joined by arrows.
fn stage_strip(state: &GetPipelineStateOutput, revisions: &BTreeMap<String, Vec<ops::SourceRevisionView>>) -> Markup {
    html! {
        ol.stage-strip {
            @for (i, stage) in state.stage_states.iter().enumerate() {
                @let status = stage_status(stage);
                li data-stage=(stage.stage_name) data-status=(status.unwrap_or("")) {
                    @if i > 0 {
                        @if stage.inbound_transition_state.enabled {
                            (layout::decoration("→ "))
                        } @else {
                            span.held title="Transition disabled" { (layout::decoration("⇥ ")) }
                            span.visually-hidden { "(transition disabled) " }
                        }
                    }
                    span.stage-name { (stage.stage_name) } " "
                    @match status {
                        Some(s) => (layout::status(s)),
                        None => span.muted { "Not run" },
                    }
                    @let carried = stage.latest_execution.as_ref().and_then(|e| revisions.get(&e.pipeline_execution_id));
                    @for r in carried.into_iter().flatten() {
                        " " code.stage-revision title={ (r.action_name) ": " (r.revision_id) } { (short(&r.revision_id)) }
                    }
                }
            }
        }
    }
}

fn stage_status(stage: &StageState) -> Option<&str> {
    stage.latest_execution.as_ref().and_then(|e| e.status.as_deref())
}

/// An execution's source revisions: the commit (short, whole in the
/// title) and the first line of its message.
fn revisions(latest: Option<&ExecutionSummary>) -> Markup {
    let revisions = latest.map(|l| l.source_revisions.as_slice()).unwrap_or_default();
    html! {
        @if revisions.is_empty() {
            span.muted { "—" }
        } @else {
            ul.revisions {
                @for r in revisions {
                    li {
                        // The revision flow (the pages slice's): where this commit went.
                        a href={ "/revisions/" (enc(&r.revision_id)) } { code title=(r.revision_id) { (short(&r.revision_id)) } }
                        @if let Some(summary) = &r.revision_summary {
                            " " span.summary { (summary.lines().next().unwrap_or_default()) }
                        }
                        @if revisions.len() > 1 { " " span.muted { "(" (r.action_name) ")" } }
                    }
                }
            }
        }
    }
}

/// The first 12 characters of an id or a commit.
fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

fn execution_url(pipeline: &str, id: &str) -> String {
    format!("/pipelines/{}/executions/{}", enc(pipeline), enc(id))
}

/// What the pipeline page shows: the state, the declaration (variables
/// and source actions, for the start form) and the executions the stages
/// last ran, by id.
pub struct PipelineView {
    pub name: String,
    pub state: GetPipelineStateOutput,
    pub declaration: serde_json::Value,
    pub runs: BTreeMap<String, GetPipelineExecutionOutput>,
    /// Milliseconds since the epoch: how long running actions have run.
    pub now: u64,
    /// The viewer's teams and roles as approvals name them
    /// (`team:NAME`, `role:NAME`): whom an approval accepts.
    pub member_of: Vec<String>,
}

/// `GET /pipelines/{name}`.
pub async fn page(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Response, ConsoleError> {
    let caller = || viewer.caller.clone();
    let pipeline_state = crate::api::ask(&state, GetPipelineState { name: name.clone() }, caller()).await?;
    // Only the start form needs the declaration (its variables and
    // sources): without it, the form has no fields to fill in.
    let declaration = crate::api::ask(&state, ops::GetPipeline { name: name.clone(), version: None }, caller()).await;
    let declaration = declaration.map(|d| d.pipeline).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for id in run_ids(&pipeline_state) {
        let op = GetPipelineExecution { pipeline_name: name.clone(), pipeline_execution_id: id.clone() };
        // An execution that ended and was removed meanwhile shows no times.
        if let Ok(run) = crate::api::ask(&state, op, caller()).await {
            runs.insert(id, run);
        }
    }
    let member_of = state.directory.member_of(&viewer.caller.user, &name);
    let now = super::session::now() * 1000;
    let view = PipelineView { name: name.clone(), state: pipeline_state, declaration, runs, now, member_of };
    let allows = |permission: &str, resource: &str| state.directory.allows(&viewer.caller, permission, resource);
    let body = render_pipeline(&view, &viewer, &allows);
    Ok(Page::new(name.clone(), Section::Pipelines, body).live(Live::Pipeline(name)).render(&state, &viewer))
}

/// The executions a pipeline page reads, each once: always that of every
/// stage with a waiting approval or a running action (its form, its
/// logs); then the latest and those that last entered the other stages,
/// up to [`MAX_RUNS`] in all.
fn run_ids(state: &GetPipelineStateOutput) -> Vec<String> {
    let busy = |s: &&StageState| {
        s.action_states.iter().filter_map(|a| a.latest_execution.as_ref()).any(|l| l.status.as_deref() == Some("InProgress"))
    };
    let mut ids: Vec<String> = Vec::new();
    for stage in state.stage_states.iter().filter(busy) {
        if let Some(e) = &stage.latest_execution
            && !ids.contains(&e.pipeline_execution_id)
        {
            ids.push(e.pipeline_execution_id.clone());
        }
    }
    let latest = state.latest_execution.iter().map(|l| &l.pipeline_execution_id);
    let stages = state.stage_states.iter().filter_map(|s| s.latest_execution.as_ref().map(|e| &e.pipeline_execution_id));
    for id in latest.chain(stages) {
        if !ids.contains(id) && ids.len() < MAX_RUNS {
            ids.push(id.clone());
        }
    }
    ids
}

/// The pipeline page's content (below its `<h1>`).
pub fn render_pipeline(view: &PipelineView, viewer: &Viewer, allows: Allows) -> Markup {
    let may = |op: &str, resource: &str| allows(op, resource);
    let pipeline = policy::pipeline(&view.name);
    html! {
        section #summary .panel data-refresh aria-labelledby="latest-heading" {
            h2 #latest-heading { "Latest execution" }
            (summary(view, viewer, allows))
        }
        @if may(ops::StartPipelineExecution::PERMISSION, &pipeline) {
            (super::steer::start_form(view, viewer))
        }
        (upstreams(view))
        h2 #stages-heading { "Stages" }
        ol #stages .stages data-refresh aria-labelledby="stages-heading" {
            @for (i, stage) in view.state.stage_states.iter().enumerate() {
                @if i > 0 {
                    @if stage.inbound_transition_state.enabled {
                        li.arrow aria-hidden="true" { span.right { "→" } span.down { "↓" } }
                    } @else {
                        // Held: the stage's section says so in words.
                        li.arrow.held aria-hidden="true" title="Transition disabled" {
                            span.right { "⇥" } span.down { "⤓" }
                        }
                    }
                }
                li.stage-column { (stage_column(view, i, stage, viewer, allows)) }
            }
        }
    }
}

/// The pipelines feeding this one (issue 21, feed), and why the newest
/// upstream success started nothing when it did not.
fn upstreams(view: &PipelineView) -> Markup {
    html! {
        @if !view.state.upstreams.is_empty() {
            section #upstreams .panel data-refresh aria-labelledby="upstreams-heading" {
                h2 #upstreams-heading { "Upstream pipelines" }
                ul {
                    @for up in &view.state.upstreams {
                        li {
                            (up.source_action) " ← "
                            a href={ "/pipelines/" (enc(&up.pipeline_name)) } { (up.pipeline_name) }
                            " (" (up.stage_name.as_deref().unwrap_or("its last stage")) ")"
                            @if let Some(taken) = &up.last_taken {
                                ", last took " a.mono href=(execution_url(&up.pipeline_name, taken)) { (short(taken)) }
                            }
                            @if let Some(held) = &up.held {
                                p.held { "Held: " (held) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn summary(view: &PipelineView, viewer: &Viewer, allows: Allows) -> Markup {
    let history = html! {
        p.history { a href={ "/pipelines/" (enc(&view.name)) "/executions" } { "Execution history" } }
    };
    let Some(latest) = &view.state.latest_execution else {
        return html! { p { "This pipeline has not run yet." } (history) };
    };
    let id = &latest.pipeline_execution_id;
    let trigger = &latest.trigger;
    html! {
        dl.facts {
            dt { "Execution" }
            dd { a.mono href=(execution_url(&view.name, id)) { (id) } }
            dt { "Status" }
            dd data-execution-status=(latest.status) {
                (layout::status(&latest.status))
                @if let Some(why) = &latest.status_summary { " " span { (why) } }
            }
            dt { "Trigger" }
            dd {
                (trigger.trigger_type)
                @if !trigger.trigger_detail.is_empty() { " (" (trigger.trigger_detail) ")" }
                @if let Some(by) = trigger.started_by.as_ref().filter(|by| !trigger.trigger_detail.contains(by.as_str())) {
                    " by " (by)
                }
            }
            dt { "Started" }
            dd { (layout::time(&latest.start_time)) }
            dt { "Revisions" }
            dd { (revisions(Some(latest))) }
            dt { "Version" }
            dd { (latest.pipeline_version) " (pipeline is at version " (view.state.pipeline_version) ")" }
        }
        (history)
        @for (run_id, run) in &view.runs {
            @let status = run.pipeline_execution.status.as_str();
            @if matches!(status, "InProgress" | "Stopping")
                && allows(ops::StopPipelineExecution::PERMISSION, &policy::pipeline(&view.name)) {
                (super::steer::stop_form(&view.name, run_id, status, viewer))
            }
        }
    }
}

/// One stage: its name and status, its inbound transition, its actions,
/// and what may be done to it.
fn stage_column(view: &PipelineView, index: usize, stage: &StageState, viewer: &Viewer, allows: Allows) -> Markup {
    let heading = format!("stage-{index}");
    let status = stage_status(stage);
    let run_id = stage.latest_execution.as_ref().map(|e| e.pipeline_execution_id.as_str());
    let run = run_id.and_then(|id| view.runs.get(id));
    let resource = policy::stage(&view.name, &stage.stage_name);
    let stage_url = format!("/pipelines/{}/stages/{}", enc(&view.name), enc(&stage.stage_name));
    html! {
        section.stage aria-labelledby=(heading) data-stage=(stage.stage_name) data-status=(status.unwrap_or("")) {
            @if index > 0 { (transition(view, index, stage, viewer, allows)) }
            h3 #(heading) { (stage.stage_name) }
            p.stage-status {
                @match status {
                    Some(s) => (layout::status(s)),
                    None => span.muted { "Not run yet" },
                }
                @if let Some(id) = run_id {
                    " " a.mono href=(execution_url(&view.name, id)) aria-label={ "Execution " (short(id)) } title=(id) { (short(id)) }
                }
            }
            @if let Some(run) = run && !run.pipeline_execution.source_revisions.is_empty() {
                p.stage-revision {
                    span.visually-hidden { "Revision: " }
                    @for r in &run.pipeline_execution.source_revisions {
                        code title=(r.revision_id) { (short(&r.revision_id)) } " "
                    }
                }
            }
            ul.actions-list {
                @for (a, action) in stage.action_states.iter().enumerate() {
                    li { (action_card(view, (index, a), stage, action, run, viewer, allows)) }
                }
            }
            div.stage-buttons {
                @if status == Some("Failed")
                    && let Some(id) = run_id
                    && allows(ops::RetryStageExecution::PERMISSION, &resource) {
                    (layout::button(viewer, &format!("{stage_url}/retry"), "Retry failed actions", Tone::Primary,
                        &[("execution", id)]))
                }
                // The first stage cannot be rolled back (the engine refuses:
                // start the pipeline on a revision instead).
                @if index > 0 && status.is_some_and(|s| s != "InProgress")
                    && allows(ops::RollbackStage::PERMISSION, &resource) {
                    @if stage.rollback_target.is_some() {
                        (super::steer::rollback_form(&stage_url, index, &stage.stage_name, viewer))
                    } @else {
                        // Rather than a form the driver would answer with a 409.
                        p.muted.no-rollback { "No recent execution in which " (stage.stage_name)
                            " succeeded: nothing to roll back to." }
                    }
                }
            }
        }
    }
}

/// A stage's inbound transition: enabled (with a form to disable it, and
/// a reason), or disabled with why, by whom and when (and a button to
/// enable it); and which executions wait to enter the stage.
fn transition(view: &PipelineView, index: usize, stage: &StageState, viewer: &Viewer, allows: Allows) -> Markup {
    let t = &stage.inbound_transition_state;
    let resource = policy::stage(&view.name, &stage.stage_name);
    let url = format!("/pipelines/{}/stages/{}/transition", enc(&view.name), enc(&stage.stage_name));
    let held = held_before(view, index);
    html! {
        div.transition data-transition=(if t.enabled { "enabled" } else { "disabled" }) {
            @if t.enabled {
                @if allows(ops::DisableStageTransition::PERMISSION, &resource) {
                    (super::steer::disable_form(&url, index, viewer))
                }
            } @else {
                p.held-note {
                    strong { "Transition disabled" }
                    @if let Some(Some(reason)) = &t.disabled_reason { ": " (reason) }
                    @if let Some(by) = &t.last_changed_by { " — by " (by) }
                    @if let Some(at) = &t.last_changed_at { ", " (layout::time(at)) }
                }
                @if allows(ops::EnableStageTransition::PERMISSION, &resource) {
                    (layout::button(viewer, &format!("{url}/enable"), "Enable transition", Tone::Primary, &[]))
                }
            }
            // Held by the disabled transition, or by the stage still busy
            // with an earlier execution.
            @for id in &held {
                p.held-execution { "Execution " a.mono href=(execution_url(&view.name, id)) { (id) } " waits here." }
            }
        }
    }
}

/// Executions held before stage `index`: in progress, the stage before
/// it done, this one not entered.
fn held_before(view: &PipelineView, index: usize) -> Vec<String> {
    let mut held = Vec::new();
    for (id, run) in &view.runs {
        if run.pipeline_execution.status != "InProgress" {
            continue;
        }
        // By name: a run of an older version may have other stages.
        let named = |i: usize| {
            let name = &view.state.stage_states.get(i)?.stage_name;
            run.stages.iter().find(|s| &s.stage_name == name)
        };
        let (Some(before), Some(this)) = (named(index - 1), named(index)) else { continue };
        if before.status.as_deref() == Some("Succeeded") && this.status.is_none() {
            held.push(id.clone());
        }
    }
    held
}

/// One action: its status, agent, duration and attempt, what it said, a
/// link to its page (logs), and for a waiting approval, the decisions so
/// far and the form to decide.
fn action_card(
    view: &PipelineView,
    at: (usize, usize),
    stage: &StageState,
    action: &ActionState,
    run: Option<&GetPipelineExecutionOutput>,
    viewer: &Viewer,
    allows: Allows,
) -> Markup {
    let latest = action.latest_execution.as_ref();
    let status = latest.and_then(|l| l.status.as_deref());
    let run_view = run.and_then(|r| {
        r.stages
            .iter()
            .find(|s| s.stage_name == stage.stage_name)?
            .actions
            .iter()
            .find(|a| a.action_name == action.action_name)
    });
    let agent = latest.and_then(|l| l.agent.as_deref()).or(run_view.and_then(|a| a.agent.as_deref()));
    let took = run_view.and_then(|a| took(a.start_time.as_deref(), a.last_update_time.as_deref(), status, view.now));
    // By position: names may hold anything, ids may not.
    let key = format!("{}-{}", at.0, at.1);
    let heading = format!("action-{key}");
    let resource = policy::action(&view.name, &stage.stage_name, &action.action_name);
    html! {
        article.action aria-labelledby=(heading) data-action=(action.action_name) data-status=(status.unwrap_or("")) {
            h4 #(heading) { (action.action_name) }
            p.action-status {
                @match status {
                    Some(s) => (layout::status(s)),
                    None => span.muted { "Not run yet" },
                }
            }
            @if let Some(l) = latest {
                dl.facts.compact {
                    dt { "Agent" } dd { (agent.unwrap_or("—")) }
                    dt { "Duration" } dd { (took.as_deref().unwrap_or("—")) }
                    dt { "Attempt" } dd { (l.attempt) }
                }
                @if let Some(error) = &l.error_details {
                    p.error { (error.code) ": " (error.message) }
                } @else if let Some(waiting) = l.waiting_reason.as_ref().filter(|_| l.approval.is_none()) {
                    p.waiting { (capitalized(waiting)) }
                } @else if let Some(summary) = &l.summary {
                    p.summary { (summary) }
                }
                @if let Some(approval) = &l.approval {
                    (approval_box(approval, status == Some("InProgress")))
                    @if status == Some("InProgress") && allows(ops::PutApprovalResult::PERMISSION, &resource)
                        && let Some(run) = run {
                        @match offer(view, stage, action, approval, run, &viewer.caller.user) {
                            Offer::Nothing(why) => p.may-not-decide { "You may not decide this approval: " (why) "." },
                            offer => (super::steer::approval_form(view, &key, stage, action,
                                &super::steer::Waiting { execution: &run.pipeline_execution.pipeline_execution_id,
                                    token: l.token.as_deref(), offer: &offer }, viewer)),
                        }
                    }
                }
            }
            @if let Some(run) = run && latest.is_some() {
                @let id = &run.pipeline_execution.pipeline_execution_id;
                a.logs href=(action_url(&view.name, id, &stage.stage_name, &action.action_name))
                    aria-label={ "Logs of " (action.action_name) } { "Logs" }
            }
        }
    }
}

/// The action page (the pages slice's): its logs, attempts and grants.
fn action_url(pipeline: &str, id: &str, stage: &str, action: &str) -> String {
    format!("/pipelines/{}/executions/{}/actions/{}/{}", enc(pipeline), enc(id), enc(stage), enc(action))
}

/// What a waiting approval lets the viewer decide, as the engine would
/// judge it ([`crate::engine::decider_refusal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Approve or reject.
    Both,
    /// Reject only (the starter, the version's author, ...), and why not approve.
    RejectOnly(String),
    /// Neither, and why.
    Nothing(String),
}

/// The decisions the engine would accept from `user` on a waiting approval.
fn offer(
    view: &PipelineView,
    stage: &StageState,
    action: &ActionState,
    approval: &ApprovalState,
    run: &GetPipelineExecutionOutput,
    user: &str,
) -> Offer {
    use crate::engine::{ApprovalAt, Decision, ExecutionId, decider_refusal};
    let id = ExecutionId(run.pipeline_execution.pipeline_execution_id.clone());
    let at = ApprovalAt {
        id: &id,
        pipeline: &view.name,
        version: run.pipeline_execution.pipeline_version,
        stage: &stage.stage_name,
        action: &action.action_name,
    };
    let decider = crate::pipeline::approvers::Decider { user, member_of: &view.member_of };
    let trigger = &run.pipeline_execution.trigger;
    let refusal = |decision| decider_refusal(&at, approval, trigger, &decider, decision).map(|r| r.to_string());
    match (refusal(Decision::Approved), refusal(Decision::Rejected)) {
        (None, _) => Offer::Both,
        (Some(why), None) => Offer::RejectOnly(why),
        (Some(_), Some(why)) => Offer::Nothing(why),
    }
}

/// A manual approval's decisions so far, and how many it still needs.
fn approval_box(approval: &ApprovalState, waiting: bool) -> Markup {
    let approved = approval.decisions.iter().filter(|d| d.approved).count() as u32;
    let needs = approval.required.saturating_sub(approved);
    html! {
        div.approval {
            @if waiting {
                p.approval-needs {
                    "Needs " (needs) " more approval" @if needs != 1 { "s" }
                    " (" (approved) " of " (approval.required) ")"
                }
            }
            @if !approval.approvers.is_empty() {
                p.muted { "Approvers: " (approval.approvers) }
            }
            @if !approval.decisions.is_empty() {
                ul.decisions {
                    @for d in &approval.decisions {
                        li {
                            strong { (d.by) } (if d.approved { " approved" } else { " rejected" })
                            @if !d.comment.is_empty() { ": " (d.comment) }
                            " " (layout::time(&crate::views::time(d.at)))
                        }
                    }
                }
            }
        }
    }
}

/// How long an action took (or has run, while it runs), in words.
fn took(start: Option<&str>, end: Option<&str>, status: Option<&str>, now: u64) -> Option<String> {
    let millis = |t: &str| crate::audit::parse_time(t, now).ok().filter(|_| t.contains('T'));
    let start = millis(start?)?;
    let end = if status == Some("InProgress") { now } else { millis(end?)? };
    Some(layout::duration(end.saturating_sub(start)))
}

/// A sentence of the engine's (lowercase, as errors are) to show alone.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::auth::{Caller, Role};

    pub fn viewer() -> Viewer {
        Viewer {
            caller: Caller::new("ann".to_string(), Role::Operator),
            session: "s1".into(),
            csrf: "tok3n".into(),
            flash: None,
            secret: "x".into(),
        }
    }

    pub fn state_json() -> GetPipelineStateOutput {
        serde_json::from_value(serde_json::json!({
            "pipelineName": "web", "pipelineVersion": 2, "created": "2026-12-06T07:00:00Z", "updated": "2026-12-06T07:05:00Z",
            "latestExecution": {
                "pipelineExecutionId": "e-2", "pipelineVersion": 2, "status": "InProgress", "statusSummary": null,
                "startTime": "2026-12-06T07:00:00Z", "lastUpdateTime": "2026-12-06T07:01:00Z",
                "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": "", "startedBy": "bob"},
                "sourceRevisions": [{"actionName": "Checkout", "revisionId": "0123456789abcdef0123",
                                     "revisionSummary": "fix <b>the</b> build\nmore", "pinned": false}]
            },
            "stageStates": [
                {"stageName": "Source", "inboundTransitionState": {"enabled": true},
                 "latestExecution": {"pipelineExecutionId": "e-2", "status": "Succeeded"},
                 "actionStates": [{"actionName": "Checkout", "latestExecution": {
                     "status": "Succeeded", "summary": "checked out", "lastStatusChange": null, "errorDetails": null,
                     "externalExecutionUrl": null, "agent": "agent-1", "attempt": 1, "waitingReason": null}}]},
                {"stageName": "Build", "inboundTransitionState": {"enabled": true}, "rollbackTarget": "e-0",
                 "latestExecution": {"pipelineExecutionId": "e-1", "status": "Failed"},
                 "actionStates": [{"actionName": "Compile", "latestExecution": {
                     "status": "Failed", "summary": null, "lastStatusChange": null,
                     "errorDetails": {"code": "JobFailed", "message": "exit status 2"},
                     "externalExecutionUrl": null, "agent": "agent-1", "attempt": 1, "waitingReason": null}}]},
                {"stageName": "Gate", "inboundTransitionState": {"enabled": false, "disabledReason": "freeze",
                    "lastChangedBy": "cy", "lastChangedAt": "2026-12-06T07:02:00Z"},
                 "latestExecution": {"pipelineExecutionId": "e-0", "status": "InProgress"},
                 "actionStates": [{"actionName": "Release", "latestExecution": {
                     "status": "InProgress", "summary": null, "lastStatusChange": null, "errorDetails": null,
                     "externalExecutionUrl": null, "agent": null, "attempt": 1,
                     "waitingReason": "waiting for 1 more approval(s)", "token": "tk-1",
                     "approval": {"required": 2, "approvers": "user:ann,user:dee",
                        "decisions": [{"by": "dee", "approved": true, "comment": "looks good", "at": 1796540000000u64}]}}}]}
            ]
        }))
        .unwrap()
    }

    fn run(id: &str, status: &str, stages: serde_json::Value) -> GetPipelineExecutionOutput {
        serde_json::from_value(serde_json::json!({
            "pipelineExecution": {"pipelineName": "web", "pipelineVersion": 2, "pipelineExecutionId": id, "status": status,
                "statusSummary": null, "startTime": "2026-12-06T07:00:00Z", "lastUpdateTime": "2026-12-06T07:01:00Z",
                "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": ""},
                "variables": [], "sourceRevisions": [], "rollbackMetadata": null},
            "stages": stages
        }))
        .unwrap()
    }

    fn action_run(name: &str, status: Option<&str>, start: Option<&str>, end: Option<&str>) -> serde_json::Value {
        serde_json::json!({"actionName": name, "runOrder": 1, "status": status, "attempt": 1, "agent": "agent-1",
            "summary": null, "errorDetails": null, "lostOn": [], "externalExecutionUrl": null, "startTime": start,
            "lastUpdateTime": end, "outputArtifacts": [], "outputVariables": {}, "approval": null, "waitingReason": null,
            "inputArtifacts": [], "resolvedConfiguration": {}})
    }

    pub fn view() -> PipelineView {
        let e2 = run(
            "e-2",
            "InProgress",
            serde_json::json!([
                {"stageName": "Source", "status": "Succeeded", "conditionRules": [],
                 "actions": [action_run("Checkout", Some("Succeeded"), Some("2026-12-06T07:00:00Z"), Some("2026-12-06T07:00:12.400Z"))]},
                {"stageName": "Build", "status": "Succeeded", "conditionRules": [], "actions": []},
                {"stageName": "Gate", "status": null, "conditionRules": [], "actions": []}
            ]),
        );
        let mut e2 = e2;
        e2.pipeline_execution.source_revisions.push(ops::SourceRevisionView {
            action_name: "Checkout".into(),
            revision_id: "feedfacecafebeef".into(),
            revision_summary: None,
            pinned: false,
        });
        let e0 = run(
            "e-0",
            "InProgress",
            serde_json::json!([
                {"stageName": "Source", "status": "Succeeded", "conditionRules": [], "actions": []},
                {"stageName": "Build", "status": "Succeeded", "conditionRules": [], "actions": []},
                {"stageName": "Gate", "status": "InProgress", "conditionRules": [], "actions": []}
            ]),
        );
        let declaration = serde_json::json!({"name": "web", "variables": [{"name": "ENV", "defaultValue": "staging"}],
            "stages": [{"name": "Source", "actions": [{"name": "Checkout", "actionTypeId": {"category": "Source"}}]}]});
        PipelineView {
            name: "web".into(),
            state: state_json(),
            declaration,
            runs: BTreeMap::from([("e-2".to_string(), e2), ("e-0".to_string(), e0)]),
            now: 1_796_540_100_000,
            member_of: Vec::new(),
        }
    }

    fn carried() -> BTreeMap<String, Vec<ops::SourceRevisionView>> {
        let revision = |id: &str| -> Vec<ops::SourceRevisionView> {
            serde_json::from_value(
                serde_json::json!([{"actionName": "Checkout", "revisionId": id, "revisionSummary": null, "pinned": false}]),
            )
            .unwrap()
        };
        BTreeMap::from([("e-0".to_string(), revision("oldoldoldoldold")), ("e-2".to_string(), revision("newnewnewnewnew"))])
    }

    #[test]
    fn the_list_shows_each_stage_and_the_revision_and_escapes_it() {
        let rows = [
            Row { name: "web".into(), state: Ok(state_json()), revisions: carried() },
            Row { name: "a b".into(), state: Err("access denied".into()), revisions: BTreeMap::new() },
        ];
        let html = render_list(&rows).into_string();
        // Each stage names the commit of the execution it last ran (Gate
        // ran e-0, an older one than the latest), not the latest's.
        let gate = &html[html.find(r#"data-stage="Gate""#).unwrap()..];
        let gate = &gate[..gate.find("</li>").unwrap()];
        assert!(
            gate.contains(r#"<code class="stage-revision" title="Checkout: oldoldoldoldold">oldoldoldold</code>"#),
            "{gate}"
        );
        assert!(html.contains(r#"<a href="/pipelines/web">web</a>"#), "{html}");
        assert!(html.contains(r#"href="/pipelines/a%20b""#), "{html}");
        assert!(html.contains(r#"data-stage="Build" data-status="Failed""#), "{html}");
        assert!(
            html.contains(
                r#"<a href="/revisions/0123456789abcdef0123"><code title="0123456789abcdef0123">0123456789ab</code></a>"#
            ),
            "{html}"
        );
        // The commit message's first line, escaped.
        assert!(html.contains("fix &lt;b&gt;the&lt;/b&gt; build") && !html.contains("more"), "{html}");
        assert!(html.contains("(transition disabled)") && html.contains("access denied"), "{html}");
        assert!(render_list(&[]).into_string().contains("No pipelines yet."));
    }

    #[test]
    fn an_operator_sees_stages_actions_transitions_and_the_buttons_they_may_use() {
        let allow_all = |_: &str, _: &str| true;
        let html = render_pipeline(&view(), &viewer(), &allow_all).into_string();
        // Stages as labelled regions, in order, with arrows between them.
        let source = html.find(r#"data-stage="Source""#).unwrap();
        let build = html.find(r#"data-stage="Build""#).unwrap();
        assert!(source < build && html.matches("<li class=\"arrow").count() == 2, "{html}");
        assert!(html.contains(r#"<li class="arrow held""#), "the held transition's arrow: {html}");
        // Each action: status, agent, duration, and a link to its page.
        assert!(html.contains(r#"data-action="Checkout" data-status="Succeeded""#), "{html}");
        assert!(html.contains("agent-1") && html.contains("12.4 s"), "{html}");
        assert!(html.contains(r#"href="/pipelines/web/executions/e-2/actions/Source/Checkout""#), "{html}");
        assert!(html.contains("JobFailed: exit status 2"), "{html}");
        assert!(html.contains(r#"<a href="/pipelines/web/executions">Execution history</a>"#), "{html}");
        // Each stage names the revision of the execution it last ran.
        assert!(html.contains(r#"<code title="feedfacecafebeef">feedfacecafe</code>"#), "{html}");
        // The disabled transition: why, who, when, what it holds.
        assert!(html.contains("Transition disabled</strong>: freeze — by cy"), "{html}");
        assert!(html.contains("e-2</a> waits here."), "{html}");
        // The approval: how many it still needs, decisions, the form.
        assert!(html.contains("Needs 1 more approval (1 of 2)"), "{html}");
        assert!(html.contains("dee</strong> approved: looks good"), "{html}");
        for button in [
            "Start execution",
            "Stop execution",
            "Retry failed actions",
            "Roll back stage",
            "Disable transition",
            "Enable transition",
            "Approve",
            "Reject",
        ] {
            assert!(html.contains(&format!(">{button}</button>")), "{button}: {html}");
        }
        assert!(html.contains(r#"name="csrf" value="tok3n""#));
        // Roll back only where an execution to go back to exists (Build),
        // never on the first stage (Source), which the engine refuses.
        assert_eq!(html.matches(">Roll back stage</button>").count(), 1, "{html}");
        assert!(html.contains(r#"action="/pipelines/web/stages/Build/rollback""#), "{html}");
        let mut nothing = view();
        nothing.state.stage_states[1].rollback_target = None;
        let html = render_pipeline(&nothing, &viewer(), &allow_all).into_string();
        assert!(!html.contains(">Roll back stage</button>"), "{html}");
        assert!(html.contains("No recent execution in which Build succeeded: nothing to roll back to."), "{html}");
    }

    #[test]
    fn a_viewer_who_may_change_nothing_sees_no_form_at_all() {
        let only_reads = |_: &str, _: &str| false;
        let html = render_pipeline(&view(), &viewer(), &only_reads).into_string();
        assert!(!html.contains("<form") && !html.contains("<button"), "{html}");
        // What is read is all there.
        assert!(html.contains("Needs 1 more approval") && html.contains("Transition disabled"), "{html}");
    }

    #[test]
    fn buttons_follow_each_permission_and_resource() {
        // Approve on the Gate's action only.
        let approver =
            |op: &str, resource: &str| op == ops::PutApprovalResult::PERMISSION && resource == "pipeline/web/Gate/Release";
        let html = render_pipeline(&view(), &viewer(), &approver).into_string();
        assert!(html.contains(">Approve</button>") && !html.contains(">Stop execution</button>"), "{html}");
        assert!(!html.contains("Retry failed actions"), "{html}");
    }

    #[test]
    fn approve_and_reject_are_offered_only_as_the_engine_would_accept_them() {
        let approver = |op: &str, _: &str| op == ops::PutApprovalResult::PERMISSION;
        let as_user = |user: &str| Viewer { caller: Caller::new(user.to_string(), Role::Operator), ..viewer() };
        let render = |view: &PipelineView, user: &str| render_pipeline(view, &as_user(user), &approver).into_string();
        // ann is among the approvers (user:ann,user:dee) and has not decided.
        let html = render(&view(), "ann");
        assert!(html.contains(">Approve</button>") && html.contains(">Reject</button>"), "{html}");
        // vic may call PutApprovalResult but is not among the approvers.
        let html = render(&view(), "vic");
        assert!(!html.contains(">Approve</button>") && !html.contains(">Reject</button>"), "{html}");
        assert!(html.contains("You may not decide this approval: vic is not among the approvers"), "{html}");
        // dee has decided already.
        let html = render(&view(), "dee");
        assert!(!html.contains(">Reject</button>") && html.contains("dee has already decided"), "{html}");
        // A member of an approving team is accepted.
        let mut team = view();
        team.state.stage_states[2].action_states[0]
            .latest_execution
            .as_mut()
            .unwrap()
            .approval
            .as_mut()
            .unwrap()
            .approvers = "team:release".into();
        team.member_of = vec!["team:release".into()];
        assert!(render(&team, "zed").contains(">Approve</button>"));
        // The starter of the execution may reject it, not approve it.
        let mut started = view();
        for run in started.runs.values_mut() {
            run.pipeline_execution.trigger.started_by = Some("ann".into());
        }
        let html = render(&started, "ann");
        assert!(!html.contains(">Approve</button>") && html.contains(">Reject</button>"), "{html}");
        assert!(html.contains("You may reject but not approve: ann started execution"), "{html}");
    }

    #[test]
    fn a_waiting_approval_s_execution_is_always_read_and_stages_match_by_name() {
        // Nine earlier stages, each last run by another execution: the
        // Gate's (e-0, waiting for approval) is still read.
        let mut state = state_json();
        for i in 0..9 {
            let mut stage = state.stage_states[0].clone();
            stage.stage_name = format!("Step{i}");
            stage.latest_execution.as_mut().unwrap().pipeline_execution_id = format!("e-1{i}");
            state.stage_states.insert(1, stage);
        }
        let ids = run_ids(&state);
        assert_eq!(ids[0], "e-0", "{ids:?}");
        assert!(ids.len() <= MAX_RUNS + 1, "{ids:?}");
        // A run whose stages are in another order (an older version):
        // the held execution is still found by the stages' names.
        let mut view = view();
        view.runs.get_mut("e-2").unwrap().stages.reverse();
        assert_eq!(held_before(&view, 2), ["e-2"]);
        assert!(held_before(&view, 1).is_empty());
    }

    #[test]
    fn the_page_reads_each_execution_once_and_names_the_held_one() {
        let state = state_json();
        // The waiting approval's first, then the latest, then each stage's, each once.
        assert_eq!(run_ids(&state), ["e-0", "e-2", "e-1"]);
        let view = view();
        // e-2 finished Build and has not entered Gate; e-0 is in Gate.
        assert_eq!(held_before(&view, 2), ["e-2"]);
        assert!(held_before(&view, 1).is_empty());
    }

    #[test]
    fn upstreams_and_why_a_set_is_held_are_shown() {
        let mut view = view();
        assert!(!render_pipeline(&view, &viewer(), &|_, _| true).into_string().contains("Upstream pipelines"));
        view.state.upstreams = vec![ops::UpstreamState {
            source_action: "Lib".into(),
            pipeline_name: "lib<x>".into(),
            stage_name: None,
            last_taken: Some("abcdef0123456789".into()),
            held: Some("held by execution c1 of svc-c".into()),
            held_since: None,
        }];
        let page = render_pipeline(&view, &viewer(), &|_, _| true).into_string();
        assert!(page.contains("Upstream pipelines") && page.contains("lib&lt;x&gt;"), "{page}");
        assert!(page.contains("Held: held by execution c1 of svc-c"), "{page}");
    }

    #[test]
    fn names_are_escaped_in_text_and_encoded_in_links() {
        let mut view = view();
        view.name = "a<b>".into();
        view.state.stage_states[1].stage_name = "<script>x</script>".into();
        let html = render_pipeline(&view, &viewer(), &|_: &str, _: &str| true).into_string();
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(html.contains("/pipelines/a%3Cb%3E/stages/%3Cscript%3Ex%3C%2Fscript%3E/retry"), "{html}");
    }

    #[test]
    fn a_pipeline_that_never_ran_says_so_and_may_be_started() {
        let mut view = view();
        view.state.latest_execution = None;
        for stage in &mut view.state.stage_states {
            stage.latest_execution = None;
            for action in &mut stage.action_states {
                action.latest_execution = None;
            }
        }
        view.runs.clear();
        let html = render_pipeline(&view, &viewer(), &|_: &str, _: &str| true).into_string();
        assert!(html.contains("This pipeline has not run yet."), "{html}");
        assert!(html.contains(">Start execution</button>") && html.contains("Not run yet"), "{html}");
        for absent in ["Stop execution", "Retry failed actions", "Roll back stage", "Logs"] {
            assert!(!html.contains(absent), "{absent}: {html}");
        }
    }

    #[test]
    fn durations_run_on_while_an_action_runs() {
        let now = 1_796_540_100_000;
        assert_eq!(
            took(Some("2026-12-06T07:00:00Z"), Some("2026-12-06T07:00:00.850Z"), Some("Succeeded"), now).unwrap(),
            "850 ms"
        );
        let started = crate::views::time(now - 65_000);
        assert_eq!(took(Some(&started), None, Some("InProgress"), now).unwrap(), "1 min 05 s");
        assert_eq!(took(None, None, None, now), None);
        assert_eq!(took(Some("90s"), None, Some("InProgress"), now), None, "only times, never durations");
        assert_eq!(short("abc"), "abc");
        assert_eq!(capitalized("waiting for an agent"), "Waiting for an agent");
        assert_eq!(capitalized(""), "");
    }
}
