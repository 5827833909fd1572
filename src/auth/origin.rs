//! Which web pages may open a WebSocket to the broker: the `Origin` a
//! browser sends with every upgrade, against `--allowed-origins`.
//!
//! Non-browser clients send no `Origin` and are always let through (they
//! could send any `Origin` they like anyway); the check protects users'
//! browsers: without it, any page a developer visits could reach the
//! broker on their machine (`ws://127.0.0.1:8080`), and a page on any site
//! could use a broker whose authentication rides on something the browser
//! attaches by itself. Socket-free: the HTTP path asks [`OriginPolicy::allows`].

/// One allowed origin: `scheme://host[:port]`, where the host may start
/// with `*.` (any subdomain) and the port may be `*` (any).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    scheme: String,
    /// Lowercase; after `*.` when `subdomains`.
    host: String,
    subdomains: bool,
    /// `None`: any port.
    port: Option<u16>,
}

/// The origins allowed to open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Every origin (a broker with a JWT key and no `--allowed-origins`).
    Any,
    /// These, and requests without `Origin`.
    List(Vec<String>, PatternSet),
}

/// The parsed patterns of a list (kept apart so the list prints as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSet(Vec<Pattern>);

/// The default in dev mode: pages served from this machine only.
pub const LOOPBACK_ORIGINS: &str =
    "http://localhost:*,http://127.0.0.1:*,http://[::1]:*,https://localhost:*,https://127.0.0.1:*,https://[::1]:*";

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `scheme://host[:port]` split; the host lowercased, brackets kept for IPv6.
fn split(origin: &str) -> Option<(String, String, Option<&str>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        return None;
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (h, p) = rest.split_at(end + 1);
        (h, p.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port))
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let bad = || format!("{text:?} is not an origin (scheme://host[:port], host may start with *., port may be *)");
        let (scheme, host, port) = split(text).ok_or_else(bad)?;
        let port = match port {
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
            None => Some(default_port(&scheme).ok_or_else(bad)?),
        };
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(rest) if !rest.is_empty() && !rest.contains('*') => (rest.to_string(), true),
            Some(_) => return Err(bad()),
            None if host.contains('*') => return Err(bad()),
            None => (host, false),
        };
        Ok(Pattern {
            scheme,
            host,
            subdomains,
            port,
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = if self.subdomains {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        scheme == self.scheme && host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl OriginPolicy {
    /// `--allowed-origins`: a comma-separated list, or `*` for any.
    pub fn parse(list: &str) -> Result<OriginPolicy, String> {
        let items: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if items.is_empty() {
            return Err("the list is empty (give origins, or * for any)".into());
        }
        if items == ["*"] {
            return Ok(OriginPolicy::Any);
        }
        let patterns = items.iter().map(|s| Pattern::parse(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(OriginPolicy::List(
            items.iter().map(|s| s.to_string()).collect(),
            PatternSet(patterns),
        ))
    }

    /// The policy as written, for `--print-config` (`None`: any origin).
    pub fn written(&self) -> Option<String> {
        match self {
            OriginPolicy::Any => None,
            OriginPolicy::List(items, _) => Some(items.join(",")),
        }
    }

    /// Whether an upgrade with this `Origin` header (or none) may go on.
    /// `null` (a sandboxed page, a `file:` URL) matches no pattern.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let (OriginPolicy::List(_, PatternSet(patterns)), Some(origin)) = (self, origin) else {
            return true;
        };
        let Some((scheme, host, port)) = split(origin.trim()) else {
            return false;
        };
        let Some(port) = (match port {
            Some(p) => p.parse::<u16>().ok(),
            None => default_port(&scheme),
        }) else {
            return false;
        };
        patterns.iter().any(|p| p.matches(&scheme, &host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_default_allows_this_machine_only() {
        let p = OriginPolicy::parse(LOOPBACK_ORIGINS).unwrap();
        for ok in [
            None,
            Some("http://localhost:3000"),
            Some("http://127.0.0.1:8080"),
            Some("http://[::1]:5173"),
            Some("https://localhost"),
            Some("HTTP://LOCALHOST:1"),
        ] {
            assert!(p.allows(ok), "{ok:?}");
        }
        for no in [
            Some("https://evil.example"),
            Some("null"),
            Some("http://localhost.evil.example:80"),
            Some("http://127.0.0.1.nip.io:8080"),
            Some("file://"),
            Some(""),
        ] {
            assert!(!p.allows(no), "{no:?}");
        }
    }

    #[test]
    fn lists_take_exact_origins_and_subdomain_wildcards() {
        let p =
            OriginPolicy::parse("https://app.example.com, https://*.example.org,http://dev.example.net:8000").unwrap();
        for ok in [
            "https://app.example.com",
            "https://app.example.com:443",
            "https://a.example.org",
            "https://a.b.example.org",
            "http://dev.example.net:8000",
        ] {
            assert!(p.allows(Some(ok)), "{ok}");
        }
        for no in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.org",
            "https://evilexample.org",
            "https://a.example.org.evil.com",
            "http://dev.example.net",
            "null",
        ] {
            assert!(!p.allows(Some(no)), "{no}");
        }
        assert!(p.allows(None), "non-browser clients");
        assert_eq!(
            p.written().unwrap(),
            "https://app.example.com,https://*.example.org,http://dev.example.net:8000"
        );
        assert_eq!(OriginPolicy::parse("*").unwrap(), OriginPolicy::Any);
        assert!(OriginPolicy::Any.allows(Some("null")));
        for bad in [
            "",
            "example.com",
            "https://",
            "https://a.*.com",
            "https://x:port",
            "ftp://x",
        ] {
            assert!(OriginPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
