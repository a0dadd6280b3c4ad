//! Where notifications go and where they may not: a target's kind and URL,
//! the URL as lists show it (scheme and host only: a Slack URL's path is
//! its secret), and the address policy against server-side request forgery
//! (whoever may create a rule could otherwise make the controller POST to
//! its cloud's metadata service or an internal admin port). Pure.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetType {
    /// The payload as JSON, signed (HMAC-SHA256 over `TIMESTAMP.BODY`).
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack,
}

impl TargetType {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "webhook" => Ok(Self::Webhook),
            "slack" => Ok(Self::Slack),
            other => Err(format!("unknown target type {other:?}: expected webhook or slack")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "Webhook",
            Self::Slack => "Slack",
        }
    }
}

/// Which addresses targets may have (`sluice controller` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// `--notification-allow-http`: plain `http://` targets.
    pub allow_http: bool,
    /// `--notification-allow-private`: loopback and private networks.
    pub allow_private: bool,
}

/// The longest target URL taken.
const MAX_URL: usize = 2048;

/// Checks a target URL: https (or http when allowed), a host, no
/// fragment, and when the host is an IP literal, one the policy allows.
/// Host names are checked again, resolved, at every delivery.
pub fn check_url(text: &str, policy: AddressPolicy) -> Result<reqwest::Url, String> {
    if text.len() > MAX_URL {
        return Err(format!("a target URL is at most {MAX_URL} bytes"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| format!("target URL is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => {
            return Err(
                "a target URL must be https:// (plain http:// needs the controller's --notification-allow-http)".into()
            );
        }
        other => return Err(format!("a target URL must be https://, not {other}://")),
    }
    if url.fragment().is_some() {
        return Err("a target URL has no #fragment".into());
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("a target URL needs a host")?;
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        check_ip(ip, policy)?;
    }
    Ok(url)
}

/// What lists show of a target URL: `https://hooks.slack.com` (with the
/// port when it is not the scheme's): never the path, query or user info.
pub fn display(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Whether the controller may connect to `ip`. Link-local (cloud metadata
/// services live at 169.254.169.254 and fd00:ec2::254), unspecified,
/// multicast and broadcast addresses are refused always; loopback and
/// private networks unless `allow_private`.
pub fn check_ip(ip: IpAddr, policy: AddressPolicy) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let never = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    };
    if never {
        return Err(format!("address {ip} is link-local, unspecified, multicast or a metadata service: never a target"));
    }
    if !policy.allow_private && is_private(ip) {
        return Err(format!(
            "address {ip} is loopback or private: allowed only with the controller's --notification-allow-private"
        ));
    }
    Ok(())
}

/// The IPv4 address an IPv6 address stands for: mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), well-known NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002:AABB:CCDD::/48`) reach the IPv4 host, so that host is
/// what the policy judges.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // IPv4-compatible (deprecated, but routed by some stacks); not :: or ::1.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(from(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from(hi, lo)),
        [0x2002, hi, lo, ..] => Some(from(hi, lo)),
        _ => None,
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || a == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // IETF protocol assignments, benchmarking, reserved.
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        // Loopback, unique local addresses (fc00::/7) and local-use NAT64
        // (64:ff9b:1::/48, which reaches a private IPv4 network).
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: AddressPolicy = AddressPolicy { allow_http: false, allow_private: false };
    const OPEN: AddressPolicy = AddressPolicy { allow_http: true, allow_private: true };

    #[test]
    fn urls_are_https_with_a_host() {
        assert!(check_url("https://hooks.example.com/T0/B0/secret", STRICT).is_ok());
        assert!(check_url("http://hooks.example.com/x", STRICT).unwrap_err().contains("--notification-allow-http"));
        assert!(check_url("http://hooks.example.com/x", OPEN).is_ok());
        assert!(check_url("ftp://hooks.example.com/x", OPEN).unwrap_err().contains("ftp"));
        assert!(check_url("https://hooks.example.com/x#frag", OPEN).is_err());
        assert!(check_url("not a url", OPEN).is_err());
        assert!(check_url(&format!("https://h.example/{}", "a".repeat(3000)), OPEN).is_err());
    }

    #[test]
    fn metadata_and_link_local_are_never_targets() {
        for url in [
            "https://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
            "https://[fd00:ec2::254]/",
            "https://0.0.0.0/",
            "https://[::ffff:169.254.169.254]/",
            "https://224.0.0.1/",
        ] {
            assert!(check_url(url, OPEN).is_err(), "{url}");
        }
    }

    #[test]
    fn private_addresses_need_the_flag() {
        for url in [
            "https://127.0.0.1:8443/",
            "https://10.1.2.3/",
            "https://192.168.0.9/",
            "https://[::1]/",
            "https://[fd12::1]/",
            "https://100.64.0.1/",
        ] {
            assert!(check_url(url, STRICT).unwrap_err().contains("--notification-allow-private"), "{url}");
            assert!(check_url(url, OPEN).is_ok(), "{url}");
        }
        assert!(check_url("https://8.8.8.8/", STRICT).is_ok());
    }

    #[test]
    fn ipv6_forms_of_an_ipv4_address_are_judged_as_that_address() {
        for text in ["::ffff:169.254.169.254", "::169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(check_ip(ip, STRICT).unwrap_err().contains("never a target"), "{text}");
        }
        for text in ["::ffff:10.0.0.5", "::10.0.0.5", "64:ff9b::a00:5", "2002:0a00:0005::1", "64:ff9b:1::1", "198.18.0.1"] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(check_ip(ip, STRICT).unwrap_err().contains("private"), "{text}");
        }
        assert!(check_ip("2002:5db8:d822::1".parse().unwrap(), STRICT).is_ok(), "6to4 of a public address");
        assert!(check_ip("::1".parse().unwrap(), STRICT).unwrap_err().contains("private"));
    }

    #[test]
    fn lists_show_scheme_and_host_only() {
        let url = check_url("https://user:pw@hooks.slack.com/services/T0/B0/XXXX?x=1", STRICT).unwrap();
        assert_eq!(display(&url), "https://hooks.slack.com");
        let url = check_url("https://127.0.0.1:8443/hook/secret", OPEN).unwrap();
        assert_eq!(display(&url), "https://127.0.0.1:8443");
        assert_eq!(TargetType::parse("Slack"), Ok(TargetType::Slack));
        assert!(TargetType::parse("sns").is_err());
    }
}
