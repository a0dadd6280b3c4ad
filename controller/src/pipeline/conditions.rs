//! CodePipeline V2 stage conditions: `beforeEntry`, `onSuccess` and
//! `onFailure`, each with conditions made of rules.
//!
//! A condition holds when every one of its rules passes. `beforeEntry`:
//! a condition that does not hold applies its result, `FAIL` (the stage and
//! the execution fail) or `SKIP` (the stage is skipped, the execution goes
//! on). `onSuccess`: a condition that does not hold applies `ROLLBACK` or
//! `FAIL`. `onFailure`: its `result` (`ROLLBACK`, `RETRY` with
//! `retryConfiguration.retryMode` `FAILED_ACTIONS` or `ALL_ACTIONS`, `FAIL`
//! or `SKIP`) applies when it has no conditions or all of them hold.
//!
//! Rules: `VariableCheck` (pure: `Variable` compared with `Value` by
//! `Operator` `EQ`, `NE`, `CONTAINS` or `MATCHES`, a regular expression)
//! and `Commands` (shell commands run on an agent by the `shell` plugin,
//! passing when they exit 0). The declaration keeps the fields as written;
//! this module reads them into a typed form with every problem reported.

use serde_json::{Map, Value};

use super::Diagnostic;
use super::model::{Capabilities, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Fail,
    Skip,
    Rollback,
    Retry,
}

impl Outcome {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "FAIL" => Self::Fail,
            "SKIP" => Self::Skip,
            "ROLLBACK" => Self::Rollback,
            "RETRY" => Self::Retry,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Contains,
    Matches,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    VariableCheck {
        variable: String,
        value: String,
        operator: Operator,
    },
    /// Run by the `shell` plugin on an agent.
    Commands {
        commands: String,
        inputs: Vec<String>,
        capabilities: Capabilities,
    },
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub result: Outcome,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct OnFailure {
    pub result: Outcome,
    /// For `RETRY`: every action again (`ALL_ACTIONS`) or the failed ones.
    pub retry_all: bool,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default)]
pub struct StageConditions {
    pub before_entry: Vec<Condition>,
    pub on_success: Vec<Condition>,
    pub on_failure: Option<OnFailure>,
}

impl StageConditions {
    pub fn is_empty(&self) -> bool {
        self.before_entry.is_empty() && self.on_success.is_empty() && self.on_failure.is_none()
    }
}

/// Compares a resolved variable with a rule's value.
pub fn check(operator: Operator, actual: &str, expected: &str) -> Result<bool, String> {
    Ok(match operator {
        Operator::Eq => actual == expected,
        Operator::Ne => actual != expected,
        Operator::Contains => actual.contains(expected),
        Operator::Matches => {
            regex::Regex::new(expected).map_err(|e| format!("bad MATCHES pattern {expected:?}: {e}"))?.is_match(actual)
        }
    })
}

/// The conditions of one stage, or every problem with them (paths under
/// `path`, the stage's own).
pub fn stage_conditions(stage: &Stage, path: &str) -> Result<StageConditions, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut out = StageConditions::default();
    let allowed_before = [Outcome::Fail, Outcome::Skip];
    let allowed_success = [Outcome::Rollback, Outcome::Fail];
    if let Some(v) = stage.extra.get("beforeEntry") {
        out.before_entry = block(v, &format!("{path}.beforeEntry"), &allowed_before, &mut problems);
    }
    if let Some(v) = stage.extra.get("onSuccess") {
        out.on_success = block(v, &format!("{path}.onSuccess"), &allowed_success, &mut problems);
    }
    if let Some(v) = stage.extra.get("onFailure") {
        let p = format!("{path}.onFailure");
        match v.as_object() {
            None => problems.push(diag(&p, "expected an object")),
            Some(map) => {
                allowed(map, &p, &["result", "retryConfiguration", "conditions"], &mut problems);
                let result = match map.get("result").and_then(Value::as_str).and_then(Outcome::parse) {
                    Some(r) => r,
                    None => {
                        problems.push(diag(&format!("{p}.result"), "expected ROLLBACK, RETRY, FAIL or SKIP"));
                        Outcome::Fail
                    }
                };
                let mut retry_all = false;
                if let Some(retry) = map.get("retryConfiguration") {
                    match retry.get("retryMode").and_then(Value::as_str) {
                        Some("ALL_ACTIONS") => retry_all = true,
                        Some("FAILED_ACTIONS") => {}
                        _ => problems.push(diag(
                            &format!("{p}.retryConfiguration.retryMode"),
                            "expected FAILED_ACTIONS or ALL_ACTIONS",
                        )),
                    }
                }
                let conditions = match map.get("conditions") {
                    None => Vec::new(),
                    Some(c) => conditions(c, &format!("{p}.conditions"), None, &mut problems),
                };
                out.on_failure = Some(OnFailure { result, retry_all, conditions });
            }
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn block(value: &Value, path: &str, results: &[Outcome], problems: &mut Vec<Diagnostic>) -> Vec<Condition> {
    let Some(map) = value.as_object() else {
        problems.push(diag(path, "expected an object with \"conditions\""));
        return Vec::new();
    };
    allowed(map, path, &["conditions"], problems);
    match map.get("conditions") {
        Some(c) => conditions(c, &format!("{path}.conditions"), Some(results), problems),
        None => {
            problems.push(diag(path, "missing field \"conditions\""));
            Vec::new()
        }
    }
}

/// `results`: the outcomes a condition here may name (`None`: the block's
/// own result applies, conditions carry none).
fn conditions(value: &Value, path: &str, results: Option<&[Outcome]>, problems: &mut Vec<Diagnostic>) -> Vec<Condition> {
    let Some(items) = value.as_array() else {
        problems.push(diag(path, "expected a list of conditions"));
        return Vec::new();
    };
    if items.is_empty() {
        problems.push(diag(path, "give at least one condition"));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(map) = item.as_object() else {
            problems.push(diag(&p, "expected an object"));
            continue;
        };
        allowed(map, &p, &["result", "rules"], problems);
        let result = match (results, map.get("result").and_then(Value::as_str)) {
            (None, _) => Outcome::Fail,
            (Some(ok), Some(text)) => match Outcome::parse(text).filter(|r| ok.contains(r)) {
                Some(r) => r,
                None => {
                    let names: Vec<&str> = ok.iter().map(|r| outcome_name(*r)).collect();
                    problems.push(diag(&format!("{p}.result"), &format!("expected {}", names.join(" or "))));
                    Outcome::Fail
                }
            },
            (Some(_), None) => {
                problems.push(diag(&format!("{p}.result"), "missing field \"result\""));
                Outcome::Fail
            }
        };
        let rules = match map.get("rules").and_then(Value::as_array) {
            Some(rules) if !rules.is_empty() => {
                rules.iter().enumerate().filter_map(|(j, r)| rule(r, &format!("{p}.rules[{j}]"), problems)).collect()
            }
            _ => {
                problems.push(diag(&format!("{p}.rules"), "give at least one rule"));
                Vec::new()
            }
        };
        out.push(Condition { result, rules });
    }
    out
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Fail => "FAIL",
        Outcome::Skip => "SKIP",
        Outcome::Rollback => "ROLLBACK",
        Outcome::Retry => "RETRY",
    }
}

fn rule(value: &Value, path: &str, problems: &mut Vec<Diagnostic>) -> Option<Rule> {
    let Some(map) = value.as_object() else {
        problems.push(diag(path, "expected an object"));
        return None;
    };
    allowed(
        map,
        path,
        &[
            "name",
            "ruleTypeId",
            "configuration",
            "commands",
            "inputArtifacts",
            "region",
            "roleArn",
            "timeoutInMinutes",
            "capabilities",
        ],
        problems,
    );
    let name = map.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty() {
        problems.push(diag(&format!("{path}.name"), "a rule needs a name"));
    }
    let provider = map.get("ruleTypeId").and_then(|t| t.get("provider")).and_then(Value::as_str).unwrap_or_default();
    let config = map.get("configuration").and_then(Value::as_object).cloned().unwrap_or_default();
    let text = |key: &str| config.get(key).and_then(Value::as_str).map(str::to_string);
    let kind = match provider {
        "VariableCheck" => {
            let operator = match text("Operator").as_deref() {
                Some("EQ") => Operator::Eq,
                Some("NE") => Operator::Ne,
                Some("CONTAINS") => Operator::Contains,
                Some("MATCHES") => Operator::Matches,
                _ => {
                    problems.push(diag(&format!("{path}.configuration.Operator"), "expected EQ, NE, CONTAINS or MATCHES"));
                    Operator::Eq
                }
            };
            let (Some(variable), Some(value)) = (text("Variable"), text("Value")) else {
                problems.push(diag(&format!("{path}.configuration"), "VariableCheck needs \"Variable\" and \"Value\""));
                return None;
            };
            if operator == Operator::Matches
                && let Err(e) = regex::Regex::new(&value)
            {
                problems.push(diag(&format!("{path}.configuration.Value"), &format!("bad pattern: {e}")));
            }
            RuleKind::VariableCheck { variable, value, operator }
        }
        "Commands" => {
            let listed: Option<Vec<String>> = map
                .get("commands")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).map(str::to_string).collect());
            let commands = match (listed, text("Commands")) {
                (Some(list), _) if !list.is_empty() => list.join("\n"),
                (_, Some(text)) if !text.trim().is_empty() => text,
                _ => {
                    problems.push(diag(path, "a Commands rule needs \"commands\" (or configuration \"Commands\")"));
                    return None;
                }
            };
            let inputs = map
                .get("inputArtifacts")
                .and_then(Value::as_array)
                .map(|items| {
                    items.iter().filter_map(|i| i.get("name").and_then(Value::as_str)).map(str::to_string).collect()
                })
                .unwrap_or_default();
            let capabilities = match map.get("capabilities") {
                None => Capabilities { exec: vec!["sh".into()], ..Capabilities::default() },
                Some(c) => match serde_json::from_value::<Capabilities>(c.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(diag(&format!("{path}.capabilities"), &e.to_string()));
                        Capabilities::default()
                    }
                },
            };
            RuleKind::Commands { commands, inputs, capabilities }
        }
        other => {
            problems.push(diag(
                &format!("{path}.ruleTypeId.provider"),
                &format!("unknown rule {other:?}; Sluice has VariableCheck and Commands"),
            ));
            return None;
        }
    };
    Some(Rule { name, kind })
}

fn allowed(map: &Map<String, Value>, path: &str, keys: &[&str], problems: &mut Vec<Diagnostic>) {
    for key in map.keys().filter(|k| !keys.contains(&k.as_str())) {
        problems.push(diag(&format!("{path}.{key}"), "unknown field"));
    }
}

fn diag(path: &str, message: &str) -> Diagnostic {
    Diagnostic { path: path.to_string(), message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(extra: &str) -> Stage {
        let text = format!(
            r#"{{"pipeline": {{"name": "p", "stages": [
              {{"name": "Source", "actions": [{{"name": "S", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
                 "configuration": {{"Url": "/r"}}, "outputArtifacts": [{{"name": "src"}}]}}]}},
              {{"name": "Deploy", {extra} "actions": [{{"name": "D", "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}}}]}}]}}}}"#
        );
        crate::pipeline::parse(&text).expect("parses").pipeline.stages[1].clone()
    }

    #[test]
    fn conditions_of_all_three_kinds_are_read() {
        let s = stage(
            r##""beforeEntry": {"conditions": [{"result": "SKIP", "rules": [{"name": "OnMain",
                  "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
                  "configuration": {"Variable": "#{S.BranchName}", "Value": "^main$", "Operator": "MATCHES"}}]}]},
               "onSuccess": {"conditions": [{"result": "ROLLBACK", "rules": [{"name": "Smoke",
                  "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
                  "commands": ["curl -f localhost"], "inputArtifacts": [{"name": "src"}]}]}]},
               "onFailure": {"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}},"##,
        );
        let c = stage_conditions(&s, "pipeline.stages[1]").unwrap();
        assert_eq!(c.before_entry[0].result, Outcome::Skip);
        assert!(matches!(&c.before_entry[0].rules[0].kind, RuleKind::VariableCheck { operator: Operator::Matches, .. }));
        assert_eq!(c.on_success[0].result, Outcome::Rollback);
        match &c.on_success[0].rules[0].kind {
            RuleKind::Commands { commands, inputs, capabilities } => {
                assert_eq!(
                    (commands.as_str(), inputs.as_slice(), capabilities.exec.as_slice()),
                    ("curl -f localhost", &["src".to_string()][..], &["sh".to_string()][..])
                );
            }
            other => panic!("{other:?}"),
        }
        let f = c.on_failure.unwrap();
        assert_eq!((f.result, f.retry_all), (Outcome::Retry, true));
        assert!(check(Operator::Matches, "main", "^ma").unwrap());
        assert!(!check(Operator::Ne, "a", "a").unwrap());
        assert!(check(Operator::Contains, "release-1", "release").unwrap());
    }

    #[test]
    fn every_problem_is_reported() {
        let s = stage(
            r#""beforeEntry": {"conditions": [{"result": "ROLLBACK", "rules": [{"name": "X",
                  "ruleTypeId": {"provider": "Lambda"}}]}, {"result": "FAIL", "rules": []}]},
               "onFailure": {"result": "EXPLODE", "retryConfiguration": {"retryMode": "SOME"}},"#,
        );
        let problems: Vec<String> =
            stage_conditions(&s, "s").unwrap_err().iter().map(|d| format!("{}: {}", d.path, d.message)).collect();
        let expected = [
            "s.beforeEntry.conditions[0].result: expected FAIL or SKIP",
            "s.beforeEntry.conditions[0].rules[0].ruleTypeId.provider: unknown rule \"Lambda\"",
            "s.beforeEntry.conditions[1].rules: give at least one rule",
            "s.onFailure.result: expected ROLLBACK, RETRY, FAIL or SKIP",
            "s.onFailure.retryConfiguration.retryMode: expected FAILED_ACTIONS or ALL_ACTIONS",
        ];
        for e in expected {
            assert!(problems.iter().any(|p| p.starts_with(e)), "missing {e:?} in {problems:#?}");
        }
    }
}
