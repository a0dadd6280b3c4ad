//! The frame every console page shares, and the small parts pages are
//! made of (status badges, times, durations, buttons that post a form).
//!
//! Accessibility: a skip link to `<main>`, one `<h1>` per page, landmarks
//! (`header`, `nav`, `main`), the current section marked with
//! `aria-current`, statuses spelled out in words (never colour alone), a
//! polite live region that the script fills when a page refreshes, and a
//! layout that reflows to one column on a phone. No inline styles or
//! scripts: the content security policy forbids them.

use super::{CSRF_FIELD, Viewer};
use crate::api::ApiState;
use crate::ops::{self, Operation};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// The sections of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Pipelines,
    Revisions,
    Agents,
    Plugins,
    Secrets,
    Audit,
    /// A page of no section (sign-in, errors).
    None,
}

/// A section, its label, its link, and the permission and resource its
/// list needs (none: every user may look).
type NavEntry = (Section, &'static str, &'static str, Option<(&'static str, &'static str)>);

impl Section {
    /// Each section with its link and the permission its list needs: a
    /// section the viewer may not list is not in the bar.
    const NAV: [NavEntry; 6] = [
        (Section::Pipelines, "Pipelines", "/", None),
        (Section::Revisions, "Revisions", "/revisions", None),
        (Section::Agents, "Agents", "/agents", Some((<ops::ListAgents as Operation>::PERMISSION, "*"))),
        (Section::Plugins, "Plugins", "/plugins", Some((<ops::ListPlugins as Operation>::PERMISSION, "*"))),
        (Section::Secrets, "Secrets", "/secrets", Some((<ops::ListSecrets as Operation>::PERMISSION, "*"))),
        (Section::Audit, "Audit log", "/audit", Some((<ops::ListAuditRecords as Operation>::PERMISSION, "audit/*"))),
    ];
}

/// What a page refreshes on: the script listens to the event stream and
/// reloads the page's `<main>` when an event of these pipelines arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// Nothing on the page changes by itself.
    Off,
    /// Events of one pipeline.
    Pipeline(String),
    /// Events of every pipeline the viewer may read.
    All,
}

/// One page: its title (the `<h1>` and the window's title), its section,
/// what it refreshes on, and its content.
pub struct Page {
    pub title: String,
    pub section: Section,
    pub live: Live,
    pub body: Markup,
}

impl Page {
    pub fn new(title: impl Into<String>, section: Section, body: Markup) -> Self {
        Self { title: title.into(), section, live: Live::Off, body }
    }

    pub fn live(self, live: Live) -> Self {
        Self { live, ..self }
    }

    /// The whole document for this viewer.
    pub fn render(self, state: &ApiState, viewer: &Viewer) -> Response {
        let live = match &self.live {
            Live::Off => None,
            Live::Pipeline(name) => Some(name.as_str()),
            Live::All => Some("*"),
        };
        let shown = |needs: Option<(&str, &str)>| {
            needs.is_none_or(|(action, resource)| state.directory.allows(&viewer.caller, action, resource))
        };
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                (head(&self.title))
                body data-live=[live] {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/" { "Sluice" }
                        nav aria-label="Sections" {
                            ul {
                                @for (section, label, href, needs) in Section::NAV {
                                    @if shown(needs) { li {
                                        @if section == self.section {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    } }
                                }
                            }
                        }
                        div.who {
                            span { (viewer.caller.user) }
                            form method="post" action="/sign-out" {
                                (csrf(viewer))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                    main #main tabindex="-1" {
                        @if let Some(flash) = &viewer.flash {
                            @match flash.kind {
                                super::session::FlashKind::Done => p.flash.done role="status" { (flash.text) },
                                super::session::FlashKind::Failed => p.flash.failed role="alert" { (flash.text) },
                            }
                        }
                        h1 { (self.title) }
                        (self.body)
                    }
                    div #live-status .visually-hidden aria-live="polite" {}
                }
            }
        };
        Html(markup.into_string()).into_response()
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Sluice" }
            link rel="stylesheet" href=(super::assets::url("console.css"));
            script src=(super::assets::url("console.js")) defer {}
        }
    }
}

/// A page outside the frame (sign-in, errors): no navigation, no user.
pub fn bare(title: &str, message: &str) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main .bare {
                    h1 { (title) }
                    p role="alert" { (message) }
                    p { a href="/" { "Back to the console" } }
                }
            }
        }
    };
    Html(markup.into_string())
}

/// The hidden field with the session's CSRF token: in every form.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf); }
}

/// How a button looks: what it does to the reader's eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Primary,
    Plain,
    Danger,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Plain => "plain",
            Self::Danger => "danger",
        }
    }
}

/// A one-button form that posts `fields` (and the CSRF token) to `action`.
/// `label` is the button's text; it should say what happens.
pub fn button(viewer: &Viewer, action: &str, label: &str, tone: Tone, fields: &[(&str, &str)]) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(viewer))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button class=(tone.class()) type="submit" { (label) }
        }
    }
}

/// A status in words with a shape and colour for the eye (`Succeeded`,
/// `InProgress`, `Failed`, `Stopped`, ...).
pub fn status(text: &str) -> Markup {
    let class = match text {
        "Succeeded" => "ok",
        "Failed" | "Abandoned" | "Rejected" => "bad",
        "InProgress" | "Stopping" | "Running" | "Draining" => "run",
        "Stopped" | "Superseded" | "Cancelled" | "Disabled" => "off",
        _ => "wait",
    };
    html! { span class={ "status " (class) } { (text) } }
}

/// An RFC 3339 time as `<time>`, readable as it is (UTC); the script
/// shows it in the reader's time zone.
pub fn time(rfc3339: &str) -> Markup {
    let shown = rfc3339.replacen('T', " ", 1);
    html! { time datetime=(rfc3339) { (shown.trim_end_matches('Z')) " UTC" } }
}

/// A duration in milliseconds, as people read it: `850 ms`, `12.4 s`,
/// `3 min 05 s`, `2 h 01 min`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// Text the reader sees that a screen reader should skip (an arrow).
pub fn decoration(text: &str) -> Markup {
    html! { span aria-hidden="true" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12.4 s");
        assert_eq!(duration(185_000), "3 min 05 s");
        assert_eq!(duration(7_260_000), "2 h 01 min");
    }

    #[test]
    fn statuses_are_words_and_text_is_escaped() {
        let s = status("<script>").into_string();
        assert!(s.contains("&lt;script&gt;") && s.contains("status wait"));
        assert!(status("Succeeded").into_string().contains("status ok"));
        assert!(time("2026-12-06T07:00:00Z").into_string().contains("datetime=\"2026-12-06T07:00:00Z\""));
    }
}
