//! Policy documents: IAM-shaped allow and deny statements of actions on
//! resources, parsed strictly and evaluated purely (no store, no clock).
//!
//! ```json
//! {"Version": "2012-10-17",
//!  "Statement": [
//!    {"Sid": "RunWeb", "Effect": "Allow",
//!     "Action": ["codepipeline:StartPipelineExecution", "codepipeline:Get*"],
//!     "Resource": "pipeline/web*"},
//!    {"Effect": "Deny", "Action": "codepipeline:DeletePipeline", "Resource": "*"}]}
//! ```
//!
//! `Action` and `Resource` take a string or an array; `*` matches any run
//! of characters (`/` included) and `?` one character. A statement on a
//! resource covers what is inside it: `pipeline/web` covers
//! `pipeline/web/Deploy/Approve`, while `pipeline/web` does not cover
//! `pipeline/webapp` (that takes `pipeline/web*`). The one condition
//! understood is the owning team of the resource:
//! `"Condition": {"StringEquals": {"sluice:ResourceTeam": "${sluice:PrincipalTeam}"}}`
//! (or literal team names). Evaluation: default deny, any matching deny
//! wins over every allow.

use serde_json::{Map, Value};
use std::fmt;

/// The most statements a policy may have (a policy is read on every call).
pub const MAX_STATEMENTS: usize = 100;
/// The longest pattern accepted.
const MAX_PATTERN: usize = 256;
/// The variable a team condition may name: any team the principal acts for.
pub const PRINCIPAL_TEAM: &str = "${sluice:PrincipalTeam}";
/// The condition key of the owning team of a resource.
pub const RESOURCE_TEAM: &str = "sluice:ResourceTeam";

/// Kinds of resources (the part before the first `/`).
pub const RESOURCE_KINDS: &[&str] =
    &["pipeline", "secret", "agent", "plugin", "team", "user", "role", "actiontype", "job", "publisher", "token"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "Allow",
            Self::Deny => "Deny",
        })
    }
}

/// Which owning teams a statement applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamCondition {
    /// Resources owned by a team the principal acts for.
    PrincipalTeam,
    /// Resources owned by one of these teams.
    Teams(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub team: Option<TeamCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy is invalid: {0}")]
pub struct PolicyError(pub String);

fn bad(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

impl Policy {
    /// Reads a policy document; `known_actions` are the actions a pattern
    /// may name (a pattern naming none of them is a typo, refused).
    pub fn parse(text: &str, known_actions: &[&str]) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        Self::from_value(&value, known_actions)
    }

    pub fn from_value(value: &Value, known_actions: &[&str]) -> Result<Self, PolicyError> {
        let object = value.as_object().ok_or_else(|| bad("expected a JSON object with \"Statement\""))?;
        for key in object.keys() {
            if !matches!(key.as_str(), "Version" | "Statement") {
                return Err(bad(format!("unknown key {key:?} (a policy has \"Version\" and \"Statement\")")));
            }
        }
        if let Some(version) = object.get("Version")
            && version.as_str().is_none()
        {
            return Err(bad("\"Version\" must be a string"));
        }
        let statements = match object.get("Statement") {
            None => return Err(bad("missing \"Statement\"")),
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => return Err(bad("\"Statement\" must be an object or an array of objects")),
        };
        if statements.len() > MAX_STATEMENTS {
            return Err(bad(format!("{} statements; at most {MAX_STATEMENTS}", statements.len())));
        }
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| statement(s, known_actions).map_err(|e| bad(format!("statement {}: {}", i + 1, e.0))))
            .collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// The document, as `parse` reads it back.
    pub fn to_value(&self) -> Value {
        let statements = self.statements.iter().map(Statement::to_value).collect();
        serde_json::json!({ "Version": "2012-10-17", "Statement": Value::Array(statements) })
    }
}

impl Statement {
    pub fn to_value(&self) -> Value {
        let list = |items: &[String]| match items {
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        };
        let mut out = Map::new();
        if let Some(sid) = &self.sid {
            out.insert("Sid".into(), sid.clone().into());
        }
        out.insert("Effect".into(), self.effect.to_string().into());
        out.insert("Action".into(), list(&self.actions));
        out.insert("Resource".into(), list(&self.resources));
        if let Some(team) = &self.team {
            let teams = match team {
                TeamCondition::PrincipalTeam => Value::String(PRINCIPAL_TEAM.into()),
                TeamCondition::Teams(t) => list(t),
            };
            out.insert("Condition".into(), serde_json::json!({ "StringEquals": { RESOURCE_TEAM: teams } }));
        }
        Value::Object(out)
    }

    /// Whether this statement speaks of `action` on `resource`, owned by
    /// `owner`, for a principal acting for `teams`.
    pub fn matches(&self, action: &str, resource: &str, owner: Option<&str>, teams: &[String]) -> bool {
        self.actions.iter().any(|p| glob(p, action))
            && self.resources.iter().any(|p| covers(p, resource))
            && match &self.team {
                None => true,
                Some(TeamCondition::PrincipalTeam) => owner.is_some_and(|o| teams.iter().any(|t| t == o)),
                Some(TeamCondition::Teams(list)) => owner.is_some_and(|o| list.iter().any(|t| t == o)),
            }
    }

    /// `Allow codepipeline:Get* on pipeline/web*`, or the statement's Sid.
    pub fn describe(&self) -> String {
        let summary = format!("{} {} on {}", self.effect, self.actions.join(","), self.resources.join(","));
        let summary = if self.team.is_some() { format!("{summary} (resource team condition)") } else { summary };
        match &self.sid {
            Some(sid) => format!("{sid}: {summary}"),
            None => summary,
        }
    }
}

fn statement(value: &Value, known_actions: &[&str]) -> Result<Statement, PolicyError> {
    let object = value.as_object().ok_or_else(|| bad("expected an object"))?;
    for key in object.keys() {
        if !matches!(key.as_str(), "Sid" | "Effect" | "Action" | "Resource" | "Condition") {
            return Err(bad(format!("unknown key {key:?} (a statement has Sid, Effect, Action, Resource and Condition)")));
        }
    }
    let sid = match object.get("Sid") {
        None => None,
        Some(Value::String(s)) if s.len() <= 128 => Some(s.clone()),
        Some(_) => return Err(bad("\"Sid\" must be a string of at most 128 characters")),
    };
    let effect = match object.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return Err(bad(format!("unknown Effect {other:?}: use \"Allow\" or \"Deny\""))),
        None => return Err(bad("missing \"Effect\" (\"Allow\" or \"Deny\")")),
    };
    let actions = strings(object.get("Action"), "Action")?;
    for action in &actions {
        check_action(action, known_actions)?;
    }
    let resources = strings(object.get("Resource"), "Resource")?;
    for resource in &resources {
        check_resource(resource)?;
    }
    let team = object.get("Condition").map(condition).transpose()?;
    Ok(Statement { sid, effect, actions, resources, team })
}

/// A string or a non-empty array of strings.
fn strings(value: Option<&Value>, key: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        None => Err(bad(format!("missing {key:?}"))),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| bad(format!("{key:?} must hold only strings"))))
            .collect(),
        Some(_) => Err(bad(format!("{key:?} must be a string or a non-empty array of strings"))),
    }
}

fn check_pattern(pattern: &str, what: &str) -> Result<(), PolicyError> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN {
        return Err(bad(format!("{what} {pattern:?} must be 1 to {MAX_PATTERN} characters")));
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("{what} {pattern:?} contains white space")));
    }
    Ok(())
}

fn check_action(pattern: &str, known_actions: &[&str]) -> Result<(), PolicyError> {
    check_pattern(pattern, "action")?;
    if pattern != "*" && !pattern.contains(':') {
        return Err(bad(format!("action {pattern:?} must be SERVICE:NAME (codepipeline:..., sluice:...) or *")));
    }
    if !known_actions.iter().any(|a| glob(pattern, a)) {
        return Err(bad(format!("action {pattern:?} names no known action (see docs/permissions.md)")));
    }
    Ok(())
}

fn check_resource(pattern: &str) -> Result<(), PolicyError> {
    check_pattern(pattern, "resource")?;
    if pattern == "*" {
        return Ok(());
    }
    let kind = pattern.split('/').next().unwrap_or_default();
    let known = RESOURCE_KINDS.iter().any(|k| glob(kind, k));
    if !known || (!pattern.contains('/') && !kind.ends_with('*')) {
        return Err(bad(format!(
            "resource {pattern:?} must be * or KIND/NAME with KIND one of {}",
            RESOURCE_KINDS.join(", ")
        )));
    }
    Ok(())
}

fn condition(value: &Value) -> Result<TeamCondition, PolicyError> {
    let hint = format!("the one condition understood is {{\"StringEquals\": {{\"{RESOURCE_TEAM}\": TEAMS}}}}");
    let object = value.as_object().ok_or_else(|| bad(hint.clone()))?;
    let (op, inner) = match object.iter().collect::<Vec<_>>().as_slice() {
        [(op, inner)] => (op.as_str(), *inner),
        _ => return Err(bad(hint)),
    };
    if op != "StringEquals" {
        return Err(bad(format!("unknown condition operator {op:?}: {hint}")));
    }
    let inner = inner.as_object().ok_or_else(|| bad(hint.clone()))?;
    let (key, teams) = match inner.iter().collect::<Vec<_>>().as_slice() {
        [(key, teams)] => (key.as_str(), *teams),
        _ => return Err(bad(hint)),
    };
    if key != RESOURCE_TEAM {
        return Err(bad(format!("unknown condition key {key:?}: {hint}")));
    }
    let teams = strings(Some(teams), RESOURCE_TEAM)?;
    if teams.iter().any(|t| t == PRINCIPAL_TEAM) {
        if teams.len() > 1 {
            return Err(bad(format!("{PRINCIPAL_TEAM} cannot be mixed with team names")));
        }
        return Ok(TeamCondition::PrincipalTeam);
    }
    if let Some(t) = teams.iter().find(|t| t.contains('$') || t.contains('*') || t.is_empty()) {
        return Err(bad(format!("condition team {t:?} must be a team name or {PRINCIPAL_TEAM}")));
    }
    Ok(TeamCondition::Teams(teams))
}

/// `*` any run of characters, `?` one character; everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    if pattern.contains('?') {
        // `?` is one character, which may be several bytes.
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        glob_in(&p, &t, Some('?'), '*')
    } else {
        // Without `?`, bytes will do (issue 19, scale: a listing asks
        // this of every pattern for every item): a literal run of UTF-8
        // can only match where a character starts.
        glob_in(pattern.as_bytes(), text.as_bytes(), None, b'*')
    }
}

/// Iterative matching with one backtrack point: linear in practice.
fn glob_in<T: PartialEq + Copy>(p: &[T], t: &[T], one: Option<T>, any: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (Some(p[pi]) == one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == any {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == any)
}

/// Whether a resource pattern covers `resource` or a resource it is
/// inside (`pipeline/web` covers `pipeline/web/Deploy/Approve`).
pub fn covers(pattern: &str, resource: &str) -> bool {
    if glob(pattern, resource) {
        return true;
    }
    let mut end = resource.len();
    // Ancestors keep at least KIND/NAME.
    while let Some(cut) = resource[..end].rfind('/') {
        if !resource[..cut].contains('/') {
            return false;
        }
        end = cut;
        if glob(pattern, &resource[..end]) {
            return true;
        }
    }
    false
}

/// What decided a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this statement (of the named holding).
    Allowed(String),
    /// Denied by this explicit deny.
    Denied(String),
    /// No statement allows it (default deny).
    NoAllow,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }
}

/// One policy as a principal holds it: through which role, acting for
/// which teams, and (for a delegation) limited to one team's resources.
#[derive(Debug, Clone)]
pub struct Holding<'a> {
    /// `role developer`, `role approver granted by team web`.
    pub through: String,
    pub policy: &'a Policy,
    /// The teams `${sluice:PrincipalTeam}` stands for.
    pub teams: Vec<String>,
    /// A delegated role covers only the granting team's resources.
    pub only_owner: Option<String>,
}

/// Default deny, an explicit deny wins.
pub fn decide(holdings: &[Holding<'_>], action: &str, resource: &str, owner: Option<&str>) -> Decision {
    let by = |(holding, statement): (&Holding<'_>, &Statement)| format!("{}: {}", holding.through, statement.describe());
    match verdict(holdings, action, resource, owner) {
        Verdict::Denied(by_this) => Decision::Denied(by(by_this)),
        Verdict::Allowed(by_this) => Decision::Allowed(by(by_this)),
        Verdict::NoAllow => Decision::NoAllow,
    }
}

/// [`decide`] without naming the statement: what a listing asks of every
/// item it may show (issue 19, scale), where naming it cost more than
/// finding it.
pub fn allows(holdings: &[Holding<'_>], action: &str, resource: &str, owner: Option<&str>) -> bool {
    matches!(verdict(holdings, action, resource, owner), Verdict::Allowed(_))
}

/// The statement that decided, and the holding it came through.
enum Verdict<'h, 'p> {
    Allowed((&'h Holding<'p>, &'p Statement)),
    Denied((&'h Holding<'p>, &'p Statement)),
    NoAllow,
}

fn verdict<'h, 'p>(holdings: &'h [Holding<'p>], action: &str, resource: &str, owner: Option<&str>) -> Verdict<'h, 'p> {
    let mut allowed = None;
    for holding in holdings {
        if let Some(only) = &holding.only_owner
            && owner != Some(only.as_str())
        {
            continue;
        }
        for statement in &holding.policy.statements {
            if !statement.matches(action, resource, owner, &holding.teams) {
                continue;
            }
            match statement.effect {
                Effect::Deny => return Verdict::Denied((holding, statement)),
                Effect::Allow if allowed.is_none() => allowed = Some((holding, statement)),
                Effect::Allow => {}
            }
        }
    }
    allowed.map_or(Verdict::NoAllow, Verdict::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "codepipeline:GetPipeline",
        "codepipeline:GetPipelineState",
        "codepipeline:StartPipelineExecution",
        "codepipeline:DeletePipeline",
        "sluice:PushPlugin",
        "sluice:UseSecret",
    ];

    fn policy(text: &str) -> Policy {
        Policy::parse(text, KNOWN).unwrap()
    }

    fn refused(text: &str) -> String {
        Policy::parse(text, KNOWN).unwrap_err().to_string()
    }

    fn holding(policy: &Policy) -> Holding<'_> {
        Holding { through: "role test".into(), policy, teams: vec!["web".into()], only_owner: None }
    }

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob("*", ""));
        assert!(glob("*", "pipeline/web/a/b"));
        assert!(glob("codepipeline:Get*", "codepipeline:GetPipelineState"));
        assert!(!glob("codepipeline:Get*", "codepipeline:StartPipelineExecution"));
        assert!(glob("pipeline/w?b", "pipeline/web"));
        assert!(!glob("pipeline/w?b", "pipeline/wb"));
        assert!(glob("a*b*c", "aXXbYYc") && !glob("a*b*c", "aXXbYY"));
        assert!(glob("*a", "aaa") && !glob("*a", "aab"));
        assert!(!glob("pipeline/web", "pipeline/webapp"));
    }

    /// Patterns without `?` are matched on bytes: they must agree with the
    /// matching on characters, names in any script included.
    #[test]
    fn bytes_and_characters_match_alike() {
        let texts = ["", "é", "pipeline/é", "pipeline/éa", "pipeline/日本/Deploy", "aéb", "ééé", "pipeline/web"];
        let patterns = ["*", "*é", "é*", "pipeline/é*", "pipeline/*/Deploy", "a*b", "*é*é", "pipeline/日*", "p*b", ""];
        for pattern in patterns {
            let p: Vec<char> = pattern.chars().collect();
            for text in texts {
                let t: Vec<char> = text.chars().collect();
                assert_eq!(glob(pattern, text), glob_in(&p, &t, Some('?'), '*'), "{pattern} vs {text}");
            }
        }
        assert!(glob("pipeline/é*", "pipeline/éa") && glob("*é", "aé") && !glob("*é", "ée"));
        assert!(glob("?", "é") && glob("pipeline/??/Deploy", "pipeline/日本/Deploy"));
    }

    #[test]
    fn a_resource_covers_what_is_inside_it() {
        assert!(covers("pipeline/web", "pipeline/web"));
        assert!(covers("pipeline/web", "pipeline/web/Deploy/Approve"));
        assert!(covers("pipeline/web/Deploy", "pipeline/web/Deploy/Approve"));
        assert!(!covers("pipeline/web", "pipeline/webapp"));
        assert!(covers("pipeline/web*", "pipeline/webapp"));
        assert!(!covers("pipeline/web/Build", "pipeline/web/Deploy/Approve"));
        assert!(!covers("pipeline", "pipeline/web"));
        assert!(covers("pipeline/*/*/Approve", "pipeline/web/Deploy/Approve"));
    }

    /// Property-ish: a glob without wildcards is equality, and every text
    /// matches the pattern made of itself with any character starred.
    #[test]
    fn globs_agree_with_equality_and_starring() {
        let texts = ["", "a", "pipeline/web", "pipeline/web/Deploy/Approve", "codepipeline:Get", "x?y", "aaab"];
        for a in texts {
            for b in texts {
                if !a.contains(['*', '?']) {
                    assert_eq!(glob(a, b), a == b, "{a} vs {b}");
                }
            }
            for i in 0..a.len() {
                let starred = format!("{}*{}", &a[..i], &a[i + 1..]);
                assert!(glob(&starred, a), "{starred} vs {a}");
                let questioned = format!("{}?{}", &a[..i], &a[i + 1..]);
                assert!(glob(&questioned, a), "{questioned} vs {a}");
            }
        }
    }

    #[test]
    fn strings_or_arrays_and_a_round_trip() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"codepipeline:Get*","Resource":["pipeline/web*","secret/db"]}}"#,
        );
        assert_eq!(p.statements[0].actions, vec!["codepipeline:Get*"]);
        assert_eq!(p.statements[0].resources.len(), 2);
        assert_eq!(Policy::from_value(&p.to_value(), KNOWN).unwrap(), p);
    }

    #[test]
    fn malformed_policies_are_refused_with_a_reason() {
        assert!(refused("nope").contains("not JSON"));
        assert!(refused(r#"{"Statements":[]}"#).contains("unknown key \"Statements\""));
        assert!(refused(r#"{"Version":"x"}"#).contains("missing \"Statement\""));
        let s = |body: &str| format!(r#"{{"Statement":[{body}]}}"#);
        assert!(refused(&s(r#"{"Effect":"Maybe","Action":"*","Resource":"*"}"#)).contains("unknown Effect \"Maybe\""));
        assert!(refused(&s(r#"{"Action":"*","Resource":"*"}"#)).contains("missing \"Effect\""));
        assert!(refused(&s(r#"{"Effect":"Allow","Resource":"*"}"#)).contains("missing \"Action\""));
        assert!(refused(&s(r#"{"Effect":"Allow","Action":[],"Resource":"*"}"#)).contains("non-empty"));
        assert!(refused(&s(r#"{"Effect":"Allow","Action":"*","Resource":"*","NotAction":"x"}"#)).contains("NotAction"));
        assert!(refused(&s(r#"{"Effect":"Allow","Action":"codepipeline:Strat*","Resource":"*"}"#)).contains("no known"));
        assert!(refused(&s(r#"{"Effect":"Allow","Action":"StartPipeline","Resource":"*"}"#)).contains("SERVICE:NAME"));
        assert!(refused(&s(r#"{"Effect":"Allow","Action":"*","Resource":"pipelines/web"}"#)).contains("KIND/NAME"));
        assert!(refused(&s(r#"{"Effect":"Allow","Action":"*","Resource":"pipeline/a b"}"#)).contains("white space"));
        assert!(
            refused(&s(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringLike":{}}}"#))
                .contains("unknown condition operator")
        );
        assert!(
            refused(&s(r#"{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:x":"a"}}}"#))
                .contains("unknown condition key")
        );
        assert!(refused(&s(r#"{"Effect":"Allow","Action":[1],"Resource":"*"}"#)).contains("only strings"));
        assert!(refused(r#"{"Statement":[{"Effect":"Allow"}, 3]}"#).starts_with("policy is invalid: statement 1"));
    }

    #[test]
    fn default_deny_and_deny_wins() {
        let allow = policy(r#"{"Statement":[{"Effect":"Allow","Action":"codepipeline:*","Resource":"pipeline/*"}]}"#);
        let deny = policy(
            r#"{"Statement":[{"Sid":"NoProd","Effect":"Deny","Action":"codepipeline:StartPipelineExecution","Resource":"pipeline/prod"}]}"#,
        );
        let both = [holding(&allow), holding(&deny)];
        assert!(decide(&both, "codepipeline:StartPipelineExecution", "pipeline/web", None).is_allowed());
        let denied = decide(&both, "codepipeline:StartPipelineExecution", "pipeline/prod", None);
        assert!(matches!(&denied, Decision::Denied(by) if by.contains("NoProd")), "{denied:?}");
        // The order of holdings does not matter.
        let reversed = [holding(&deny), holding(&allow)];
        assert!(!decide(&reversed, "codepipeline:StartPipelineExecution", "pipeline/prod", None).is_allowed());
        assert_eq!(decide(&both, "sluice:PushPlugin", "plugin/x", None), Decision::NoAllow);
        assert_eq!(decide(&[], "codepipeline:GetPipeline", "pipeline/web", None), Decision::NoAllow);
    }

    #[test]
    fn team_conditions_and_delegations_limit_to_owners() {
        let own = policy(
            r#"{"Statement":[{"Effect":"Allow","Action":"codepipeline:StartPipelineExecution","Resource":"pipeline/*",
               "Condition":{"StringEquals":{"sluice:ResourceTeam":"${sluice:PrincipalTeam}"}}}]}"#,
        );
        let start = "codepipeline:StartPipelineExecution";
        let h = [holding(&own)];
        assert!(decide(&h, start, "pipeline/a", Some("web")).is_allowed());
        assert!(!decide(&h, start, "pipeline/b", Some("data")).is_allowed());
        assert!(!decide(&h, start, "pipeline/c", None).is_allowed());
        let any = policy(r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#);
        let delegated = Holding { only_owner: Some("data".into()), ..holding(&any) };
        assert!(decide(std::slice::from_ref(&delegated), start, "pipeline/b", Some("data")).is_allowed());
        assert!(!decide(std::slice::from_ref(&delegated), start, "pipeline/a", Some("web")).is_allowed());
        assert!(!decide(&[delegated], "sluice:PushPlugin", "plugin/x", None).is_allowed());
        let named = policy(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"sluice:ResourceTeam":["ops","data"]}}}]}"#,
        );
        assert!(decide(&[holding(&named)], start, "pipeline/b", Some("data")).is_allowed());
        assert!(!decide(&[holding(&named)], start, "pipeline/a", Some("web")).is_allowed());
    }
}
