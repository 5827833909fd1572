//! HTTP on the WebSocket port: probes, 404, upgrade refusals, request limits.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::util::*;

const UPGRADE: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[test]
fn healthz_answers_ok() {
    let server = Server::start(&[]);
    assert_eq!(get(&server, "/healthz"), (200, "ok\n".to_string()));
}

#[test]
fn unknown_paths_are_404() {
    let server = Server::start(&[]);
    assert_eq!(get(&server, "/nope").0, 404);
    assert_eq!(get(&server, "/ws/extra").0, 404);
}

#[test]
fn the_client_and_the_demo_are_served_from_the_binary() {
    let server = Server::start(&[]);
    let (status, head, body) = http(
        &server,
        "GET /client.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"), "{head}");
    assert!(head.contains("Access-Control-Allow-Origin: *"), "{head}");
    assert_eq!(body, include_str!("../../clients/js/roomcast.js"));
    let (status, _, body) = http(&server, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "the demo is on in dev mode");
    assert_eq!(body, include_str!("../../clients/demo/index.html"));
    let without = Server::start(&["--demo", "false"]);
    assert_eq!(get(&without, "/").0, 404);
    let with_key = Server::start(&["--jwt-secret", "a-secret-of-at-least-32-bytes-long"]);
    assert_eq!(get(&with_key, "/").0, 404, "off by default with a key");
    assert_eq!(get(&with_key, "/client.js").0, 200, "the client is always served");
}

#[test]
fn ws_and_echo_upgrade_for_a_real_client() {
    let server = Server::start(&[]);
    for path in ["/ws", "/echo", "/ws?token=x"] {
        let mut ws = connect(&server, path);
        ws.close(None).unwrap();
    }
}

/// `new WebSocket('ws://host:port')`, wscat and artillery's `quick` ask
/// for `/`: an upgrade there is the broker, a plain GET still the demo.
#[test]
fn an_upgrade_on_the_root_path_is_the_broker() {
    let server = Server::start(&[]);
    let (_, welcome) = join_broker(&server, "");
    let mut root = connect(&server, "/");
    let first = recv_json(&mut root);
    assert_eq!(
        (first["op"].as_str(), first["user"].is_string()),
        (Some("welcome"), true),
        "{first}"
    );
    assert_ne!(first["user"], welcome["user"]);
    join_room(&mut root, "tutorial", 1);
    send_json(
        &mut root,
        serde_json::json!({"op":"publish","room":"tutorial","data":"hi"}),
    );
    assert_eq!(recv_json(&mut root)["data"], "hi");
    root.send(tungstenite::Message::text("hello from Artillery!")).unwrap();
    assert_eq!(recv_json(&mut root)["code"], "bad_json");
    let (status, body) = get(&server, "/");
    assert_eq!(status, 200);
    assert!(body.contains("<title>roomcast demo</title>"));
    // With a key, the root is the broker too (and refuses a missing token).
    let with_key = Server::start(&["--jwt-secret", "a-secret-of-at-least-32-bytes-long"]);
    let mut refused = connect(&with_key, "/");
    assert_eq!(recv_close(&mut refused).0, 4001);
}

#[test]
fn bad_upgrades_get_the_right_status() {
    let server = Server::start(&[]);
    let cases = [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 426),
        (
            format!(
                "GET /echo HTTP/1.1\r\n{}\r\n",
                UPGRADE.replace("Version: 13", "Version: 8")
            ),
            426,
        ),
        (
            format!(
                "GET /ws HTTP/1.1\r\n{}\r\n",
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "bad")
            ),
            400,
        ),
        (
            format!(
                "GET /ws HTTP/1.1\r\n{}\r\n",
                UPGRADE.replace("Connection: Upgrade", "Connection: close")
            ),
            400,
        ),
        (format!("POST /ws HTTP/1.1\r\n{}\r\n", UPGRADE), 405),
        (format!("GET /ws HTTP/1.0\r\n{}\r\n", UPGRADE), 400),
    ];
    for (raw, want) in cases {
        let (status, head, _) = http(&server, &raw);
        assert_eq!(status, want, "request:\n{raw}\nresponse:\n{head}");
        if want == 426 {
            assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
        }
    }
}

#[test]
fn malformed_and_oversize_requests_are_refused() {
    let server = Server::start(&[]);
    let (status, _, _) = http(&server, "\x16\x03\x01 not http\r\n\r\n");
    assert_eq!(status, 400);
    let huge = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(30_000));
    let (status, _, _) = http(&server, &huge);
    assert_eq!(status, 431);
}

#[test]
fn keep_alive_serves_pipelined_requests() {
    let server = Server::start(&[]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    assert_eq!(read_response(&mut s).0, 404);
    // The connection is still usable afterwards.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    expect_eof(&mut s);
}

#[test]
fn a_request_that_never_completes_is_dropped_after_the_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout-secs", "1"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = std::time::Instant::now();
    expect_eof(&mut s);
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(900),
        "closed too early"
    );
    assert_eq!(
        metric(&server, "roomcast_dropped_total{reason=\"handshake_timeout\"}"),
        1.0
    );
}

#[test]
fn metrics_are_prometheus_text() {
    let server = Server::start(&["--shards", "2"]);
    let (status, head, body) = http(&server, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(body.contains("# TYPE roomcast_connections gauge"));
    assert!(body.contains("roomcast_shard_connections{shard=\"1\"} 0"));
}

#[test]
fn probes_answer_get_and_head_only() {
    let server = Server::start(&[]);
    for method in ["POST", "DELETE"] {
        let (status, head, _) = http(
            &server,
            &format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 405, "{method}: {head}");
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
    }
    // HEAD: the GET head, then the connection closes with no body.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("\r\n\r\n"),
        "{text}"
    );
}
