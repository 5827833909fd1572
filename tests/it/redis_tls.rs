//! The Redis link over TLS (`rediss://`, `--redis-tls-ca`) and with an ACL
//! user (`user:pass@`): a private `redis-server` with a TLS port signed by
//! a test CA, a plain port beside it, and the default user turned off so
//! that nothing works without the user's password.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::pki::Ca;
use crate::util::*;

const USER: &str = "alice";
const PASS: &str = "s3cret-pw";

/// A redis-server with a TLS port and a plain one, killed on drop.
struct TlsRedis {
    child: Child,
    plain: u16,
    tls: u16,
    ca: String,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let ca = Ca::new("redis test CA");
        let leaf = ca.leaf(&[]);
        let ca_file = temp_file("ca.pem", &ca.pem);
        let (plain, tls) = (free_port(), free_port());
        let child = Command::new("redis-server")
            .args(["--port", &plain.to_string(), "--tls-port", &tls.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &leaf.cert, "--tls-key-file", &leaf.key])
            .args(["--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no"])
            // (redis joins the words after --user into one config line)
            .args(["--user", "default", "off"])
            .args(["--user", USER, "on", &format!(">{PASS}"), "~*", "&*", "+@all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let redis = TlsRedis {
            child,
            plain,
            tls,
            ca: ca_file,
        };
        eventually("redis-server to answer", || {
            redis.query(&["PING"]).is_some_and(|r| r.contains("PONG"))
        });
        redis
    }

    /// One command on the plain port, as the ACL user.
    fn query(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.plain)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut cmd = String::new();
        for command in [&["AUTH", USER, PASS][..], args] {
            cmd.push_str(&format!("*{}\r\n", command.len()));
            for a in command {
                cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
        }
        s.write_all(cmd.as_bytes()).ok()?;
        let mut reply = String::new();
        let mut buf = [0u8; 4096];
        // "+OK\r\n" for AUTH, then the command's reply.
        while reply.len() <= 5 {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Some(reply)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(server: &Server) {
    eventually("the link to come up", || get(server, "/readyz").0 == 200);
}

#[test]
fn nodes_link_over_tls_and_with_an_acl_user() {
    let redis = TlsRedis::start();
    let over_tls = format!("rediss://{USER}:{PASS}@localhost:{}", redis.tls);
    let over_plain = format!("redis://{USER}:{PASS}@127.0.0.1:{}", redis.plain);
    let history = ["--history-size", "10", "--shards", "2"];
    let mut a_args = vec!["--redis-url", over_tls.as_str(), "--redis-tls-ca", redis.ca.as_str()];
    a_args.extend_from_slice(&history);
    let mut b_args = vec!["--redis-url", over_plain.as_str()];
    b_args.extend_from_slice(&history);
    let a = Server::start(&a_args);
    let b = Server::start(&b_args);
    ready(&a);
    ready(&b);

    let (mut on_a, _) = join_broker(&a, "");
    let (mut on_b, _) = join_broker(&b, "");
    for (i, ws) in [&mut on_a, &mut on_b].into_iter().enumerate() {
        send_json(ws, json!({"op":"join","room":"secure","id":i}));
        let ack = recv_json(ws);
        assert_eq!(
            (ack["op"].as_str(), ack["offset"].as_u64()),
            (Some("ack"), Some(0)),
            "{ack}"
        );
    }
    // Numbered through the history script (run over TLS from a), and
    // delivered on both nodes from the subscription (TLS on a).
    for (i, (from, text)) in [(&mut on_a, "from a"), (&mut on_b, "from b")].into_iter().enumerate() {
        send_json(from, json!({"op":"publish","room":"secure","data":text,"id":10 + i}));
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_a.len() < 2 {
        let v = recv_json(&mut on_a);
        if v["op"] == "message" {
            seen_a.push((v["data"].as_str().unwrap().to_string(), v["offset"].as_u64().unwrap()));
        }
    }
    while seen_b.len() < 2 {
        let v = recv_json(&mut on_b);
        if v["op"] == "message" {
            seen_b.push((v["data"].as_str().unwrap().to_string(), v["offset"].as_u64().unwrap()));
        }
    }
    assert_eq!(
        seen_a, seen_b,
        "both nodes see the same messages, same offsets, same order"
    );
    assert_eq!(
        seen_a.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        vec![1, 2],
        "{seen_a:?}"
    );
    // The stream lives in Redis, written by the scripts.
    let len = redis.query(&["XLEN", "roomcast:history:{secure}"]).unwrap();
    assert!(len.ends_with(":2\r\n"), "{len:?}");
}

#[test]
fn a_redis_certificate_from_an_unknown_ca_keeps_the_link_down_and_says_why() {
    let redis = TlsRedis::start();
    let url = format!("rediss://{USER}:{PASS}@localhost:{}", redis.tls);
    let other = temp_file("other-ca.pem", &Ca::new("not redis's CA").pem);
    let (server, logs) = Server::start_logged(&["--redis-url", &url, "--redis-tls-ca", &other, "--log-level", "warn"]);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a log line saying why the link is down");
        if line.contains("cannot connect to Redis") && line.contains("certificate") {
            break;
        }
    }
    assert_eq!(get(&server, "/readyz").0, 503);
}

#[test]
fn redis_tls_options_are_checked_at_start_up() {
    let ca = temp_file("ca.pem", &Ca::new("ca").pem);
    let err = refused(&["--redis-url", "redis://127.0.0.1:1", "--redis-tls-ca", &ca]);
    assert!(err.contains("rediss://"), "{err}");
    let err = refused(&[
        "--redis-url",
        "rediss://127.0.0.1:1",
        "--redis-tls-ca",
        "/nonexistent/ca.pem",
    ]);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let not_pem = temp_file("ca.pem", "hello");
    let err = refused(&["--redis-url", "rediss://127.0.0.1:1", "--redis-tls-ca", &not_pem]);
    assert!(err.contains("no certificate in"), "{err}");
}
