//! `sluice plugin new NAME [--lang rust|python|javascript]`: a plugin
//! project that builds as it is, with a test that runs the built component
//! under `sluice action run`, ready for `sluice plugin push`. It needs no
//! Sluice checkout: a Rust crate depends on the released SDK by version,
//! a Python or JavaScript project on the released kit (`sluice-plugin` on
//! PyPI and npm) by version; `--sdk-path` points any of them at a directory
//! (the SDK crate, or a kit's wheel or tarball), for developing Sluice itself.

use anyhow::{Context as _, Result, bail};
use std::path::Path;

/// The SDK release `plugin new` depends on: the minor version speaks the
/// newest `sluice:plugin` this host runs (the SDK's README has the policy).
pub const SDK_VERSION: &str = "0.2";

/// The newest `sluice:plugin` WIT, for `sluice plugin wit`: what Python
/// and JavaScript plugins are built against, without a Sluice checkout.
pub const WIT: &str = include_str!("../../wit/plugin.wit");

/// The language of a new plugin.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Javascript,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Javascript => "javascript",
        }
    }
}

/// Writes the project into `dir` (which must not exist or be empty);
/// returns the command that builds it.
pub fn write(name: &str, dir: &Path, lang: Lang, sdk_path: Option<&Path>) -> Result<String> {
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!(
            "plugin name {name:?} must be lower-case letters, digits and '-', starting with a letter (it is the provider name)"
        );
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk_path = match sdk_path {
        Some(p) => Some(p.canonicalize().with_context(|| format!("--sdk-path {}", p.display()))?),
        None => None,
    };
    let (files, build) = match lang {
        Lang::Rust => rust(name, sdk_path.as_deref()),
        Lang::Python => python(name, sdk_path.as_deref()),
        Lang::Javascript => javascript(name, sdk_path.as_deref()),
    };
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(build)
}

/// `greeter-two` as a type name: `GreeterTwo`.
pub(crate) fn camel(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

const RUST_BUILD: &str = "cargo build --release --target wasm32-wasip2";

/// A Rust crate: the plugin, a unit test run natively, and a test of the
/// built component under `sluice action run` (the SDK's `testing`).
fn rust(name: &str, sdk_path: Option<&Path>) -> (Vec<(&'static str, String)>, String) {
    let (sdk, sdk_testing) = match sdk_path {
        Some(p) => {
            let p = format!("{:?}", p.display().to_string());
            (format!("{{ path = {p} }}"), format!("{{ path = {p}, features = [\"testing\"] }}"))
        }
        None => (format!("\"{SDK_VERSION}\""), format!("{{ version = \"{SDK_VERSION}\", features = [\"testing\"] }}")),
    };
    let ident = camel(name);
    let file = name.replace('-', "_");
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a WebAssembly component: build it with
#   {RUST_BUILD}
[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-plugin-sdk = {sdk}

[dev-dependencies]
# `testing`: tests/action.rs runs the built component under `sluice action run`.
sluice-plugin-sdk = {sdk_testing}

[profile.release]
opt-level = "s"
lto = true
strip = true
# A panic in a plugin is a trap the host reports; unwinding buys nothing.
panic = "abort"

# Not part of any enclosing workspace.
[workspace]
"#
    );
    let lib = format!(
        r#"//! Sluice plugin `{name}@1`: greets `Name` in its action log and, given
//! an input artifact, copies it into its output artifact with a
//! greeting.txt beside it.

use sluice_plugin_sdk::{{ActionInfo, Category, Context, Error, Outcome, Plugin, Property, artifacts, log}};

pub struct {ident};

impl Plugin for {ident} {{
    fn describe() -> ActionInfo {{
        ActionInfo::new("{name}", "1", Category::Build)
            .description("Greets Name in the log, and in greeting.txt of its output beside a copy of its input")
            .property(Property::required("Name", "Whom to greet"))
            .inputs(0, 1)
            .outputs(0, 1)
    }}

    fn execute(ctx: Context) -> Result<Outcome, Error> {{
        let name = ctx.config.required("Name")?;
        let greeting = format!("Hello, {{name}}!");
        log::info(&greeting);
        if let Some(output) = ctx.outputs.first() {{
            if let Some(input) = ctx.inputs.first() {{
                artifacts::copy_dir(&input.path, &output.path)?;
            }}
            std::fs::write(output.path.join("greeting.txt"), format!("{{greeting}}\n"))?;
        }}
        Ok(Outcome::succeeded(greeting.clone()).variable("Greeting", greeting))
    }}
}}

sluice_plugin_sdk::export_plugin!({ident});

/// Natively, with the host stood in for: fast, no component needed.
#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn greets_into_its_output() {{
        let out = std::env::temp_dir().join(format!("{name}-test-{{}}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let ctx = Context {{
            outputs: vec![sluice_plugin_sdk::Artifact {{ name: "out".into(), path: out.clone(), files: vec![] }}],
            ..Context::for_test(&[("Name", "world")])
        }};
        let outcome = {ident}::execute(ctx).unwrap();
        assert_eq!(outcome.get_variable("Greeting"), Some("Hello, world!"));
        assert_eq!(std::fs::read_to_string(out.join("greeting.txt")).unwrap(), "Hello, world!\n");
        let _ = std::fs::remove_dir_all(&out);
    }}

    #[test]
    fn an_empty_name_is_refused() {{
        let error = {ident}::execute(Context::for_test(&[("Name", " ")])).err().unwrap();
        assert_eq!(error.message(), "configuration \"Name\" is required");
    }}
}}
"#
    );
    let test = r#"//! The built component, run by `sluice action run` in the sandbox an agent
//! uses, against the fixture directories in tests/fixtures. Needs the
//! wasm32-wasip2 target and `sluice` on PATH (or SLUICE_BIN).

use sluice_plugin_sdk::testing::{self, ActionRun};

#[test]
fn the_component_greets_and_copies_its_input() {
    let wasm = testing::build!().unwrap();
    let run = ActionRun::new(&wasm)
        .config("Name", "world")
        .input("src", "tests/fixtures/src")
        .output("out")
        .run()
        .unwrap();
    run.assert_succeeded();
    assert_eq!(run.variable("Greeting"), Some("Hello, world!"));
    assert!(run.log_contains("Hello, world!"), "{:?}", run.log());
    assert_eq!(run.output_files("out"), ["README.md", "greeting.txt"]);
    assert_eq!(run.output_file("out", "greeting.txt").unwrap(), "Hello, world!\n");

    // What a pipeline without Name gets.
    let run = ActionRun::new(&wasm).run().unwrap();
    assert_eq!(run.assert_failed(), "configuration \"Name\" is required");
}
"#
    .to_string();
    let readme = format!(
        r#"# {name}

A Sluice plugin in Rust (see the
`docs/plugins.md` of Sluice for the whole story).

```sh
rustup target add wasm32-wasip2                           # once
cargo test                                                # natively, then the component under `sluice action run`
{RUST_BUILD}             # target/wasm32-wasip2/release/{file}.wasm
sluice plugin check target/wasm32-wasip2/release/{file}.wasm
sluice action run --plugin target/wasm32-wasip2/release/{file}.wasm --config Name=world \
    --input src=tests/fixtures/src --output-dir out=./out
sluice plugin push target/wasm32-wasip2/release/{file}.wasm
```
"#
    );
    let files = vec![
        ("Cargo.toml", cargo),
        ("src/lib.rs", lib),
        ("tests/action.rs", test),
        ("tests/fixtures/src/README.md", "A fixture: the input artifact of tests/action.rs.\n".to_string()),
        (".gitignore", "/target\n/out\n".to_string()),
        ("README.md", readme),
    ];
    (files, RUST_BUILD.to_string())
}

const PYTHON_BUILD: &str = "python -m sluice_plugin build";

/// A Python project for componentize-py through the `sluice-plugin` kit.
fn python(name: &str, kit: Option<&Path>) -> (Vec<(&'static str, String)>, String) {
    let ident = camel(name);
    let requirement = match kit {
        Some(p) => format!("sluice-plugin @ file://{}", p.display()),
        None => format!("sluice-plugin=={SDK_VERSION}.*"),
    };
    let app = format!(
        r#""""Sluice plugin `{name}@1`: greets `Name` in its action log and, given an
input artifact, copies it into its output artifact with a greeting.txt beside it.

Build: {PYTHON_BUILD}   (app.py -> plugin.wasm)
"""

import os

import sluice_plugin as sp


class {ident}(sp.Plugin):
    def describe(self) -> sp.ActionInfo:
        return sp.ActionInfo(
            "{name}", "1", "Build",
            "Greets Name in the log, and in greeting.txt of its output beside a copy of its input",
            configuration=[sp.Property("Name", "Whom to greet", required=True)],
            inputs=(0, 1),
            outputs=(0, 1),
        )

    def execute(self, ctx: sp.Context) -> sp.Outcome:
        name = ctx.config.required("Name")
        greeting = f"Hello, {{name}}!"
        sp.log.info(greeting)
        if ctx.outputs:
            out = ctx.outputs[0].path
            if ctx.inputs:
                sp.artifacts.copy(ctx.inputs[0].path, out)
            with open(os.path.join(out, "greeting.txt"), "w") as f:
                f.write(greeting + "\n")
        return sp.Outcome.succeeded(greeting, variables={{"Greeting": greeting}})


# What componentize-py exports as sluice:plugin/action.
Action = sp.export({ident})
"#
    );
    let test = format!(
        r#""""Tests of `{name}`: execute() in plain Python, then the built component
(plugin.wasm, from `{PYTHON_BUILD}`) under `sluice action run`, the
sandbox an agent uses. Run: python -m unittest"""

import os
import tempfile
import unittest

import sluice_plugin as sp
from sluice_plugin.testing import run_action

from app import {ident}

HERE = os.path.dirname(os.path.abspath(__file__))


class Test{ident}(unittest.TestCase):
    def test_execute_greets_into_its_output(self):
        with tempfile.TemporaryDirectory() as out:
            ctx = sp.Context.for_test({{"Name": "world"}}, outputs=[sp.Artifact("out", out)])
            outcome = {ident}().execute(ctx)
            self.assertEqual(outcome.variables["Greeting"], "Hello, world!")
            with open(os.path.join(out, "greeting.txt")) as f:
                self.assertEqual(f.read(), "Hello, world!\n")

    def test_the_component_under_sluice_action_run(self):
        wasm = os.path.join(HERE, "plugin.wasm")
        self.assertTrue(os.path.exists(wasm), "build it first: {PYTHON_BUILD}")
        result = run_action(wasm, config={{"Name": "world"}}, inputs={{"src": os.path.join(HERE, "fixtures/src")}},
                            outputs=["out"])
        self.assertEqual(result["status"], "Succeeded", result)
        self.assertEqual(result["outputVariables"]["Greeting"], "Hello, world!")
        self.assertIn("Hello, world!", "\n".join(result["log"]))
        self.assertEqual(result["outputs"]["out"]["files"], ["README.md", "greeting.txt"])
        failed = run_action(wasm)
        self.assertEqual(failed["status"], "Failed")
        self.assertEqual(failed["message"], 'configuration "Name" is required')


if __name__ == "__main__":
    unittest.main()
"#
    );
    let readme = format!(
        r#"# {name}

A Sluice plugin in Python, built
into a WebAssembly component with componentize-py by the `sluice-plugin` kit.

```sh
python3 -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt          # the kit, and componentize-py with it
{PYTHON_BUILD}            # app.py -> plugin.wasm
sluice plugin check plugin.wasm
python -m unittest                       # execute() natively, then plugin.wasm under `sluice action run`
sluice plugin push plugin.wasm
```
"#
    );
    let files = vec![
        ("app.py", app),
        ("test_plugin.py", test),
        ("requirements.txt", format!("{requirement}\n")),
        ("fixtures/src/README.md", "A fixture: the input artifact of test_plugin.py.\n".to_string()),
        (".gitignore", "/.venv\n/plugin.wasm\n__pycache__/\n".to_string()),
        ("README.md", readme),
    ];
    (files, format!("pip install -r requirements.txt && {PYTHON_BUILD}"))
}

/// A JavaScript project for componentize-js through the `sluice-plugin` kit.
fn javascript(name: &str, kit: Option<&Path>) -> (Vec<(&'static str, String)>, String) {
    let dependency = match kit {
        Some(p) => format!("file:{}", p.display()),
        None => format!("~{SDK_VERSION}.0"),
    };
    let package = format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "sluice-plugin build plugin.js -o plugin.wasm",
    "test": "node --test"
  }},
  "dependencies": {{
    "sluice-plugin": {dependency:?}
  }}
}}
"#
    );
    let plugin = format!(
        r#"// Sluice plugin `{name}@1`: greets `Name` in its action log and, given an
// input and an output artifact, copies the input into the output.
//
// Build: npm run build   (plugin.js -> plugin.wasm)

import {{ definePlugin, Outcome, log, artifacts }} from 'sluice-plugin';

export const action = definePlugin({{
  describe() {{
    return {{
      name: '{name}',
      version: '1',
      category: 'Build',
      description: 'Greets Name in the log, and copies its input into its output',
      configuration: [{{ name: 'Name', description: 'Whom to greet', required: true }}],
      inputs: [0, 1],
      outputs: [0, 1],
    }};
  }},

  execute(ctx) {{
    const name = ctx.config.required('Name');
    const greeting = `Hello, ${{name}}!`;
    log.info(greeting);
    if (ctx.inputs.length > 0 && ctx.outputs.length > 0) {{
      artifacts.copy(ctx.inputs[0].path, ctx.outputs[0].path);
    }}
    return Outcome.succeeded(greeting, {{ variables: {{ Greeting: greeting }} }});
  }},
}});
"#
    );
    let test = format!(
        r#"// Tests of `{name}`: execute() in node, then the built component
// (plugin.wasm, from `npm run build`) under `sluice action run`, the sandbox
// an agent uses. Run: npm test

import {{ test }} from 'node:test';
import assert from 'node:assert/strict';
import {{ existsSync }} from 'node:fs';
import {{ contextForTest }} from 'sluice-plugin';
import {{ runAction }} from 'sluice-plugin/testing';
import {{ action }} from './plugin.js';

test('execute greets', () => {{
  const outcome = action.execute(contextForTest({{ Name: 'world' }}));
  assert.equal(outcome.variables.Greeting, 'Hello, world!');
  assert.throws(() => action.execute(contextForTest({{}})), /configuration "Name" is required/);
}});

test('the component under sluice action run', () => {{
  const wasm = new URL('./plugin.wasm', import.meta.url).pathname;
  assert.ok(existsSync(wasm), 'build it first: npm run build');
  const fixtures = new URL('./fixtures/src', import.meta.url).pathname;
  const result = runAction(wasm, {{ config: {{ Name: 'world' }}, inputs: {{ src: fixtures }}, outputs: ['out'] }});
  assert.equal(result.status, 'Succeeded', JSON.stringify(result));
  assert.equal(result.outputVariables.Greeting, 'Hello, world!');
  assert.ok(result.log.some((line) => line.includes('Hello, world!')), result.log.join('\n'));
  assert.deepEqual(result.outputs.out.files, ['README.md']);
  const failed = runAction(wasm);
  assert.equal(failed.status, 'Failed');
  assert.equal(failed.message, 'configuration "Name" is required');
}});
"#
    );
    let readme = format!(
        r#"# {name}

A Sluice plugin in JavaScript, built
into a WebAssembly component with componentize-js by the `sluice-plugin` kit.

```sh
npm install                       # the kit, and componentize-js with it
npm run build                     # plugin.js -> plugin.wasm
sluice plugin check plugin.wasm
npm test                          # execute() in node, then plugin.wasm under `sluice action run`
sluice plugin push plugin.wasm
```
"#
    );
    let files = vec![
        ("package.json", package),
        ("plugin.js", plugin),
        ("plugin.test.js", test),
        ("fixtures/src/README.md", "A fixture: the input artifact of plugin.test.js.\n".to_string()),
        (".gitignore", "/node_modules\n/plugin.wasm\n".to_string()),
        ("README.md", readme),
    ];
    (files, "npm install && npm run build".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["Bad_Name", "", "1st", "-x", "a b"] {
            let error = write(bad, &dir.path().join("x"), Lang::Rust, None).unwrap_err().to_string();
            assert!(error.contains("lower-case"), "{bad}: {error}");
        }
        assert_eq!(write("hello-world", &dir.path().join("hw"), Lang::Rust, None).unwrap(), RUST_BUILD);
        let lib = std::fs::read_to_string(dir.path().join("hw/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct HelloWorld;") && lib.contains(r#"ActionInfo::new("hello-world", "1""#));
        let cargo = std::fs::read_to_string(dir.path().join("hw/Cargo.toml")).unwrap();
        assert!(cargo.contains(&format!("sluice-plugin-sdk = \"{SDK_VERSION}\"")), "{cargo}");
        let error = write("again", &dir.path().join("hw"), Lang::Rust, None).unwrap_err().to_string();
        assert!(error.contains("not empty"), "{error}");
        let error = write("x", &dir.path().join("x"), Lang::Rust, Some(&dir.path().join("nope"))).unwrap_err();
        assert!(format!("{error:#}").contains("--sdk-path"), "{error:#}");
    }

    #[test]
    fn python_and_javascript_projects_depend_on_the_kits_by_version() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write("py-greeter", &dir.path().join("py"), Lang::Python, None).unwrap(),
            format!("pip install -r requirements.txt && {PYTHON_BUILD}")
        );
        let requirements = std::fs::read_to_string(dir.path().join("py/requirements.txt")).unwrap();
        assert_eq!(requirements, format!("sluice-plugin=={SDK_VERSION}.*\n"));
        let app = std::fs::read_to_string(dir.path().join("py/app.py")).unwrap();
        assert!(app.contains("class PyGreeter(sp.Plugin):") && app.contains("Action = sp.export(PyGreeter)"), "{app}");
        write("js-greeter", &dir.path().join("js"), Lang::Javascript, None).unwrap();
        let package: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("js/package.json")).unwrap()).unwrap();
        assert_eq!(package["dependencies"]["sluice-plugin"], format!("~{SDK_VERSION}.0"));
        let kit = dir.path().join("kit.tgz");
        std::fs::write(&kit, b"").unwrap();
        write("js-dev", &dir.path().join("js-dev"), Lang::Javascript, Some(&kit)).unwrap();
        let package = std::fs::read_to_string(dir.path().join("js-dev/package.json")).unwrap();
        assert!(package.contains(&format!("\"file:{}\"", kit.canonicalize().unwrap().display())), "{package}");
    }

    /// `plugin new` must depend on the SDK release of this source tree.
    #[test]
    fn the_sdk_version_is_the_sdk_crates() {
        let manifest = include_str!("../../plugin-sdk/Cargo.toml");
        let version = manifest.lines().find_map(|l| l.strip_prefix("version = \"")).expect("the SDK's version");
        assert!(version.starts_with(&format!("{SDK_VERSION}.")), "SDK {version}, template {SDK_VERSION}");
    }
}
