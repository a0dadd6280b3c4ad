//! Enrollment in the driver: join tokens (create, list, revoke), enrolling
//! an agent with one, and certificate renewals with their allowance.

use super::Driver;
use super::command::AgentState;
use super::intake;
use crate::ops::{
    AgentTokenView, CreateAgentToken, CreateAgentTokenOutput, Handle, ListAgentTokens, ListAgentTokensOutput, OpError,
    RevokeAgentToken, RevokeAgentTokenOutput,
};
use crate::store::{AgentRecord, Change, JoinTokenRecord};
use crate::views;
use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use sluice_protocol::{EnrollRequest, EnrollResponse};
use std::time::Duration;
use tracing::info;

/// Renewals an agent may ask for in a burst, and how often one more is
/// allowed after that (a quarter of the certificate's life, within 1 s to
/// 60 s): an agent renews once per 70-90 % of the life, so only a rogue or
/// broken one meets the bound, and signing is the CPU it would burn.
const RENEWAL_BURST: u32 = 3;

impl Handle<CreateAgentToken> for Driver {
    fn handle(&mut self, op: CreateAgentToken, ctx: &crate::ops::Context) -> Result<CreateAgentTokenOutput, OpError> {
        let now = ctx.now;
        let CreateAgentToken { ttl_seconds, uses, labels, allow_agent_labels } = op;
        let invalid = OpError::invalid;
        if ttl_seconds == 0 {
            return Err(invalid("ttl must be positive".into()));
        }
        if uses == Some(0) {
            return Err(invalid("--uses must be at least 1".into()));
        }
        for (key, value) in &labels {
            intake::check_label(key, value).map_err(invalid)?;
        }
        for key in &allow_agent_labels {
            intake::check_label(key, "").map_err(|e| invalid(format!("--allow-agent-labels: {e}")))?;
        }
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let record = JoinTokenRecord {
            id: format!("jt-{}", &hex::encode(rand::random::<[u8; 6]>())),
            secret_hash: sha256_hex(&secret),
            labels,
            uses_left: uses,
            expires_at: now.saturating_add(ttl_seconds.saturating_mul(1000)),
            created_at: now,
            revoked: false,
            allow_agent_labels,
        };
        self.commit(now, vec![Change::JoinToken(record.clone())])?;
        let token = sluice_protocol::JoinToken { ca_fingerprint: self.ca.fingerprint().to_string(), secret };
        Ok(CreateAgentTokenOutput {
            id: record.id,
            token: token.to_string(),
            expires: views::time(record.expires_at),
            uses: record.uses_left,
            labels: record.labels,
            allow_agent_labels: record.allow_agent_labels,
        })
    }
}

/// Join tokens without their secrets (only hashes are kept anyway).
impl Handle<ListAgentTokens> for Driver {
    fn handle(&mut self, _: ListAgentTokens, ctx: &crate::ops::Context) -> Result<ListAgentTokensOutput, OpError> {
        let now = ctx.now;
        let agent_tokens = self
            .store
            .join_tokens()?
            .into_iter()
            .map(|t| {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else if t.uses_left == Some(0) {
                    "used up"
                } else {
                    "valid"
                };
                AgentTokenView {
                    id: t.id,
                    state: state.to_string(),
                    uses_left: t.uses_left,
                    labels: t.labels,
                    allow_agent_labels: t.allow_agent_labels,
                    created: views::time(t.created_at),
                    expires: views::time(t.expires_at),
                }
            })
            .collect();
        Ok(ListAgentTokensOutput { agent_tokens })
    }
}

impl Handle<RevokeAgentToken> for Driver {
    fn handle(&mut self, op: RevokeAgentToken, ctx: &crate::ops::Context) -> Result<RevokeAgentTokenOutput, OpError> {
        let now = ctx.now;
        let id = op.id.as_str();
        let mut token = self
            .store
            .join_tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| OpError::NotFound(format!("join token {id} does not exist")))?;
        token.revoked = true;
        self.commit(now, vec![Change::JoinToken(token)])?;
        info!(token = %id, "join token revoked");
        Ok(RevokeAgentTokenOutput { id: op.id.clone(), state: "revoked".into() })
    }
}

impl Driver {
    pub(super) fn enroll(&mut self, now: u64, request: &EnrollRequest) -> Result<EnrollResponse> {
        let refuse = |reason: &str| Ok(EnrollResponse::Refused { reason: reason.to_string() });
        let Some(mut token) = self.store.join_token_by_hash(&sha256_hex(&request.secret))? else {
            return refuse("join token is unknown");
        };
        if token.revoked {
            return refuse(&format!("join token {} was revoked", token.id));
        }
        if token.expires_at <= now {
            return refuse(&format!("join token {} has expired", token.id));
        }
        if token.uses_left == Some(0) {
            return refuse(&format!("join token {} has been used up", token.id));
        }
        let agent_id = format!("ag-{}", hex::encode(rand::random::<[u8; 8]>()));
        let (cert_pem, serial) = self.ca.sign_agent(&request.csr_pem, &agent_id, self.agent_cert_lifetime)?;
        token.uses_left = token.uses_left.map(|n| n - 1);
        let agent = AgentRecord {
            id: agent_id.clone(),
            hostname: intake::clean_text(&request.hostname, 253, intake::Lines::Joined),
            labels: token.labels.clone(),
            cert_serial: serial,
            enrolled_at: now,
            state: "enabled".into(),
            allow_agent_labels: token.allow_agent_labels.clone(),
            cert_expires_at: Some(now.saturating_add(self.agent_cert_lifetime.as_millis() as u64)),
        };
        let hostname = agent.hostname.clone();
        self.commit(now, vec![Change::JoinToken(token.clone()), Change::Agent(agent)])?;
        info!(%agent_id, token = %token.id, %hostname, "agent enrolled");
        self.tell_agent(&agent_id, "enrolled");
        Ok(EnrollResponse::Enrolled { agent_id, cert_pem, ca_pem: self.ca.cert_pem().to_string(), labels: token.labels })
    }

    /// Takes one renewal from the agent's allowance ([`RENEWAL_BURST`],
    /// then one per a quarter of the certificate's life, 1 s to 60 s).
    pub(super) fn take_renewal(&mut self, agent_id: &str, now: u64) -> Result<(), String> {
        let every = (self.agent_cert_lifetime / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let every = every.as_millis() as u64;
        let (tokens, since) = self.renewals.entry(agent_id.to_string()).or_insert((RENEWAL_BURST, now));
        let earned = (now.saturating_sub(*since) / every) as u32;
        if earned > 0 {
            *tokens = (*tokens + earned).min(RENEWAL_BURST);
            *since += u64::from(earned) * every;
        }
        if *tokens == 0 {
            let wait = (*since + every).saturating_sub(now).div_ceil(1000);
            return Err(format!("agent {agent_id} asks for renewals too often: the next is allowed in {wait}s"));
        }
        *tokens -= 1;
        Ok(())
    }

    /// Signs a new certificate for a connected agent; the name in it is the
    /// agent's own, whatever the request says.
    pub(super) fn renew(&mut self, now: u64, agent_id: &str, csr_pem: &str) -> Result<String> {
        let mut record = self.store.agent(agent_id)?.with_context(|| format!("agent {agent_id} is not enrolled"))?;
        if record.state == AgentState::Revoked.as_str() {
            anyhow::bail!("agent {agent_id} was revoked");
        }
        let (cert_pem, serial) = self.ca.sign_agent(csr_pem, agent_id, self.agent_cert_lifetime)?;
        record.cert_serial = serial;
        record.cert_expires_at = Some(now.saturating_add(self.agent_cert_lifetime.as_millis() as u64));
        self.commit(now, vec![Change::Agent(record)])?;
        info!(%agent_id, "agent certificate renewed");
        Ok(cert_pem)
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}
