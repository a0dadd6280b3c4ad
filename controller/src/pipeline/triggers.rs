//! CodePipeline V2 triggers: which source changes start an execution.
//!
//! A trigger names a Source action of the first stage and lists push
//! filters (branches, tags, file paths) and pull-request filters (events,
//! branches, file paths), each with glob `includes` and `excludes`. The
//! declaration keeps `triggers` as written (so `get` gives back what
//! `create` accepted); this module reads them into a typed, compiled form,
//! reporting every problem with its JSON path, and decides which source
//! actions a [`Change`] starts.
//!
//! Matching, as CodePipeline does it: a change matches a trigger when any
//! one of its filters matches; a filter matches when every criterion it has
//! matches. A criterion matches a name when an include pattern matches (or
//! there are no includes) and no exclude pattern does. For file paths, at
//! least one changed file must pass. A push filter with `tags` matches tag
//! pushes only; one without matches branch pushes only. A pipeline without
//! triggers starts on a push to the branch a source action fetches.

use globset::{GlobSet, GlobSetBuilder};
use serde_json::Value;

use super::Diagnostic;
use super::model::Pipeline;

/// Pull-request events, as CodePipeline names them.
pub const PULL_REQUEST_EVENTS: &[&str] = &["OPEN", "UPDATED", "CLOSED"];

/// One source change, as a webhook or a poll reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// The commit the change points at.
    pub revision: String,
    /// Files the change touches, when the report says (a poll does not).
    pub files: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A push to a branch (`refs/heads/NAME`).
    Branch(String),
    /// A pushed tag (`refs/tags/NAME`).
    Tag(String),
    /// A pull request was opened, updated or closed.
    PullRequest { event: String, source_branch: String, destination_branch: String },
}

impl ChangeKind {
    /// For messages and trigger details: `branch main`, `tag v1.0`, ...
    pub fn describe(&self) -> String {
        match self {
            Self::Branch(b) => format!("push to branch {b}"),
            Self::Tag(t) => format!("tag {t}"),
            Self::PullRequest { event, source_branch, destination_branch } => {
                format!("pull request {} {source_branch} -> {destination_branch}", event.to_lowercase())
            }
        }
    }
}

/// Glob includes and excludes, compiled.
#[derive(Debug, Clone)]
pub struct Patterns {
    includes: Option<GlobSet>,
    excludes: Option<GlobSet>,
}

impl Patterns {
    fn matches(&self, name: &str) -> bool {
        self.includes.as_ref().is_none_or(|set| set.is_match(name))
            && self.excludes.as_ref().is_none_or(|set| !set.is_match(name))
    }

    /// At least one file passes; an unknown file list cannot be judged and
    /// passes (polls report no files).
    fn matches_any(&self, files: Option<&[String]>) -> bool {
        match files {
            None => true,
            Some(files) => files.iter().any(|f| self.matches(f)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PushFilter {
    pub branches: Option<Patterns>,
    pub tags: Option<Patterns>,
    pub file_paths: Option<Patterns>,
}

#[derive(Debug, Clone, Default)]
pub struct PullRequestFilter {
    /// Empty: every event.
    pub events: Vec<String>,
    pub branches: Option<Patterns>,
    pub file_paths: Option<Patterns>,
}

/// One `triggers[]` entry with a `gitConfiguration`.
#[derive(Debug, Clone)]
pub struct GitTrigger {
    pub source_action: String,
    pub push: Vec<PushFilter>,
    pub pull_request: Vec<PullRequestFilter>,
}

impl GitTrigger {
    pub fn matches(&self, change: &Change) -> bool {
        let files = change.files.as_deref();
        let file_paths_pass = |p: &Option<Patterns>| p.as_ref().is_none_or(|p| p.matches_any(files));
        match &change.kind {
            ChangeKind::Branch(branch) => self.push.iter().any(|f| {
                f.tags.is_none() && f.branches.as_ref().is_none_or(|b| b.matches(branch)) && file_paths_pass(&f.file_paths)
            }),
            ChangeKind::Tag(tag) => {
                self.push.iter().any(|f| f.tags.as_ref().is_some_and(|t| t.matches(tag)) && file_paths_pass(&f.file_paths))
            }
            ChangeKind::PullRequest { event, destination_branch, .. } => self.pull_request.iter().any(|f| {
                (f.events.is_empty() || f.events.iter().any(|e| e == event))
                    && f.branches.as_ref().is_none_or(|b| b.matches(destination_branch))
                    && file_paths_pass(&f.file_paths)
            }),
        }
    }
}

/// The git triggers of a pipeline, or every problem with them.
pub fn git_triggers(pipeline: &Pipeline) -> Result<Vec<GitTrigger>, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut triggers = Vec::new();
    for (i, value) in pipeline.triggers.iter().enumerate() {
        let path = format!("pipeline.triggers[{i}]");
        let Some(map) = value.as_object() else {
            problems.push(diag(&path, "expected an object"));
            continue;
        };
        for key in map.keys() {
            if key != "gitConfiguration" && key != "providerType" {
                problems.push(diag(&format!("{path}.{key}"), "unknown field"));
            }
        }
        let Some(git) = map.get("gitConfiguration") else {
            problems.push(diag(&path, "missing field \"gitConfiguration\""));
            continue;
        };
        let path = format!("{path}.gitConfiguration");
        let Some(git) = git.as_object() else {
            problems.push(diag(&path, "expected an object"));
            continue;
        };
        for key in git.keys() {
            if !["sourceActionName", "push", "pullRequest"].contains(&key.as_str()) {
                problems.push(diag(&format!("{path}.{key}"), "unknown field"));
            }
        }
        let source_action = match git.get("sourceActionName").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => {
                problems.push(diag(&format!("{path}.sourceActionName"), "a source action name is required"));
                String::new()
            }
        };
        let push = filters(git.get("push"), &format!("{path}.push"), &mut problems, |map, path, problems| {
            allowed_keys(map, path, &["branches", "tags", "filePaths"], problems);
            let filter = PushFilter {
                branches: patterns(map.get("branches"), &format!("{path}.branches"), problems),
                tags: patterns(map.get("tags"), &format!("{path}.tags"), problems),
                file_paths: patterns(map.get("filePaths"), &format!("{path}.filePaths"), problems),
            };
            if filter.tags.is_some() && filter.branches.is_some() {
                problems.push(diag(path, "a push filter has either tags or branches, not both"));
            }
            filter
        });
        let pull_request =
            filters(git.get("pullRequest"), &format!("{path}.pullRequest"), &mut problems, |map, path, problems| {
                allowed_keys(map, path, &["events", "branches", "filePaths"], problems);
                let events = match map.get("events") {
                    None => Vec::new(),
                    Some(v) => strings(v, &format!("{path}.events"), problems)
                        .into_iter()
                        .enumerate()
                        .filter_map(|(j, e)| {
                            if PULL_REQUEST_EVENTS.contains(&e.as_str()) {
                                Some(e)
                            } else {
                                problems.push(diag(
                                    &format!("{path}.events[{j}]"),
                                    &format!("unknown event {e:?}; expected one of {}", PULL_REQUEST_EVENTS.join(", ")),
                                ));
                                None
                            }
                        })
                        .collect(),
                };
                PullRequestFilter {
                    events,
                    branches: patterns(map.get("branches"), &format!("{path}.branches"), problems),
                    file_paths: patterns(map.get("filePaths"), &format!("{path}.filePaths"), problems),
                }
            });
        if push.is_empty() && pull_request.is_empty() {
            problems.push(diag(&path, "a trigger needs at least one push or pullRequest filter"));
        }
        triggers.push(GitTrigger { source_action, push, pull_request });
    }
    if problems.is_empty() { Ok(triggers) } else { Err(problems) }
}

/// Which source actions a change starts, for a pipeline whose triggers are
/// `triggers`. `branch_of` gives the branch a source action fetches (for
/// pipelines without triggers).
pub fn sources_started_by<'p>(
    pipeline: &'p Pipeline,
    triggers: &[GitTrigger],
    change: &Change,
    branch_of: impl Fn(&'p super::model::Action) -> Option<String>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if triggers.is_empty() {
        if let ChangeKind::Branch(branch) = &change.kind {
            let sources = pipeline.stages.first().map(|s| s.actions.as_slice()).unwrap_or_default();
            for action in sources.iter().filter(|a| a.action_type_id.category == "Source") {
                if branch_of(action).as_deref() == Some(branch.as_str()) {
                    names.push(action.name.clone());
                }
            }
        }
    } else {
        for trigger in triggers.iter().filter(|t| t.matches(change)) {
            if !names.contains(&trigger.source_action) {
                names.push(trigger.source_action.clone());
            }
        }
    }
    names
}

fn diag(path: &str, message: &str) -> Diagnostic {
    Diagnostic { path: path.to_string(), message: message.to_string() }
}

fn allowed_keys(map: &serde_json::Map<String, Value>, path: &str, allowed: &[&str], problems: &mut Vec<Diagnostic>) {
    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        problems.push(diag(&format!("{path}.{key}"), "unknown field"));
    }
}

fn filters<T>(
    value: Option<&Value>,
    path: &str,
    problems: &mut Vec<Diagnostic>,
    each: impl Fn(&serde_json::Map<String, Value>, &str, &mut Vec<Diagnostic>) -> T,
) -> Vec<T> {
    let Some(value) = value else { return Vec::new() };
    let Some(items) = value.as_array() else {
        problems.push(diag(path, "expected a list of filters"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let path = format!("{path}[{j}]");
        match item.as_object() {
            Some(map) => out.push(each(map, &path, problems)),
            None => problems.push(diag(&path, "expected an object")),
        }
    }
    out
}

fn strings(value: &Value, path: &str, problems: &mut Vec<Diagnostic>) -> Vec<String> {
    let Some(items) = value.as_array() else {
        problems.push(diag(path, "expected a list of strings"));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(k, v)| match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                problems.push(diag(&format!("{path}[{k}]"), "expected a string"));
                None
            }
        })
        .collect()
}

fn patterns(value: Option<&Value>, path: &str, problems: &mut Vec<Diagnostic>) -> Option<Patterns> {
    let value = value?;
    let Some(map) = value.as_object() else {
        problems.push(diag(path, "expected an object with \"includes\" and/or \"excludes\""));
        return None;
    };
    allowed_keys(map, path, &["includes", "excludes"], problems);
    let mut set = |key: &str| -> Option<GlobSet> {
        let list = strings(map.get(key)?, &format!("{path}.{key}"), problems);
        let mut builder = GlobSetBuilder::new();
        for (k, pattern) in list.iter().enumerate() {
            // `*` stays within one path segment; `**` crosses them.
            match globset::GlobBuilder::new(pattern).literal_separator(true).build() {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => problems.push(diag(&format!("{path}.{key}[{k}]"), &format!("bad pattern: {}", e.kind()))),
            }
        }
        builder.build().ok()
    };
    let includes = set("includes");
    let excludes = set("excludes");
    if includes.is_none() && excludes.is_none() {
        problems.push(diag(path, "give \"includes\", \"excludes\" or both"));
    }
    Some(Patterns { includes, excludes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(triggers: &str) -> Pipeline {
        let text = format!(
            r#"{{"pipeline": {{"name": "p", "triggers": {triggers}, "stages": [
            {{"name": "Source", "actions": [
              {{"name": "App", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
               "configuration": {{"Url": "/a", "Branch": "main"}}, "outputArtifacts": [{{"name": "a"}}]}},
              {{"name": "Lib", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
               "configuration": {{"Url": "/b", "Branch": "dev"}}, "outputArtifacts": [{{"name": "b"}}]}}]}},
            {{"name": "Build", "actions": [{{"name": "B", "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}}}]}}
            ]}}}}"#
        );
        crate::pipeline::parse(&text).expect("parses").pipeline
    }

    fn branch_config(action: &crate::pipeline::Action) -> Option<String> {
        action.configuration.get("Branch").map(str::to_string)
    }

    fn push(branch: &str, files: &[&str]) -> Change {
        Change {
            kind: ChangeKind::Branch(branch.into()),
            revision: "c0ffee".into(),
            files: Some(files.iter().map(|f| f.to_string()).collect()),
        }
    }

    fn started(p: &Pipeline, change: &Change) -> Vec<String> {
        let triggers = git_triggers(p).expect("valid triggers");
        sources_started_by(p, &triggers, change, branch_config)
    }

    #[test]
    fn without_triggers_a_push_starts_the_sources_of_that_branch() {
        let p = pipeline("[]");
        assert_eq!(started(&p, &push("main", &["x"])), ["App"]);
        assert_eq!(started(&p, &push("dev", &["x"])), ["Lib"]);
        assert!(started(&p, &push("feature", &["x"])).is_empty());
        let tag = Change { kind: ChangeKind::Tag("v1".into()), revision: "c".into(), files: None };
        assert!(started(&p, &tag).is_empty());
    }

    #[test]
    fn branch_and_file_path_filters_decide_both_ways() {
        let p = pipeline(
            r#"[{"providerType": "CodeStarSourceConnection", "gitConfiguration": {"sourceActionName": "App",
                "push": [{"branches": {"includes": ["main", "release/*"], "excludes": ["release/old"]},
                          "filePaths": {"includes": ["src/**"], "excludes": ["src/**/*.md"]}}]}}]"#,
        );
        assert_eq!(started(&p, &push("main", &["src/lib.rs"])), ["App"]);
        assert_eq!(started(&p, &push("release/2", &["docs/a", "src/x/y.rs"])), ["App"]);
        // Outside the included paths, or only excluded files: nothing.
        assert!(started(&p, &push("main", &["docs/readme.txt"])).is_empty());
        assert!(started(&p, &push("main", &["src/guide.md"])).is_empty());
        // Excluded or not included branches.
        assert!(started(&p, &push("release/old", &["src/lib.rs"])).is_empty());
        assert!(started(&p, &push("dev", &["src/lib.rs"])).is_empty());
        // `*` does not cross `/`.
        assert!(started(&p, &push("release/a/b", &["src/lib.rs"])).is_empty());
        // A poll knows no files: the branch decides.
        let polled = Change { files: None, ..push("main", &[]) };
        assert_eq!(started(&p, &polled), ["App"]);
    }

    #[test]
    fn tag_filters_match_tags_only_and_pull_requests_their_events() {
        let p = pipeline(
            r#"[{"gitConfiguration": {"sourceActionName": "Lib",
                 "push": [{"tags": {"includes": ["v*"]}}],
                 "pullRequest": [{"events": ["OPEN", "UPDATED"], "branches": {"includes": ["main"]}}]}}]"#,
        );
        let tag = |t: &str| Change { kind: ChangeKind::Tag(t.into()), revision: "c".into(), files: None };
        assert_eq!(started(&p, &tag("v1.2")), ["Lib"]);
        assert!(started(&p, &tag("nightly")).is_empty());
        assert!(started(&p, &push("main", &["a"])).is_empty(), "a tag filter ignores branch pushes");
        let pr = |event: &str, to: &str| Change {
            kind: ChangeKind::PullRequest {
                event: event.into(),
                source_branch: "feature".into(),
                destination_branch: to.into(),
            },
            revision: "c".into(),
            files: None,
        };
        assert_eq!(started(&p, &pr("OPEN", "main")), ["Lib"]);
        assert!(started(&p, &pr("CLOSED", "main")).is_empty());
        assert!(started(&p, &pr("UPDATED", "dev")).is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let p = pipeline(
            r#"[{"gitConfiguration": {"sourceActionName": "App", "bogus": 1,
                 "push": [{"branches": {"includes": ["a["]}, "tags": {"includes": ["v*"]}}, 3],
                 "pullRequest": [{"events": ["MERGED"], "filePaths": {}}]}},
                {"gitConfiguration": {"sourceActionName": "App"}}]"#,
        );
        let problems: Vec<String> =
            git_triggers(&p).unwrap_err().iter().map(|d| format!("{}: {}", d.path, d.message)).collect();
        let expected = [
            "pipeline.triggers[0].gitConfiguration.bogus: unknown field",
            "pipeline.triggers[0].gitConfiguration.push[0].branches.includes[0]: bad pattern",
            "pipeline.triggers[0].gitConfiguration.push[0]: a push filter has either tags or branches, not both",
            "pipeline.triggers[0].gitConfiguration.push[1]: expected an object",
            "pipeline.triggers[0].gitConfiguration.pullRequest[0].events[0]: unknown event \"MERGED\"",
            "pipeline.triggers[0].gitConfiguration.pullRequest[0].filePaths: give \"includes\", \"excludes\" or both",
            "pipeline.triggers[1].gitConfiguration: a trigger needs at least one push or pullRequest filter",
        ];
        for e in expected {
            assert!(problems.iter().any(|p| p.starts_with(e)), "missing {e:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }
}
