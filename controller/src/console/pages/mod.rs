//! The pages slice of the console (issue 16): executions and their
//! timeline, an action with its live log, agents, plugins, secrets, the
//! audit log and the revision flow.
//!
//! Each page gathers the outputs of typed operations asked as the viewer
//! (the driver checks and audits every one) and renders them with plain
//! functions; what is pure (the ANSI converter, the timeline's shaping)
//! is tested beside it. Buttons appear only when the directory allows
//! their operation; the driver decides again when they are pressed.

pub mod action;
pub mod audit;
pub mod executions;
pub mod fleet;
pub mod revisions;
pub mod timeline;

use super::enc;
use maud::{Markup, html};

/// The first characters of a revision id, as people read a commit.
pub fn short(revision: &str) -> &str {
    match revision.char_indices().nth(12) {
        Some((i, _)) => &revision[..i],
        None => revision,
    }
}

/// A revision as a link to its flow, shortened, the whole id in its title.
pub fn revision_link(revision: &str) -> Markup {
    html! {
        a.mono href={ "/revisions/" (enc(revision)) } title=(revision) { (short(revision)) }
    }
}

/// The link to an execution's page.
pub fn execution_url(pipeline: &str, id: &str) -> String {
    format!("/pipelines/{}/executions/{}", enc(pipeline), enc(id))
}

/// The link to an action's page in an execution.
pub fn action_url(pipeline: &str, id: &str, stage: &str, action: &str) -> String {
    format!("{}/actions/{}/{}", execution_url(pipeline, id), enc(stage), enc(action))
}

/// Bytes as people read them: `512 B`, `12.3 KiB`, `4.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_and_sizes_read_shortly() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("v1"), "v1");
        assert_eq!(short("ééééééééééééééé"), "éééééééééééé");
        let link = revision_link("a/b?<x>").into_string();
        assert!(link.contains("href=\"/revisions/a%2Fb%3F%3Cx%3E\"") && link.contains("&lt;x&gt;"), "{link}");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(12_595), "12.3 KiB");
        assert_eq!(size(4 * 1024 * 1024), "4.0 MiB");
        assert_eq!(
            action_url("web", "e 1", "Build", "Unit/Test"),
            "/pipelines/web/executions/e%201/actions/Build/Unit%2FTest"
        );
    }
}
