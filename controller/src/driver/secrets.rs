//! The secret store's commands in the driver (set, list, delete), and the
//! checks of secret grants: when a declaration is stored and again at
//! every hand-out of a job or poll. Sealing and scopes are
//! `crate::secrets`.

use super::Driver;
use crate::ops::{
    Context, DeleteSecret, DeleteSecretOutput, Handle, ListSecrets, ListSecretsOutput, OpError, SecretView, SetSecret,
    SetSecretOutput,
};
use crate::policy::records;
use crate::store::Change;
use crate::views;
use anyhow::Result;
use tracing::{info, warn};

impl Driver {
    /// Values of the named secrets that are set, for a job or poll of
    /// `pipeline`. A secret whose scope does not cover the pipeline is
    /// refused here too: its scope may have changed since the pipeline was
    /// validated.
    pub(super) fn secret_values(&self, pipeline: &str, names: &[String]) -> Result<Vec<(String, String)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for record in self.store.secrets()?.into_iter().filter(|s| names.contains(&s.name)) {
            let scope = crate::secrets::Scope::stored(&record.pipelines);
            if !scope.allows(pipeline) {
                warn!(secret = %record.name, %pipeline, "a secret outside its scope was not handed out");
                anyhow::bail!("{}", crate::secrets::out_of_scope(&record.name, pipeline, &scope));
            }
            let value = self.secret_box.open_value(&record.name, &record.sealed)?;
            out.push((record.name, String::from_utf8_lossy(&value).into_owned()));
        }
        Ok(out)
    }

    /// Refuses a declaration that grants a secret outside the secret's
    /// scope, naming the path of each such grant.
    pub(super) fn check_secret_scopes(&self, declaration: &crate::pipeline::Declaration) -> Result<(), OpError> {
        let scopes = self
            .store
            .secrets()?
            .into_iter()
            .map(|record| (record.name, crate::secrets::Scope::stored(&record.pipelines)))
            .collect();
        let problems = crate::secrets::check_grants(declaration, &scopes);
        if problems.is_empty() {
            return Ok(());
        }
        Err(OpError::Validation {
            message: format!("pipeline declaration is invalid ({} problems)", problems.len()),
            diagnostics: problems.iter().map(ToString::to_string).collect(),
        })
    }
}

/// Sets a secret's value and, with `pipelines`, its scope. A new secret
/// must say which pipelines may use it; an existing one keeps its scope
/// when none is given, so that rotating a value changes nothing else.
impl Handle<SetSecret> for Driver {
    fn handle(&mut self, op: SetSecret, ctx: &Context) -> Result<SetSecretOutput, OpError> {
        let now = ctx.now;
        let (name, value, pipelines) = (op.name.as_str(), op.value.as_str(), op.pipelines);
        let invalid = OpError::invalid;
        crate::secrets::check_name(name).map_err(invalid)?;
        if value.is_empty() || value.len() > crate::secrets::MAX_SECRET_BYTES {
            return Err(invalid(format!("a secret value is 1 to {} bytes", crate::secrets::MAX_SECRET_BYTES)));
        }
        let existing = self.store.secrets()?.into_iter().find(|s| s.name == name);
        let pipelines = match (pipelines, &existing) {
            (Some(patterns), _) => {
                crate::secrets::Scope::new(&patterns).map_err(|e| invalid(format!("secret \"{name}\": {e}")))?;
                patterns
            }
            (None, Some(record)) => record.pipelines.clone(),
            (None, None) => {
                return Err(invalid(format!(
                    "secret \"{name}\" is new: say which pipelines may use it with --pipelines PATTERN,... (\"*\" for every pipeline)"
                )));
            }
        };
        let created_at = existing.map_or(now, |s| s.created_at);
        let sealed = self.secret_box.seal(name, value.as_bytes())?;
        let mut changes = vec![Change::Secret(crate::store::SecretRecord {
            name: name.to_string(),
            sealed,
            created_at,
            updated_at: now,
            pipelines: pipelines.clone(),
        })];
        // The owning team (permissions, issue 15).
        if let Some(team) = &op.team {
            self.team_record(team)?;
            let owner = records::SecretTeamRecord { secret: name.to_string(), team: team.clone() };
            changes.push(records::put(records::SECRET_TEAM, name, &owner));
        }
        self.commit(now, changes)?;
        if let Some(team) = op.team {
            self.directory.update(|d| {
                d.secret_teams.insert(name.to_string(), team);
            });
        }
        info!(secret = %name, pipelines = %pipelines.join(","), "secret set");
        Ok(SetSecretOutput { name: op.name.clone(), pipelines, created: views::time(created_at), updated: views::time(now) })
    }
}

impl Handle<ListSecrets> for Driver {
    fn handle(&mut self, _: ListSecrets, ctx: &Context) -> Result<ListSecretsOutput, OpError> {
        // Only the secrets the caller may list (permissions, issue 15).
        let directory = self.directory.snapshot();
        let judge = directory.judge(&ctx.caller);
        let permission = <ListSecrets as crate::ops::Operation>::PERMISSION;
        let secrets = self
            .store
            .secrets()?
            .into_iter()
            .filter(|s| judge.allows(permission, &crate::policy::named("secret", &s.name)))
            .map(|s| SecretView {
                name: s.name,
                pipelines: s.pipelines,
                created: views::time(s.created_at),
                updated: views::time(s.updated_at),
            })
            .collect();
        Ok(ListSecretsOutput { secrets })
    }
}

impl Handle<DeleteSecret> for Driver {
    fn handle(&mut self, op: DeleteSecret, ctx: &Context) -> Result<DeleteSecretOutput, OpError> {
        let now = ctx.now;
        let name = op.name.as_str();
        if !self.store.secrets()?.iter().any(|s| s.name == name) {
            return Err(OpError::NotFound(format!("secret \"{name}\" does not exist")));
        }
        self.commit(now, vec![Change::DeleteSecret(name.to_string()), records::delete(records::SECRET_TEAM, name)])?;
        self.directory.update(|d| {
            d.secret_teams.remove(name);
        });
        info!(secret = %name, "secret deleted");
        Ok(DeleteSecretOutput { name: op.name.clone(), deleted: true })
    }
}
