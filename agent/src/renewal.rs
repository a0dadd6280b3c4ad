//! Certificate renewal over the live connection.
//!
//! Agent certificates are short-lived. At a jittered 70 to 90 % of the
//! current certificate's remaining life (counted from when it was issued to
//! us) the agent makes a fresh key, sends a CSR on the control stream, and
//! on the answer writes the new identity atomically; the next connection
//! uses it. Must not know how jobs run or how frames are written.

use crate::identity::{self, EnrollmentKey, Identity};
use anyhow::{Context as _, Result};
use rand::Rng as _;
use sluice_protocol::FromAgent;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

/// When an answer does not come (no connection, a refusal), ask again after this.
const RETRY: Duration = Duration::from_secs(30);

pub struct Renewal {
    dir: PathBuf,
    identity: Mutex<Identity>,
    /// The key of the request in flight.
    pending: Mutex<Option<EnrollmentKey>>,
    /// When the current certificate was issued to us (Unix seconds).
    issued_at: Mutex<i64>,
    renewed: Notify,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Renewal {
    /// `issued_at` is the certificate file's modification time: the agent
    /// writes it when the controller hands it over.
    pub fn new(dir: PathBuf, identity: Identity) -> Self {
        let issued_at = std::fs::metadata(dir.join(identity::CERT_FILE))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or_else(now);
        Self {
            dir,
            identity: Mutex::new(identity),
            pending: Mutex::new(None),
            issued_at: Mutex::new(issued_at),
            renewed: Notify::new(),
        }
    }

    /// When the current certificate expires (Unix seconds), for metrics.
    pub fn expires_at(&self) -> Option<i64> {
        self.identity.lock().expect("identity lock").expires_at().ok()
    }

    /// The fleet configuration of the current identity.
    pub fn client_config(&self) -> Result<quinn::ClientConfig> {
        self.identity.lock().expect("identity lock").fleet_client_config()
    }

    /// Seconds from now until the renewal is due (0 when it is).
    fn due_in(&self) -> Result<Duration> {
        let expires = self.identity.lock().expect("identity lock").expires_at()?;
        let issued = *self.issued_at.lock().expect("identity lock");
        let life = (expires - issued).max(0) as f64;
        let at = issued + (life * rand::rng().random_range(0.7..0.9)) as i64;
        Ok(Duration::from_secs((at - now()).max(0) as u64))
    }

    /// Asks for a new certificate whenever one is due, until the agent stops.
    pub async fn run(&self, outbox: mpsc::Sender<FromAgent>) {
        loop {
            let wait = match self.due_in() {
                Ok(d) => d,
                Err(e) => {
                    warn!("cannot read the agent certificate's lifetime: {e:#}");
                    return;
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.renewed.notified() => continue,
            }
            match self.request() {
                Ok(frame) => {
                    info!("asking the controller to renew the agent certificate");
                    if outbox.send(frame).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!("cannot make a certificate request: {e:#}"),
            }
            // Wait for the answer, or ask again later.
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = self.renewed.notified() => {}
            }
        }
    }

    fn request(&self) -> Result<FromAgent> {
        let key = EnrollmentKey::generate(&identity::hostname())?;
        let csr_pem = key.csr_pem.clone();
        *self.pending.lock().expect("identity lock") = Some(key);
        Ok(FromAgent::RenewCertificate { csr_pem })
    }

    /// The controller's answer: the new identity replaces the old on disk
    /// and in memory.
    pub fn install(&self, cert_pem: String) -> Result<()> {
        let key = self.pending.lock().expect("identity lock").take().context("no renewal was asked for")?;
        let renewed = self.identity.lock().expect("identity lock").renewed(key, cert_pem)?;
        renewed.save(&self.dir).context("saving the renewed identity")?;
        *self.identity.lock().expect("identity lock") = renewed;
        *self.issued_at.lock().expect("identity lock") = now();
        info!("agent certificate renewed");
        self.renewed.notify_one();
        Ok(())
    }
}
