//! The fleet and what it runs: agents (with their buttons), plugins (with
//! the pipelines that use them) and secrets (names only).

use super::action_url;
use crate::api::{ApiState, ask};
use crate::console::layout::{self, Live, Page, Section, Tone};
use crate::console::{Change, ConsoleError, Viewer, enc, finish};
use crate::ops::{
    AgentView, DisableAgent, DrainAgent, EnableAgent, GetPipeline, ListAgents, ListPipelines, ListPlugins, ListSecrets,
    PluginView, RevokeAgent, SecretView,
};
use crate::policy;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// What an agent's state lets an operator do next: (verb, button text, tone).
pub fn agent_verbs(state: &str) -> &'static [(&'static str, &'static str, Tone)] {
    match state {
        "enabled" => {
            &[("drain", "Drain", Tone::Plain), ("disable", "Disable", Tone::Plain), ("revoke", "Revoke", Tone::Danger)]
        }
        "draining" => {
            &[("enable", "Enable", Tone::Plain), ("disable", "Disable", Tone::Plain), ("revoke", "Revoke", Tone::Danger)]
        }
        "disabled" => &[("enable", "Enable", Tone::Plain), ("revoke", "Revoke", Tone::Danger)],
        _ => &[],
    }
}

/// `GET /agents`.
pub async fn agents(State(state): State<ApiState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let out = ask(&state, ListAgents {}, viewer.caller.clone()).await?;
    // One check per agent: a policy may name agents one by one.
    let manage = |id: &str| viewer.may::<DrainAgent>(&state, &policy::named("agent", id));
    let body = render_agents(&out.agents, &manage, &|id, verb, label, tone| agent_button(&viewer, id, verb, label, tone));
    Ok(Page::new("Agents", Section::Agents, body).live(Live::All).render(&state, &viewer))
}

fn agent_button(viewer: &Viewer, id: &str, verb: &str, label: &str, tone: Tone) -> Markup {
    let action = format!("/agents/{}/{verb}", enc(id));
    html! {
        form.inline method="post" action=(action) {
            (layout::csrf(viewer))
            button class=(match tone { Tone::Danger => "danger", Tone::Primary => "primary", Tone::Plain => "plain" }) type="submit" {
                (label) span.visually-hidden { " agent " (id) }
            }
        }
    }
}

type Button<'a> = &'a dyn Fn(&str, &str, &str, Tone) -> Markup;

pub fn render_agents(agents: &[AgentView], manage: &dyn Fn(&str) -> bool, button: Button<'_>) -> Markup {
    let any_buttons = agents.iter().any(|a| manage(&a.id) && !agent_verbs(&a.state).is_empty());
    html! {
        div #agents data-refresh {
            @if agents.is_empty() {
                p { "No agents enrolled. Create a join token with " code { "sluice agent-token create" } " and start " code { "sluice-agent" } "." }
            } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Agents" }
                    thead { tr {
                        th scope="col" { "Agent" } th scope="col" { "Host" } th scope="col" { "State" }
                        th scope="col" { "Connected" } th scope="col" { "Labels" } th scope="col" { "Slots" }
                        th scope="col" { "Load" } th scope="col" { "Running jobs" } th scope="col" { "Certificate expires" }
                        @if any_buttons { th scope="col" { "Actions" } }
                    } }
                    tbody { @for a in agents { tr data-agent=(a.id) data-state=(a.state) {
                        th scope="row" .mono { (a.id) }
                        td { (a.hostname) }
                        td { (layout::status(&capitalized(&a.state))) }
                        td { @if a.connected { "Yes" } @else { "No" } }
                        td { ul.labels { @for (k, v) in &a.labels { li.mono { (k) "=" (v) } } } }
                        td { @match a.slots { Some(n) => (n), None => "-" } }
                        td { (load(a)) }
                        td { (running_jobs(a)) }
                        td { @match &a.certificate_expires { Some(t) => (layout::time(t)), None => "Not known yet" } }
                        @if any_buttons { td.actions {
                            @if manage(&a.id) { @for (verb, label, tone) in agent_verbs(&a.state) { (button(&a.id, verb, label, *tone)) } }
                        } }
                    } } }
                } }
            }
        }
    }
}

fn capitalized(state: &str) -> String {
    let mut chars = state.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Running jobs over slots: `2 of 4 slots`.
fn load(a: &AgentView) -> String {
    match a.slots {
        Some(slots) => format!("{} of {slots} slots", a.running),
        None => format!("{} running", a.running),
    }
}

fn running_jobs(a: &AgentView) -> Markup {
    let hidden = a.running.saturating_sub(a.running_jobs.len());
    html! {
        @if a.running == 0 { "None" } @else {
            ul.jobs { @for j in &a.running_jobs { li {
                a href=(action_url(&j.pipeline_name, &j.pipeline_execution_id, &j.stage_name, &j.action_name)) {
                    (j.pipeline_name) " / " (j.stage_name) " / " (j.action_name)
                }
            } } }
            @if hidden > 0 { p.muted { (hidden) " of pipelines you may not read" } }
        }
    }
}

/// `POST /agents/{id}/{verb}`: drain, disable, enable or revoke, as the CLI's
/// `sluice agent drain|disable|enable|revoke`.
pub async fn agent_change(
    State(state): State<ApiState>,
    Path((id, verb)): Path<(String, String)>,
    change: Change,
) -> Response {
    let caller = change.viewer.caller.clone();
    let result = match verb.as_str() {
        "drain" => ask(&state, DrainAgent { id: id.clone() }, caller).await,
        "disable" => ask(&state, DisableAgent { id: id.clone() }, caller).await,
        "enable" => ask(&state, EnableAgent { id: id.clone() }, caller).await,
        "revoke" => ask(&state, RevokeAgent { id: id.clone() }, caller).await,
        _ => {
            return ConsoleError::new(StatusCode::NOT_FOUND, format!("agents cannot {verb:?}; nothing was changed"))
                .into_response();
        }
    };
    let done = result.map(|out| format!("Agent {} is {}", out.id, out.state));
    finish(&state, &change.viewer, "/agents", done)
}

/// `GET /plugins`: each registered version, what it declares, and the
/// pipelines (the viewer may read) whose latest version uses it.
pub async fn plugins(State(state): State<ApiState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let out = ask(&state, ListPlugins {}, viewer.caller.clone()).await?;
    let pipelines = ask(&state, ListPipelines::default(), viewer.caller.clone()).await?;
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pipelines.pipelines {
        let Ok(declared) = ask(&state, GetPipeline { name: p.name.clone(), version: None }, viewer.caller.clone()).await
        else {
            continue;
        };
        for key in providers(&declared.pipeline) {
            let users = used.entry(key).or_default();
            if !users.contains(&p.name) {
                users.push(p.name.clone());
            }
        }
    }
    Ok(Page::new("Plugins", Section::Plugins, render_plugins(&out.plugins, &used)).render(&state, &viewer))
}

/// The `provider@version` of every action of a declaration.
pub fn providers(pipeline: &serde_json::Value) -> Vec<String> {
    let stages = pipeline["stages"].as_array().into_iter().flatten();
    stages
        .flat_map(|s| s["actions"].as_array().into_iter().flatten())
        .filter_map(|a| {
            let t = &a["actionTypeId"];
            Some(format!("{}@{}", t["provider"].as_str()?, t["version"].as_str()?))
        })
        .collect()
}

pub fn render_plugins(plugins: &[PluginView], used: &BTreeMap<String, Vec<String>>) -> Markup {
    html! {
        div.table-wrap { table {
            caption.visually-hidden { "Plugins" }
            thead { tr {
                th scope="col" { "Plugin" } th scope="col" { "Digest" } th scope="col" { "Origin" }
                th scope="col" { "Capabilities" } th scope="col" { "Used by" }
            } }
            tbody { @for p in plugins { tr data-plugin=(p.provider) {
                th scope="row" { span.mono { (p.provider) } br; span.muted { (p.info.category) ": " (p.info.description) } }
                td.mono { span title=(p.digest) { (p.digest.get(..19).unwrap_or(&p.digest)) } }
                td {
                    @if p.builtin { "Built in" } @else { "Pushed" }
                    @if let Some(by) = &p.signed_by { br; "signed by " (by) } @else if !p.builtin { br; "unsigned" }
                }
                td { (capabilities(p)) }
                td { @match used.get(&p.provider) {
                    Some(names) => ul.plain { @for n in names { li { a href={ "/pipelines/" (enc(n)) } { (n) } } } },
                    None => "No pipeline",
                } }
            } } }
        } }
    }
}

fn capabilities(p: &PluginView) -> Markup {
    let value = serde_json::to_value(&p.info.capabilities).unwrap_or_default();
    let lists: Vec<(String, String)> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let items: Vec<&str> = v.as_array()?.iter().filter_map(|x| x.as_str()).collect();
            (!items.is_empty()).then(|| (k.clone(), items.join(", ")))
        })
        .collect();
    html! {
        @if lists.is_empty() { "None" } @else {
            dl.caps { @for (k, v) in &lists { dt { (k) } dd.mono { (v) } } }
        }
    }
}

/// `GET /secrets`: names, scopes and dates; the operation never returns values.
pub async fn secrets(State(state): State<ApiState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let out = ask(&state, ListSecrets {}, viewer.caller.clone()).await?;
    Ok(Page::new("Secrets", Section::Secrets, render_secrets(&out.secrets)).render(&state, &viewer))
}

pub fn render_secrets(secrets: &[SecretView]) -> Markup {
    html! {
        p.hint { "Values are never shown: set them with " code { "sluice secret set NAME" } "." }
        @if secrets.is_empty() { p { "No secrets." } } @else {
            div.table-wrap { table {
                caption.visually-hidden { "Secrets" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Pipelines" } th scope="col" { "Created" } th scope="col" { "Updated" } } }
                tbody { @for s in secrets { tr {
                    th scope="row" .mono { (s.name) }
                    td.mono { (s.pipelines.join(", ")) }
                    td { (layout::time(&s.created)) }
                    td { (layout::time(&s.updated)) }
                } } }
            } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn agent(id: &str, state: &str) -> AgentView {
        AgentView {
            id: id.into(),
            hostname: "h".into(),
            labels: BTreeMap::from([("os".into(), "linux".into())]),
            state: state.into(),
            connected: true,
            slots: Some(4),
            running: 3,
            plugins_cached: None,
            enrolled: "t".into(),
            certificate_expires: None,
            running_jobs: vec![crate::ops::RunningJobView {
                job_id: "j".into(),
                pipeline_name: "web".into(),
                pipeline_execution_id: "e".into(),
                stage_name: "Build".into(),
                action_name: "Make".into(),
            }],
        }
    }

    #[test]
    fn agents_show_buttons_only_to_those_who_may_press_them() {
        let list = [agent("ag-1", "enabled"), agent("ag-2", "revoked")];
        let button = |id: &str, _verb: &str, label: &str, _tone: Tone| html! { button { (label) " agent " (id) } };
        let shown = render_agents(&list, &|_| true, &button).into_string();
        assert!(shown.contains("Drain agent ag-1") && shown.contains("Revoke agent ag-1"), "{shown}");
        assert!(!shown.contains("agent ag-2</button>"), "a revoked agent has no buttons: {shown}");
        assert!(
            shown.contains("3 of 4 slots")
                && shown.contains("web / Build / Make")
                && shown.contains("2 of pipelines you may not read")
        );
        let viewer = render_agents(&list, &|_| false, &button).into_string();
        assert!(!viewer.contains("<button") && !viewer.contains(">Actions<"), "{viewer}");
        assert_eq!(agent_verbs("draining").iter().map(|v| v.1).collect::<Vec<_>>(), ["Enable", "Disable", "Revoke"]);
    }

    #[test]
    fn plugins_are_matched_to_the_actions_that_use_them() {
        let pipeline = serde_json::json!({"stages": [
            {"name": "Source", "actions": [{"name": "Git", "actionTypeId": {"provider": "git", "version": "1"}}]},
            {"name": "Build", "actions": [{"name": "Make", "actionTypeId": {"provider": "shell", "version": "1"}}, {"name": "Odd"}]}
        ]});
        assert_eq!(providers(&pipeline), ["git@1", "shell@1"]);
        assert!(providers(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn secrets_show_names_never_values() {
        let s =
            SecretView { name: "DB<PASS>".into(), pipelines: vec!["web".into()], created: "t".into(), updated: "t".into() };
        let html = render_secrets(&[s]).into_string();
        assert!(html.contains("DB&lt;PASS&gt;") && html.contains("Values are never shown"), "{html}");
    }
}
