//! Which peers may speak for the client (`trusted_proxies`): their `X-Forwarded-*` and `X-Request-Id` are believed, and the client address follows the same rule.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::proxy::names::X_FORWARDED_FOR;

/// The `trusted_proxies` list: address ranges of the proxies in front of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses one entry: a CIDR range (`10.0.0.0/8`, `fd00::/8`) or a single address.
    pub fn parse_entry(entry: &str) -> Result<IpNet, String> {
        let entry = entry.trim();
        if let Ok(net) = entry.parse::<IpNet>() {
            // 10.1.2.3/8 means the range; written with host bits it is most likely a typo
            // for a single address, and trusting a whole /8 by accident is not harmless.
            if net.trunc() != net {
                return Err(format!(
                    "{entry} has bits set outside its /{} prefix: write the range as {} (or the single address as {})",
                    net.prefix_len(),
                    net.trunc(),
                    net.addr()
                ));
            }
            return Ok(net);
        }
        entry
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{entry:?} is not an IP address or a CIDR range like 10.0.0.0/8"))
    }

    /// The ranges, as parsed.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Every address (what the deprecated `trust_forwarded_headers: true` meant).
    pub fn everyone() -> Self {
        Self::new(vec![
            IpNet::V4(ipnet::Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ])
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4-mapped IPv6 peer (a dual-stack
    /// listener) is matched as the IPv4 address it is.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        if self.nets.is_empty() {
            return false;
        }
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether an `X-Forwarded-For` entry is a proxy of the chain, to be skipped on the way to
    /// the client: in a listed range other than `0.0.0.0/0` / `::/0`. A catch-all range trusts
    /// any peer to report its client, but never makes a client-written entry a hop: the walk
    /// would otherwise end at the leftmost entry, which the client chose.
    fn is_hop(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|n| n.prefix_len() > 0 && n.contains(&ip))
    }

    /// Whether the list trusts every address (`0.0.0.0/0` or `::/0`).
    pub fn trusts_everyone(&self) -> bool {
        self.nets.iter().any(|n| n.prefix_len() == 0)
    }

    /// The ranges.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An `X-Forwarded-For` entry a trusted proxy is answerable for is not an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an X-Forwarded-For entry added by a trusted proxy is not an IP address")]
pub struct BadForwardedFor;

/// The client's address: the one logs, metrics and rate limits use.
///
/// A peer that is not a trusted proxy is the client, whatever headers it sent. A trusted peer
/// appended the address it saw to `X-Forwarded-For`: entries are read from the right (the last
/// line's last entry first), skipping those that are trusted proxies themselves (a chain of
/// proxies; a catch-all `0.0.0.0/0` makes no entry a hop), and the first one that is not is the client — everything to its left is whatever
/// the client sent. A trusted peer without `X-Forwarded-For` is the client; when every entry is
/// a trusted proxy, the leftmost is. An entry that must be read but is not an address (with an
/// optional port, IPv6 optionally bracketed) is refused rather than replaced.
pub fn client_ip(
    headers: &HeaderMap,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) -> Result<IpAddr, BadForwardedFor> {
    if !trusted.trusts(peer.ip()) {
        return Ok(peer.ip());
    }
    let mut client = peer.ip();
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let text = line.to_str().map_err(|_| BadForwardedFor)?;
        for entry in text.rsplit(',') {
            let ip = parse_forwarded_addr(entry.trim()).ok_or(BadForwardedFor)?;
            if !trusted.is_hop(ip) {
                return Ok(ip);
            }
            client = ip;
        }
    }
    Ok(client)
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`.
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = entry.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn peer() -> SocketAddr {
        "10.0.0.1:5555".parse().unwrap()
    }

    fn everyone() -> TrustedProxies {
        TrustedProxies::everyone()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            list.iter()
                .map(|e| TrustedProxies::parse_entry(e).unwrap())
                .collect(),
        )
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn entries_are_ranges_or_addresses_and_typos_are_named() {
        assert_eq!(
            TrustedProxies::parse_entry(" 10.0.0.0/8 ")
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            TrustedProxies::parse_entry("192.0.2.7")
                .unwrap()
                .to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            TrustedProxies::parse_entry("fd00::/8").unwrap().to_string(),
            "fd00::/8"
        );
        let err = TrustedProxies::parse_entry("10.1.2.3/8").unwrap_err();
        assert!(
            err.contains("10.0.0.0/8") && err.contains("10.1.2.3"),
            "{err}"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "proxy.internal",
            "10.0.0.*",
            "10.0.0.0/8,",
        ] {
            assert!(TrustedProxies::parse_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trust_follows_the_list_and_mapped_addresses() {
        let t = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(t.trusts("10.200.0.1".parse().unwrap()));
        assert!(t.trusts("::ffff:10.0.0.9".parse().unwrap()));
        assert!(t.trusts("2001:db8::5".parse().unwrap()));
        assert!(!t.trusts("11.0.0.1".parse().unwrap()));
        assert!(!t.trusts("2001:db9::5".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts("10.0.0.1".parse().unwrap()));
        assert!(!t.trusts_everyone());
        assert!(everyone().trusts_everyone());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            client_ip(&h, peer(), &TrustedProxies::default()),
            Ok(peer().ip())
        );
        assert_eq!(
            client_ip(&h, peer(), &proxies(&["192.168.0.0/16"])),
            Ok(peer().ip())
        );
        // Not even a malformed header is looked at.
        assert_eq!(
            client_ip(&xff(&["garbage"]), peer(), &proxies(&["192.168.0.0/16"])),
            Ok(peer().ip())
        );
        assert_eq!(
            client_ip(&h, peer(), &everyone()),
            Ok("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), peer(), &everyone()),
            Ok(peer().ip())
        );
        // Trusting everyone is trusting the peer's own entry only: never the client-written
        // ones to its left (the walk would otherwise end at the leftmost, forged entry).
        let h = xff(&["6.6.6.6, 10.0.0.2, 203.0.113.9"]);
        assert_eq!(
            client_ip(&h, peer(), &everyone()),
            Ok("203.0.113.9".parse().unwrap())
        );
        let mut both = everyone();
        both.nets
            .push(TrustedProxies::parse_entry("203.0.113.0/24").unwrap());
        assert_eq!(
            client_ip(&h, peer(), &both),
            Ok("10.0.0.2".parse().unwrap())
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let t = proxies(&["10.0.0.0/8"]);
        // CDN edge 198.51.100.2 is not trusted: it is who the trusted LB saw, so the client.
        let h = xff(&["1.1.1.1, 198.51.100.2", "10.0.0.7"]);
        assert_eq!(
            client_ip(&h, peer(), &t),
            Ok("198.51.100.2".parse().unwrap())
        );
        // A forged entry left of the real one changes nothing.
        let h = xff(&["6.6.6.6, 203.0.113.9"]);
        assert_eq!(
            client_ip(&h, peer(), &t),
            Ok("203.0.113.9".parse().unwrap())
        );
        // Every entry a trusted proxy: the leftmost.
        let h = xff(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(client_ip(&h, peer(), &t), Ok("10.0.0.3".parse().unwrap()));
        for (entry, want) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
        ] {
            let h = xff(&[&format!("evil, {entry}")]);
            assert_eq!(
                client_ip(&h, peer(), &t),
                Ok(want.parse().unwrap()),
                "{entry}"
            );
        }
    }

    #[test]
    fn unusable_entries_that_must_be_read_are_refused_not_replaced() {
        for bad in [
            "unknown",
            "",
            "1.2.3.4, ",
            "1.2.3",
            "[1.2.3.4]",
            "example.com",
            "1.2.3.4 5.6.7.8",
            // Past a trusted entry, the next one must be read too.
            "garbage, 10.0.0.5",
        ] {
            assert_eq!(
                client_ip(&xff(&[bad]), peer(), &proxies(&["10.0.0.0/8"])),
                Err(BadForwardedFor),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(client_ip(&h, peer(), &everyone()), Err(BadForwardedFor));
    }

    proptest! {
        #[test]
        fn any_forwarded_header_is_an_address_or_refused(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                let mut h = HeaderMap::new();
                h.insert("x-forwarded-for", v);
                if let Ok(ip) = client_ip(&h, peer(), &everyone()) {
                    let text = String::from_utf8(raw).unwrap();
                    let last = text.rsplit(',').next().unwrap().trim().to_owned();
                    prop_assert!(last.contains(&ip.to_string()) || last.parse::<IpAddr>().is_ok() || last.parse::<SocketAddr>().is_ok());
                }
            }
        }
    }
}
