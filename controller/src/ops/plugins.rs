//! Plugins: the catalog of built-in and pushed components.

use serde::{Deserialize, Serialize};
use sluice_runtime::ActionInfo;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPlugins {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPluginsOutput {
    /// By provider key.
    pub plugins: Vec<PluginView>,
}

/// A registered plugin version, as `plugin list` and `plugin describe` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    /// `provider@version`.
    pub provider: String,
    pub digest: String,
    pub builtin: bool,
    pub signed_by: Option<String>,
    pub key_id: Option<String>,
    /// What the plugin's `describe()` says.
    pub info: ActionInfo,
}

/// DescribePlugin: one version, by `provider@version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribePlugin {
    pub key: String,
}

/// DeletePlugin: a pushed version no pipeline's latest version and no
/// running execution uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletePlugin {
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletePluginOutput {
    pub provider: String,
    pub deleted: bool,
}

/// PushPlugin: a component whose `describe()` the API already read, with
/// its publisher's signature document if it came with one. Travels as a
/// binary body (`POST /v1/plugins`, signature in the
/// `sluice-plugin-signature` header, base64).
#[derive(Clone)]
pub struct PushPlugin {
    pub wasm: Vec<u8>,
    pub info: Box<ActionInfo>,
    pub signature: Option<String>,
}

/// The component's size, not its bytes (up to 64 MiB).
impl std::fmt::Debug for PushPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushPlugin")
            .field("wasm_bytes", &self.wasm.len())
            .field("info", &self.info)
            .field("signature", &self.signature.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushPluginOutput {
    pub provider: String,
    pub digest: String,
    /// False when this version was already registered with these bytes.
    pub created: bool,
    pub signed_by: Option<String>,
}

/// Whether a pushed component's signature (or its absence) would be
/// accepted: asked before the component is compiled and described, so
/// that a controller requiring signatures runs no unsigned code.
#[derive(Debug, Clone)]
pub struct VetPluginSignature {
    pub digest: String,
    pub signature: Option<String>,
}
