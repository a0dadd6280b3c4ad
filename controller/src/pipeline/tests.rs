//! Data-driven declaration tests: every `NAME.json` or `NAME.yaml` in
//! `controller/tests/declarations/` is parsed and validated against
//! [`catalog`], and the diagnostics (one per line, or `ok`) are compared with
//! `NAME.expected`. Run with `UPDATE_EXPECT=1` to rewrite the expectations
//! instead, then review the diff.
//!
//! Every accepted declaration must also survive `to_json` and parse back
//! equal; a `canonical-*.json` file must come back byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn info(category: &str, properties: &[(&str, bool)], inputs: (u32, u32), outputs: (u32, u32)) -> ProviderInfo {
    ProviderInfo {
        category: category.into(),
        properties: properties
            .iter()
            .map(|(name, required)| PropertyInfo { name: (*name).into(), required: *required })
            .collect(),
        digest: None,
        inputs,
        outputs,
    }
}

/// The providers the test declarations use.
pub(crate) fn catalog() -> StaticCatalog {
    StaticCatalog::new()
        .with("Sluice", "git", "1", info("Source", &[("Url", true), ("Branch", false)], (0, 0), (1, 1)))
        .with("Sluice", "shell", "1", info("Build", &[("Commands", true), ("Shell", false)], (0, 5), (0, 5)))
        .with("Sluice", "noop", "1", info("Test", &[("Message", false)], (0, 5), (0, 5)))
        .with("Sluice", "deploy-dir", "1", info("Deploy", &[("Path", true)], (1, 1), (0, 0)))
        .with("Sluice", "manual", "1", info("Approval", &[("RequiredApprovals", false)], (0, 0), (0, 0)))
}

fn declarations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("declarations")
}

fn outcome(text: &str) -> String {
    match parse_and_validate(text, &catalog()) {
        Ok(_) => "ok\n".to_owned(),
        Err(diagnostics) => format!("{diagnostics}\n"),
    }
}

#[test]
fn declarations() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = fs::read_dir(declarations_dir())
        .expect("controller/tests/declarations exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("json" | "yaml")))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "expected at least 15 declaration cases, found {}", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let text = fs::read_to_string(case).expect("readable declaration");
        let actual = outcome(&text);
        let expected_path = case.with_extension("expected");
        if update {
            fs::write(&expected_path, &actual).expect("writable expectation");
        } else {
            let expected = fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != actual {
                failures.push(format!("{}\n--- expected\n{expected}--- actual\n{actual}", case.display()));
            }
        }
        if actual == "ok\n" {
            let declaration = parse(&text).expect("accepted declarations parse");
            let json = to_json(&declaration);
            assert_eq!(parse(&json).as_ref(), Ok(&declaration), "{}: to_json does not parse back equal", case.display());
            assert_eq!(to_json(&parse(&json).expect("reparses")), json, "{}: to_json is not stable", case.display());
            let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("canonical-") {
                assert_eq!(json, text, "{}: canonical input does not come back byte for byte", case.display());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ (UPDATE_EXPECT=1 rewrites them):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const MINIMAL: &str = r#"{"pipeline": {"name": "p", "stages": [
  {"name": "Source", "actions": [{"name": "Src",
    "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
    "configuration": {"Url": "/srv/git/p.git"}, "outputArtifacts": [{"name": "src"}], "namespace": "SrcVars"}]},
  {"name": "Build", "actions": [{"name": "Make",
    "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
    "configuration": {"Commands": "make #{SrcVars.CommitId}"}, "inputArtifacts": [{"name": "src"}]}]}
]}}"#;

#[test]
fn minimal_declaration_is_accepted_and_typed() {
    let declaration = parse_and_validate(MINIMAL, &catalog()).unwrap();
    let pipeline = &declaration.pipeline;
    assert_eq!(pipeline.execution_mode, ExecutionMode::Superseded);
    let build = pipeline.stage("Build").unwrap();
    assert_eq!(build.actions[0].run_order, None);
    assert_eq!(build.actions[0].run_order(), 1);
    assert_eq!(build.actions[0].configuration.get("Commands"), Some("make #{SrcVars.CommitId}"));
    assert!(pipeline.stage("Deploy").is_none());
}

#[test]
fn json_and_yaml_give_the_same_declaration() {
    let json = parse(MINIMAL).unwrap();
    let yaml = serde_saphyr::to_string(&serde_json::to_value(&json).unwrap()).unwrap();
    assert!(!yaml.trim_start().starts_with('{'));
    assert_eq!(parse(&yaml).unwrap(), json);
}

#[test]
fn serde_round_trip_matches_parse() {
    let declaration = parse(MINIMAL).unwrap();
    let value = serde_json::to_value(&declaration).unwrap();
    assert_eq!(value["pipeline"]["stages"][0]["actions"][0]["actionTypeId"]["provider"], "git");
    assert_eq!(value["pipeline"]["executionMode"], "SUPERSEDED");
    assert_eq!(serde_json::from_value::<Declaration>(value).unwrap(), declaration);
}

#[test]
fn parse_problems_suppress_only_their_own_validation_echoes() {
    // A missing stage name is a parse problem; validation must not repeat it
    // as "stage name must not be empty", but must still report the bad
    // artifact reference elsewhere.
    let text = MINIMAL.replace(r#""name": "Build", "#, "").replace(r#""name": "src"}]}]}"#, r#""name": "nope"}]}]}"#);
    let diagnostics = parse_and_validate(&text, &catalog()).unwrap_err().to_string();
    assert_eq!(
        diagnostics,
        "pipeline.stages[1].name: missing required field \"name\"\n\
         pipeline.stages[1].actions[0].inputArtifacts[0]: artifact \"nope\" is not produced by any earlier action"
    );
}

#[test]
fn diagnostics_display_one_per_line() {
    let diagnostics = Diagnostics(vec![
        Diagnostic { path: "a".into(), message: "x".into() },
        Diagnostic { path: "b[0]".into(), message: "y".into() },
    ]);
    assert_eq!(diagnostics.to_string(), "a: x\nb[0]: y");
    let error: &dyn std::error::Error = &diagnostics;
    assert!(error.source().is_none());
}

#[test]
fn is_within_respects_segment_boundaries() {
    assert!(super::is_within("pipeline.stages[1].name", "pipeline.stages[1]"));
    assert!(super::is_within("pipeline.stages[1]", "pipeline.stages[1]"));
    assert!(!super::is_within("pipeline.stages[10]", "pipeline.stages[1]"));
    assert!(!super::is_within("pipeline.namespace", "pipeline.name"));
}

#[test]
fn unknown_provider_lists_known_ones() {
    let text = MINIMAL.replace(r#""provider": "shell""#, r#""provider": "shel""#);
    let diagnostics = parse_and_validate(&text, &catalog()).unwrap_err().to_string();
    assert_eq!(
        diagnostics,
        "pipeline.stages[1].actions[0].actionTypeId: unknown provider shel@1 (owner Sluice); \
         known providers: deploy-dir@1, git@1, manual@1, noop@1, shell@1"
    );
}
