//! Measurements of issue 11's attacks and faults, as its text ran them,
//! and of issue 13's recovery storm (`SHARDS=N`, and `REDIS=1` for two
//! nodes through a private Redis):
//! not tests (they assert nothing and print numbers), so `#[ignore]`d and
//! run by hand on a release build, optionally against another binary to
//! compare before and after a fix:
//!
//! ```text
//! cargo test --release --test it measure_ -- --ignored --nocapture --test-threads 1
//! ROOMCAST_BIN=/path/to/old/roomcast cargo test --release --test it measure_ -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each is bounded in count and time. The numbers of the last run are in
//! the issues' closing notes and in `docs/benchmarks.md`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::Redis;
use crate::util::*;

/// A metric, or 0 if this build has no such series (an older one).
fn metric_or_zero(server: &Server, series: &str) -> f64 {
    let (_, body) = get(server, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Resident memory of the server, in MiB.
fn rss_mib(server: &Server) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Item 1: the join/leave storm (400 connections, each writing 200 joins of
/// new rooms then 200 leaves; rate limits raised so that all of them are
/// applied), 2 shards, while a canary publisher on one shard publishes to a
/// member on the other as fast as its acks come back.
#[test]
#[ignore = "a measurement: run by hand (see the module docs)"]
fn measure_1_join_storm_canary() {
    for run in 1..=3 {
        let server = Server::start(&["--shards", "2", "--rate-limit", "1000000", "--rate-burst", "1000000"]);
        let (mut member, _) = join_broker(&server, "");
        let (mut publisher, _) = join_broker(&server, "");
        join_room(&mut member, "canary", 1);
        let mut storm: Vec<TcpStream> = (0..400).map(|_| raw_upgrade(&server, "/ws")).collect();
        for s in &mut storm {
            read_frame(s).expect("welcome");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let j = json!({"op":"join","room":format!("storm-{i}"),"id":i}).to_string();
            let l = json!({"op":"leave","room":format!("storm-{i}"),"id":i}).to_string();
            joins.extend(client_frame(true, 1, j.as_bytes(), true));
            leaves.extend(client_frame(true, 1, l.as_bytes(), true));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let canary = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = 0u64;
                while !stop.load(Relaxed) {
                    send_json(
                        &mut publisher,
                        json!({"op":"publish","room":"canary","data":acked + 1,"id":1}),
                    );
                    assert_eq!(recv_json(&mut publisher)["op"], "ack");
                    acked += 1;
                }
                acked
            })
        };
        let started = Instant::now();
        for s in &mut storm {
            s.write_all(&joins).unwrap();
        }
        for s in &mut storm {
            s.write_all(&leaves).unwrap();
        }
        let mut answers = 0;
        for s in &mut storm {
            for _ in 0..400 {
                let mut b = [0u8; 1];
                if !matches!(s.peek(&mut b), Ok(1)) {
                    break; // no answer within 2 s, or closed
                }
                match read_frame(s) {
                    Some(f) if f.opcode == 1 => answers += 1,
                    _ => break,
                }
            }
        }
        let storm_ms = started.elapsed().as_millis();
        stop.store(true, Relaxed);
        let acked = canary.join().unwrap();
        let mut got = Vec::new();
        member.get_mut().set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        while let Ok(tungstenite::Message::Text(t)) = member.read() {
            let m: serde_json::Value = t.parse().unwrap();
            got.push(m["data"].as_u64().unwrap());
            if got.last() == Some(&acked) {
                break;
            }
        }
        let lost = (1..=acked).filter(|n| !got.contains(n)).count();
        let dropped = metric(&server, "roomcast_dropped_total{reason=\"channel_full\"}");
        println!(
            "item 1 run {run}: {answers} of 160000 storm answers in {storm_ms} ms; canary acked {acked}, lost {lost}; channel_full drops {dropped}"
        );
    }
}

/// Item 2: six Redis kill/restart runs while node A publishes ~1 000
/// messages/s to a room whose only member is on node B. Lost = acked but
/// never received; counted = what A's metrics say B may have missed.
#[test]
#[ignore = "a measurement: run by hand (see the module docs)"]
fn measure_2_redis_restarts() {
    for run in 1..=6 {
        let mut redis = Redis::start();
        let url = redis.url();
        let start = |extra: &[&str]| {
            let mut args = vec!["--redis-url", url.as_str(), "--shards", "2"];
            args.extend_from_slice(extra);
            let s = Server::start(&args);
            eventually("the link", || get(&s, "/readyz").0 == 200);
            s
        };
        let a = start(&["--rate-limit", "100000"]);
        let b = start(&[]);
        let (mut member, _) = join_broker(&b, "");
        join_room(&mut member, "r", 1);
        let (mut publisher, _) = join_broker(&a, "");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let publishing = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    n += 1;
                    send_json(&mut publisher, json!({"op":"publish","room":"r","data":n,"id":n}));
                    assert_eq!(recv_json(&mut publisher)["op"], "ack");
                    acked.store(n, Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
                publisher
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        redis.stop();
        std::thread::sleep(Duration::from_millis(1500));
        redis.restart();
        eventually("A back", || get(&a, "/readyz").0 == 200);
        eventually("B back", || get(&b, "/readyz").0 == 200);
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(&a, "roomcast_redis_buffer_depth") > 0.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Relaxed);
        let mut publisher = publishing.join().unwrap();
        let last = acked.load(Relaxed);
        // A marker after everything: once B has it, B has all it will get.
        send_json(&mut publisher, json!({"op":"publish","room":"r","data":"end","id":0}));
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = 0;
        member
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        loop {
            let m = recv_json(&mut member);
            if m["data"] == "end" {
                break;
            }
            if !seen.insert(m["data"].as_u64().unwrap()) {
                duplicates += 1;
            }
        }
        let lost = last - seen.iter().filter(|&&n| n <= last).count() as u64;
        let counted = metric(&a, "roomcast_dropped_total{reason=\"link_buffer\"}")
            + metric_or_zero(&a, "roomcast_redis_unconfirmed_total");
        println!(
            "item 2 run {run}: acked {last}, lost at B {lost}, counted by A {counted}, lost without a count {}, duplicates {duplicates}",
            (lost as f64 - counted).max(0.0)
        );
    }
}

/// Item 4: 20 connections each pipelining 2 427 `GET /client.js` in one
/// write and reading nothing: the server's resident memory.
#[test]
#[ignore = "a measurement: run by hand (see the module docs)"]
fn measure_4_pipelined_requests_rss() {
    let server = Server::start(&["--shards", "2"]);
    let before = rss_mib(&server);
    let request = b"GET /client.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2427);
    let attackers: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(&request).unwrap();
            s
        })
        .collect();
    // Let the server do everything it will do with them.
    let mut peak = before;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_mib(&server));
    }
    let queued = metric(&server, "roomcast_queued_bytes") / (1024.0 * 1024.0);
    drop(attackers);
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "item 4: RSS {before:.1} MiB before, {peak:.1} MiB peak under 20 attackers ({:.2} MiB each; --max-queue-bytes 1 MiB), {queued:.1} MiB queued, {:.1} MiB after they closed",
        (peak - before) / 20.0,
        rss_mib(&server)
    );
}

/// Item 6: one shard, default limits; a member receives a message every
/// 12 ms (under the default 100/s rate limit) from a publisher on the same
/// shard while two clients flood it (pings, and
/// empty continuation frames), reconnecting whenever closed. The member's
/// publish-to-receive latency, without and with the flood.
#[test]
#[ignore = "a measurement: run by hand (see the module docs)"]
fn measure_6_ping_flood_latency() {
    let server = Server::start(&["--shards", "1"]);
    let (mut member, _) = join_broker(&server, "");
    join_room(&mut member, "calm", 1);
    let (mut publisher, _) = join_broker(&server, "");
    let mut sample = |label: &str| {
        let mut lat = Vec::new();
        for _ in 0..std::env::var("SAMPLES").map_or(800, |v| v.parse().unwrap()) {
            let t = Instant::now();
            send_json(&mut publisher, json!({"op":"publish","room":"calm","data":1}));
            recv_json(&mut member);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_millis(12));
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
        println!(
            "item 6 {label}: publish-to-receive p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            q(0.5),
            q(0.99),
            q(1.0)
        );
    };
    sample("no flood");
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let kinds: Vec<u8> =
        std::env::var("FLOODS").map_or(vec![0x9, 0x0], |v| v.split(',').map(|k| k.parse().unwrap()).collect());
    let floods: Vec<_> = kinds
        .into_iter()
        .map(|opcode| {
            let (stop, frames, server_addr) = (stop.clone(), frames.clone(), server.addr);
            std::thread::spawn(move || {
                // A text message opened once, then nothing but its empty
                // continuations; or nothing but pings.
                let opening = if opcode == 0x0 {
                    client_frame(false, 0x1, b"{", true)
                } else {
                    Vec::new()
                };
                let one = if opcode == 0x0 {
                    client_frame(false, 0x0, b"", true)
                } else {
                    client_frame(true, 0x9, b"p", true)
                };
                let per_burst = 64 * 1024 / one.len();
                let burst = one.repeat(per_burst);
                while !stop.load(Relaxed) {
                    let mut s = TcpStream::connect(server_addr).unwrap();
                    s.write_all(
                        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                    )
                    .unwrap();
                    // Never read: the flood is one-way, as an attacker's is.
                    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
                    if s.write_all(&opening).is_err() {
                        continue;
                    }
                    while !stop.load(Relaxed) {
                        if s.write_all(&burst).is_err() {
                            break;
                        }
                        frames.fetch_add(per_burst as u64, Relaxed);
                    }
                    let mut sink = [0u8; 4096];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
                    let _ = s.read(&mut sink);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    sample("under the flood");
    stop.store(true, Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    println!(
        "item 6: {} flood frames written; rate_limited drops {}; 1008 closes {}",
        frames.load(Relaxed),
        metric(&server, "roomcast_dropped_total{reason=\"rate_limited\"}"),
        metric(&server, "roomcast_closes_total{code=\"1008\"}")
    );
}

/// Issue 13: 1 000 members of a room with history lose their connections,
/// 100 messages are published meanwhile, and all 1 000 reconnect at once
/// and recover (8 client threads). Time from their joins to the last ack.
#[test]
#[ignore = "a measurement: run by hand (see the module docs)"]
fn measure_13_thousand_clients_recover_100_messages_each() {
    let shards = std::env::var("SHARDS").unwrap_or_else(|_| "2".into());
    let args = ["--shards", &shards, "--history-size", "200", "--rate-limit", "100000"];
    // REDIS=1: two nodes linked by a private Redis, which keeps the
    // history; the clients reconnect to the node they were not on.
    let redis = std::env::var("REDIS").is_ok().then(crate::cluster::Redis::start);
    let (server, other) = match &redis {
        Some(r) => (
            crate::cluster::node(r, &args[2..]),
            Some(crate::cluster::node(r, &args[2..])),
        ),
        None => (Server::start(&args), None),
    };
    let target = other.as_ref().unwrap_or(&server);
    let (mut publisher, _) = join_broker(&server, "");
    send_json(&mut publisher, json!({"op":"join","room":"r","id":1}));
    let ack = recv_json(&mut publisher);
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let top = ack["offset"].as_u64().unwrap();
    send_json(&mut publisher, json!({"op":"leave","room":"r","id":2}));
    recv_json(&mut publisher);
    // The members were at `top` when their connections died.
    for n in 1..=100 {
        send_json(&mut publisher, json!({"op":"publish","room":"r","data":n,"id":n}));
        assert_eq!(recv_json(&mut publisher)["op"], "ack");
    }
    let threads = 8;
    let per = 1000 / threads;
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, url, epoch) = (barrier.clone(), target.url("/ws"), epoch.clone());
            std::thread::spawn(move || {
                let mut clients: Vec<AnyClient> = (0..per)
                    .map(|_| {
                        let (mut ws, _) = tungstenite::connect(url.as_str()).expect("connect");
                        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
                            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        }
                        assert_eq!(recv_json_any(&mut ws)["op"], "welcome");
                        ws
                    })
                    .collect();
                barrier.wait();
                for ws in &mut clients {
                    let since = json!({"offset":top,"epoch":epoch});
                    send_json_any(ws, json!({"op":"join","room":"r","id":7,"since":since}));
                }
                let mut replayed = 0;
                for ws in &mut clients {
                    loop {
                        let m = recv_json_any(ws);
                        if m["op"] == "ack" {
                            assert_eq!(m["recovered"], true);
                            break;
                        }
                        replayed += 1;
                    }
                }
                replayed
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let replayed: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let took = start.elapsed();
    println!(
        "issue 13: {} clients recovered {replayed} messages ({} each) in {:.0} ms, {} shards{}",
        per * threads,
        replayed / (per * threads),
        took.as_secs_f64() * 1e3,
        shards,
        if redis.is_some() { ", through Redis" } else { "" }
    );
}

type AnyClient = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn send_json_any(ws: &mut AnyClient, v: serde_json::Value) {
    ws.send(tungstenite::Message::text(v.to_string())).unwrap();
}

fn recv_json_any(ws: &mut AnyClient) -> serde_json::Value {
    loop {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            return t.parse().unwrap();
        }
    }
}
