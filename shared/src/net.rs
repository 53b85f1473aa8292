//! Which network addresses the service may reach on a user's behalf (SSRF).
//!
//! A URL a user hands us (a repository, a callback) must not lead a worker or the API
//! to loopback, a private network, link-local addresses or a cloud metadata service.
//! The host is resolved and every address it resolves to is checked; operators can
//! allow-list hosts or networks that are internal on purpose (a self-hosted git server).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::env::{self, ConfigError, Source};

/// What user-given URLs may reach, as the API and the worker both check it:
/// `URL_ALLOWLIST` (hosts and networks allowed although internal) and `ALLOW_HTTP_URLS`
/// (plain http repository and callback URLs).
#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    pub allowlist: AllowList,
    pub allow_http: bool,
}

impl OutboundConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            allowlist: AllowList::parse(&src.get("URL_ALLOWLIST").unwrap_or_default())
                .map_err(|why| ConfigError::malformed("URL_ALLOWLIST", why))?,
            allow_http: env::parse_bool(src, "ALLOW_HTTP_URLS", false)?,
        })
    }
}

/// Hosts and networks exempt from the address check (`URL_ALLOWLIST`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    networks: Vec<IpNet>,
}

impl AllowList {
    /// Parses a comma-separated list of host names (`git.internal`), IP addresses and
    /// CIDR networks (`10.1.0.0/16`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(net) = item.parse::<IpNet>() {
                list.networks.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                list.networks.push(IpNet::from(ip));
            } else if is_host_name(item) {
                list.hosts.push(item.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{item:?} is neither a host name, an address nor a network"
                ));
            }
        }
        Ok(list)
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the host {0:?} could not be resolved")]
    Unresolvable(String),
    #[error(
        "the host {host:?} resolves to {kind} address {ip}, which is not reachable from this service"
    )]
    Forbidden {
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
}

/// Why an address is off limits, or `None` for a public address.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks).
            if seg[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return forbidden_v4(Ipv4Addr::new(
                    (seg[6] >> 8) as u8,
                    seg[6] as u8,
                    (seg[7] >> 8) as u8,
                    seg[7] as u8,
                ))
                .or(Some("an IPv4-compatible"));
            }
            if v6.is_loopback() {
                Some("a loopback")
            } else if v6.is_unspecified() {
                Some("an unspecified")
            } else if v6.is_multicast() {
                Some("a multicast")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("a link-local")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                // Unique local addresses, which include AWS's fd00:ec2::254 metadata.
                Some("a private")
            } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
                // NAT64 (well-known and local-use prefixes) can reach any IPv4 address,
                // private ones included.
                Some("a NAT64")
            } else if seg[0] == 0x2002 {
                // 6to4 carries an IPv4 address in bits 16..48.
                Some("a 6to4")
            } else if seg[0] == 0x2001 && seg[1] == 0 {
                // Teredo tunnels to an (obfuscated) IPv4 address.
                Some("a Teredo")
            } else if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
                // SIIT translated addresses (::ffff:0:a.b.c.d).
                Some("an IPv4-translated")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("a documentation")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified")
    } else if ip.is_private() {
        Some("a private")
    } else if ip.is_link_local() {
        // 169.254.169.254 is the metadata service of most clouds.
        Some("a link-local or metadata")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a carrier-grade NAT")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("a broadcast, multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) {
        Some("a documentation or benchmarking")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("a protocol-assignment")
    } else {
        None
    }
}

/// [`check_host`] for the host and port (the scheme's default when absent) of `url`.
pub async fn check_url(
    url: &url::Url,
    allow: &AllowList,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, AddressError> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    check_host(host, port, allow, timeout).await
}

/// Checks that `host` (a name or an address literal) reaches only public addresses,
/// unless the allow-list covers it. Resolution is bounded by `timeout`.
pub async fn check_host(
    host: &str,
    port: u16,
    allow: &AllowList,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, AddressError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let lookup = tokio::net::lookup_host((bare, port));
        match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(found)) => found.collect(),
            _ => return Err(AddressError::Unresolvable(bare.to_owned())),
        }
    };
    if addrs.is_empty() {
        return Err(AddressError::Unresolvable(bare.to_owned()));
    }
    if allow.allows_host(bare) {
        return Ok(addrs);
    }
    for addr in &addrs {
        let ip = addr.ip();
        if allow.allows_ip(ip) {
            continue;
        }
        if let Some(kind) = forbidden_kind(ip) {
            return Err(AddressError::Forbidden {
                host: bare.to_owned(),
                ip,
                kind,
            });
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "::7f00:1",
            "::a00:1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
            "::ffff:0:a00:1",
            "224.0.0.1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(forbidden_kind(ip).is_some(), "{bad} should be refused");
        }
        for good in ["140.82.112.3", "8.8.8.8", "2606:4700::1111"] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(forbidden_kind(ip), None, "{good} should pass");
        }
    }

    #[tokio::test]
    async fn allow_list_admits_named_hosts_and_networks() {
        let none = AllowList::default();
        let t = Duration::from_secs(2);
        assert!(matches!(
            check_host("127.0.0.1", 80, &none, t).await,
            Err(AddressError::Forbidden { .. })
        ));
        assert!(matches!(
            check_host("localhost", 80, &none, t).await,
            Err(AddressError::Forbidden { .. })
        ));
        let nets = AllowList::parse("127.0.0.0/8").unwrap();
        assert!(check_host("127.0.0.1", 80, &nets, t).await.is_ok());
        let hosts = AllowList::parse("LocalHost").unwrap();
        assert!(check_host("localhost", 80, &hosts, t).await.is_ok());
        assert!(AllowList::parse("not a host!").is_err());
    }
}
