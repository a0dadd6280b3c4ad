//! The built-in plugins as WebAssembly components, compiled from `plugins/`
//! by this crate's build script. The plugins only tests use are built by
//! `sluice-test-plugins`.
//!
//! This crate only carries bytes: it knows nothing of how plugins are
//! registered, stored or run (the controller and the runtime do that), and
//! nothing of what is inside them beyond their provider names.

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
    Builtin { provider: "noop", wasm: component!("noop.wasm") },
    Builtin { provider: "shell", wasm: component!("shell.wasm") },
    Builtin { provider: "codebuild", wasm: component!("codebuild.wasm") },
    Builtin { provider: "git", wasm: component!("git.wasm") },
    Builtin { provider: "deploy-dir", wasm: component!("deploy_dir.wasm") },
    Builtin { provider: "http", wasm: component!("http.wasm") },
    Builtin { provider: "webhook-notify", wasm: component!("webhook_notify.wasm") },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A component starts with the wasm magic and the component layer.
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn builtins_are_components() {
        for builtin in BUILTINS {
            assert!(builtin.wasm.starts_with(&COMPONENT_HEADER), "{} is not a component", builtin.provider);
        }
    }
}
