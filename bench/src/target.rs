//! The server under test: a `ws://` or `wss://` URL resolved to an
//! address, a `Host` header, a path and, for `wss://`, the TLS settings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;

/// Where every connection of a run goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The resolved address (the first IPv4 one if there are several).
    pub addr: SocketAddr,
    /// The `Host` header value: the URL's authority.
    pub host: String,
    /// The request target: path and query, with `token=` appended if asked.
    pub path: String,
    /// For `wss://`: how to make each connection's TLS session.
    pub tls: Option<Tls>,
    /// Offer permessage-deflate (and inflate what comes compressed).
    pub compression: bool,
}

/// TLS client settings shared by every connection of a run.
#[derive(Clone, Debug)]
pub struct Tls {
    /// Trusts the roots of `--tls-ca`; offers ALPN `http/1.1`.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate must carry (the URL's host).
    pub host: String,
}

impl Tls {
    /// Settings trusting the PEM certificates in `ca` for `host`; with
    /// `no_resume`, every connection makes a full handshake.
    fn new(host: &str, ca: &Path, no_resume: bool) -> Result<Tls, String> {
        // The server's own reading of a CA file (rediss://'s --redis-tls-ca).
        let roots = roomcast::internals::tls_roots(Some(ca)).map_err(|e| format!("--tls-ca: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if no_resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        ServerName::try_from(host).map_err(|e| format!("{host}: {e}"))?;
        Ok(Tls {
            config: Arc::new(config),
            host: host.to_string(),
        })
    }
}

impl Target {
    /// Parses `ws[s]://host[:port][/path][?query]`; `token`, if given, is
    /// appended to the query; `wss://` needs `tls_ca`, the certificate(s) to
    /// trust (`no_resume`: no TLS session resumption).
    pub fn parse(url: &str, token: Option<&str>, tls_ca: Option<&Path>, no_resume: bool) -> Result<Target, String> {
        let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
        };
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
            _ => (authority, if secure { 443 } else { 80 }),
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
        let tls = match (secure, tls_ca) {
            (false, _) => None,
            (true, Some(ca)) => Some(Tls::new(host_only, ca, no_resume)?),
            (true, None) => {
                return Err(format!(
                    "{url}: wss:// needs --tls-ca FILE (the certificate or CA to trust)"
                ));
            }
        };
        Ok(Target {
            addr,
            host: authority.to_string(),
            path,
            tls,
            compression: false,
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
        let t = Target::parse("ws://127.0.0.1:9101/ws", None, None, false).unwrap();
        assert_eq!(
            (t.addr.port(), t.host.as_str(), t.path.as_str()),
            (9101, "127.0.0.1:9101", "/ws")
        );
        let t = Target::parse("ws://127.0.0.1:1/ws?x=1", Some("a.b+c"), None, false).unwrap();
        assert_eq!(t.path, "/ws?x=1&token=a.b%2Bc");
        let t = Target::parse("ws://127.0.0.1:1", Some("t"), None, false).unwrap();
        assert_eq!(t.path, "/?token=t");
        assert!(Target::parse("wss://127.0.0.1/ws", None, None, false).is_err());
        assert!(Target::parse("http://127.0.0.1/ws", None, None, false).is_err());
        assert!(Target::parse("ws://127.0.0.1:x/ws", None, None, false).is_err());
    }
}
