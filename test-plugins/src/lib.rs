//! The plugins only tests and the benchmark use, as WebAssembly components
//! built by this crate's build script: `hostile` (misbehaves on request),
//! `other-world` (a component of another world, which hosts must refuse),
//! `compat-0-1` (built against `sluice:plugin@0.1.0`), and the Python and
//! JavaScript examples `wordcount-py` and `semver-js`.
//!
//! A dev-dependency (or a dependency of the benchmark), never one of
//! `sluice` or `sluice-agent`: building the product needs neither Python,
//! Node nor the network that installs their toolchains.

use std::path::PathBuf;

/// Every plugin this crate builds.
const TEST_PLUGINS: &[&str] = &["hostile", "other-world", "compat-0-1", "wordcount-py", "semver-js"];

/// The absolute path of a built test plugin's component, such as
/// `test_plugin("hostile")`.
///
/// # Panics
/// When `name` is not a test plugin this crate builds (a bug in the test),
/// or when it could not be built (the Python plugins need python3 and
/// componentize-py from PyPI, the JavaScript ones node and componentize-js
/// from npm; the panic says what went wrong).
pub fn test_plugin(name: &str) -> PathBuf {
    try_test_plugin(name).unwrap_or_else(|why| panic!("{why}"))
}

/// [`test_plugin`], with the reason as an error instead of a panic when
/// the plugin was not built (for the benchmark, which reports it).
pub fn try_test_plugin(name: &str) -> Result<PathBuf, String> {
    assert!(TEST_PLUGINS.contains(&name), "\"{name}\" is not a test plugin; known: {TEST_PLUGINS:?}");
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
    fn test_plugins_are_components() {
        for name in ["hostile", "other-world"] {
            let wasm = std::fs::read(test_plugin(name)).unwrap();
            assert!(wasm.starts_with(&COMPONENT_HEADER), "{name} is not a component");
        }
    }
}
