//! A standby's listeners: the API port forwarding to the leader, the
//! fleet port refusing agents with the leader's address, and `--metrics`
//! saying it stands by. Both are bound on
//! the addresses the leader's own listeners take over once this controller
//! leads (a port 0 is pinned to the port it got, so the address stays).

use super::Standing;
use crate::driver::ControllerConfig;
use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// The QUIC application close code of a standby's refusal (`SLDR`, as the
/// agents of the reach slice read it: they go to the leader the reason
/// names, else on down their list).
pub const NOT_THE_LEADER: u32 = 0x534c_4452;

pub(super) struct Standby {
    pub(super) api: SocketAddr,
    fleet: SocketAddr,
    metrics: Option<SocketAddr>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    endpoint: quinn::Endpoint,
    own_url: Arc<std::sync::OnceLock<String>>,
}

impl Standby {
    /// Binds the API and the fleet port (pinning `config`'s addresses to
    /// the bound ones) and serves them as a standby.
    pub(super) async fn start(config: &mut ControllerConfig, standing: Arc<Standing>) -> Result<Self> {
        let dir = &config.data_dir;
        crate::ca::create_private_dir(dir).with_context(|| format!("preparing data dir {}", dir.display()))?;
        // The same refusal a lone controller gives (plain HTTP off loopback).
        crate::https::check_listener(config.api, config.api_scheme, "--api-plain-http").map_err(anyhow::Error::msg)?;
        let ca = Arc::new(cluster_ca(config).await?);
        let trust = match config.api_cert {
            crate::https::CertSource::Ca { .. } => super::forward::LeaderTrust::ClusterCa,
            crate::https::CertSource::Files { .. } => super::forward::LeaderTrust::ClusterCaAndSystem,
        };
        let forward = super::forward::Forward::new(standing.clone(), ca.cert_pem(), trust)?;
        let own_url = forward.own_url();
        let listener =
            crate::https::bind_reusable(config.api).with_context(|| format!("binding the API port {}", config.api))?;
        config.api = listener.local_addr()?;
        let tls = match config.api_scheme {
            crate::https::Scheme::Https => {
                Some(crate::https::Tls::start(ca.clone(), &config.api_cert, &[config.api])?.acceptor)
            }
            crate::https::Scheme::Http => None,
        };
        let router = super::forward::router(forward);
        let mut serving = vec![tokio::spawn(crate::https::serve(listener, router, tls, "api (standby)"))];
        if let Some(addr) = config.metrics_listen {
            let listener = crate::metrics::bind(addr).await?;
            config.metrics_listen = Some(listener.local_addr()?);
            let router = super::forward::metrics_router(standing.clone());
            serving.push(tokio::spawn(crate::https::serve(listener, router, None, "metrics (standby)")));
        }
        let endpoint = crate::udp::endpoint(config.fleet, Some(ca.server_config(Default::default())?))
            .with_context(|| format!("binding the fleet port {}", config.fleet))?;
        config.fleet = endpoint.local_addr()?;
        tokio::spawn(refuse_agents(endpoint.clone(), standing));
        Ok(Self { api: config.api, fleet: config.fleet, metrics: config.metrics_listen, serving, endpoint, own_url })
    }

    /// This controller's advertised API URL: forwarded requests carry it,
    /// and a lease row naming it is not a leader to forward to.
    pub(super) fn advertise(&self, api_url: &str) {
        let _ = self.own_url.set(api_url.to_string());
    }

    /// Lets the ports go, and waits until they can be bound again.
    pub(super) async fn stop(self) {
        for task in self.serving {
            task.abort();
            let _ = task.await;
        }
        self.endpoint.close(NOT_THE_LEADER.into(), b"taking the lead");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        drop(self.endpoint);
        for _ in 0..50 {
            let free = |addr| crate::https::bind_reusable(addr).is_ok();
            if std::net::UdpSocket::bind(self.fleet).is_ok() && free(self.api) && self.metrics.is_none_or(free) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        debug!(api = %self.api, fleet = %self.fleet, "the standby's ports are still busy");
    }
}

/// The cluster's CA, read from the store as a lone controller reads it at
/// start, waiting for the store if it must (a standby that cannot reach
/// PostgreSQL has nothing to offer yet). A data dir holding a CA other than
/// the store's is refused here, at start, with `cluster_keys`' message: a
/// standby trusting the wrong CA would answer every request with 503. With
/// the store unreachable, the data dir's copy is taken unchecked.
async fn cluster_ca(config: &ControllerConfig) -> Result<crate::ca::Ca> {
    let dir = &config.data_dir;
    loop {
        let loaded = config.store.open(dir, config.durability).and_then(|mut store| {
            let secrets = crate::secrets::SecretBox::open(dir)?;
            crate::cluster_keys::load(&mut *store, &secrets, dir, crate::driver::now_ms())
        });
        match loaded {
            Ok(keys) => return Ok(keys.ca),
            // Keys that do not open or files of another cluster: no wait mends that.
            Err(e) if !e.chain().any(|c| c.to_string().contains("connecting to the store")) => return Err(e),
            // PostgreSQL down (a leader that stepped down for that very
            // reason comes here): the data dir's copy lets the standby
            // answer at once (503 NoLeader) rather than not at all.
            Err(e) if dir.join("ca").join("ca.key").exists() && dir.join("ca").join("ca.crt").exists() => {
                tracing::warn!("the store is unreachable; using the data dir's CA unchecked: {e:#}");
                return crate::ca::Ca::load_or_create(&dir.join("ca"));
            }
            Err(e) => tracing::warn!("reading the cluster's CA from the store, trying again: {e:#}"),
        }
        tokio::time::sleep(super::lease::EVERY).await;
    }
}

/// Completes each agent's handshake and closes the connection at once with
/// [`NOT_THE_LEADER`] and the leader's fleet address as the reason.
async fn refuse_agents(endpoint: quinn::Endpoint, standing: Arc<Standing>) {
    while let Some(incoming) = endpoint.accept().await {
        let standing = standing.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else { return };
            let reason = match standing.leader() {
                Some(leader) => format!("not the leader; leader is {}", leader.fleet_addr),
                None => "not the leader; no leader".to_string(),
            };
            debug!(peer = %connection.remote_address(), "agent refused: this controller is a standby");
            connection.close(NOT_THE_LEADER.into(), reason.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 18, fwdfix: a standby refuses plain HTTP off loopback as a
    /// lone controller does, and a cluster never advertises a plain-HTTP
    /// API (standbys would send tokens to it in clear).
    #[tokio::test]
    async fn a_standby_serves_plain_http_on_loopback_only_and_a_cluster_never_advertises_it() {
        let dir = tempfile::tempdir().unwrap();
        let (any, fleet) = ("0.0.0.0:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap());
        let mut config = ControllerConfig::new(dir.path().join("data"), any, fleet);
        config.api_scheme = crate::https::Scheme::Http;
        let Err(e) = Standby::start(&mut config, Arc::default()).await else { panic!("plain HTTP on every address") };
        assert!(format!("{e:#}").contains("plain HTTP only on a loopback address"), "{e:#}");
        config.api = "127.0.0.1:0".parse().unwrap();
        let standby = Standby::start(&mut config, Arc::default()).await.unwrap();
        let Err(e) = super::super::advertised(&config, &standby) else { panic!("an http:// API in a cluster") };
        assert!(e.to_string().contains("over HTTPS only"), "{e}");
        standby.stop().await;
    }
}
