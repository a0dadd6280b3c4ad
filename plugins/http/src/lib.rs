//! Built-in plugin `http@1`: makes one HTTP request and checks its answer,
//! for smoke tests after a deploy, triggering another system, or reading a
//! value out of an API into the pipeline's variables.
//!
//! The request goes through the SDK's client (`wasi:http`), so the host
//! checks its destination against the action's `http` grants; the plugin
//! declares `http: ["*"]` because the URL is configuration. A bearer token
//! comes from a granted secret and is never logged: the log shows header
//! names, not values.
//!
//! The configuration is read and checked whole before anything is sent
//! ([`Settings::from_config`]), and every problem is reported at once.
//! Retries wait 1 s, 2 s, 4 s, ... (at most 10 s) between attempts, and
//! happen only for transport failures and statuses where trying again can
//! help (408, 429, 5xx) that the expectation does not accept. This crate
//! knows only the SDK.

use std::fmt;
use std::time::{Duration, Instant};

use sluice_plugin_sdk::http::{self, Request, Response, SNIPPET_CHARS};
use sluice_plugin_sdk::{
    ActionInfo, Category, Config, Context, Error, Outcome, Plugin, Property, PropertyType, log,
    secrets,
};

/// The timeout of one attempt without `TimeoutSeconds`: the SDK's.
const DEFAULT_TIMEOUT: Duration = http::DEFAULT_TIMEOUT;

/// The most `Retries` may ask for: beyond that, retrying hides an outage
/// that the pipeline should show.
const MAX_RETRIES: u32 = 10;

/// The first wait between attempts; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The output variable that always carries the status.
const STATUS_VARIABLE: &str = "StatusCode";

/// The http plugin.
pub struct HttpPlugin;

impl Plugin for HttpPlugin {
    fn describe() -> ActionInfo {
        ActionInfo::new("http", "1", Category::Invoke)
            .description(
                "Makes one HTTP request and fails unless the status (and, if asked, the body) is \
                 as expected; can copy values out of a JSON response into output variables. The \
                 action must grant the destination with the http capability (host:port).",
            )
            .property(Property::required("Url", "The http:// or https:// URL"))
            .property(Property::optional(
                "Method",
                "The HTTP method, GET by default",
            ))
            .property(
                Property::optional("Headers", "Request headers, one `Name: value` per line")
                    .kind(PropertyType::List),
            )
            .property(Property::optional(
                "Body",
                "The request body; Content-Type defaults to application/json when it is a JSON \
                 object or array, text/plain otherwise",
            ))
            .property(Property::optional(
                "BearerTokenSecret",
                "The name of a granted secret sent as `Authorization: Bearer <value>`",
            ))
            .property(Property::optional(
                "ExpectedStatus",
                "Accepted statuses, such as `200, 201`, `2xx` or `200-299`; any 2xx by default",
            ))
            .property(Property::optional(
                "ExpectedBodyContains",
                "Text the response body must contain",
            ))
            .property(
                Property::optional(
                    "OutputVariables",
                    "Output variables from a JSON response, one `NAME=/json/pointer` per line \
                     (RFC 6901)",
                )
                .kind(PropertyType::List),
            )
            .property(
                Property::optional(
                    "TimeoutSeconds",
                    "How long one attempt may take, 60 by default",
                )
                .kind(PropertyType::Number),
            )
            .property(
                Property::optional(
                    "Retries",
                    "Attempts after the first on connection errors and 408, 429 and 5xx \
                     statuses, 0 by default, at most 10",
                )
                .kind(PropertyType::Number),
            )
            .outputs(0, 0)
            // The destination and the secret's name are configuration.
            .http(["*"])
            .secrets(["*"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        run(&ctx.config, &mut std::thread::sleep)
    }
}

sluice_plugin_sdk::export_plugin!(HttpPlugin);

/// The configuration, checked.
#[derive(Debug, PartialEq)]
struct Settings {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    bearer_token_secret: Option<String>,
    expected_status: StatusSet,
    expected_body: Option<String>,
    outputs: Vec<OutputVariable>,
    timeout: Duration,
    retries: u32,
}

impl Settings {
    /// Reads and checks every key, reporting every problem at once.
    fn from_config(config: &Config) -> Result<Self, Error> {
        let mut problems = Vec::new();
        let mut check = |result: Result<(), String>| {
            if let Err(problem) = result {
                problems.push(problem);
            }
        };

        let url = config.get("Url").unwrap_or_default().trim().to_owned();
        check(if url.is_empty() {
            Err("configuration \"Url\" is required".to_owned())
        } else {
            Ok(())
        });
        let method = config.get_or("Method", "GET").trim().to_ascii_uppercase();
        let mut headers = Vec::new();
        check(
            http::parse_header_lines(config.get("Headers").unwrap_or_default())
                .map(|parsed| headers = parsed)
                .map_err(|e| format!("configuration \"Headers\": {e}")),
        );
        let bearer_token_secret = non_empty(config.get("BearerTokenSecret"));
        if bearer_token_secret.is_some()
            && headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            check(Err(
                "configuration \"Headers\": an Authorization header and BearerTokenSecret \
                 exclude each other"
                    .to_owned(),
            ));
        }
        let mut expected_status = StatusSet::default();
        if let Some(text) = non_empty(config.get("ExpectedStatus")) {
            check(
                text.parse()
                    .map(|set| expected_status = set)
                    .map_err(|e| format!("configuration \"ExpectedStatus\": {e}")),
            );
        }
        let mut outputs = Vec::new();
        check(
            parse_output_variables(config.get("OutputVariables").unwrap_or_default())
                .map(|parsed| outputs = parsed)
                .map_err(|e| format!("configuration \"OutputVariables\": {e}")),
        );
        let mut timeout = DEFAULT_TIMEOUT;
        check(match config.get_parsed::<f64>("TimeoutSeconds") {
            Ok(None) => Ok(()),
            Ok(Some(secs)) if secs > 0.0 && secs <= 86_400.0 => {
                timeout = Duration::from_secs_f64(secs);
                Ok(())
            }
            Ok(Some(_)) => Err(
                "configuration \"TimeoutSeconds\": must be more than 0 and at most 86400"
                    .to_owned(),
            ),
            Err(e) => Err(e.to_string()),
        });
        let mut retries = 0;
        check(match config.get_parsed::<u32>("Retries") {
            Ok(None) => Ok(()),
            Ok(Some(n)) if n <= MAX_RETRIES => {
                retries = n;
                Ok(())
            }
            Ok(Some(_)) => Err(format!("configuration \"Retries\": at most {MAX_RETRIES}")),
            Err(e) => Err(e.to_string()),
        });

        if !problems.is_empty() {
            return Err(Error::new(problems.join("; ")));
        }
        Ok(Self {
            url,
            method,
            headers,
            body: config
                .get("Body")
                .filter(|b| !b.is_empty())
                .map(str::to_owned),
            bearer_token_secret,
            expected_status,
            expected_body: config
                .get("ExpectedBodyContains")
                .filter(|b| !b.is_empty())
                .map(str::to_owned),
            outputs,
            timeout,
            retries,
        })
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// One `NAME=/json/pointer` line of `OutputVariables`.
#[derive(Debug, PartialEq)]
struct OutputVariable {
    name: String,
    pointer: String,
}

fn parse_output_variables(text: &str) -> Result<Vec<OutputVariable>, String> {
    let mut outputs: Vec<OutputVariable> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n = n + 1;
        let Some((name, pointer)) = line.split_once('=') else {
            return Err(format!("line {n}: expected NAME=/json/pointer"));
        };
        let (name, pointer) = (name.trim(), pointer.trim());
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@');
        if name.is_empty() || !name.chars().all(plain) {
            return Err(format!(
                "line {n}: invalid variable name {name:?} (letters, digits, _ - @)"
            ));
        }
        if name == STATUS_VARIABLE || outputs.iter().any(|o| o.name == name) {
            return Err(format!("line {n}: variable {name:?} is set twice"));
        }
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(format!(
                "line {n}: {pointer:?} is not a JSON pointer (it starts with \"/\", or is empty \
                 for the whole document)"
            ));
        }
        outputs.push(OutputVariable {
            name: name.to_owned(),
            pointer: pointer.to_owned(),
        });
    }
    Ok(outputs)
}

/// The statuses that count as success.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StatusSet(Vec<StatusRange>);

/// An inclusive range of statuses; a class (`2xx`) is written as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatusRange {
    first: u16,
    last: u16,
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![StatusRange {
            first: 200,
            last: 299,
        }])
    }
}

impl StatusSet {
    fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| (r.first..=r.last).contains(&status))
    }
}

impl std::str::FromStr for StatusSet {
    type Err = String;

    /// `200`, `2xx` or `200-299`, separated by commas or whitespace.
    fn from_str(text: &str) -> Result<Self, String> {
        let status = |s: &str| match s.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(format!(
                "{s:?} is not a status (100 to 599, 2xx, or 200-299)"
            )),
        };
        let mut ranges = Vec::new();
        for item in text
            .split([',', ' ', '\t', '\n', '\r'])
            .filter(|s| !s.is_empty())
        {
            let lower = item.to_ascii_lowercase();
            let range = if let Some(class) = lower.strip_suffix("xx") {
                let first = status(&format!("{class}00"))
                    .map_err(|_| format!("{item:?} is not a status class (1xx to 5xx)"))?;
                StatusRange {
                    first,
                    last: first + 99,
                }
            } else if let Some((first, last)) = item.split_once('-') {
                let (first, last) = (status(first)?, status(last)?);
                if first > last {
                    return Err(format!("{item:?} is an empty range"));
                }
                StatusRange { first, last }
            } else {
                let n = status(item)?;
                StatusRange { first: n, last: n }
            };
            ranges.push(range);
        }
        if ranges.is_empty() {
            return Err("no status given".to_owned());
        }
        Ok(StatusSet(ranges))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.first == r.last {
                write!(f, "{}", r.first)?;
            } else if r.first % 100 == 0 && r.last == r.first + 99 {
                write!(f, "{}xx", r.first / 100)?;
            } else {
                write!(f, "{}-{}", r.first, r.last)?;
            }
        }
        Ok(())
    }
}

/// The URL for the log and messages: without its query, which may carry a
/// key, and without a fragment.
fn shown_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let mut shown = url[..end].to_owned();
    if url[end..].starts_with('?') {
        shown.push_str("?…");
    }
    shown
}

/// The wait before attempt `attempt + 1`.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The action, with the wait between attempts given (a test does not sleep).
fn run(config: &Config, sleep: &mut dyn FnMut(Duration)) -> Result<Outcome, Error> {
    let settings = Settings::from_config(config)?;
    let shown = shown_url(&settings.url);
    let what = format!("{} {shown}", settings.method);

    let mut request = Request::new(&settings.method, &settings.url)
        .headers(settings.headers.iter().cloned())
        .timeout(settings.timeout);
    if let Some(body) = &settings.body {
        let has_type = settings
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if !has_type {
            request = request.header("Content-Type", guess_content_type(body));
        }
        request = request.body(body.as_str());
    }
    let mut header_names: Vec<&str> = settings.headers.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(name) = &settings.bearer_token_secret {
        let token =
            secrets::get(name).map_err(|e| e.context("configuration \"BearerTokenSecret\""))?;
        request = request.bearer_auth(token.trim());
        header_names.push("Authorization");
    }
    if !header_names.is_empty() {
        // Names only: values may be credentials.
        log::info(format!("headers: {}", header_names.join(", ")));
    }

    let attempts = settings.retries + 1;
    let mut attempt = 1;
    loop {
        let counter = if attempts > 1 {
            format!(" (attempt {attempt} of {attempts})")
        } else {
            String::new()
        };
        log::info(format!("{what}{counter}"));
        let started = Instant::now();
        let result = request.send();
        let elapsed = started.elapsed();
        let again = attempt < attempts;
        match result {
            Ok(response) => {
                log::info(format!(
                    "{what} → {} ({} ms, {} bytes)",
                    response.status,
                    elapsed.as_millis(),
                    response.body.len()
                ));
                let accepted = settings.expected_status.contains(response.status);
                if !accepted && http::status_is_retryable(response.status) && again {
                    log::warn(format!("status {}: trying again", response.status));
                } else {
                    return check(&settings, &what, response, elapsed);
                }
            }
            Err(e) if e.is_retryable() && again => {
                log::warn(format!("{e}: trying again"));
            }
            Err(e) if attempts > 1 => {
                return Err(Error::new(format!(
                    "{what}: {} (after {attempt} attempts)",
                    e.message()
                ))
                .with_retryable(e.is_retryable()));
            }
            Err(e) => return Err(e.context(&what)),
        }
        sleep(backoff(attempt));
        attempt += 1;
    }
}

/// `application/json` for a body that is a JSON object or array,
/// `text/plain` for anything else.
fn guess_content_type(body: &str) -> &'static str {
    let json = matches!(body.trim_start().chars().next(), Some('{' | '['))
        && serde_json::from_str::<serde_json::Value>(body).is_ok();
    if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Checks the answer against the expectations and builds the outcome.
fn check(
    settings: &Settings,
    what: &str,
    response: Response,
    elapsed: Duration,
) -> Result<Outcome, Error> {
    let status = response.status;
    if !settings.expected_status.contains(status) {
        return Err(Error::new(format!(
            "{what}: expected status {}, got {}: {}",
            settings.expected_status,
            http::status_line(status),
            response.snippet(SNIPPET_CHARS)
        ))
        .with_retryable(http::status_is_retryable(status)));
    }
    if let Some(needle) = &settings.expected_body {
        let body = String::from_utf8_lossy(&response.body);
        if !body.contains(needle.as_str()) {
            return Err(Error::new(format!(
                "{what}: the response body ({status}) does not contain {needle:?}: {}",
                response.snippet(SNIPPET_CHARS)
            )));
        }
    }
    let mut outcome = Outcome::succeeded(format!("{what} → {status} ({} ms)", elapsed.as_millis()))
        .variable(STATUS_VARIABLE, status.to_string());
    if !settings.outputs.is_empty() {
        let document: serde_json::Value = serde_json::from_slice(&response.body).map_err(|e| {
            Error::new(format!(
                "{what}: OutputVariables need a JSON response, but the body ({status}) is not \
                 JSON ({e}): {}",
                response.snippet(SNIPPET_CHARS)
            ))
        })?;
        let mut missing = Vec::new();
        for output in &settings.outputs {
            match document.pointer(&output.pointer) {
                Some(value) => outcome = outcome.variable(&output.name, variable_value(value)),
                None => missing.push(format!("{} ({:?})", output.name, output.pointer)),
            }
        }
        if !missing.is_empty() {
            return Err(Error::new(format!(
                "{what}: the JSON response has nothing at {}: {}",
                missing.join(", "),
                response.snippet(SNIPPET_CHARS)
            )));
        }
    }
    Ok(outcome)
}

/// A string as it is; anything else as compact JSON (`42`, `true`, `null`,
/// `{"a":1}`).
fn variable_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! These run natively against a local server (the SDK's stand-in
    //! speaks plain http; no grants are checked).
    use super::*;
    use sluice_plugin_sdk::http::testing::{REFUSED, Reply, Server};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    fn run_without_sleeping(config: &Config) -> (Result<Outcome, Error>, Vec<Duration>) {
        let mut waits = Vec::new();
        let result = run(config, &mut |d| waits.push(d));
        (result, waits)
    }

    #[test]
    fn defaults_and_every_problem_at_once() {
        let settings = Settings::from_config(&config(&[("Url", "http://h/")])).unwrap();
        assert_eq!(settings.method, "GET");
        assert_eq!(settings.expected_status.to_string(), "2xx");
        assert_eq!((settings.timeout, settings.retries), (DEFAULT_TIMEOUT, 0));

        let err = Settings::from_config(&config(&[
            ("Headers", "Accept: */*\nnot a header"),
            ("ExpectedStatus", "200, 7xx"),
            ("OutputVariables", "Id=data/id"),
            ("TimeoutSeconds", "0"),
            ("Retries", "11"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"Url\" is required; \
             configuration \"Headers\": header line 2: expected \"Name: value\"; \
             configuration \"ExpectedStatus\": \"7xx\" is not a status class (1xx to 5xx); \
             configuration \"OutputVariables\": line 1: \"data/id\" is not a JSON pointer (it starts with \"/\", or is empty for the whole document); \
             configuration \"TimeoutSeconds\": must be more than 0 and at most 86400; \
             configuration \"Retries\": at most 10"
        );
        let err = Settings::from_config(&config(&[
            ("Url", "http://h/"),
            ("Headers", "authorization: Basic x"),
            ("BearerTokenSecret", "T"),
        ]))
        .unwrap_err();
        assert!(err.message().contains("exclude each other"), "{err}");
    }

    #[test]
    fn status_sets_parse_and_print() {
        let set: StatusSet = "200,201  204\n3XX 400-404".parse().unwrap();
        assert_eq!(set.to_string(), "200, 201, 204, 3xx, 400-404");
        assert!(set.contains(201) && set.contains(302) && set.contains(404));
        assert!(!set.contains(202) && !set.contains(405));
        for (text, why) in [
            ("", "no status given"),
            ("20", "\"20\" is not a status (100 to 599, 2xx, or 200-299)"),
            ("ok", "\"ok\" is not a status (100 to 599, 2xx, or 200-299)"),
            ("404-400", "\"404-400\" is an empty range"),
            ("6xx", "\"6xx\" is not a status class (1xx to 5xx)"),
        ] {
            assert_eq!(text.parse::<StatusSet>().unwrap_err(), why, "{text:?}");
        }
    }

    #[test]
    fn output_variable_lines_are_checked() {
        let parsed = parse_output_variables("Id=/data/0/id\n\n Whole = ").unwrap();
        assert_eq!(
            parsed,
            [
                OutputVariable {
                    name: "Id".into(),
                    pointer: "/data/0/id".into()
                },
                OutputVariable {
                    name: "Whole".into(),
                    pointer: String::new()
                },
            ]
        );
        assert_eq!(
            parse_output_variables("Id").unwrap_err(),
            "line 1: expected NAME=/json/pointer"
        );
        assert_eq!(
            parse_output_variables("A=/a\nA=/b").unwrap_err(),
            "line 2: variable \"A\" is set twice"
        );
        assert_eq!(
            parse_output_variables("StatusCode=/s").unwrap_err(),
            "line 1: variable \"StatusCode\" is set twice"
        );
        assert!(
            parse_output_variables("a b=/x")
                .unwrap_err()
                .starts_with("line 1: invalid variable name \"a b\"")
        );
    }

    #[test]
    fn a_matching_status_succeeds_with_status_and_json_variables() {
        let server = Server::start(|_| {
            Reply::new(201)
                .header("Content-Type", "application/json")
                .body(r#"{"data": [{"id": 42, "name": "web", "tags": ["a"], "a/b": true, "ok": null}]}"#)
        });
        let config = config(&[
            ("Url", &server.url("/v1/deploy?token=abc")),
            ("Method", "post"),
            ("Headers", "X-Request-Id: 7\nAccept: application/json"),
            ("Body", r#"{"ref": "main"}"#),
            ("ExpectedStatus", "200,201"),
            ("ExpectedBodyContains", "\"web\""),
            (
                "OutputVariables",
                "Id=/data/0/id\nName=/data/0/name\nTags=/data/0/tags\nSlash=/data/0/a~1b\nNothing=/data/0/ok",
            ),
        ]);
        let (result, waits) = run_without_sleeping(&config);
        let outcome = result.unwrap();
        assert!(waits.is_empty());
        let summary = outcome.summary();
        let prefix = format!("POST http://{}/v1/deploy?… → 201 (", server.authority());
        assert!(
            summary.starts_with(&prefix) && summary.ends_with(" ms)"),
            "{summary}"
        );
        for (name, value) in [
            ("StatusCode", "201"),
            ("Id", "42"),
            ("Name", "web"),
            ("Tags", "[\"a\"]"),
            ("Slash", "true"),
            ("Nothing", "null"),
        ] {
            assert_eq!(outcome.get_variable(name), Some(value), "{name}");
        }
        let seen = &server.requests()[0];
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", "/v1/deploy?token=abc")
        );
        assert_eq!(seen.header("x-request-id"), Some("7"));
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(seen.text(), r#"{"ref": "main"}"#);
    }

    #[test]
    fn a_status_outside_the_expectation_fails_with_a_snippet() {
        let server = Server::start(|_| {
            Reply::new(404).body(format!(
                "{{\"message\": \"no such thing\"}}{}",
                " ".repeat(10) + &"z".repeat(1000)
            ))
        });
        let (result, _) = run_without_sleeping(&config(&[("Url", &server.url("/x"))]));
        let err = result.unwrap_err();
        let expected = format!(
            "GET {}: expected status 2xx, got 404 Not Found: {{\"message\": \"no such thing\"}}",
            server.url("/x")
        );
        assert!(err.message().starts_with(&expected), "{err}");
        assert!(
            err.message().ends_with("z…"),
            "the snippet is bounded: {err}"
        );
        assert!(err.message().len() < expected.len() + SNIPPET_CHARS + 10);
        assert!(!err.is_retryable());

        // An expectation may accept what is usually a failure.
        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/x")),
            ("ExpectedStatus", "404"),
        ]));
        assert_eq!(result.unwrap().get_variable("StatusCode"), Some("404"));
    }

    #[test]
    fn the_body_must_contain_the_expected_text() {
        let server = Server::start(|_| Reply::new(200).body("status: degraded"));
        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/health")),
            ("ExpectedBodyContains", "status: ok"),
        ]));
        assert_eq!(
            result.unwrap_err().message(),
            format!(
                "GET {}: the response body (200) does not contain \"status: ok\": status: degraded",
                server.url("/health")
            )
        );
        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/health")),
            ("ExpectedBodyContains", "degraded"),
        ]));
        assert!(result.is_ok());
    }

    #[test]
    fn output_variables_need_json_and_existing_pointers() {
        let server = Server::start(|request| match request.path.as_str() {
            "/json" => Reply::new(200).body(r#"{"a": 1}"#),
            _ => Reply::new(200).body("<html>"),
        });
        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/html")),
            ("OutputVariables", "A=/a"),
        ]));
        let err = result.unwrap_err();
        assert!(
            err.message()
                .contains("OutputVariables need a JSON response, but the body (200) is not JSON"),
            "{err}"
        );
        assert!(err.message().ends_with(": <html>"), "{err}");
        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/json")),
            ("OutputVariables", "A=/a\nB=/b\nC=/a/c"),
        ]));
        assert_eq!(
            result.unwrap_err().message(),
            format!(
                "GET {}: the JSON response has nothing at B (\"/b\"), C (\"/a/c\"): {{\"a\": 1}}",
                server.url("/json")
            )
        );
    }

    #[test]
    fn the_bearer_token_comes_from_the_secret() {
        // The native SDK reads secrets from SLUICE_SECRET_<NAME>; the name is
        // this test's own.
        // SAFETY: no other thread of these tests reads the environment
        // meanwhile: their requests go to literal IP addresses, never
        // through the resolver, and no other test reads a secret.
        unsafe { std::env::set_var("SLUICE_SECRET_HTTP_TEST_TOKEN", "s3cr3t\n") };
        let server = Server::start(|_| Reply::new(204));
        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/")),
            ("BearerTokenSecret", "HTTP_TEST_TOKEN"),
        ]));
        assert!(!result.unwrap().summary().contains("s3cr3t"));
        assert_eq!(
            server.requests()[0].header("authorization"),
            Some("Bearer s3cr3t")
        );

        let (result, _) = run_without_sleeping(&config(&[
            ("Url", &server.url("/")),
            ("BearerTokenSecret", "HTTP_TEST_MISSING"),
        ]));
        assert!(
            result
                .unwrap_err()
                .message()
                .starts_with("configuration \"BearerTokenSecret\": secret \"HTTP_TEST_MISSING\" is not available"),
        );
    }

    #[test]
    fn retries_wait_longer_each_time_and_stop_at_success() {
        let calls = Arc::new(AtomicUsize::new(0));
        let server = Server::start({
            let calls = Arc::clone(&calls);
            move |_| match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Reply::new(503).body("busy"),
                _ => Reply::new(200).body("ok"),
            }
        });
        let (result, waits) =
            run_without_sleeping(&config(&[("Url", &server.url("/")), ("Retries", "5")]));
        assert_eq!(result.unwrap().get_variable("StatusCode"), Some("200"));
        assert_eq!(waits, [Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(server.requests().len(), 3);

        // Out of retries, the last failure stands, and is retryable.
        calls.store(0, Ordering::SeqCst);
        let (result, waits) =
            run_without_sleeping(&config(&[("Url", &server.url("/")), ("Retries", "1")]));
        let err = result.unwrap_err();
        assert!(
            err.message()
                .contains("expected status 2xx, got 503 Service Unavailable: busy"),
            "{err}"
        );
        assert!(err.is_retryable());
        assert_eq!(waits.len(), 1);
        assert_eq!(backoff(5), MAX_BACKOFF);
    }

    #[test]
    fn connection_errors_are_retried_and_then_reported() {
        let url = format!("http://{REFUSED}/gone");
        let (result, waits) = run_without_sleeping(&config(&[("Url", &url), ("Retries", "2")]));
        let err = result.unwrap_err();
        assert_eq!(
            err.message(),
            format!("GET {url}: connection refused to {REFUSED} (after 3 attempts)")
        );
        assert_eq!(waits.len(), 2);
        // Without retries, no waiting and no count.
        let (result, waits) = run_without_sleeping(&config(&[("Url", &url)]));
        assert_eq!(
            result.unwrap_err().message(),
            format!("GET {url}: connection refused to {REFUSED}")
        );
        assert!(waits.is_empty());
    }

    #[test]
    fn plain_text_bodies_get_a_text_content_type() {
        assert_eq!(guess_content_type("[1, 2]"), "application/json");
        assert_eq!(guess_content_type("{broken"), "text/plain; charset=utf-8");
        assert_eq!(guess_content_type("42"), "text/plain; charset=utf-8");
        assert_eq!(shown_url("https://h/a?key=1#x"), "https://h/a?…");
        assert_eq!(shown_url("https://h/a#x"), "https://h/a");
    }
}
