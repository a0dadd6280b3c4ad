//! The plugin catalog: every registered `provider@version`, built-ins
//! registered at start from their own `describe()`, pushed plugins from the
//! store. Knows nothing of the driver: the admin API reads `describe()`
//! through it too.

use crate::blobs::BlobStore;
use crate::pipeline::{self, ProviderCatalog, ProviderInfo};
use crate::store::{Change, PluginRecord, Store};
use anyhow::Result;
use sluice_protocol::{Grants, PluginRef};
use sluice_runtime::ActionInfo;
use std::collections::HashMap;
use std::sync::Arc;

/// A registered plugin version.
#[derive(Clone)]
pub(super) struct PluginEntry {
    pub(super) digest: String,
    pub(super) info: ActionInfo,
    pub(super) builtin: bool,
    /// The verified signature it was pushed with; built-ins have none
    /// (they are part of the binary).
    pub(super) signature: Option<crate::store::PluginSignatureRecord>,
}

pub(super) struct Catalog(pub(super) HashMap<String, PluginEntry>);

impl ProviderCatalog for Catalog {
    fn provider(&self, owner: &str, provider: &str, version: &str) -> Option<ProviderInfo> {
        if owner != "Sluice" && owner != "Custom" {
            return None;
        }
        let entry = self.0.get(&format!("{provider}@{version}"))?;
        Some(ProviderInfo {
            category: entry.info.category.clone(),
            properties: entry
                .info
                .configuration
                .iter()
                .map(|p| pipeline::PropertyInfo { name: p.name.clone(), required: p.required })
                .collect(),
            digest: (!entry.digest.is_empty()).then(|| entry.digest.clone()),
            inputs: entry.info.input_artifacts,
            outputs: entry.info.output_artifacts,
        })
    }

    fn known(&self) -> Vec<String> {
        let mut known: Vec<String> = self.0.keys().cloned().collect();
        known.sort();
        known
    }
}

impl PluginEntry {
    /// How a job or poll names this plugin to an agent: the digest, and
    /// the signature pushed with it, if any.
    pub(super) fn plugin_ref(&self, provider: &str, version: &str) -> PluginRef {
        PluginRef {
            provider: provider.to_string(),
            version: version.to_string(),
            digest: self.digest.clone(),
            signature: self.signature.as_ref().map(|s| s.signature.clone()),
            publisher: self.signature.as_ref().map(|s| s.publisher.clone()),
        }
    }

    /// The plugin as `plugin list` and `plugin describe` show it.
    pub(super) fn view(&self, key: &str) -> crate::ops::PluginView {
        crate::ops::PluginView {
            provider: key.to_string(),
            digest: self.digest.clone(),
            builtin: self.builtin,
            signed_by: self.signature.as_ref().map(|s| s.publisher.clone()),
            key_id: self.signature.as_ref().map(|s| s.key_id.clone()),
            info: self.info.clone(),
        }
    }
}

/// Registers every built-in plugin from its own `describe()`; a digest seen
/// before is not described again.
pub(super) async fn register_builtins(
    store: &mut dyn Store,
    blobs: &BlobStore,
    runtime: &Arc<sluice_runtime::Runtime>,
) -> Result<Catalog> {
    let mut entries = HashMap::new();
    let known: HashMap<String, PluginRecord> = store.plugins()?.into_iter().map(|p| (p.digest.clone(), p)).collect();
    let mut changes = Vec::new();
    for builtin in sluice_builtins::BUILTINS {
        let digest = blobs.put_bytes(builtin.wasm)?;
        let info: ActionInfo = match known.get(&digest) {
            Some(record) => serde_json::from_str(&record.info)?,
            None => {
                let info = describe(runtime, builtin.wasm.to_vec())
                    .await
                    .map_err(|e| anyhow::anyhow!("describing built-in plugin {}: {e}", builtin.provider))?;
                changes.push(Change::Plugin(PluginRecord {
                    provider: info.name.clone(),
                    version: info.version.clone(),
                    digest: digest.clone(),
                    info: serde_json::to_string(&info)?,
                    builtin: true,
                }));
                info
            }
        };
        entries
            .insert(format!("{}@{}", info.name, info.version), PluginEntry { digest, info, builtin: true, signature: None });
    }
    store.apply(&changes)?;
    // The manual approval runs in the controller: no component.
    let manual = manual_approval_info();
    entries.insert(
        format!("{}@{}", manual.name, manual.version),
        PluginEntry { digest: String::new(), info: manual, builtin: true, signature: None },
    );
    // Issue 21, feed: `pipeline@1` is answered by the controller too.
    let upstream = pipeline_source_info();
    entries.insert(
        format!("{}@{}", upstream.name, upstream.version),
        PluginEntry { digest: String::new(), info: upstream, builtin: true, signature: None },
    );
    // Pushed plugins registered earlier, with the signatures they came with.
    let signatures: HashMap<String, crate::store::PluginSignatureRecord> =
        store.plugin_signatures()?.into_iter().map(|s| (s.digest.clone(), s)).collect();
    for record in store.plugins()? {
        let key = format!("{}@{}", record.provider, record.version);
        if !entries.contains_key(&key) && !record.builtin {
            let info = serde_json::from_str(&record.info)?;
            let signature = signatures.get(&record.digest).cloned();
            entries.insert(key, PluginEntry { digest: record.digest, info, builtin: false, signature });
        }
    }
    Ok(Catalog(entries))
}

/// `manual@1`, CodePipeline's manual approval: decided through the API by
/// `RequiredApprovals` distinct people among its `Approvers`, none of whom
/// started the execution, wrote its pipeline version or pushed its revision.
fn manual_approval_info() -> ActionInfo {
    let property = |name: &str, description: &str, kind: &str| sluice_runtime::PropertyInfo {
        name: name.into(),
        required: false,
        secret: false,
        description: description.into(),
        kind: kind.into(),
    };
    ActionInfo {
        name: "manual".into(),
        version: "1".into(),
        category: "Approval".into(),
        description: "Waits for people to approve or reject (sluice approval approve|reject)".into(),
        configuration: vec![
            property("RequiredApprovals", "Distinct approvers needed, 1 by default", "number"),
            property("Approvers", "Who may decide: user:NAME, team:NAME, role:NAME, comma-separated", "string"),
            property("CustomData", "Shown to approvers", "string"),
            property("ExternalEntityLink", "A link for approvers to review", "string"),
            property("NotificationArn", "Accepted on import; notifications are not sent", "string"),
        ],
        input_artifacts: (0, 0),
        output_artifacts: (0, 0),
        capabilities: Grants::default(),
        interface_version: String::new(),
    }
}

/// `pipeline@1` (issue 21, feed): a pipeline as a source, answered by the
/// controller with an upstream execution's artifacts and variables.
fn pipeline_source_info() -> ActionInfo {
    let property = |name: &str, required: bool, description: &str| sluice_runtime::PropertyInfo {
        name: name.into(),
        required,
        secret: false,
        description: description.into(),
        kind: "string".into(),
    };
    ActionInfo {
        name: crate::feed::PROVIDER.into(),
        version: crate::feed::VERSION.into(),
        category: "Source".into(),
        description: "Starts when a stage of another pipeline succeeds, with that execution's artifacts and variables"
            .into(),
        configuration: vec![
            property(crate::feed::PIPELINE_KEY, true, "The upstream pipeline"),
            property(crate::feed::STAGE_KEY, false, "Its stage whose success starts this pipeline; its last by default"),
            property(
                crate::feed::ARTIFACTS_KEY,
                false,
                "Upstream artifact names, comma-separated, one per output artifact in order; by default each output's own name",
            ),
        ],
        input_artifacts: (0, 0),
        output_artifacts: (0, 10),
        capabilities: Grants::default(),
        interface_version: String::new(),
    }
}

/// Reads a component's own `describe()` off the async threads; the error
/// is the refusal `sluice plugin check` gives too.
pub async fn describe(runtime: &Arc<sluice_runtime::Runtime>, wasm: Vec<u8>) -> Result<ActionInfo, String> {
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || crate::plugin_check::describe(&rt, &wasm))
        .await
        .map_err(|e| format!("reading the plugin's describe() crashed: {e}"))?
}
