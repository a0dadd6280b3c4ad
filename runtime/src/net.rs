//! `http` grants: the `host:port` patterns that say where a plugin may send
//! requests, and which addresses count as private.
//!
//! A pattern is `HOST:PORT` (or `*`, any host on any port):
//!
//! - `HOST` is `*` (any name), `*.example.com` (any name under it), a name,
//!   an IP address (`10.0.0.5`, `[fd00::5]`) or a CIDR block (`10.0.0.0/8`,
//!   `[fd00::/8]`);
//! - `PORT` is a number or `*`.
//!
//! Names are matched against the request's host; after name resolution,
//! every address must be public, or covered by an IP or CIDR pattern with
//! the same port. So `*:443` reaches any public HTTPS server but not
//! `localhost`, the cloud metadata address or the office network, while
//! `127.0.0.1:8080` (or `10.0.0.0/8:*`) says explicitly that those private
//! addresses are meant.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// One `host:port` pattern of an `http` grant or policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, kept as `.example.com`.
    Under(String),
    Name(String),
    Net {
        addr: IpAddr,
        prefix: u8,
    },
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("http grant {text:?} is not HOST:PORT ({why})");
        if text == "*" {
            return Ok(Self { host: HostPattern::Any, port: None });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            let port = after.strip_prefix(':').ok_or_else(|| bad("no port after the IPv6 address"))?;
            (HostPattern::net(inside, true).map_err(|e| bad(&e))?, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port; use `*` for any"))?;
            (HostPattern::parse(host).map_err(|e| bad(&e))?, port)
        };
        let port = match port {
            "*" => None,
            p => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad(&format!("port {p:?} is not 1-65535 or `*`"))),
            },
        };
        Ok(Self { host, port })
    }
}

impl HostPattern {
    fn parse(host: &str) -> Result<Self, String> {
        if host == "*" {
            return Ok(Self::Any);
        }
        if host.contains('/') || host.parse::<Ipv4Addr>().is_ok() {
            return Self::net(host, false);
        }
        if host.contains(':') {
            return Err("write an IPv6 address in brackets, as [::1]:8080".into());
        }
        let (under, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!("{host:?} is not a host name, `*` or `*.domain`"));
        }
        let name = name.to_ascii_lowercase();
        Ok(if under { Self::Under(format!(".{name}")) } else { Self::Name(name) })
    }

    /// An address or CIDR block; `v6` when it was written in brackets.
    fn net(text: &str, v6: bool) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = if v6 {
            IpAddr::V6(addr.parse::<Ipv6Addr>().map_err(|_| format!("{addr:?} is not an IPv6 address"))?)
        } else {
            IpAddr::V4(addr.parse::<Ipv4Addr>().map_err(|_| format!("{addr:?} is not an IPv4 address"))?)
        };
        let max = if v6 { 128 } else { 32 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("/{p} is not a prefix length 0-{max}"))?
            }
        };
        Ok(Self::Net { addr: mask(addr, prefix), prefix })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => write!(f, "*")?,
            HostPattern::Under(suffix) => write!(f, "*{suffix}")?,
            HostPattern::Name(name) => write!(f, "{name}")?,
            HostPattern::Net { addr: IpAddr::V4(a), prefix: 32 } => write!(f, "{a}")?,
            HostPattern::Net { addr: IpAddr::V4(a), prefix } => write!(f, "{a}/{prefix}")?,
            HostPattern::Net { addr: IpAddr::V6(a), prefix: 128 } => write!(f, "[{a}]")?,
            HostPattern::Net { addr: IpAddr::V6(a), prefix } => write!(f, "[{a}/{prefix}]")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => write!(f, ":*"),
        }
    }
}

impl Endpoint {
    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether a request to `host` (a name or an IP address, without
    /// brackets) on `port` is granted by this pattern, before resolution.
    pub fn admits_host(&self, host: &str, port: u16) -> bool {
        if !self.port_matches(port) {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match (&self.host, host.parse::<IpAddr>()) {
            (HostPattern::Any, _) => true,
            (HostPattern::Net { .. }, Ok(ip)) => self.admits_address(SocketAddr::new(ip, port)),
            (HostPattern::Net { .. }, Err(_)) => false,
            (_, Ok(_)) => false,
            (HostPattern::Under(suffix), Err(_)) => host.ends_with(suffix.as_str()),
            (HostPattern::Name(name), Err(_)) => host == *name,
        }
    }

    /// Whether this is an IP or CIDR pattern covering `addr`: the explicit
    /// grant a private or loopback address needs.
    pub fn admits_address(&self, addr: SocketAddr) -> bool {
        let HostPattern::Net { addr: net, prefix } = &self.host else { return false };
        self.port_matches(addr.port()) && same_family(canonical(addr.ip()), *net).is_some_and(|ip| mask(ip, *prefix) == *net)
    }

    /// Whether everything `other` grants is also granted by `self`: how an
    /// agent's policy judges a pipeline's grant. An IP or CIDR grant (the
    /// only way to reach a private address) passes only an IP or CIDR
    /// pattern that contains it: a policy of `*:443` means public HTTPS,
    /// not the agent's own network.
    pub fn covers(&self, other: &Endpoint) -> bool {
        let ports = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        ports
            && match (&self.host, &other.host) {
                (HostPattern::Any, HostPattern::Net { .. }) => false,
                (HostPattern::Any, _) => true,
                (HostPattern::Under(a), HostPattern::Under(b)) => b == a || b.ends_with(a.as_str()),
                (HostPattern::Under(a), HostPattern::Name(b)) => {
                    format!(".{b}").ends_with(a.as_str()) && b.len() + 1 > a.len()
                }
                (HostPattern::Name(a), HostPattern::Name(b)) => a == b,
                (HostPattern::Net { addr: a, prefix: pa }, HostPattern::Net { addr: b, prefix: pb }) => {
                    pb >= pa && same_family(*b, *a).is_some_and(|b| mask(b, *pa) == *a)
                }
                _ => false,
            }
    }
}

impl Endpoint {
    /// Like [`Endpoint::covers`], for what a plugin declares: there `*`
    /// (any host) also takes IP and CIDR grants, since whether a private
    /// address may be reached is the pipeline's and the agent's to say, not
    /// the plugin's.
    fn takes(&self, grant: &Endpoint) -> bool {
        match self.host {
            HostPattern::Any => self.port.is_none_or(|p| grant.port == Some(p)),
            _ => self.covers(grant),
        }
    }
}

/// The `http` grants a plugin gets from what it declared and what it was
/// granted: each grant inside a declaration, and each declaration inside a
/// grant (a plugin that declares `api.github.com:443` granted `*:443` gets
/// `api.github.com:443`). A declaration of `*` takes every grant.
pub fn intersect(declared: &[String], granted: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut keep = |g: &String| {
        if !out.contains(g) {
            out.push(g.clone());
        }
    };
    for g in granted {
        if declared.iter().any(|d| d == "*" || d == g) {
            keep(g);
            continue;
        }
        let Ok(grant) = g.parse::<Endpoint>() else { continue };
        for d in declared {
            let Ok(declaration) = d.parse::<Endpoint>() else { continue };
            if declaration.takes(&grant) {
                keep(g);
            } else if grant.covers(&declaration) {
                keep(d);
            }
        }
    }
    out
}

/// Parses every pattern of a grant, naming each bad one.
pub fn parse_grants(grants: &[String]) -> Result<Vec<Endpoint>, String> {
    let mut errors = Vec::new();
    let parsed: Vec<Endpoint> = grants.iter().filter_map(|g| g.parse().map_err(|e| errors.push(e)).ok()).collect();
    if errors.is_empty() { Ok(parsed) } else { Err(errors.join("; ")) }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_private() {
                Some("a private address")
            } else if a.is_link_local() {
                Some("a link-local address (cloud metadata lives here)")
            } else if b0 == 100 && (64..128).contains(&b1) {
                Some("a carrier-grade NAT address")
            } else if a.is_unspecified() || b0 == 0 {
                Some("an unspecified address")
            } else if a.is_broadcast() || a.is_multicast() || b0 >= 240 {
                Some("a broadcast, multicast or reserved address")
            } else if a.is_documentation() || (b0 == 198 && (b1 == 18 || b1 == 19)) {
                Some("a documentation or benchmarking address")
            } else if b0 == 192 && b1 == 0 && a.octets()[2] == 0 {
                Some("an IETF protocol assignment address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_unspecified() {
                Some("an unspecified address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private (unique local) address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if first & 0xffc0 == 0xfec0 {
                Some("a site-local address")
            } else if a.is_multicast() {
                Some("a multicast address")
            } else if first == 0x2001 && a.segments()[1] == 0x0db8 {
                Some("a documentation address")
            } else if a.segments()[..6] == [0, 0, 0, 0, 0, 0] || first == 0x0064 {
                // IPv4-compatible and NAT64 forms could smuggle any IPv4
                // address past the checks above.
                Some("an IPv4-embedding address")
            } else {
                None
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip` when it is of the same family as `like`.
fn same_family(ip: IpAddr, like: IpAddr) -> Option<IpAddr> {
    (ip.is_ipv4() == like.is_ipv4()).then_some(ip)
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// A request refused after resolution: the plugin learns what kind of
/// address its destination resolved to, the action's log also which one (a
/// plugin must not be able to map internal names to addresses).
#[derive(Debug)]
pub struct Refusal {
    pub for_plugin: String,
    pub for_log: String,
}

/// An action's parsed `http` grants.
#[derive(Debug, Clone, Default)]
pub struct HttpGrants(Vec<Endpoint>);

impl HttpGrants {
    /// The grants of an action. Patterns that do not parse grant nothing
    /// (the controller refuses them when a pipeline is created).
    pub fn new(grants: &[String]) -> Self {
        Self(grants.iter().filter_map(|g| g.parse().ok()).collect())
    }

    /// Checks a request's host and port before resolution.
    pub fn authorize(&self, host: &str, port: u16) -> Result<(), String> {
        if self.0.is_empty() {
            return Err(format!(
                "http to {} is not granted to this action: it has no http grant (grant it with \
                 \"capabilities\": {{\"http\": [\"{}\"]}})",
                authority(host, port),
                authority(host, port)
            ));
        }
        if self.0.iter().any(|g| g.admits_host(host, port)) {
            return Ok(());
        }
        let granted: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        Err(format!("http to {} is not granted to this action (granted: {})", authority(host, port), granted.join(", ")))
    }

    /// The resolved addresses the request may connect to, in resolution
    /// order: public ones, and private ones an IP or CIDR grant names.
    pub fn admit(&self, host: &str, port: u16, resolved: &[SocketAddr]) -> Result<Vec<SocketAddr>, Refusal> {
        let mut refused = None;
        let addresses: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|addr| match special_address(addr.ip()) {
                None => true,
                Some(kind) => {
                    let ok = self.0.iter().any(|g| g.admits_address(*addr));
                    if !ok && refused.is_none() {
                        refused = Some((addr.ip(), kind));
                    }
                    ok
                }
            })
            .collect();
        if !addresses.is_empty() {
            return Ok(addresses);
        }
        let target = authority(host, port);
        let Some((ip, kind)) = refused else {
            let message = format!("http to {target}: the name resolved to no address");
            return Err(Refusal { for_plugin: message.clone(), for_log: message });
        };
        let literal = match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            v4 => format!("{v4}:{port}"),
        };
        let need = "private and loopback addresses need an IP or CIDR grant naming them";
        if host.parse::<IpAddr>().is_ok() {
            let message = format!("http to {target} is refused: it is {kind}; {need}, such as \"{literal}\"");
            return Err(Refusal { for_plugin: message.clone(), for_log: message });
        }
        Err(Refusal {
            for_plugin: format!(
                "http to {target} is refused: the name resolves to {kind}; {need} (the action's log names the address)"
            ),
            for_log: format!(
                "http to {target} is refused: the name resolves to {ip}, {kind}; {need}, such as \"{literal}\""
            ),
        })
    }
}

/// `host:port` for messages, with a host of any length the plugin chose cut
/// to what a DNS name can be.
fn authority(host: &str, port: u16) -> String {
    const MAX: usize = 253;
    let host = match host.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &host[..cut]),
        None => host.to_string(),
    };
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_parse_and_bad_ones_say_why() {
        for good in [
            "*",
            "*:*",
            "api.example.com:443",
            "*.example.com:*",
            "10.0.0.0/8:443",
            "127.0.0.1:8080",
            "[::1]:80",
            "[fd00::/8]:*",
        ] {
            assert!(good.parse::<Endpoint>().is_ok(), "{good}");
        }
        assert_eq!(ep("API.Example.com:443").to_string(), "api.example.com:443");
        assert_eq!(ep("10.1.2.3/8:*").to_string(), "10.0.0.0/8:*");
        for (bad, why) in [
            ("example.com", "no port"),
            ("example.com:http", "not 1-65535"),
            ("example.com:0", "not 1-65535"),
            ("::1:80", "brackets"),
            ("[::1:80", "without `]`"),
            ("10.0.0.0/33:80", "prefix length"),
            ("exa mple.com:80", "not a host name"),
            ("a..b:80", "not a host name"),
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = parse_grants(&["ok.example:1".into(), "x".into(), "y:z".into()]).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("\"y:z\""), "{e}");
    }

    #[test]
    fn hosts_match_names_wildcards_and_ports() {
        assert!(ep("api.example.com:443").admits_host("API.example.com.", 443));
        assert!(!ep("api.example.com:443").admits_host("api.example.com", 80));
        assert!(ep("*.example.com:443").admits_host("a.b.example.com", 443));
        assert!(!ep("*.example.com:443").admits_host("example.com", 443));
        assert!(!ep("*.example.com:443").admits_host("evilexample.com", 443));
        assert!(ep("*:443").admits_host("anything.test", 443));
        assert!(ep("*:443").admits_host("127.0.0.1", 443), "names are checked again after resolution");
        assert!(!ep("*.example.com:*").admits_host("10.0.0.1", 80), "a name pattern never matches an IP literal");
        assert!(ep("10.0.0.0/8:*").admits_host("10.9.8.7", 80));
        assert!(!ep("10.0.0.0/8:*").admits_host("internal.example", 80));
    }

    #[test]
    fn private_addresses_need_an_ip_grant_after_resolution() {
        let g = HttpGrants::new(&["*:*".into()]);
        g.authorize("localhost", 8080).unwrap();
        let e = g.admit("localhost", 8080, &[addr("127.0.0.1:8080")]).unwrap_err();
        assert!(e.for_log.contains("resolves to 127.0.0.1") && e.for_log.contains("\"127.0.0.1:8080\""), "{e:?}");
        assert!(e.for_plugin.contains("resolves to a loopback address") && !e.for_plugin.contains("127.0.0.1"), "{e:?}");
        let e = g.admit("169.254.169.254", 80, &[addr("169.254.169.254:80")]).unwrap_err();
        assert!(e.for_plugin.contains("link-local") && e.for_plugin.contains("\"169.254.169.254:80\""), "{e:?}");
        assert!(g.admit("x", 80, &[addr("192.0.0.8:80")]).is_err());
        assert!(g.admit("x", 80, &[addr("[fec0::1]:80")]).is_err());
        assert!(g.admit("x", 80, &[addr("[::ffff:10.0.0.1]:80")]).is_err(), "IPv4-mapped private");
        assert!(g.admit("x", 80, &[addr("[::1]:80")]).is_err());
        assert!(g.admit("x", 80, &[addr("[fd12::1]:80")]).is_err());
        assert!(g.admit("x", 80, &[addr("[64:ff9b::a00:1]:80")]).is_err(), "NAT64");
        // Public addresses pass; a mixed answer keeps only the public ones.
        let ok = g.admit("x", 443, &[addr("10.0.0.1:443"), addr("93.184.215.14:443")]).unwrap();
        assert_eq!(ok, [addr("93.184.215.14:443")]);

        let explicit = HttpGrants::new(&["127.0.0.1:8080".into(), "localhost:8080".into()]);
        explicit.authorize("localhost", 8080).unwrap();
        assert_eq!(explicit.admit("localhost", 8080, &[addr("127.0.0.1:8080")]).unwrap().len(), 1);
        assert!(explicit.admit("localhost", 8081, &[addr("127.0.0.1:8081")]).is_err(), "other port");
        let cidr = HttpGrants::new(&["[fd00::/8]:*".into()]);
        assert!(cidr.admit("fd12::1", 80, &[addr("[fd12::1]:80")]).is_ok());
    }

    #[test]
    fn refusals_name_the_host_and_the_grants() {
        let long = "a".repeat(100_000);
        let e = HttpGrants::new(&[]).authorize(&long, 443).unwrap_err();
        assert!(e.len() < 1000, "a host the plugin chose is cut: {} bytes", e.len());
        let none = HttpGrants::new(&[]);
        let e = none.authorize("api.example.com", 443).unwrap_err();
        assert!(e.contains("api.example.com:443") && e.contains("no http grant"), "{e}");
        let some = HttpGrants::new(&["a.example:443".into()]);
        let e = some.authorize("b.example", 443).unwrap_err();
        assert!(e.contains("b.example:443") && e.contains("granted: a.example:443"), "{e}");
    }

    #[test]
    fn a_plugin_gets_the_overlap_of_its_declaration_and_the_grant() {
        let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(intersect(&v(&["api.github.com:443"]), &v(&["*:443"])), v(&["api.github.com:443"]));
        assert_eq!(
            intersect(&v(&["*.github.com:443"]), &v(&["api.github.com:443", "evil.test:443"])),
            v(&["api.github.com:443"])
        );
        assert_eq!(intersect(&v(&["*"]), &v(&["10.0.0.0/8:*", "x.test:80"])), v(&["10.0.0.0/8:*", "x.test:80"]));
        assert_eq!(intersect(&v(&["*:443"]), &v(&["10.0.0.5:443", "10.0.0.5:80"])), v(&["10.0.0.5:443"]));
        assert!(intersect(&v(&["api.github.com:443"]), &v(&["api.github.com:80"])).is_empty());
        assert!(intersect(&v(&[]), &v(&["*"])).is_empty());
    }

    #[test]
    fn a_policy_covers_narrower_grants_only() {
        assert!(!ep("*").covers(&ep("10.0.0.0/8:1")), "private networks need a policy naming them");
        assert!(!ep("*:443").covers(&ep("169.254.169.254:443")));
        assert!(ep("0.0.0.0/0:*").covers(&ep("169.254.169.254:443")));
        assert!(ep("*").covers(&ep("*.example.com:443")));
        assert!(ep("*.example.com:443").covers(&ep("api.example.com:443")));
        assert!(ep("*.example.com:443").covers(&ep("*.api.example.com:443")));
        assert!(!ep("*.example.com:443").covers(&ep("example.com:443")));
        assert!(!ep("*.example.com:443").covers(&ep("*.example.com:*")));
        assert!(!ep("api.example.com:443").covers(&ep("*.example.com:443")));
        assert!(ep("10.0.0.0/8:*").covers(&ep("10.1.0.0/16:80")));
        assert!(!ep("10.1.0.0/16:*").covers(&ep("10.0.0.0/8:80")));
        assert!(!ep("*.example.com:*").covers(&ep("10.0.0.1:80")));
    }
}
