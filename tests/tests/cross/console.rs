//! The web console in a real browser (issue 16, browser): Debian's headless
//! Chromium driven by Playwright (the scenarios in `tests/console/`)
//! against the real controller and agents. Each test prepares a cluster
//! (users and their tokens, pipelines, runs) the way an administrator
//! does with the CLI, then runs one scenario file and asserts it passed;
//! a failure prints the scenario's output and the controller's log.
//! Screenshots land in `$CARGO_TARGET_DIR/console-screenshots/`.

use sluice_tests::console::Scenario;
use sluice_tests::{Cluster, output_text};

/// A user with `role`, and a token of theirs.
fn user(cluster: &Cluster, name: &str, role: &str) -> String {
    let out = cluster.sluice(&["user", "create", name, "--role", role]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["token", "create", "--user", name]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs a scenario file; panics with its output when it failed, prints
/// it (and where the screenshots are) when it passed.
fn passes(scenario: Scenario<'_>, file: &str) {
    match scenario.run(file) {
        Ok(output) => println!("{output}"),
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn sign_in_sign_out_revocation_and_forged_posts() {
    let cluster = Cluster::new().start().unwrap();
    let rita = user(&cluster, "rita", "operator");
    passes(Scenario::new(&cluster).token("rita", &rita), "signin.test.mjs");
}
