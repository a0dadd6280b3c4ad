//! The plugin commands of the driver: push (with the publisher's
//! signature checked in `publishers.rs`) and delete; the catalog itself is
//! `catalog.rs`.

use super::Driver;
use super::catalog::PluginEntry;
use crate::ops::{
    Context, DeletePlugin, DeletePluginOutput, DescribePlugin, Handle, ListPlugins, ListPluginsOutput, OpError, PluginView,
    PushPlugin, PushPluginOutput, VetPluginSignature,
};
use crate::pipeline::Pipeline;
use crate::store::{Change, PluginRecord};
use tracing::info;

impl Handle<ListPlugins> for Driver {
    fn handle(&mut self, _: ListPlugins, _: &Context) -> Result<ListPluginsOutput, OpError> {
        let mut plugins: Vec<PluginView> = self.catalog.0.iter().map(|(key, p)| p.view(key)).collect();
        plugins.sort_by(|a, b| a.provider.cmp(&b.provider));
        Ok(ListPluginsOutput { plugins })
    }
}

impl Handle<DescribePlugin> for Driver {
    fn handle(&mut self, op: DescribePlugin, _: &Context) -> Result<PluginView, OpError> {
        let key = op.key;
        self.catalog
            .0
            .get(&key)
            .map(|p| p.view(&key))
            .ok_or_else(|| OpError::NotFound(format!("plugin {key} is not registered")))
    }
}

impl Handle<VetPluginSignature> for Driver {
    fn handle(&mut self, op: VetPluginSignature, ctx: &Context) -> Result<(), OpError> {
        let key = format!("with digest {}", op.digest);
        self.verify_push(ctx.now, &key, &op.digest, op.signature.as_deref()).map(|_| ())
    }
}

/// Registers `provider@version` from the plugin's own `describe()`. The
/// same version pushed again with other bytes is refused: a version names
/// one component forever, so running pipelines never change under
/// anyone's feet. A signature is checked against the trusted publishers
/// first; one pushed for a version registered unsigned is recorded.
impl Handle<PushPlugin> for Driver {
    fn handle(&mut self, op: PushPlugin, ctx: &Context) -> Result<PushPluginOutput, OpError> {
        let now = ctx.now;
        let (wasm, info, signature) = (&op.wasm, *op.info, op.signature.as_deref());
        let key = format!("{}@{}", info.name, info.version);
        let digest = sluice_runtime::digest(wasm);
        if let Some(existing) = self.catalog.0.get(&key) {
            if existing.digest != digest {
                return Err(OpError::Conflict(format!(
                    "plugin {key} is already registered with digest {}; publish the change under a new version",
                    existing.digest
                )));
            }
            if existing.builtin {
                return Ok(PushPluginOutput { provider: key, digest, created: false, signed_by: None });
            }
            let mut signed = existing.signature.clone();
            if signed.is_none() && signature.is_some() {
                let record = self.verify_push(now, &key, &digest, signature)?.expect("a signature was given");
                self.commit(now, vec![Change::PluginSignature(record.clone())])?;
                info!(plugin = %key, %digest, publisher = %record.publisher, "plugin signature recorded");
                signed = Some(record.clone());
                if let Some(entry) = self.catalog.0.get_mut(&key) {
                    entry.signature = Some(record);
                }
            } else if signature.is_some() {
                // Still refuse a bad one: the caller must learn it.
                self.verify_push(now, &key, &digest, signature)?;
            }
            let signed_by = signed.map(|s| s.publisher);
            return Ok(PushPluginOutput { provider: key, digest, created: false, signed_by });
        }
        let signed = self.verify_push(now, &key, &digest, signature)?;
        // Data lifecycle (issue 17, life): the free-space floor holds for pushes too.
        if !self.plugins.contains(&digest) {
            self.keep_free_space(&self.plugins, wasm.len() as u64, "the plugin")?;
        }
        self.plugins.put_bytes(wasm)?;
        let record = PluginRecord {
            provider: info.name.clone(),
            version: info.version.clone(),
            digest: digest.clone(),
            info: serde_json::to_string(&info).map_err(anyhow::Error::from)?,
            builtin: false,
        };
        let mut changes = vec![Change::Plugin(record)];
        changes.extend(signed.clone().map(Change::PluginSignature));
        self.commit(now, changes)?;
        let signed_by = signed.as_ref().map(|s| s.publisher.clone());
        info!(plugin = %key, %digest, publisher = signed_by.as_deref().unwrap_or("-"), "plugin registered");
        self.catalog.0.insert(key.clone(), PluginEntry { digest: digest.clone(), info, builtin: false, signature: signed });
        Ok(PushPluginOutput { provider: key, digest, created: true, signed_by })
    }
}

/// Removes a pushed plugin version that no pipeline's latest version and
/// no running execution uses.
impl Handle<DeletePlugin> for Driver {
    fn handle(&mut self, op: DeletePlugin, ctx: &Context) -> Result<DeletePluginOutput, OpError> {
        let now = ctx.now;
        let key = op.key.as_str();
        let entry = self.catalog.0.get(key).ok_or_else(|| OpError::NotFound(format!("plugin {key} is not registered")))?;
        if entry.builtin {
            return Err(OpError::Conflict(format!("plugin {key} is built in and cannot be deleted")));
        }
        let (provider, version) = key.split_once('@').expect("catalog keys are provider@version");
        let uses = |def: &Pipeline| {
            def.stages
                .iter()
                .flat_map(|s| &s.actions)
                .any(|a| a.action_type_id.provider == provider && a.action_type_id.version == version)
        };
        let mut users = Vec::new();
        for record in self.store.pipelines()? {
            if uses(&*self.definition(&record.name, record.version)?) {
                users.push(format!("pipeline {}", record.name));
            }
        }
        let running: Vec<(String, u64)> = self.engine.executions().map(|e| (e.pipeline.clone(), e.version)).collect();
        for (name, version) in running {
            if uses(&*self.definition(&name, version)?) && !users.contains(&format!("pipeline {name}")) {
                users.push(format!("a running execution of {name}"));
            }
        }
        if !users.is_empty() {
            return Err(OpError::Conflict(format!("plugin {key} is used by {}", users.join(", "))));
        }
        self.commit(now, vec![Change::DeletePlugin { provider: provider.to_string(), version: version.to_string() }])?;
        self.catalog.0.remove(key);
        info!(plugin = %key, "plugin deleted");
        Ok(DeletePluginOutput { provider: op.key.clone(), deleted: true })
    }
}
