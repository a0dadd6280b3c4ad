//! What a pushed component must be, checked the same way by the controller
//! at `plugin push` and by `sluice plugin check FILE` before anyone pushes:
//! one function each for the size limit and for reading the component's
//! `describe()`, so that a refusal reads the same in both places.

use serde_json::{Value, json};
use sluice_runtime::{ActionInfo, Runtime};

/// The largest component a push takes.
pub const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// Refuses a component over [`MAX_PLUGIN_BYTES`].
pub fn check_size(len: usize) -> Result<(), String> {
    if len > MAX_PLUGIN_BYTES {
        return Err(format!("plugin of {len} bytes exceeds the limit of {MAX_PLUGIN_BYTES} bytes"));
    }
    Ok(())
}

/// Compiles the component as an agent does and calls its `describe()`:
/// a core module, a component of another world, a component importing
/// what the host does not provide or one whose `describe()` traps is
/// refused with the reason. Blocking (compiling takes a while).
pub fn describe(runtime: &Runtime, wasm: &[u8]) -> Result<ActionInfo, String> {
    describe_loaded(runtime, wasm).map(|(info, _)| info)
}

/// A component's imports and exports, by name.
type Interfaces = (Vec<String>, Vec<String>);

fn describe_loaded(runtime: &Runtime, wasm: &[u8]) -> Result<(ActionInfo, Interfaces), String> {
    let read = || -> anyhow::Result<_> {
        let plugin = runtime.load(wasm, None)?;
        let info = runtime.describe(&plugin)?;
        Ok((info, runtime.interfaces(&plugin)))
    };
    read().map_err(|e| format!("not a usable sluice:plugin component: {e:#}"))
}

/// Where `sluice plugin check` and `sluice action run` keep compiled
/// components, so that an author's test loop compiles a large (Python,
/// JavaScript) component once: `SLUICE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/sluice/compiled` or `~/.cache/sluice/compiled`, made
/// private (0700) to the user, whose files the runtime loads compiled code
/// from. `None` (no cache) when there is no such directory to be had.
pub fn local_cache_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = match std::env::var_os("SLUICE_CACHE_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?
            .join("sluice/compiled"),
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).ok()?;
    let meta = std::fs::metadata(&dir).ok()?;
    // Another user's (or a shared) directory is not a place to load code from.
    let private = meta.permissions().mode() & 0o077 == 0
        && std::os::unix::fs::MetadataExt::uid(&meta) == nix::unistd::getuid().as_raw();
    private.then_some(dir)
}

/// `sluice plugin check`: what a component declares, as JSON, or the
/// refusal `plugin push` would give. Blocking.
pub fn check(wasm: &[u8]) -> Result<Value, String> {
    check_size(wasm.len())?;
    let config = sluice_runtime::RuntimeConfig { cache_dir: local_cache_dir(), ..Default::default() };
    let runtime = Runtime::new(config).map_err(|e| format!("starting the plugin runtime: {e:#}"))?;
    let (info, (imports, exports)) = describe_loaded(&runtime, wasm)?;
    let world =
        if exports.iter().any(|e| e.starts_with(sluice_runtime::SOURCE_INTERFACE)) { "source-plugin" } else { "plugin" };
    Ok(json!({
        "provider": format!("{}@{}", info.name, info.version),
        "digest": sluice_runtime::digest(wasm),
        "size": wasm.len(),
        "world": world,
        "interfaceVersion": info.interface_version,
        "info": info,
        "imports": imports,
        "exports": exports,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_agent_refuses_is_refused_with_the_reason() {
        assert!(check_size(MAX_PLUGIN_BYTES).is_ok());
        assert_eq!(
            check_size(MAX_PLUGIN_BYTES + 1).unwrap_err(),
            format!("plugin of {} bytes exceeds the limit of {MAX_PLUGIN_BYTES} bytes", MAX_PLUGIN_BYTES + 1)
        );
        // A core module (the magic and version 1): the runtime's own words.
        let core = b"\0asm\x01\0\0\0";
        assert_eq!(
            check(core).unwrap_err(),
            "not a usable sluice:plugin component: plugin is a core WebAssembly module, not a component: \
             build it for wasm32-wasip2"
        );
        assert!(check(b"not wasm").unwrap_err().starts_with("not a usable sluice:plugin component: "));
    }

    #[test]
    fn a_built_in_plugin_is_described_with_its_world_and_interfaces() {
        let shell = sluice_builtins::BUILTINS.iter().find(|b| b.provider == "shell").expect("shell is built in");
        let report = check(shell.wasm).unwrap();
        assert_eq!(report["provider"], "shell@1");
        assert_eq!(report["world"], "plugin");
        assert_eq!(report["size"], shell.wasm.len());
        assert_eq!(report["interfaceVersion"], sluice_runtime::INTERFACE_VERSIONS[0]);
        assert_eq!(report["info"]["capabilities"]["exec"], json!(["sh", "bash"]), "{report}");
        let imports = report["imports"].as_array().unwrap();
        assert!(imports.iter().any(|i| i.as_str().unwrap().starts_with("sluice:plugin/process@")), "{report}");
        let git = sluice_builtins::BUILTINS.iter().find(|b| b.provider == "git").expect("git is built in");
        assert_eq!(check(git.wasm).unwrap()["world"], "source-plugin");
    }
}
