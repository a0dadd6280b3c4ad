//! `sluice plugin new NAME`: a plugin crate that builds as it is, with a
//! test, ready for `sluice action run` and `sluice plugin push`.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

/// Where the plugin SDK is: `SLUICE_PLUGIN_SDK`, else the SDK of the
/// source tree this `sluice` was built from, if it is still there.
fn sdk_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_PLUGIN_SDK") {
        return Some(PathBuf::from(p));
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    built.join("Cargo.toml").exists().then(|| built.canonicalize().unwrap_or(built))
}

/// Writes the crate into `dir` (which must not exist or be empty).
pub fn write(name: &str, dir: &Path) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        bail!("plugin name {name:?} must be lower-case letters, digits and '-' (it is the provider name)");
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match sdk_path() {
        Some(p) => format!("{{ path = {:?} }}", p.display().to_string()),
        None => bail!("cannot find the plugin SDK: set SLUICE_PLUGIN_SDK to the plugin-sdk directory of a Sluice checkout"),
    };
    let ident: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    let files = [
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a WebAssembly component: build with
#   cargo build --release --target wasm32-wasip2
[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-plugin-sdk = {sdk}

# Not part of any enclosing workspace.
[workspace]
"#
            ),
        ),
        (
            "src/lib.rs",
            format!(
                r#"//! Sluice plugin `{name}@1`: greets someone into its action log and
//! writes the greeting into its output artifact, if it has one.

use sluice_plugin_sdk::{{ActionInfo, Category, Context, Error, Outcome, Plugin, Property, log}};

pub struct {ident};

impl Plugin for {ident} {{
    fn describe() -> ActionInfo {{
        ActionInfo::new("{name}", "1", Category::Build)
            .description("Greets `Name` in the log and in greeting.txt of its output")
            .property(Property::required("Name", "Whom to greet"))
            .inputs(0, 1)
            .outputs(0, 1)
    }}

    fn execute(ctx: Context) -> Result<Outcome, Error> {{
        let name = ctx.config.get("Name").unwrap_or_default();
        if name.trim().is_empty() {{
            return Err(Error::new("configuration \"Name\" is empty"));
        }}
        let greeting = format!("Hello, {{name}}!");
        log::info(&greeting);
        if let Some(output) = ctx.outputs.first() {{
            std::fs::write(output.path.join("greeting.txt"), format!("{{greeting}}\n"))
                .map_err(|e| Error::new(format!("writing the greeting: {{e}}")))?;
        }}
        Ok(Outcome::succeeded(greeting.clone()).variable("Greeting", greeting))
    }}
}}

sluice_plugin_sdk::export_plugin!({ident});

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn greets() {{
        let out = std::env::temp_dir().join(format!("{name}-test-{{}}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let ctx = Context {{
            outputs: vec![sluice_plugin_sdk::Artifact {{ name: "out".into(), path: out.clone(), files: vec![] }}],
            ..Context::for_test(&[("Name", "world")])
        }};
        let outcome = {ident}::execute(ctx).unwrap();
        assert_eq!(outcome.get_variable("Greeting"), Some("Hello, world!"));
        assert_eq!(std::fs::read_to_string(out.join("greeting.txt")).unwrap(), "Hello, world!\n");
    }}
}}
"#
            ),
        ),
        (
            "README.md",
            format!(
                r#"# {name}

A Sluice plugin. See docs/plugins.md of Sluice for the whole story.

```sh
cargo test                                               # runs natively
cargo build --release --target wasm32-wasip2             # the component
sluice action run --plugin target/wasm32-wasip2/release/{file}.wasm --config Name=world --output-dir out=./out
sluice plugin push target/wasm32-wasip2/release/{file}.wasm
```
"#,
                file = name.replace('-', "_")
            ),
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write("Bad_Name", &dir.path().join("x")).unwrap_err().to_string().contains("lower-case"));
        write("hello-world", &dir.path().join("hw")).unwrap();
        let lib = std::fs::read_to_string(dir.path().join("hw/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct HelloWorld;") && lib.contains(r#"ActionInfo::new("hello-world", "1""#));
        assert!(write("again", &dir.path().join("hw")).unwrap_err().to_string().contains("not empty"));
    }
}
