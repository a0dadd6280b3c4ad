//! The delivery task: sends the outbox's due deliveries, outside the
//! driver's loop, and records what each attempt came to.
//!
//! Bounded so that a slow receiver stalls nothing else: one attempt in
//! flight per target (a rule's target), [`MAX_IN_FLIGHT`] in all, each with
//! a [`REQUEST_TIMEOUT`]. The HTTP client trusts the system's roots plus
//! `--notification-ca`, follows no redirect, and resolves host names through
//! the address policy ([`super::target::check_ip`]), so a name that points
//! at a refused address is refused when it is used, not only when the rule
//! was made.

use super::NotifyConfig;
use super::message::{self, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::retry::{Attempt, Next};
use super::target::{self, AddressPolicy, TargetType};
use crate::secrets::SecretBox;
use crate::store::notifications::{DeliveryRecord, Outbox};
use anyhow::{Context as _, Result};
use base64::Engine as _;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Attempts in flight at once, over every target.
pub const MAX_IN_FLIGHT: usize = 4;
/// One attempt's whole time: connect, TLS, request, answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often delivered and old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// The longest the task sleeps between looks at the outbox.
const IDLE: Duration = Duration::from_secs(5);

/// The AAD a target's URL is sealed under.
pub fn address_aad(rule_id: &str, target: u32) -> String {
    format!("notification/{rule_id}/{target}/address")
}

/// The AAD a webhook target's signing secret is sealed under.
pub fn secret_aad(rule_id: &str, target: u32) -> String {
    format!("notification/{rule_id}/{target}/secret")
}

/// The address policy refused where a name resolved to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PolicyRefusal(String);

/// Resolves host names, keeping only the addresses the policy allows.
struct PolicyResolver(AddressPolicy);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<std::net::SocketAddr> =
                found.iter().copied().filter(|a| target::check_ip(a.ip(), policy).is_ok()).collect();
            if allowed.is_empty() {
                let why = match found.first() {
                    Some(a) => target::check_ip(a.ip(), policy).err().unwrap_or_default(),
                    None => format!("{host} has no address"),
                };
                return Err(Box::new(PolicyRefusal(format!("{host}: {why}"))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of deliveries.
pub fn client(config: &NotifyConfig) -> Result<reqwest::Client> {
    let builder = || {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT / 2)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the target's name
            // itself, past the address policy's resolver.
            .no_proxy()
            .user_agent(concat!("sluice-notifications/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(PolicyResolver(config.policy))
    };
    let mut extra = Vec::new();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading --notification-ca {}", path.display()))?;
        extra = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--notification-ca {}: not PEM certificates", path.display()))?;
        if extra.is_empty() {
            anyhow::bail!("--notification-ca {} holds no certificate", path.display());
        }
    }
    match builder().tls_certs_merge(extra.clone()).build() {
        Ok(client) => Ok(client),
        // No system roots (a bare container): the operator's CA alone.
        Err(e) => {
            warn!("notifications: the system's root certificates are unusable ({e}); trusting --notification-ca only");
            builder().tls_certs_only(extra).build().context("building the notification client")
        }
    }
}

/// A row's target, opened: what an attempt needs.
struct Opened {
    target_type: TargetType,
    url: String,
    secret: Option<Vec<u8>>,
}

/// Runs the delivery task forever. `wake` is notified by the driver after
/// a commit that wrote deliveries (and by redelivery).
pub async fn run(outbox: Outbox, secret_box: SecretBox, config: NotifyConfig, client: reqwest::Client, wake: Arc<Notify>) {
    let outbox = Arc::new(Mutex::new(outbox));
    let secret_box = Arc::new(secret_box);
    let mut busy: HashSet<(String, u32)> = HashSet::new();
    let mut tasks: JoinSet<(DeliveryRecord, Attempt)> = JoinSet::new();
    let mut next_prune = 0;
    loop {
        let now = crate::driver::now_ms();
        if now >= next_prune {
            next_prune = now + PRUNE_EVERY.as_millis() as u64;
            match blocking(&outbox, move |o| o.prune(now)).await {
                Ok(0) => {}
                Ok(gone) => info!(rows = gone, "notifications: old deliveries pruned"),
                Err(e) if crate::ha::is_fenced(&e) => {
                    crate::ha::step_down(&format!("a notification outbox write was refused: {e:#}"))
                }
                Err(e) => warn!("notifications: pruning failed: {e:#}"),
            }
        }
        let due = blocking(&outbox, move |o| o.due(now, 64)).await.unwrap_or_else(|e| {
            warn!("notifications: reading the outbox failed: {e:#}");
            Vec::new()
        });
        // A leader whose term is over sends nothing more (review18 M6): its
        // renewal task steps it down, a successor delivers.
        let due = if crate::ha::standing().may_act() { due } else { Vec::new() };
        for row in due {
            if tasks.len() >= MAX_IN_FLIGHT {
                break;
            }
            let key = (row.rule_id.clone(), row.target);
            if busy.contains(&key) {
                continue;
            }
            let opened = {
                let (outbox, secret_box, policy) = (outbox.clone(), secret_box.clone(), config.policy);
                tokio::task::spawn_blocking(move || {
                    let opened = open_target(&outbox, &secret_box, policy, &row);
                    (row, opened)
                })
                .await
            };
            let Ok((row, opened)) = opened else { continue };
            busy.insert(key);
            let client = client.clone();
            tasks.spawn(async move {
                let attempt = match opened {
                    Ok(target) => send(&client, &row, &target).await,
                    Err(why) => Attempt::Refused(why),
                };
                (row, attempt)
            });
        }
        let next_due = blocking(&outbox, |o| o.next_due()).await.ok().flatten();
        let wait = match next_due {
            Some(at) if at > now => Duration::from_millis(at - now).min(IDLE),
            // Due but waiting for its target or a free slot: a finished
            // attempt wakes the loop; look again soon anyway.
            Some(_) => Duration::from_millis(250),
            None => IDLE,
        };
        tokio::select! {
            Some(done) = tasks.join_next() => {
                if let Ok((row, attempt)) = done {
                    busy.remove(&(row.rule_id.clone(), row.target));
                    record(&outbox, &config, row, attempt).await;
                }
            }
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs a store call off the async threads (SQLite may wait on the
/// driver's transaction).
async fn blocking<T: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    call: impl FnOnce(&mut Outbox) -> Result<T> + Send + 'static,
) -> Result<T> {
    let outbox = outbox.clone();
    tokio::task::spawn_blocking(move || {
        let mut outbox = outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        call(&mut outbox)
    })
    .await?
}

/// Opens a row's target; a row whose rule or target is gone, or whose URL
/// the policy now refuses, is refused (a dead letter at once).
fn open_target(
    outbox: &Mutex<Outbox>,
    secret_box: &SecretBox,
    policy: AddressPolicy,
    row: &DeliveryRecord,
) -> Result<Opened, String> {
    let rule = outbox.lock().unwrap_or_else(|p| p.into_inner()).rule(&row.rule_id);
    let rule = match rule {
        Ok(Some(rule)) => rule,
        Ok(None) => return Err("its notification rule no longer exists".into()),
        Err(e) => return Err(format!("reading its rule: {e:#}")),
    };
    let Some(stored) = rule.targets.get(row.target as usize) else {
        return Err("its target no longer exists".into());
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let open = |aad: String, sealed: &str| -> Result<Vec<u8>, String> {
        let sealed = b64.decode(sealed).map_err(|_| "sealed value is not base64".to_string())?;
        secret_box.open_value(&aad, &sealed).map_err(|e| format!("{e:#}"))
    };
    let url = match open(address_aad(&row.rule_id, row.target), &stored.sealed_address) {
        Ok(url) => String::from_utf8_lossy(&url).into_owned(),
        Err(e) => return Err(format!("target address: {e}")),
    };
    target::check_url(&url, policy)?;
    let secret = match &stored.sealed_secret {
        Some(sealed) => match open(secret_aad(&row.rule_id, row.target), sealed) {
            Ok(secret) => Some(secret),
            Err(e) => return Err(format!("signing secret: {e}")),
        },
        None => None,
    };
    let target_type = TargetType::parse(&stored.target_type)?;
    Ok(Opened { target_type, url, secret })
}

/// One attempt: the body and headers of the target's kind, POSTed.
async fn send(client: &reqwest::Client, row: &DeliveryRecord, target: &Opened) -> Attempt {
    let request = match target.target_type {
        TargetType::Webhook => {
            let timestamp = crate::driver::now_ms() / 1000;
            let body = row.payload.clone().into_bytes();
            let signature = message::sign(target.secret.as_deref().unwrap_or_default(), timestamp, &body);
            client
                .post(&target.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signature)
                .header(EVENT_HEADER, &row.event_type)
                .header(DELIVERY_HEADER, row.id.to_string())
                .body(body)
        }
        TargetType::Slack => {
            let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
            client
                .post(&target.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(message::slack_body(&payload).to_string())
        }
    };
    match request.send().await {
        Ok(response) => Attempt::Status(response.status().as_u16()),
        Err(e) => transport_error(e),
    }
}

/// What went wrong, without the URL (whose path may be a secret), with
/// every cause: `error sending request: client error (Connect): invalid
/// peer certificate: UnknownIssuer`.
fn transport_error(e: reqwest::Error) -> Attempt {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut chain = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<PolicyRefusal>() {
            return Attempt::Refused(refusal.0.clone());
        }
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.dedup();
    if timeout {
        chain.push(format!("timed out after {} s", REQUEST_TIMEOUT.as_secs()));
    }
    Attempt::Transport(chain.join(": "))
}

/// Records an attempt and what comes next.
async fn record(outbox: &Arc<Mutex<Outbox>>, config: &NotifyConfig, row: DeliveryRecord, attempt: Attempt) {
    let now = crate::driver::now_ms();
    let attempts = row.attempts + 1;
    let next = config.retry.next(&attempt, attempts, row.created_at, now);
    let (status, at, error) = match &next {
        Next::Delivered => ("delivered", now, None),
        Next::Retry { at, error } => ("pending", *at, Some(error.clone())),
        Next::Dead(error) => ("dead", now, Some(error.clone())),
    };
    match &next {
        Next::Delivered => {
            info!(delivery = row.id, rule = %row.rule_id, event = %row.event_type, attempts, "notification delivered")
        }
        Next::Retry { error, .. } => {
            warn!(delivery = row.id, rule = %row.rule_id, attempts, "notification not delivered, will retry: {error}")
        }
        Next::Dead(error) => {
            warn!(delivery = row.id, rule = %row.rule_id, attempts, "notification dead-lettered: {error}")
        }
    }
    let id = row.id;
    if let Err(e) = blocking(outbox, move |o| o.record(id, status, attempts, at, error.as_deref(), now)).await {
        if crate::ha::is_fenced(&e) {
            crate::ha::step_down(&format!("a notification outbox write was refused: {e:#}"));
        }
        warn!(delivery = id, "notifications: recording an attempt failed: {e:#}");
    }
}
