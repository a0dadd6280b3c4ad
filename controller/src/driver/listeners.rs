//! The controller's HTTP listeners as the driver starts them: the API
//! and, with `--webhook-listen`, the webhook listener, bound after the
//! plain-HTTP check, served by [`crate::https`], and `controller.json`,
//! which tells clients where they are.

use super::ControllerConfig;
use crate::ca::Ca;
use anyhow::{Context as _, Result};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The bound HTTP listeners and the TLS they speak.
pub(super) struct Listeners {
    pub(super) api: tokio::net::TcpListener,
    api_scheme: crate::https::Scheme,
    webhooks: Option<(tokio::net::TcpListener, crate::https::Scheme)>,
    tls: Option<crate::https::Tls>,
}

/// Binds the API and, when asked, the webhook listener; loads or issues
/// the certificate when either speaks TLS. Plain HTTP off loopback is
/// refused before anything is bound.
pub(super) async fn bind(config: &ControllerConfig, ca: &Arc<Ca>) -> Result<Listeners> {
    use crate::https::{Scheme, Tls, check_listener};
    check_listener(config.api, config.api_scheme, "--api-plain-http").map_err(anyhow::Error::msg)?;
    let mut binds = vec![config.api];
    if let Some((addr, scheme)) = config.webhook_listen {
        check_listener(addr, scheme, "--webhook-plain-http").map_err(anyhow::Error::msg)?;
        binds.push(addr);
    }
    let any_tls = config.api_scheme == Scheme::Https || config.webhook_listen.is_some_and(|(_, s)| s == Scheme::Https);
    let tls = if any_tls { Some(Tls::start(ca.clone(), &config.api_cert, &binds)?) } else { None };
    let api = crate::https::bind_reusable(config.api).with_context(|| format!("binding the API port {}", config.api))?;
    let webhooks = match config.webhook_listen {
        Some((addr, scheme)) => {
            Some((crate::https::bind_reusable(addr).with_context(|| format!("binding the webhook port {addr}"))?, scheme))
        }
        None => None,
    };
    Ok(Listeners { api, api_scheme: config.api_scheme, webhooks, tls })
}

impl Listeners {
    /// The API's certificate, when a listener speaks TLS (its expiry is a metric).
    pub(super) fn api_cert(&self) -> Option<Arc<crate::https::ServerCert>> {
        self.tls.as_ref().map(|t| t.cert.clone())
    }

    pub(super) fn webhook_base(&self) -> Result<crate::aws::WebhookBase> {
        Ok(match &self.webhooks {
            Some((listener, scheme)) => crate::aws::WebhookBase::Own(listener.local_addr()?, *scheme),
            None => crate::aws::WebhookBase::Api(self.api_scheme),
        })
    }

    /// Serves the routes: the API (without deliveries when the webhook
    /// listener serves them). Returns the API's URL and the webhook
    /// listener's address and scheme.
    pub(super) fn serve(self, state: crate::api::ApiState) -> Result<(String, Option<(SocketAddr, crate::https::Scheme)>)> {
        use crate::https::{Scheme, serve};
        let acceptor = |scheme: Scheme| match scheme {
            Scheme::Https => self.tls.as_ref().map(|t| t.acceptor.clone()),
            Scheme::Http => None,
        };
        let api = reachable(self.api.local_addr()?);
        let api_url = format!("{}://{api}", self.api_scheme.as_str());
        let mut webhooks = None;
        let router = match self.webhooks {
            Some((listener, scheme)) => {
                webhooks = Some((reachable(listener.local_addr()?), scheme));
                tokio::spawn(serve(listener, crate::api::webhook_router(state.clone()), acceptor(scheme), "webhooks"));
                crate::api::router_without_webhooks(state)
            }
            None => crate::api::router(state),
        };
        tokio::spawn(serve(self.api, router, acceptor(self.api_scheme), "api"));
        Ok((api_url, webhooks))
    }
}

/// An address a local client can reach and the certificate names: a
/// listener on every address (`0.0.0.0`, `::`) is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    }
}

/// `controller.json`: where the API, the fleet port and the webhook
/// listener are, and the CA file that verifies the API (when the
/// controller's CA issued its certificate). Written whole or not at all.
pub(super) fn write_addresses(
    dir: &Path,
    config: &ControllerConfig,
    api_url: &str,
    fleet: SocketAddr,
    ca_file: &Path,
    webhooks: Option<(SocketAddr, crate::https::Scheme)>,
) -> Result<()> {
    let mut addresses = json!({ "api": api_url, "fleet": fleet.to_string() });
    if config.api_scheme == crate::https::Scheme::Https && matches!(config.api_cert, crate::https::CertSource::Ca { .. }) {
        addresses["ca"] = json!(ca_file.display().to_string());
    }
    if let Some((addr, scheme)) = webhooks {
        addresses["webhooks"] = json!(format!("{}://{addr}", scheme.as_str()));
    }
    let path = dir.join("controller.json");
    let temp = dir.join("controller.json.tmp");
    std::fs::write(&temp, serde_json::to_string_pretty(&addresses)? + "\n")
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
