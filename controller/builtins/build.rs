//! Builds the built-in plugins of `../../plugins` for wasm32-wasip2 and
//! copies the components into `OUT_DIR` for `include_bytes!`. Needs only
//! cargo and the target: the test plugins (Rust, Python, JavaScript) are
//! built by `sluice-test-plugins`, which only tests and the benchmark use.

// Shared with the build script of `sluice-test-plugins`, which uses more of it.
#[allow(dead_code)]
#[path = "nested_build.rs"]
mod nested_build;

/// Cargo invocations, each a set of packages built together. `git` is built
/// in a second invocation: it enables the SDK's `source` feature, which
/// would otherwise unify into the others.
const BUILDS: &[&[&str]] = &[&["noop", "shell", "codebuild", "deploy-dir", "http", "webhook-notify"], &["git"]];

fn main() {
    nested_build::Nested::new("../..").build(BUILDS);
}
