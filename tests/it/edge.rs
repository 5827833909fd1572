//! The production edge (issue 15): origin checks (which web pages may
//! open a WebSocket: raw upgrades with and without `Origin`, against dev
//! mode's default, a key's default and an explicit list) and clients
//! behind a trusted proxy (`--trusted-proxies`).

use crate::util::*;

const SECRET: &str = "a-secret-of-at-least-32-bytes-long";

/// The status of an upgrade of `path` with `origin` (none: no header).
fn upgrade_status(server: &Server, path: &str, origin: Option<&str>) -> u16 {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let (status, _, _) = http(
        server,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
        ),
    );
    status
}

#[test]
fn dev_mode_lets_only_this_machine_s_pages_in() {
    let server = Server::start(&[]);
    for origin in [
        None,
        Some("http://localhost:3000"),
        Some("http://127.0.0.1:8080"),
        Some("http://[::1]:5173"),
    ] {
        assert_eq!(upgrade_status(&server, "/ws", origin), 101, "{origin:?}");
    }
    for origin in ["https://evil.example", "null", "http://localhost.evil.example"] {
        assert_eq!(upgrade_status(&server, "/ws", Some(origin)), 403, "{origin}");
        assert_eq!(upgrade_status(&server, "/", Some(origin)), 403, "/ as well: {origin}");
    }
    let (status, _, body) = http(
        &server,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://evil.example\r\n\r\n",
    );
    assert_eq!(status, 403);
    assert_eq!(body.lines().count(), 1, "one line: {body}");
    assert!(
        body.contains("https://evil.example") && body.contains("--allowed-origins"),
        "{body}"
    );
    assert_eq!(metric(&server, "roomcast_http_responses_total{status=\"403\"}"), 7.0);
}

#[test]
fn with_a_key_any_origin_unless_a_list_is_set() {
    let open = Server::start(&["--jwt-secret", SECRET]);
    for origin in [None, Some("https://anywhere.example"), Some("null")] {
        assert_eq!(upgrade_status(&open, "/ws", origin), 101, "{origin:?}");
    }
    let listed = Server::start(&[
        "--jwt-secret",
        SECRET,
        "--allowed-origins",
        "https://app.example.com,https://*.example.org",
    ]);
    for (origin, want) in [
        (None, 101),
        (Some("https://app.example.com"), 101),
        (Some("https://chat.example.org"), 101),
        (Some("https://example.org"), 403),
        (Some("http://app.example.com"), 403),
        (Some("https://app.example.com:8443"), 403),
        (Some("null"), 403),
    ] {
        assert_eq!(upgrade_status(&listed, "/ws", origin), want, "{origin:?}");
    }
}

#[test]
fn a_bad_list_is_refused_at_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--allowed-origins", "example.com"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--allowed-origins") && err.contains("is not an origin"),
        "{err}"
    );
}

// ---- Behind a proxy (issue 15): --trusted-proxies ----

/// A WebSocket to `server` whose request says it was forwarded for `xff`.
fn via_proxy(server: &Server, xff: Option<&str>) -> Client {
    use tungstenite::client::IntoClientRequest;
    let mut req = server.url("/ws").into_client_request().unwrap();
    if let Some(x) = xff {
        req.headers_mut().insert("X-Forwarded-For", x.parse().unwrap());
    }
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    tungstenite::client::client(req, Stream(stream)).expect("handshake").0
}

#[test]
fn behind_a_trusted_proxy_the_per_address_limit_counts_clients() {
    let server = Server::start(&["--trusted-proxies", "127.0.0.0/8", "--max-connections-per-ip", "1"]);
    let mut ann = via_proxy(&server, Some("203.0.113.1"));
    assert_eq!(recv_json(&mut ann)["op"], "welcome");
    // Another client through the same proxy is not the proxy's second connection.
    let mut bob = via_proxy(&server, Some("198.51.100.7, 203.0.113.2"));
    assert_eq!(recv_json(&mut bob)["op"], "welcome");
    // ann again: her one place is taken (the left part of a list is the client's to forge).
    let mut ann_again = via_proxy(&server, Some("6.6.6.6, 203.0.113.1"));
    assert_eq!(
        recv_close(&mut ann_again),
        (1013, "too many connections from your address".to_string())
    );
    assert_eq!(metric(&server, "roomcast_dropped_total{reason=\"ip_limit\"}"), 1.0);
}

#[test]
fn from_an_untrusted_peer_forwarding_headers_are_ignored() {
    let server = Server::start(&["--max-connections-per-ip", "1"]);
    let mut first = via_proxy(&server, Some("203.0.113.1"));
    assert_eq!(recv_json(&mut first)["op"], "welcome");
    // A different claimed client changes nothing: the peer is 127.0.0.1.
    let mut second = via_proxy(&server, Some("203.0.113.99"));
    assert_eq!(recv_close(&mut second).0, 1013);
}
