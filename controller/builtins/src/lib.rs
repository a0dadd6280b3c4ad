//! The built-in plugins as WebAssembly components, compiled from `plugins/`
//! by this crate's build script, and the paths of the test plugins.
//!
//! This crate only carries bytes: it knows nothing of how plugins are
//! registered, stored or run (the controller and the runtime do that), and
//! nothing of what is inside them beyond their provider names.

use std::path::PathBuf;

/// A built-in plugin: its provider name and its component.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// The provider the plugin registers as (its `describe().name`).
    pub provider: &'static str,
    /// The component, a `sluice:plugin` world for wasm32-wasip2.
    pub wasm: &'static [u8],
}

macro_rules! component {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// The plugins registered at start, in a stable order.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        provider: "noop",
        wasm: component!("noop.wasm"),
    },
    Builtin {
        provider: "shell",
        wasm: component!("shell.wasm"),
    },
    Builtin {
        provider: "git",
        wasm: component!("git.wasm"),
    },
    Builtin {
        provider: "deploy-dir",
        wasm: component!("deploy_dir.wasm"),
    },
    Builtin {
        provider: "http",
        wasm: component!("http.wasm"),
    },
    Builtin {
        provider: "webhook-notify",
        wasm: component!("webhook_notify.wasm"),
    },
];

/// Plugins built only for tests, never registered. `other-world` is a
/// component of a world other than `sluice:plugin`, which hosts must refuse.
const TEST_PLUGINS: &[&str] = &["hostile", "other-world", "compat-0-1", "wordcount-py", "semver-js"];

/// The absolute path of a built test plugin's component, such as
/// `test_plugin("hostile")`.
///
/// # Panics
/// When `name` is not a test plugin this crate builds (a bug in the test),
/// or when it could not be built (the Python plugins need python3 and
/// componentize-py from PyPI; the panic says what went wrong).
pub fn test_plugin(name: &str) -> PathBuf {
    try_test_plugin(name).unwrap_or_else(|why| panic!("{why}"))
}

/// [`test_plugin`], with the reason as an error instead of a panic when
/// the plugin was not built (for the benchmark, which reports it).
pub fn try_test_plugin(name: &str) -> Result<PathBuf, String> {
    assert!(
        TEST_PLUGINS.contains(&name),
        "\"{name}\" is not a test plugin; known: {TEST_PLUGINS:?}"
    );
    let path = PathBuf::from(env!("OUT_DIR")).join(format!("{}.wasm", name.replace('-', "_")));
    if !path.exists() {
        let report = if name.ends_with("-js") { "js-plugins.txt" } else { "python-plugins.txt" };
        let why = std::fs::read_to_string(PathBuf::from(env!("OUT_DIR")).join(report))
            .unwrap_or_else(|_| "no reason recorded".into());
        return Err(format!("test plugin {name} was not built: {why}"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component starts with the wasm magic and the component layer.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn builtins_are_components() {
        for builtin in BUILTINS {
            assert!(
                builtin.wasm.starts_with(&COMPONENT_HEADER),
                "{} is not a component",
                builtin.provider
            );
        }
        for name in ["hostile", "other-world"] {
            let wasm = std::fs::read(test_plugin(name)).unwrap();
            assert!(
                wasm.starts_with(&COMPONENT_HEADER),
                "{name} is not a component"
            );
        }
    }
}
