//! The server under test: a `ws://` URL resolved to an address, a `Host` header and a path.

use std::net::{SocketAddr, ToSocketAddrs};

/// Where every connection of a run goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The resolved address (the first IPv4 one if there are several).
    pub addr: SocketAddr,
    /// The `Host` header value: the URL's authority.
    pub host: String,
    /// The request target: path and query, with `token=` appended if asked.
    pub path: String,
}

impl Target {
    /// Parses `ws://host[:port][/path][?query]`; `token`, if given, is appended to the query.
    pub fn parse(url: &str, token: Option<&str>) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let mut path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        // `host:port`, `host`, `[v6]:port` or `[v6]`.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?),
            _ => (authority, 80),
        };
        let host_only = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host_only, port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {host_only}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{url}: {host_only} has no address"))?;
        if let Some(token) = token {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str("token=");
            percent_encode(token, &mut path);
        }
        Ok(Target {
            addr,
            host: authority.to_string(),
            path,
        })
    }
}

/// Appends `s` with everything but RFC 3986 unreserved characters percent-encoded
/// (a JWT is base64url and passes through unchanged).
fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_tokens_append() {
        let t = Target::parse("ws://127.0.0.1:9101/ws", None).unwrap();
        assert_eq!(
            (t.addr.port(), t.host.as_str(), t.path.as_str()),
            (9101, "127.0.0.1:9101", "/ws")
        );
        let t = Target::parse("ws://127.0.0.1:1/ws?x=1", Some("a.b+c")).unwrap();
        assert_eq!(t.path, "/ws?x=1&token=a.b%2Bc");
        let t = Target::parse("ws://127.0.0.1:1", Some("t")).unwrap();
        assert_eq!(t.path, "/?token=t");
        assert!(Target::parse("wss://127.0.0.1/ws", None).is_err());
        assert!(Target::parse("ws://127.0.0.1:x/ws", None).is_err());
    }
}
