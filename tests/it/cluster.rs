//! The Redis link: several roomcast processes linked through a private
//! `redis-server` on a free loopback port (never the machine's 6379), which
//! the fault tests stop and restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;
use serde_json::json;

/// A private redis-server, killed on drop.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let port = free_port();
        let mut r = Redis { child: None, port };
        r.restart();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        eventually("redis-server to answer", || {
            self.query(&["PING"]).is_some_and(|r| r.contains("PONG"))
        });
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends one command; returns the raw reply.
    pub(crate) fn query(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(cmd.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// PUBSUB NUMSUB for one channel.
    fn numsub(&self, channel: &str) -> u64 {
        let reply = self.query(&["PUBSUB", "NUMSUB", channel]).unwrap_or_default();
        reply
            .lines()
            .last()
            .and_then(|l| l.strip_prefix(':'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str(), "--shards", "2"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    eventually("the link to come up", || get(&server, "/readyz").0 == 200);
    server
}

#[test]
fn room_publishes_reach_every_node_once_and_in_order() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, &[]), node(&redis, &[]), node(&redis, &[]));
    let (mut on_b, _) = join_broker(&b, "");
    let (mut on_c, _) = join_broker(&c, "");
    let (mut also_c, _) = join_broker(&c, "");
    for (i, ws) in [&mut on_b, &mut on_c, &mut also_c].into_iter().enumerate() {
        join_room(ws, "global", i as u64);
    }
    let (mut publisher, w) = join_broker(&a, "");
    for n in 0..100u64 {
        send_json(&mut publisher, json!({"op":"publish","room":"global","data":n,"id":n}));
    }
    for n in 0..100u64 {
        assert_eq!(recv_json(&mut publisher), json!({"op":"ack","id":n}));
    }
    for ws in [&mut on_b, &mut on_c, &mut also_c] {
        for n in 0..100u64 {
            assert_eq!(
                recv_json(ws),
                json!({"op":"message","room":"global","from":w["user"],"data":n})
            );
        }
    }
    // Exactly once: the next thing each member sees is a fresh marker.
    send_json(&mut on_b, json!({"op":"publish","room":"global","data":"marker"}));
    for ws in [&mut on_b, &mut on_c, &mut also_c] {
        assert_eq!(recv_json(ws)["data"], "marker");
    }
}

#[test]
fn send_and_the_http_api_cross_nodes() {
    let redis = Redis::start();
    let a = node(&redis, &["--api-key", "k"]);
    let b = node(&redis, &[]);
    let c = node(&redis, &[]);
    let (mut only_on_c, wc) = join_broker(&c, "");
    let (mut on_a, _) = join_broker(&a, "");
    send_json(&mut on_a, json!({"op":"send","user":wc["user"],"data":"psst","id":1}));
    assert_eq!(recv_json(&mut on_a), json!({"op":"ack","id":1}));
    assert_eq!(recv_json(&mut only_on_c)["data"], "psst");

    let (mut on_b, _) = join_broker(&b, "");
    join_room(&mut on_b, "news", 1);
    let body = r#"{"room":"news","data":"from the backend"}"#;
    let raw = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(&a, &raw).0, 200);
    assert_eq!(
        recv_json(&mut on_b),
        json!({"op":"message","room":"news","from":"server","data":"from the backend"})
    );
}

#[test]
fn only_nodes_with_members_subscribe_and_leaving_unsubscribes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let channel = "roomcast:room:{quiet}";
    assert_eq!(redis.numsub(channel), 0);
    let (mut m1, _) = join_broker(&a, "");
    let (mut m2, _) = join_broker(&a, "");
    join_room(&mut m1, "quiet", 1);
    join_room(&mut m2, "quiet", 1);
    // Two members on one node: one subscription, and node B has none.
    assert_eq!(redis.numsub(channel), 1);
    let (mut on_b, _) = join_broker(&b, "");
    for n in 0..20 {
        send_json(&mut on_b, json!({"op":"publish","room":"quiet","data":n}));
    }
    assert_eq!(recv_json(&mut m1)["data"], 0);
    assert_eq!(
        metric(&b, "roomcast_redis_messages_in_total"),
        0.0,
        "B received no room traffic"
    );
    send_json(&mut m1, json!({"op":"leave","room":"quiet","id":2}));
    assert_eq!(recv_json(&mut m1)["op"], "ack");
    assert_eq!(redis.numsub(channel), 1, "one member left on A");
    drop(m2);
    eventually("the last leave to unsubscribe", || redis.numsub(channel) == 0);
}

#[test]
fn a_redis_outage_degrades_health_keeps_local_delivery_and_recovers() {
    let mut redis = Redis::start();
    let a = node(&redis, &["--redis-buffer-messages", "1000"]);
    let b = node(&redis, &[]);
    let (mut local, _) = join_broker(&a, "");
    let (mut remote, _) = join_broker(&b, "");
    join_room(&mut local, "ops", 1);
    join_room(&mut remote, "ops", 1);
    let (mut publisher, _) = join_broker(&a, "");
    send_json(&mut publisher, json!({"op":"publish","room":"ops","data":"before"}));
    assert_eq!(recv_json(&mut local)["data"], "before");
    assert_eq!(recv_json(&mut remote)["data"], "before");

    redis.stop();
    eventually("A to report the link down", || get(&a, "/readyz").0 == 503);
    let (status, body) = get(&a, "/healthz");
    assert_eq!(status, 200, "still serving clients");
    assert!(body.starts_with("degraded: "), "{body}");
    assert_eq!(metric(&a, "roomcast_redis_link_up"), 0.0);
    // Local delivery goes on while Redis is away; these are buffered for B.
    for n in 0..10 {
        send_json(&mut publisher, json!({"op":"publish","room":"ops","data":n}));
        assert_eq!(recv_json(&mut local)["data"], n);
    }
    eventually("the outage buffer to hold them", || {
        metric(&a, "roomcast_redis_buffer_depth") >= 10.0
    });

    redis.restart();
    eventually("A to recover by itself", || get(&a, "/readyz").0 == 200);
    eventually("B to recover by itself", || get(&b, "/readyz").0 == 200);
    assert_eq!(get(&a, "/healthz").1, "ok\n");
    // Re-subscribed (each node for its member), and the buffer reached B.
    assert_eq!(redis.numsub("roomcast:room:{ops}"), 2);
    for n in 0..10 {
        assert_eq!(recv_json(&mut remote)["data"], n, "buffered message {n}");
    }
    send_json(&mut publisher, json!({"op":"publish","room":"ops","data":"after"}));
    assert_eq!(recv_json(&mut local)["data"], "after");
    assert_eq!(recv_json(&mut remote)["data"], "after");
    assert!(metric(&a, "roomcast_redis_reconnects_total") >= 1.0);
    assert_eq!(metric(&a, "roomcast_redis_buffer_depth"), 0.0);
}

#[test]
fn the_outage_buffer_is_bounded_and_overflow_is_counted() {
    let mut redis = Redis::start();
    let a = node(&redis, &["--redis-buffer-messages", "5", "--rate-limit", "10000"]);
    let (mut publisher, _) = join_broker(&a, "");
    redis.stop();
    eventually("the link to be down", || get(&a, "/readyz").0 == 503);
    for n in 0..20 {
        send_json(&mut publisher, json!({"op":"publish","room":"void","data":n,"id":n}));
        assert_eq!(recv_json(&mut publisher)["op"], "ack");
    }
    eventually("overflow to be counted", || {
        metric(&a, "roomcast_dropped_total{reason=\"link_buffer\"}") == 15.0
            && metric(&a, "roomcast_redis_buffer_depth") == 5.0
    });
}

#[test]
fn a_connected_but_silent_redis_is_detected_as_stalled() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let pid = redis.child.as_ref().unwrap().id().to_string();
    // Frozen, Redis keeps its sockets open but answers nothing: only the
    // probe can tell.
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    eventually("the stall to be detected", || get(&a, "/readyz").0 == 503);
    let (status, body) = get(&a, "/healthz");
    assert_eq!(status, 200);
    assert!(body.starts_with("degraded: redis link"), "{body}");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    eventually("the link to deliver again", || get(&a, "/readyz").0 == 200);
}

/// Issue 11, item 3: while Redis is connected but frozen, logins and first
/// joins of a room are not held hostage: once the link is judged stalled
/// they are answered at once, and subscriptions catch up when it thaws.
#[test]
fn issue_11_3_a_stalled_redis_does_not_block_logins_or_joins() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let pid = redis.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    eventually("the stall to be detected", || get(&a, "/readyz").0 == 503);
    // A login and a join of a new room: both need a SUBSCRIBE Redis will not
    // confirm while frozen. They are answered within TIMEOUT anyway.
    let (mut member, _) = join_broker(&a, "");
    join_room(&mut member, "thaw", 1);
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    eventually("the link to deliver again", || {
        get(&a, "/readyz").0 == 200 && get(&b, "/readyz").0 == 200
    });
    // The subscription made while frozen is in place: a publish on the
    // other node arrives.
    eventually("node a to be subscribed to the room", || {
        redis.numsub("roomcast:room:{thaw}") >= 1
    });
    let (mut publisher, _) = join_broker(&b, "");
    send_json(
        &mut publisher,
        json!({"op":"publish","room":"thaw","data":"after","id":1}),
    );
    assert_eq!(recv_json(&mut publisher)["op"], "ack");
    assert_eq!(recv_json(&mut member)["data"], "after");
}

/// A TCP forwarder to Redis that a test can shut: while shut, new
/// connections are closed at once (the node behind it cannot reconnect).
struct Gate {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    fn to(redis: &Redis) -> Gate {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, stop) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
        let (o, st, upstream) = (open.clone(), stop.clone(), redis.port);
        std::thread::spawn(move || {
            while !st.load(Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    // Polling: the gate has no event to wait on but its flag.
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if !o.load(Relaxed) {
                    continue;
                }
                down.set_nonblocking(false).unwrap();
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Gate { port, open, stop }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Two nodes: A on `redis` directly (with `a_args`), B behind a gate; a
/// member of `room` on B has received one message from a publisher on A.
/// Then the gate shuts, Redis stops, and A publishes 1..=`n` (all acked)
/// during the outage. Returns what the test goes on with.
fn outage_with_a_gated_node(redis: &mut Redis, a_args: &[&str], room: &str, n: u64) -> (Gate, Server, Server, Client) {
    let gate = Gate::to(redis);
    let a = node(redis, a_args);
    let b = {
        let url = gate.url();
        let server = Server::start(&["--redis-url", &url, "--shards", "2"]);
        eventually("B's link to come up", || get(&server, "/readyz").0 == 200);
        server
    };
    let (mut member, _) = join_broker(&b, "");
    join_room(&mut member, room, 1);
    let (mut publisher, _) = join_broker(&a, "");
    send_json(
        &mut publisher,
        json!({"op":"publish","room":room,"data":"before","id":0}),
    );
    assert_eq!(recv_json(&mut publisher)["op"], "ack");
    assert_eq!(recv_json(&mut member)["data"], "before");
    gate.set_open(false);
    redis.stop();
    eventually("A to see the outage", || get(&a, "/readyz").0 == 503);
    for i in 1..=n {
        send_json(&mut publisher, json!({"op":"publish","room":room,"data":i,"id":i}));
        assert_eq!(recv_json(&mut publisher)["op"], "ack");
    }
    (gate, a, b, member)
}

/// Issue 11, item 2: after a Redis restart, a node that comes back late
/// (here: kept out by a gate until the publishing node's buffer is
/// waiting) still gets every message buffered during the outage, because
/// the flush waits for the nodes that were subscribed to re-subscribe.
#[test]
fn issue_11_2_the_outage_buffer_waits_for_late_nodes() {
    let mut redis = Redis::start();
    let (gate, a, _b, mut member) = outage_with_a_gated_node(&mut redis, &[], "late", 50);
    redis.restart();
    eventually("A to recover while B cannot", || get(&a, "/readyz").0 == 200);
    // A holds the buffer for B (before the fix it flushed it 1 s after its
    // own re-subscription, to nobody).
    eventually("A's buffer to wait for B", || {
        metric(&a, "roomcast_redis_flush_waiting") == 1.0 || metric(&a, "roomcast_redis_buffer_depth") == 0.0
    });
    assert_eq!(metric(&a, "roomcast_redis_buffer_depth"), 50.0, "held, not flushed");
    gate.set_open(true);
    for n in 1..=50 {
        assert_eq!(recv_json(&mut member)["data"], n, "buffered message {n}");
    }
    eventually("the flush to end", || metric(&a, "roomcast_redis_flush_waiting") == 0.0);
    assert_eq!(metric(&a, "roomcast_redis_unconfirmed_total"), 0.0);
}

/// Issue 11, item 2: a node that is not back when the wait runs out misses
/// the buffered messages, and the publishing node counts every one of them.
#[test]
fn issue_11_2_messages_a_node_may_have_missed_are_counted() {
    let mut redis = Redis::start();
    let wait = ["--redis-resubscribe-wait-secs", "1"];
    let (_gate, a, b, _member) = outage_with_a_gated_node(&mut redis, &wait, "gone", 20);
    redis.restart();
    eventually("A to flush after its wait", || {
        metric(&a, "roomcast_redis_buffer_depth") == 0.0 && get(&a, "/readyz").0 == 200
    });
    assert_eq!(metric(&a, "roomcast_redis_unconfirmed_total"), 20.0);
    drop(b);
}

/// Issue 18: with Redis unreachable from the start, the log says it
/// cannot connect (and where), not that a connection it never had was lost.
#[test]
fn an_unreachable_redis_at_start_is_logged_as_such() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let (server, logs) = Server::start_logged(&["--redis-url", &url, "--log-level", "info"]);
    let line = logs
        .iter()
        .find(|l| l.contains("Redis at"))
        .expect("a line about reaching Redis");
    assert!(
        line.contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "{line}"
    );
    assert!(line.contains("retrying in"), "{line}");
    assert_eq!(get(&server, "/readyz").0, 503);
    let lost: Vec<String> = logs.try_iter().filter(|l| l.contains("lost its connection")).collect();
    assert!(lost.is_empty(), "{lost:?}");
}
