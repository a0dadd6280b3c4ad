//! Secret masking for everything that leaves a plugin call: its log (the
//! log import, guest stdout and stderr, the output of programs it runs) and
//! its outcome (failure message, summary, output variables, external URL,
//! a source's revision and error).
//!
//! A value is masked as written and in the forms it is likely to be printed
//! in:
//!
//! - each line of a multi-line value (a key file printed line by line);
//! - base64 and base64url, whole (with and without padding) and embedded in
//!   a longer encoded text at each of the three byte alignments (HTTP Basic
//!   `user:SECRET` encodes the secret after a prefix): for each alignment
//!   the characters that depend on the secret's bytes alone are the same
//!   whatever surrounds it, and those are what is matched;
//! - hex, lower and upper case;
//! - percent-encoding (RFC 3986 strict, `encodeURIComponent` and `encodeURI`
//!   sets, upper and lower case hex, space as `%20` or `+`);
//! - JSON string escaping (minimal, with `\/`, and ASCII-only `\uXXXX`).
//!
//! Matching is sound over overlaps: every byte of the text that belongs to
//! any occurrence of any form is masked, and each run of masked bytes
//! becomes one [`MASK`]. Values shorter than [`MIN_SECRET`] are not masked
//! (they would turn ordinary words into noise), nor are derived forms
//! shorter than [`MIN_FORM`]: the embedded base64 of a 4-byte secret is 4
//! or 5 characters, which occur by chance in any long base64 text.

use crate::{LogSink, Outcome};
use aho_corasick::AhoCorasick;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Shortest secret value that is masked, and shortest line of a multi-line
/// value masked on its own (a lone `}` of a JSON key file would mask
/// innocent text everywhere).
pub const MIN_SECRET: usize = 4;

/// Shortest derived (encoded) form matched; shorter pieces of an encoding
/// are common by chance.
pub const MIN_FORM: usize = 6;

/// What replaces a secret.
pub const MASK: &str = "***";

#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// The forms, longest first (for [`Masker::forms`] and tests).
    forms: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl Masker {
    pub fn new(secrets: &BTreeMap<String, String>) -> Self {
        let mut forms = Vec::new();
        let mut values: Vec<String> = secrets.values().cloned().collect();
        values.extend(secrets.values().flat_map(|v| json_leaves(v)));
        for value in values.iter().filter(|v| v.len() >= MIN_SECRET) {
            forms.push(value.clone());
            let mut derived = Vec::new();
            for line in value.lines().map(str::trim).filter(|l| l.len() >= MIN_SECRET) {
                forms.push(line.to_string());
            }
            derived.extend(base64_forms(value.as_bytes()));
            derived.push(hex::encode(value));
            derived.push(hex::encode_upper(value));
            derived.extend(percent_forms(value));
            derived.extend(json_forms(value));
            forms.extend(derived.into_iter().filter(|f| f.len() >= MIN_FORM));
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        let matcher = if forms.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&forms).expect("a few thousand short patterns build an automaton"))
        };
        Self { forms, matcher }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Every form matched, longest first.
    pub fn forms(&self) -> &[String] {
        &self.forms
    }

    pub fn mask(&self, text: &str) -> String {
        let Some(matcher) = &self.matcher else { return text.to_string() };
        // The union of every occurrence, overlapping ones included, so that
        // no piece of a form is left visible beside another.
        let mut spans: Vec<(usize, usize)> = matcher.find_overlapping_iter(text).map(|m| (m.start(), m.end())).collect();
        if spans.is_empty() {
            return text.to_string();
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut i = 0;
        while i < spans.len() {
            let (start, mut end) = spans[i];
            while i + 1 < spans.len() && spans[i + 1].0 <= end {
                i += 1;
                end = end.max(spans[i].1);
            }
            // Forms are whole UTF-8 strings, so matches start and end on
            // character boundaries.
            out.push_str(&text[at..start]);
            out.push_str(MASK);
            at = end;
            i += 1;
        }
        out.push_str(&text[at..]);
        out
    }

    /// An outcome with every text a plugin chose masked: the summary, the
    /// output variables (names and values), the external URL and the
    /// failure message. The continuation stays as it is: it goes back only
    /// to the plugin, which holds the secret anyway.
    pub fn mask_outcome(&self, outcome: Outcome) -> Outcome {
        if self.is_empty() {
            return outcome;
        }
        match outcome {
            Outcome::Succeeded { summary, output_variables, external_url } => Outcome::Succeeded {
                summary: self.mask(&summary),
                output_variables: output_variables.into_iter().map(|(k, v)| (self.mask(&k), self.mask(&v))).collect(),
                external_url: external_url.map(|u| self.mask(&u)),
            },
            Outcome::InProgress { continuation, poll_after, summary } => {
                Outcome::InProgress { continuation, poll_after, summary: self.mask(&summary) }
            }
            Outcome::Failed { message, retryable } => Outcome::Failed { message: self.mask(&message), retryable },
        }
    }
}

/// The base64 and base64url forms of a value: whole, and the stable part of
/// it embedded after 0, 1 or 2 bytes of other data.
fn base64_forms(value: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(value));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            forms.extend(embedded_base64(engine, value, offset));
        }
    }
    // Standard base64 inside a URL has its `+` and `/` percent-encoded.
    let escaped: Vec<String> = forms
        .iter()
        .filter(|f| f.contains(['+', '/', '=']))
        .flat_map(|f| {
            [true, false].map(|upper| {
                f.chars()
                    .map(|c| match c {
                        '+' | '/' | '=' => percent_byte(c as u8, upper),
                        c => c.to_string(),
                    })
                    .collect::<String>()
            })
        })
        .collect();
    forms.extend(escaped);
    forms
}

/// The characters of the base64 of `value`, preceded by `offset` bytes of
/// anything and followed by anything, that depend on `value` alone:
/// character `i` covers bits `6i..6i+6` of the encoded bytes, so it is
/// stable when those bits all lie within the value's bits
/// `8*offset..8*(offset+len)`.
fn embedded_base64(engine: &base64::engine::GeneralPurpose, value: &[u8], offset: usize) -> Option<String> {
    let mut bytes = vec![0u8; offset];
    bytes.extend_from_slice(value);
    let encoded = engine.encode(&bytes);
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + value.len()) / 6;
    (end > first).then(|| encoded[first..end].to_string())
}

fn percent_byte(b: u8, upper: bool) -> String {
    if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }
}

/// The percent-encodings a value is likely to be written in: which
/// characters stay as they are differs between encoders (RFC 3986's
/// unreserved set, JavaScript's `encodeURIComponent` and `encodeURI`), as
/// do the case of the hex digits and whether a space is `+` (forms).
fn percent_forms(value: &str) -> Vec<String> {
    const COMPONENT_EXTRA: &[u8] = b"!'()*";
    const URI_EXTRA: &[u8] = b"!'()*;/?:@&=+$,#";
    let mut forms = Vec::new();
    for keep in [&b""[..], COMPONENT_EXTRA, URI_EXTRA] {
        for upper in [true, false] {
            for plus_for_space in [false, true] {
                let encoded: String = value
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                        b' ' if plus_for_space => "+".to_string(),
                        b if keep.contains(&b) => (b as char).to_string(),
                        b => percent_byte(b, upper),
                    })
                    .collect();
                forms.push(encoded);
            }
        }
    }
    forms
}

/// JSON string escapings of a value, without the quotes: minimal (what
/// serde_json and most encoders write), with `/` escaped (PHP, some Java
/// libraries), and each of those ASCII-only with `\uXXXX` (Python's
/// `json.dumps`).
fn json_forms(value: &str) -> Vec<String> {
    let json = serde_json::to_string(value).expect("a string serializes");
    let minimal = json[1..json.len() - 1].to_string();
    let ascii_only = |text: &str| {
        let mut ascii = String::new();
        for c in text.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    ascii.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        ascii
    };
    let slashes = minimal.replace('/', "\\/");
    vec![ascii_only(&minimal), ascii_only(&slashes), minimal, slashes]
}

/// A log sink that masks every line before passing it on.
pub struct MaskingSink {
    inner: Arc<dyn LogSink>,
    masker: Arc<Masker>,
}

impl MaskingSink {
    /// `inner` itself when there is nothing to mask.
    pub fn wrap(inner: Arc<dyn LogSink>, masker: Arc<Masker>) -> Arc<dyn LogSink> {
        if masker.is_empty() { inner } else { Arc::new(Self { inner, masker }) }
    }
}

impl LogSink for MaskingSink {
    fn line(&self, text: &str) {
        self.inner.line(&self.masker.mask(text));
    }
}

/// The scalar values inside a secret that is a JSON object or array: a
/// plugin may hand one of them on alone (the codebuild plugin's
/// Secrets Manager `json-key`), and each must then be masked on its own.
fn json_leaves(value: &str) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Number(n) => out.push(n.to_string()),
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            serde_json::Value::Bool(_) | serde_json::Value::Null => {}
        }
    }
    let trimmed = value.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(value) {
        walk(&parsed, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    fn masker(values: &[&str]) -> Masker {
        Masker::new(&values.iter().enumerate().map(|(i, v)| (format!("S{i}"), v.to_string())).collect())
    }

    const SECRET: &str = "s3cr3t/t0k+n?ü";

    #[test]
    fn every_printed_form_of_a_secret_is_masked() {
        let key = "-----BEGIN KEY-----\nMIIEpAIBAAKCAQEA1\n-----END KEY-----";
        let m = masker(&[SECRET, key]);
        let b64 = STANDARD.encode(SECRET);
        let url = URL_SAFE_NO_PAD.encode(SECRET);
        for line in [
            format!("token {SECRET} here"),
            format!("Authorization: Basic {b64}"),
            format!("?t={url}"),
            format!("{{\"key\": {}}}", serde_json::to_string(key).unwrap()),
            "MIIEpAIBAAKCAQEA1".to_string(),
            format!("hex {} and {}", hex::encode(SECRET), hex::encode_upper(SECRET)),
            "q=s3cr3t%2Ft0k%2Bn%3F%C3%BC&x".to_string(),
            "q=s3cr3t%2ft0k%2bn%3f%c3%bc&x".to_string(),
            "https://h/s3cr3t/t0k+n?%C3%BC".to_string(),
            "{\"t\":\"s3cr3t\\/t0k+n?\\u00fc\"}".to_string(),
        ] {
            let masked = m.mask(&line);
            assert!(masked.contains(MASK), "{line} -> {masked}");
            for visible in ["s3cr3t", "MIIEpAIBAAKCAQEA1", &b64, &url, &hex::encode(SECRET), "%C3%BC", "%c3%bc"] {
                assert!(!masked.contains(visible), "{line} -> {masked}");
            }
        }
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(Masker::new(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn base64_is_caught_at_every_alignment_with_any_surroundings() {
        let m = masker(&[SECRET]);
        for engine in [&STANDARD, &URL_SAFE] {
            for prefix in ["", "u", "us", "use", "user:", "a much longer prefix:"] {
                for suffix in ["", "x", "xy", "\nmore"] {
                    let encoded = engine.encode(format!("{prefix}{SECRET}{suffix}"));
                    let masked = m.mask(&format!("Authorization: Basic {encoded}"));
                    assert!(masked.contains(MASK), "{prefix:?}+{suffix:?}: {masked}");
                    // What stays visible is the prefix's own encoding and at
                    // most one character on each side that mixes bits.
                    let visible = masked.len() - "Authorization: Basic ".len() - MASK.len();
                    let others = (prefix.len() + suffix.len()).div_ceil(3) * 4 + 2 + 2;
                    assert!(visible <= others, "{prefix:?}+{suffix:?}: {encoded} -> {masked}");
                }
            }
        }
    }

    #[test]
    fn overlapping_occurrences_are_masked_as_one_run() {
        let m = masker(&["abcdef", "defghi"]);
        assert_eq!(m.mask("xx abcdefghi yy"), "xx *** yy");
        assert_eq!(m.mask("abcdefabcdef"), "***");
    }

    #[test]
    fn multi_line_values_are_masked_whole_and_line_by_line() {
        let value = "line one of it\nline two of it\n}";
        let m = masker(&[value]);
        assert_eq!(m.mask(&format!("a {value} b")), "a *** b");
        assert_eq!(m.mask("  line two of it"), "  ***");
        // A lone `}` is not masked everywhere.
        assert_eq!(m.mask("fn main() {}"), "fn main() {}");
        let escaped = serde_json::to_string(value).unwrap();
        assert_eq!(m.mask(&format!("{{\"v\":{escaped}}}")), "{\"v\":\"***\"}");
    }

    #[test]
    fn tiny_secrets_are_not_masked_and_tiny_encodings_are_not_matched() {
        let m = masker(&["abc"]);
        assert!(m.is_empty());
        assert_eq!(m.mask("abc abc"), "abc abc");
        let m = masker(&["abcd"]);
        assert_eq!(m.mask("x abcd y"), "x *** y");
        assert!(m.forms().iter().all(|f| f == "abcd" || f.len() >= MIN_FORM), "{:?}", m.forms());
    }

    #[test]
    fn outcomes_are_masked_in_every_field() {
        let m = masker(&[SECRET]);
        let b64 = STANDARD.encode(format!("user:{SECRET}"));
        let out = m.mask_outcome(Outcome::Succeeded {
            summary: format!("deployed with {SECRET}"),
            output_variables: [(SECRET.to_string(), "v".to_string()), ("Auth".to_string(), format!("Basic {b64}"))].into(),
            external_url: Some(format!("https://x/?t={}", URL_SAFE_NO_PAD.encode(SECRET))),
        });
        let text = format!("{out:?}");
        assert!(!text.contains("s3cr3t") && !text.contains(&b64[8..]), "{text}");
        let Outcome::Succeeded { output_variables, external_url, .. } = out else { panic!() };
        assert!(output_variables.contains_key(MASK), "{output_variables:?}");
        assert!(external_url.unwrap().contains(MASK));
        let out = m.mask_outcome(Outcome::Failed { message: format!("stderr tail: {SECRET}"), retryable: true });
        assert_eq!(out, Outcome::Failed { message: "stderr tail: ***".into(), retryable: true });
        let out = m.mask_outcome(Outcome::InProgress {
            continuation: SECRET.into(),
            poll_after: std::time::Duration::ZERO,
            summary: SECRET.into(),
        });
        let Outcome::InProgress { summary, continuation, .. } = out else { panic!() };
        assert_eq!((summary.as_str(), continuation.as_str()), (MASK, SECRET));
    }

    #[test]
    fn values_inside_a_json_secret_are_masked_alone() {
        let m = masker(&[r#"{"user": "dbadmin-42", "password": "pa55-w0rd", "port": 5432, "flag": true, "x": "ab"}"#]);
        assert_eq!(m.mask("user dbadmin-42 pw pa55-w0rd port 5432"), "user *** pw *** port ***");
        // Keys, booleans and values too short to mask stay.
        assert_eq!(m.mask("user password true ab"), "user password true ab");
        assert_eq!(masker(&["{not json"]).mask("{not json"), "***");
    }
}
