//! TLS on the listener: `wss://` and `https://` on one port with a chain
//! made at test time, plain HTTP to the TLS port told what to do, failed
//! and stalled handshakes counted, the certificate reloaded on SIGHUP while
//! a client stays connected, and bad certificate/key files refused at
//! start-up with a clear message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::pki::{client_config, https_get, https_metric, tls_connect, wss_connect, Ca};
use crate::util::*;

/// Starts roomcast with the leaf's files (and `extra` flags).
fn tls_server(leaf: &crate::pki::Leaf, extra: &[&str]) -> Server {
    let mut args = vec!["--tls-cert", leaf.cert.as_str(), "--tls-key", leaf.key.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn wss_and_https_share_the_port_and_the_chain_is_served() {
    let root = Ca::new("roomcast test root");
    let intermediate = root.intermediate("roomcast test intermediate");
    // The client trusts only the root: the server must send the intermediate.
    let leaf = intermediate.leaf(&[&intermediate]);
    let server = tls_server(&leaf, &[]);
    let roots = [root.pem.as_str()];

    let (status, body) = https_get(server.addr, "/healthz", &roots);
    assert_eq!((status, body.trim()), (200, "ok"));

    let mut a = wss_connect(server.addr, "/ws", &roots);
    assert_eq!(recv_json(&mut a)["op"], "welcome");
    join_room(&mut a, "tls", 1);
    let mut b = wss_connect(server.addr, "/ws", &roots);
    assert_eq!(recv_json(&mut b)["op"], "welcome");
    // A message larger than one TLS record (16 KiB) crosses intact.
    let big = "x".repeat(40_000);
    send_json(&mut b, json!({"op":"publish","room":"tls","data":big,"id":2}));
    let msg = recv_json(&mut a);
    assert_eq!(msg["op"], "message");
    assert_eq!(msg["data"].as_str().map(str::len), Some(40_000));
    assert_eq!(recv_json(&mut b), json!({"op":"ack","id":2}));

    // ALPN says http/1.1; TLS 1.2 clients are served too.
    let s = tls_connect(server.addr, client_config(&roots, false)).unwrap();
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(s.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let s = tls_connect(server.addr, client_config(&roots, true)).unwrap();
    assert_eq!(s.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));

    // healthz, two sockets, two probes, and this scrape's own.
    let done = https_metric(server.addr, "roomcast_tls_handshakes_total", &roots);
    assert!(done >= 6.0, "{done} handshakes counted");
}

#[test]
fn plain_http_to_the_tls_port_is_told_to_use_tls() {
    let ca = Ca::new("roomcast test root");
    let leaf = ca.leaf(&[]);
    let server = tls_server(&leaf, &[]);
    let (status, _, body) = http(&server, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 400);
    assert!(body.contains("https://") && body.contains("wss://"), "{body}");
    let (status, _, _) = http(
        &server,
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(status, 400);
    let roots = [ca.pem.as_str()];
    let series = "roomcast_tls_handshake_failures_total{reason=\"plain_http\"}";
    assert_eq!(https_metric(server.addr, series, &roots), 2.0);
}

#[test]
fn refused_and_stalled_handshakes_are_counted_and_do_not_hang() {
    let ca = Ca::new("roomcast test root");
    let leaf = ca.leaf(&[]);
    let server = tls_server(&leaf, &["--handshake-timeout-secs", "1"]);
    let roots = [ca.pem.as_str()];

    // A client that does not trust the certificate refuses it with an alert.
    let stranger = Ca::new("someone else");
    let Err(err) = tls_connect(server.addr, client_config(&[stranger.pem.as_str()], false)) else {
        panic!("an untrusted certificate is refused by the client");
    };
    assert!(err.to_string().contains("certificate"), "{err}");

    // A client that starts a handshake and stalls is closed at the timeout.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.set_read_timeout(Some(TIMEOUT)).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let mut buf = [0u8; 64];
    let n = stalled.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closes a stalled handshake");

    // Garbage that is not TLS gets an alert, not a hang.
    let mut junk = TcpStream::connect(server.addr).unwrap();
    junk.set_read_timeout(Some(TIMEOUT)).unwrap();
    // (a ClientHello one byte long: nothing a hello can be)
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xff])
        .unwrap();
    let mut got = Vec::new();
    let _ = junk.read_to_end(&mut got);
    assert_eq!(got.first(), Some(&0x15), "an alert record answers garbage: {got:?}");

    let failures = |reason: &str| {
        https_metric(
            server.addr,
            &format!("roomcast_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
            &roots,
        )
    };
    eventually("the alert counted", || failures("alert") == 1.0);
    assert_eq!(failures("timeout"), 1.0);
    assert_eq!(failures("protocol"), 1.0);
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_clients_connected() {
    let old_ca = Ca::new("old root");
    let new_ca = Ca::new("new root");
    let old = old_ca.leaf(&[]);
    let server = tls_server(&old, &[]);
    let pid = server.child.id().to_string();
    let both = [old_ca.pem.as_str(), new_ca.pem.as_str()];
    let hup = || assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let reloads = |result: &str| {
        https_metric(
            server.addr,
            &format!("roomcast_tls_reloads_total{{result=\"{result}\"}}"),
            &both,
        )
    };

    let mut member = wss_connect(server.addr, "/ws", &[old_ca.pem.as_str()]);
    assert_eq!(recv_json(&mut member)["op"], "welcome");
    join_room(&mut member, "renewal", 1);

    // The renewed certificate goes live: the same files, new contents.
    let new = new_ca.leaf(&[]);
    std::fs::write(&old.cert, &new.chain_pem).unwrap();
    std::fs::write(&old.key, &new.key_pem).unwrap();
    hup();
    eventually("the reload", || reloads("ok") == 1.0);
    assert!(tls_connect(server.addr, client_config(&[new_ca.pem.as_str()], false)).is_ok());
    assert!(
        tls_connect(server.addr, client_config(&[old_ca.pem.as_str()], false)).is_err(),
        "new handshakes get the new certificate"
    );

    // The member made before the reload still talks, both ways.
    let mut publisher = wss_connect(server.addr, "/ws", &[new_ca.pem.as_str()]);
    assert_eq!(recv_json(&mut publisher)["op"], "welcome");
    send_json(
        &mut publisher,
        json!({"op":"publish","room":"renewal","data":"after","id":2}),
    );
    assert_eq!(recv_json(&mut member)["data"], "after");
    send_json(
        &mut member,
        json!({"op":"publish","room":"renewal","data":"mine","id":3}),
    );
    assert_eq!(recv_json(&mut member)["data"], "mine");

    // A broken file at reload is refused; the certificate in use stays.
    std::fs::write(&old.key, "not a key").unwrap();
    hup();
    eventually("the refused reload", || reloads("error") == 1.0);
    assert!(tls_connect(server.addr, client_config(&[new_ca.pem.as_str()], false)).is_ok());
    let other = Ca::new("other").leaf(&[]);
    std::fs::write(&old.key, &other.key_pem).unwrap();
    hup();
    eventually("the mismatched reload", || reloads("error") == 2.0);
    assert!(tls_connect(server.addr, client_config(&[new_ca.pem.as_str()], false)).is_ok());
    assert_eq!(reloads("ok"), 1.0);
}

#[test]
fn bad_certificates_and_keys_are_refused_at_start_up() {
    let ca = Ca::new("root");
    let a = ca.leaf(&[]);
    let b = ca.leaf(&[]);
    let err = refused(&["--tls-cert", &a.cert, "--tls-key", &b.key]);
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let err = refused(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &a.key]);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let err = refused(&["--tls-cert", &a.key, "--tls-key", &a.key]);
    assert!(err.contains("no certificate in"), "{err}");
    let err = refused(&["--tls-cert", &a.cert, "--tls-key", &a.cert]);
    assert!(err.contains("no private key in"), "{err}");
    let err = refused(&["--tls-cert", &a.cert]);
    assert!(err.contains("--tls-key"), "{err}");
    // Dev mode stays on loopback, TLS or not.
    let err = refused(&["--tls-cert", &a.cert, "--tls-key", &a.key, "--listen", "0.0.0.0:0"]);
    assert!(err.contains("loopback"), "{err}");
}

/// RSA (PKCS#1) and EC (SEC1) keys as `openssl` writes them, beside the
/// PKCS#8 keys rcgen writes (every other test).
#[test]
fn rsa_and_ec_keys_in_their_traditional_formats() {
    for (kind, genkey) in [
        ("RSA", vec!["genrsa", "-traditional", "-out", "{key}", "2048"]),
        (
            "EC",
            vec!["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "{key}"],
        ),
    ] {
        let key = temp_file("key.pem", "");
        let cert = temp_file("cert.pem", "");
        let ok = Command::new("openssl")
            .args(genkey.iter().map(|a| a.replace("{key}", &key)))
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(ok.success());
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.contains(&format!("BEGIN {kind} PRIVATE KEY")), "{pem}");
        let ok = Command::new("openssl")
            .args(["req", "-new", "-x509", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-key", &key, "-out", &cert])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key]);
        let roots = [std::fs::read_to_string(&cert).unwrap()];
        let (status, _) = https_get(server.addr, "/healthz", &[roots[0].as_str()]);
        assert_eq!(status, 200, "{kind} key");
    }
}

/// A TLS member that stops reading is cut as a slow consumer (its sealed
/// records count nothing against the others), and a member that reads
/// gets every message.
#[test]
fn a_tls_member_that_stops_reading_is_cut_and_others_get_everything() {
    let ca = Ca::new("roomcast test root");
    let leaf = ca.leaf(&[]);
    let server = tls_server(&leaf, &["--max-queue-bytes", "262144", "--rate-limit", "100000"]);
    let roots = [ca.pem.as_str()];
    let mut stuck = wss_connect(server.addr, "/ws", &roots);
    assert_eq!(recv_json(&mut stuck)["op"], "welcome");
    join_room(&mut stuck, "flood", 1);
    let mut reader = wss_connect(server.addr, "/ws", &roots);
    assert_eq!(recv_json(&mut reader)["op"], "welcome");
    join_room(&mut reader, "flood", 2);
    let mut publisher = wss_connect(server.addr, "/ws", &roots);
    assert_eq!(recv_json(&mut publisher)["op"], "welcome");
    let data = "y".repeat(8_000);
    // 24 MB: far past what the socket buffers (several MB on loopback) and
    // the cap hold.
    for _ in 0..3000 {
        send_json(&mut publisher, json!({"op":"publish","room":"flood","data":data}));
        // The reader keeps up; the stuck member reads nothing.
        let got = recv_json(&mut reader);
        assert_eq!(got["op"], "message", "{got}");
    }
    let series = "roomcast_dropped_total{reason=\"slow_consumer\"}";
    eventually("the stuck member cut", || {
        https_metric(server.addr, series, &roots) == 1.0
    });
    // Its last frames, then the 4008 close, are readable once it reads.
    let code = loop {
        match stuck.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(code, Some(4008));
}
