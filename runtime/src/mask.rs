//! Secret masking for everything an action logs: its log import, its guest
//! stdout and stderr, and the output of programs it runs.
//!
//! A value is masked as written and in the forms it is likely to be
//! printed in: each line of a multi-line value (logs are split into lines),
//! base64 (standard and URL-safe, with and without padding) and JSON string
//! escaping. Longer forms are masked first so a shorter one cannot leave a
//! piece of a longer one visible.

use crate::LogSink;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Shortest piece of a multi-line secret masked on its own: shorter lines
/// (a lone `}` of a JSON key file) would mask innocent text everywhere.
const MIN_LINE: usize = 4;

/// What replaces a secret.
pub const MASK: &str = "***";

#[derive(Debug, Clone, Default)]
pub struct Masker {
    forms: Vec<String>,
}

impl Masker {
    pub fn new(secrets: &BTreeMap<String, String>) -> Self {
        let mut forms = Vec::new();
        for value in secrets.values().filter(|v| !v.is_empty()) {
            forms.push(value.clone());
            for line in value.lines().map(str::trim).filter(|l| l.len() >= MIN_LINE) {
                forms.push(line.to_string());
            }
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            for engine in engines {
                forms.push(engine.encode(value));
            }
            let json = serde_json::to_string(value).expect("a string serializes");
            forms.push(json[1..json.len() - 1].to_string());
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Self { forms }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), MASK);
            }
        }
        out
    }
}

/// A log sink that masks every line before passing it on.
pub struct MaskingSink {
    inner: Arc<dyn LogSink>,
    masker: Masker,
}

impl MaskingSink {
    /// `inner` itself when there is nothing to mask.
    pub fn wrap(inner: Arc<dyn LogSink>, secrets: &BTreeMap<String, String>) -> Arc<dyn LogSink> {
        let masker = Masker::new(secrets);
        if masker.is_empty() { inner } else { Arc::new(Self { inner, masker }) }
    }
}

impl LogSink for MaskingSink {
    fn line(&self, text: &str) {
        self.inner.line(&self.masker.mask(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printed_form_of_a_secret_is_masked() {
        let key = "-----BEGIN KEY-----\nMIIEpAIBAAKCAQEA1\n-----END KEY-----";
        let secrets: BTreeMap<String, String> =
            [("TOKEN".to_string(), "s3cr3t/t0k+n".to_string()), ("KEY".to_string(), key.to_string())].into();
        let m = Masker::new(&secrets);
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t/t0k+n");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("s3cr3t/t0k+n");
        for line in [
            "token s3cr3t/t0k+n here".to_string(),
            format!("Authorization: Basic {b64}"),
            format!("?t={url}"),
            format!("{{\"key\": {}}}", serde_json::to_string(key).unwrap()),
            "MIIEpAIBAAKCAQEA1".to_string(),
        ] {
            let masked = m.mask(&line);
            assert!(!masked.contains("s3cr3t") && !masked.contains("MIIEpAIBAAKCAQEA1"), "{line} -> {masked}");
            assert!(!masked.contains(&b64) && !masked.contains(&url), "{masked}");
        }
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(Masker::new(&BTreeMap::new()).is_empty());
    }
}
