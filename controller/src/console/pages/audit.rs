//! The audit log (`/audit`): `ListAuditRecords` with its filters, newest
//! first, a page at a time (`before` = the oldest record of the page shown).

use crate::api::{ApiState, ask};
use crate::console::layout::{self, Page, Section};
use crate::console::{ConsoleError, Viewer, enc};
use crate::ops::{AuditRecordView, ListAuditRecords};
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

/// Records on one page.
const PAGE: u64 = 50;

/// The filters as the form sends them (empty fields are no filter).
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    pipeline: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Text, read leniently: a link someone edited by hand shows the
    /// newest page rather than axum's bare error.
    #[serde(default)]
    before: String,
}

fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

impl AuditQuery {
    fn before(&self) -> Option<u64> {
        self.before.trim().parse().ok()
    }

    /// The query string of these filters (for paging links), without `before`.
    fn filters(&self) -> String {
        [
            ("user", &self.user),
            ("pipeline", &self.pipeline),
            ("operation", &self.operation),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// `GET /audit`.
pub async fn page(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    let op = ListAuditRecords {
        since: given(&q.since),
        until: given(&q.until),
        user: given(&q.user),
        pipeline: given(&q.pipeline),
        operation: given(&q.operation),
        limit: Some(PAGE),
        before_seq: q.before(),
    };
    // A filter the operation refuses (a time it cannot read) is shown
    // above the form, which keeps what was typed.
    let (records, problem) = match ask(&state, op, viewer.caller.clone()).await {
        Ok(out) => (out.records, None),
        Err(e) if e.status() == 400 => (Vec::new(), Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    Ok(Page::new("Audit log", Section::Audit, render(&q, &records, problem.as_deref())).render(&state, &viewer))
}

pub fn render(q: &AuditQuery, records: &[AuditRecordView], problem: Option<&str>) -> Markup {
    let filters = q.filters();
    let join = if filters.is_empty() { String::new() } else { format!("&{filters}") };
    let oldest = records.first().map(|r| r.seq);
    html! {
        form.filters method="get" action="/audit" role="search" aria-label="Filter the audit log" {
            @for (name, label, value, hint) in [
                ("user", "User", &q.user, ""),
                ("pipeline", "Pipeline", &q.pipeline, ""),
                ("operation", "Operation", &q.operation, "e.g. StartPipelineExecution"),
                ("since", "Since", &q.since, "RFC 3339 time or 15m, 2h, 7d"),
                ("until", "Until", &q.until, "RFC 3339 time or 15m, 2h, 7d"),
            ] {
                label for={ "audit-" (name) } { (label) }
                input type="text" id={ "audit-" (name) } name=(name) value=(value) placeholder=(hint);
            }
            button.primary type="submit" { "Filter" }
            " " a href="/audit" { "Clear filters" }
        }
        @if let Some(p) = problem { p.flash.failed role="alert" { (p) } }
        @if records.is_empty() { p { "No records match." } } @else {
            div.table-wrap { table {
                caption.visually-hidden { "Audit records" }
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "User" } th scope="col" { "Via" }
                    th scope="col" { "Operation" } th scope="col" { "Resource" } th scope="col" { "Result" } th scope="col" { "Source" }
                } }
                // Newest first, as people read a log of what just happened.
                tbody { @for r in records.iter().rev() { tr {
                    th scope="row" { (r.seq) }
                    td { (layout::time(&r.time)) }
                    td { (r.user) }
                    td { (r.via) }
                    td { (r.operation) }
                    td.mono { (r.resource) }
                    td { (layout::status(&r.result)) @if !r.message.is_empty() { " " span.muted { (r.message) } } }
                    td.mono { (r.source) }
                } } }
            } }
        }
        nav.pager aria-label="Pages" {
            @if q.before().is_some() { a href={ "/audit?" (filters) } { "Newest records" } " " }
            @if let Some(oldest) = oldest.filter(|&o| o > 1 && records.len() as u64 == PAGE) {
                a href={ "/audit?before=" (oldest) (join) } rel="next" { "Older records" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> AuditRecordView {
        AuditRecordView {
            seq,
            time: "2026-12-06T07:00:00Z".into(),
            user: "ann".into(),
            via: "token".into(),
            operation: "StartPipelineExecution".into(),
            resource: "pipeline/web".into(),
            result: "Succeeded".into(),
            message: String::new(),
            source: "127.0.0.1".into(),
            request_id: "r".into(),
            hash: "h".into(),
        }
    }

    #[test]
    fn pages_go_back_from_the_oldest_record_keeping_the_filters() {
        let q = AuditQuery { user: " ann ".into(), operation: "Start Pipeline".into(), ..AuditQuery::default() };
        let records: Vec<AuditRecordView> = (51..=100).map(record).collect();
        let html = render(&q, &records, None).into_string();
        assert!(html.contains("href=\"/audit?before=51&amp;user=ann&amp;operation=Start%20Pipeline\""), "{html}");
        // Newest first.
        assert!(html.find(">100<").unwrap() < html.find(">51<").unwrap());
        // A short page is the last one.
        assert!(!render(&q, &records[..10], None).into_string().contains("Older records"));
        let failed = render(&AuditQuery::default(), &[], Some("since: bad time")).into_string();
        assert!(failed.contains("role=\"alert\"") && failed.contains("No records match."));
    }
}
