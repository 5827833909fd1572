//! `--trusted-proxies`: behind a proxy or load balancer every client's TCP
//! peer is the proxy, so logs and the per-address limit would see one
//! client. When the peer is in the trusted list, the client's address is
//! taken from `Forwarded` (RFC 7239) or `X-Forwarded-For`: the right-most
//! address that is not itself a trusted proxy (the proxy appends the
//! address it saw, so everything to its left could be forged by the
//! client). From any other peer the headers are ignored. Socket-free.

use std::net::IpAddr;

/// A network: an address and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(text: &str) -> Result<Net, String> {
        let bad = || format!("{text:?} is not an address or a CIDR (10.0.0.0/8, ::1, fd00::/8)");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Net { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), 32, self.prefix) == masked(u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits >> (width - u32::from(prefix))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Net>,
    written: Vec<String>,
}

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDRs.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let written: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let nets = written.iter().map(|s| Net::parse(s)).collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets, written })
    }

    /// The list as written (`None`: empty).
    pub fn written(&self) -> Option<String> {
        (!self.written.is_empty()).then(|| self.written.join(","))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client behind trusted proxy `peer`, from the `Forwarded` values
    /// (preferred) or else the `X-Forwarded-For` ones, in header order;
    /// `None` if the peer is not trusted or the headers name no address.
    pub fn client(&self, peer: IpAddr, forwarded: &[String], x_forwarded_for: &[String]) -> Option<IpAddr> {
        if !self.contains(peer) {
            return None;
        }
        let hops: Vec<IpAddr> = if forwarded.is_empty() {
            x_forwarded_for
                .iter()
                .flat_map(|v| v.split(','))
                .filter_map(|h| parse_hop(h.trim()))
                .collect()
        } else {
            forwarded
                .iter()
                .flat_map(|v| v.split(','))
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then(|| parse_hop(v.trim()))?
                    })
                })
                .collect()
        };
        // Right to left: the first hop that is not one of our proxies.
        let client = hops.iter().rev().find(|ip| !self.contains(**ip)).or(hops.first())?;
        Some(canonical(*client))
    }
}

/// One hop: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:5678`, `"[::1]:5678"`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let t = text.trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    t.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nets_match_by_prefix_and_mapped_addresses_count_as_ipv4() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7, fd00::/8").unwrap();
        for yes in ["10.1.2.3", "192.168.1.7", "fd12::1", "::ffff:10.0.0.1"] {
            assert!(t.contains(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "fe80::1", "127.0.0.1"] {
            assert!(!t.contains(ip(no)), "{no}");
        }
        assert_eq!(t.written().unwrap(), "10.0.0.0/8,192.168.1.7,fd00::/8");
        for bad in ["10.0.0.0/33", "nowhere", "::1/129", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_hop_that_is_not_a_proxy() {
        let t = TrustedProxies::parse("127.0.0.1,10.0.0.0/8").unwrap();
        let peer = ip("127.0.0.1");
        // A client that forged the left part gains nothing.
        let xff = v(&["6.6.6.6, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(t.client(peer, &[], &xff), Some(ip("203.0.113.9")));
        // Forwarded wins over X-Forwarded-For; ports and brackets are fine.
        let fwd = v(&[r#"for=198.51.100.1;proto=https, for="[2001:db8::1]:4711""#]);
        assert_eq!(t.client(peer, &fwd, &xff), Some(ip("2001:db8::1")));
        // Every hop a proxy: the left-most.
        assert_eq!(t.client(peer, &[], &v(&["10.0.0.1, 10.0.0.2"])), Some(ip("10.0.0.1")));
        // Not from a trusted peer, or nothing usable: ignored.
        assert_eq!(t.client(ip("203.0.113.1"), &[], &xff), None);
        assert_eq!(t.client(peer, &[], &v(&["unknown"])), None);
        assert_eq!(t.client(peer, &[], &[]), None);
        assert_eq!(
            t.client(peer, &[], &v(&["198.51.100.2:1234"])),
            Some(ip("198.51.100.2"))
        );
    }
}
