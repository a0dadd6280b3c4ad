//! Values an agent sends, checked before they reach the engine or the
//! store: lengths bounded, text printable, cut by characters (never in the
//! middle of one), revision ids that cannot pass for options, URLs that are
//! http(s). An agent is trusted with the jobs it holds, not with the
//! controller's memory, its store or the terminals of those reading logs.
//!
//! Pure: no driver state. A value that can be cleaned (a long summary, a
//! control character in a log) is cleaned; one whose meaning would change
//! if cleaned (a revision id, a variable name) is refused with the reason.

use crate::engine::REVISION_OUTPUT_VARIABLES;
use sluice_protocol::{JobResult, OutputSpec, ProducedArtifact};
use std::collections::BTreeMap;

/// Characters of a revision id: a git object id is 40 or 64, an S3 version
/// id or an image digest fits easily; the API takes the same bound.
pub const REVISION_MAX_CHARS: usize = 256;
/// Characters of an action's summary (CodePipeline's bound).
pub const SUMMARY_MAX_CHARS: usize = 2048;
/// Characters of a failure message kept.
pub const MESSAGE_MAX_CHARS: usize = 4096;
/// Characters of an external URL.
pub const URL_MAX_CHARS: usize = 2048;
/// Output variables of one result, their name length and each value's.
pub const MAX_OUTPUT_VARIABLES: usize = 100;
pub const VARIABLE_NAME_MAX_CHARS: usize = crate::pipeline::limits::VARIABLE_NAME_MAX_LEN;
pub const VARIABLE_VALUE_MAX_CHARS: usize = 16 * 1024;
/// Characters of one log frame's text: an agent sends at most
/// `LOG_CHUNK` bytes per frame, so this only bounds a rogue one.
pub const LOG_TEXT_MAX_CHARS: usize = 4 * sluice_protocol::LOG_CHUNK;
/// Labels an agent may claim, and the length of a key and of a value.
pub const MAX_LABELS: usize = 64;
pub const LABEL_KEY_MAX_CHARS: usize = 63;
pub const LABEL_VALUE_MAX_CHARS: usize = 255;
/// Labels that describe the host as the agent observes it
/// (`std::env::consts`), never set by a token or an operator.
pub const OBSERVED_LABELS: &[&str] = &["os", "arch"];

/// What a cleaned text may keep besides printable characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Newlines and tabs stay (logs, failure messages).
    Kept,
    /// Every control character becomes a space (summaries, one-line values).
    Joined,
}

/// Cuts `text` to `max` characters and replaces control characters (terminal
/// escapes included) so that what is stored and shown is inert text.
pub fn clean_text(text: &str, max: usize, lines: Lines) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let keep = matches!(c, '\n' | '\t') && lines == Lines::Kept;
        if c.is_control() && !keep {
            out.push(if lines == Lines::Kept { '\u{fffd}' } else { ' ' });
        } else {
            out.push(c);
        }
    }
    out
}

/// A revision id: 1 to 256 printable ASCII characters without spaces, not
/// starting with `-` (so that no tool reading it takes it for an option).
pub fn check_revision(id: &str) -> Result<(), String> {
    let shown = clean_text(id, 40, Lines::Joined);
    if id.is_empty() {
        return Err("the revision id is empty".into());
    }
    if id.starts_with('-') {
        return Err(format!("the revision id {shown:?} starts with '-'"));
    }
    if id.chars().count() > REVISION_MAX_CHARS {
        return Err(format!("the revision id {shown:?} is longer than {REVISION_MAX_CHARS} characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("the revision id {shown:?} is not printable ASCII without spaces"));
    }
    Ok(())
}

/// An external URL: http or https, printable, bounded.
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = clean_text(url, 60, Lines::Joined);
    if url.chars().count() > URL_MAX_CHARS {
        return Err(format!("the external URL {shown:?} is longer than {URL_MAX_CHARS} characters"));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(format!("the external URL {shown:?} is not http(s)"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("the external URL {shown:?} has spaces, control or non-ASCII characters"));
    }
    Ok(())
}

/// An output variable's name: what `#{Namespace.Name}` can refer to.
fn check_variable_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= VARIABLE_NAME_MAX_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "output variable name {:?} must be 1 to {VARIABLE_NAME_MAX_CHARS} of A-Z a-z 0-9 _ - @",
            clean_text(name, 40, Lines::Joined)
        ))
    }
}

/// A job result, checked against what the action declared: outputs only
/// among its declared output artifacts (each at most once, with a digest),
/// variables with valid names, a revision variable that is a revision id.
/// Text is cleaned; a result that cannot stand becomes a failure naming
/// why, so the action ends and nothing of the bad result is kept.
pub fn clean_result(result: JobResult, declared: &[OutputSpec]) -> JobResult {
    match result {
        JobResult::Failed { message, retryable } => {
            JobResult::Failed { message: clean_text(&message, MESSAGE_MAX_CHARS, Lines::Kept), retryable }
        }
        JobResult::Succeeded { summary, output_variables, external_url, outputs } => {
            match check_succeeded(&output_variables, external_url.as_deref(), &outputs, declared) {
                Ok(()) => JobResult::Succeeded {
                    summary: clean_text(&summary, SUMMARY_MAX_CHARS, Lines::Joined),
                    output_variables: output_variables
                        .into_iter()
                        .map(|(k, v)| (k, clean_text(&v, VARIABLE_VALUE_MAX_CHARS, Lines::Kept)))
                        .collect(),
                    external_url,
                    outputs,
                },
                Err(why) => {
                    JobResult::Failed { message: format!("the agent's result was refused: {why}"), retryable: false }
                }
            }
        }
    }
}

fn check_succeeded(
    variables: &BTreeMap<String, String>,
    url: Option<&str>,
    outputs: &[ProducedArtifact],
    declared: &[OutputSpec],
) -> Result<(), String> {
    if variables.len() > MAX_OUTPUT_VARIABLES {
        return Err(format!("{} output variables, more than {MAX_OUTPUT_VARIABLES}", variables.len()));
    }
    for (name, value) in variables {
        check_variable_name(name)?;
        if REVISION_OUTPUT_VARIABLES.contains(&name.as_str()) {
            check_revision(value).map_err(|e| format!("output variable {name}: {e}"))?;
        }
    }
    if let Some(url) = url {
        check_url(url)?;
    }
    let mut seen = Vec::new();
    for output in outputs {
        let name = clean_text(&output.name, 100, Lines::Joined);
        if !declared.iter().any(|d| d.name == output.name) {
            return Err(format!("output artifact {name:?} is not one the action declares"));
        }
        if seen.contains(&&output.name) {
            return Err(format!("output artifact {name:?} is reported twice"));
        }
        if !sluice_runtime::is_digest(&output.digest) {
            return Err(format!("output artifact {name:?} has no sha256 digest"));
        }
        seen.push(&output.name);
    }
    Ok(())
}

/// A label key: what `agentLabels` can name.
fn label_key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= LABEL_KEY_MAX_CHARS
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// A label as a token or an operator sets it.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    if !label_key_ok(key) {
        return Err(format!(
            "label key {:?} must be 1 to {LABEL_KEY_MAX_CHARS} of A-Z a-z 0-9 _ - . /",
            clean_text(key, 40, Lines::Joined)
        ));
    }
    if OBSERVED_LABELS.contains(&key) {
        return Err(format!("label {key:?} is observed from the agent's host and cannot be set"));
    }
    if value.chars().count() > LABEL_VALUE_MAX_CHARS || value.chars().any(char::is_control) {
        return Err(format!("label {key:?}: the value must be at most {LABEL_VALUE_MAX_CHARS} printable characters"));
    }
    Ok(())
}

/// The labels an agent ends up with: those its token or an operator set
/// (`assigned`), the observed `os` and `arch` from its hello, and of the
/// rest of what it claims only keys its token allows. Returns the labels
/// and the claims left out, for the log.
pub fn effective_labels(
    claimed: &BTreeMap<String, String>,
    assigned: &BTreeMap<String, String>,
    allowed: &[String],
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut labels = BTreeMap::new();
    let mut ignored = Vec::new();
    for (key, value) in claimed {
        let observed = OBSERVED_LABELS.contains(&key.as_str());
        let valid =
            label_key_ok(key) && value.chars().count() <= LABEL_VALUE_MAX_CHARS && !value.chars().any(char::is_control);
        let may = observed || allowed.iter().any(|a| a == key);
        if valid && may && labels.len() < MAX_LABELS {
            labels.insert(key.clone(), value.clone());
        } else if ignored.len() < 8 {
            ignored.push(format!("{}={}", clean_text(key, 40, Lines::Joined), clean_text(value, 40, Lines::Joined)));
        }
    }
    // What the operator set wins over a claim its token allows; observed
    // facts are not the operator's to set (refused when set).
    for (key, value) in assigned {
        if !OBSERVED_LABELS.contains(&key.as_str()) {
            labels.insert(key.clone(), value.clone());
        }
    }
    (labels, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_by_characters_and_made_inert() {
        let text = "é".repeat(10);
        assert_eq!(clean_text(&text, 3, Lines::Kept), "ééé…");
        assert_eq!(clean_text("a\x1b[31mb\nc\td", 100, Lines::Kept), "a\u{fffd}[31mb\nc\td");
        assert_eq!(clean_text("a\nb\rc", 100, Lines::Joined), "a b c");
        // Never a panic, whatever the boundary.
        for n in 0..12 {
            clean_text("añ€😀x", n, Lines::Kept);
        }
    }

    #[test]
    fn revisions_are_printable_ascii_ids_that_cannot_be_options() {
        check_revision(&"a".repeat(40)).unwrap();
        check_revision("refs/heads/main").unwrap();
        check_revision("sha256:0123").unwrap();
        for bad in ["", "--upload-pack=touch /tmp/x", "-x", "héllo", "a b", "a\nb", &"a".repeat(257)] {
            assert!(check_revision(bad).is_err(), "{bad:?} passed");
        }
        assert!(check_revision("ééééééééééééééééé").unwrap_err().contains("printable ASCII"));
    }

    #[test]
    fn urls_are_http_and_printable() {
        check_url("https://ci.example.com/build/1").unwrap();
        check_url("HTTP://x").unwrap();
        for bad in ["javascript:alert(1)", "-oProxyCommand=x", "file:///etc/passwd", "https://a b", "https://é"] {
            assert!(check_url(bad).is_err(), "{bad:?} passed");
        }
    }

    fn declared() -> Vec<OutputSpec> {
        vec![OutputSpec { name: "bin".into(), files: vec![] }]
    }

    fn succeeded(vars: &[(&str, &str)], url: Option<&str>, outputs: &[&str]) -> JobResult {
        JobResult::Succeeded {
            summary: "ok\x1b]0;pwned\x07".into(),
            output_variables: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            external_url: url.map(str::to_string),
            outputs: outputs
                .iter()
                .map(|n| ProducedArtifact { name: n.to_string(), digest: "ab".repeat(32), size: 1 })
                .collect(),
        }
    }

    fn refusal(result: JobResult) -> String {
        match clean_result(result, &declared()) {
            JobResult::Failed { message, .. } => message,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn results_name_only_declared_outputs_and_valid_values() {
        match clean_result(succeeded(&[("CommitId", "abc")], Some("https://x"), &["bin"]), &declared()) {
            JobResult::Succeeded { summary, .. } => assert_eq!(summary, "ok ]0;pwned "),
            other => panic!("{other:?}"),
        }
        assert!(refusal(succeeded(&[], None, &["secrets"])).contains("not one the action declares"));
        assert!(refusal(succeeded(&[], None, &["bin", "bin"])).contains("twice"));
        assert!(refusal(succeeded(&[("a b", "1")], None, &[])).contains("variable name"));
        assert!(refusal(succeeded(&[("CommitId", "--upload-pack=x")], None, &[])).contains("starts with '-'"));
        assert!(refusal(succeeded(&[], Some("javascript:x"), &[])).contains("not http(s)"));
        let long = JobResult::Failed { message: "x".repeat(10_000), retryable: false };
        assert!(
            matches!(clean_result(long, &[]), JobResult::Failed { message, .. } if message.chars().count() == MESSAGE_MAX_CHARS + 1)
        );
    }

    #[test]
    fn labels_claimed_count_only_where_the_token_allows() {
        let claimed: BTreeMap<String, String> =
            [("env", "prod"), ("os", "linux"), ("arch", "x86_64"), ("gpu", "yes")].map(|(k, v)| (k.into(), v.into())).into();
        let assigned: BTreeMap<String, String> = [("pool".to_string(), "a".to_string())].into();
        let (labels, ignored) = effective_labels(&claimed, &assigned, &["gpu".to_string()]);
        assert_eq!(labels.get("env"), None);
        assert_eq!(labels["gpu"], "yes");
        assert_eq!(labels["os"], "linux");
        assert_eq!(labels["pool"], "a");
        assert_eq!(ignored, vec!["env=prod".to_string()]);
        assert!(check_label("os", "windows").unwrap_err().contains("observed"));
        assert!(check_label("env", "prod").is_ok());
        assert!(check_label("a b", "x").is_err());
    }
}
