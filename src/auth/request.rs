//! Finding the token in an upgrade request: the `Authorization: Bearer`
//! header, else the `token` query parameter (browsers cannot set headers on
//! a WebSocket).

/// The token a client presented, or `None` if it presented none.
///
/// `authorization` is the `Authorization` header value; a `Bearer` scheme
/// (any case) with a non-empty token wins. Otherwise `query` (the raw query
/// string, with or without its `?`) is searched for the first `token=`
/// parameter, whose value is percent-decoded (`%XX`; `+` stays `+`, since a
/// base64 token may contain it). An empty token is `None`.
pub fn token_from_request(query: Option<&str>, authorization: Option<&str>) -> Option<String> {
    if let Some(token) = authorization.and_then(bearer) {
        return Some(token.to_string());
    }
    query.and_then(query_token)
}

/// The token of an `Authorization: Bearer <token>` value (scheme in any case).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

fn query_token(query: &str) -> Option<String> {
    query_param(query, "token").filter(|t| !t.is_empty())
}

/// The first `name` parameter of a query string, percent-decoded (`+` stays
/// a `+`); `Some("")` for a bare `name` or `name=`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let raw = query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if pair == name => Some(""),
        _ => None,
    })?;
    Some(percent_decode(raw))
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as is.
/// Bytes that do not form UTF-8 become U+FFFD, so a garbled token fails
/// verification as invalid rather than looking absent.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => Some(hi << 4 | lo),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0 && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(query: Option<&str>, auth: Option<&str>) -> Option<String> {
        token_from_request(query, auth)
    }

    #[test]
    fn the_header_wins_over_the_query() {
        assert_eq!(t(Some("token=q"), Some("Bearer h")).as_deref(), Some("h"));
    }

    #[test]
    fn the_query_is_used_without_a_bearer_header() {
        assert_eq!(t(Some("room=a&token=q"), None).as_deref(), Some("q"));
        assert_eq!(t(Some("?token=q"), None).as_deref(), Some("q"));
        assert_eq!(t(Some("token=q"), Some("Basic dXNlcjpwdw==")).as_deref(), Some("q"));
        assert_eq!(t(Some("token=q"), Some("Bearer ")).as_deref(), Some("q"));
    }

    #[test]
    fn the_bearer_scheme_ignores_case_and_extra_blanks() {
        for h in [
            "bearer abc",
            "BEARER abc",
            "BeArEr abc",
            "  Bearer \t abc  ",
            "Bearer\tabc",
        ] {
            assert_eq!(t(None, Some(h)).as_deref(), Some("abc"), "{h:?}");
        }
        assert_eq!(t(None, Some("Bearerabc")), None);
        assert_eq!(t(None, Some("Token abc")), None);
    }

    #[test]
    fn the_query_value_is_percent_decoded_and_plus_is_kept() {
        assert_eq!(t(Some("token=a%2Eb%2ec"), None).as_deref(), Some("a.b.c"));
        assert_eq!(t(Some("token=a+b"), None).as_deref(), Some("a+b"));
        assert_eq!(t(Some("token=a%2Bb%3D"), None).as_deref(), Some("a+b="));
        // Broken escapes are kept literally rather than dropped.
        assert_eq!(t(Some("token=a%2"), None).as_deref(), Some("a%2"));
        assert_eq!(t(Some("token=a%zz%"), None).as_deref(), Some("a%zz%"));
        assert_eq!(t(Some("token=%FF"), None).as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn only_the_exact_parameter_name_counts_and_the_first_wins() {
        assert_eq!(t(Some("xtoken=a&tokens=b&token=c&token=d"), None).as_deref(), Some("c"));
        assert_eq!(t(Some("Token=a"), None), None);
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(t(None, None), None);
        assert_eq!(t(Some(""), Some("")), None);
        assert_eq!(t(Some("token="), None), None);
        assert_eq!(t(Some("token"), None), None);
        assert_eq!(t(Some("token=%"), None).as_deref(), Some("%"));
        assert_eq!(t(None, Some("Bearer")), None);
        assert_eq!(t(None, Some("Bearer    ")), None);
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
