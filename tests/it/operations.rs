//! Operations: metrics that move, the backend publish API, graceful
//! shutdown, `--print-config`, and scraping under many connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::*;
use serde_json::json;

const KEY: &str = "backend-key-for-tests";

fn post(server: &Server, key: Option<&str>, body: &str) -> (u16, String) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(server, &raw);
    (status, body)
}

#[test]
fn metrics_move_with_traffic() {
    let server = Server::start(&["--rate-limit", "1", "--rate-burst", "2"]);
    let (mut ws, _) = join_broker(&server, "");
    assert_eq!(metric(&server, "roomcast_connections"), 1.0);
    assert_eq!(metric(&server, "roomcast_connections_total"), 1.0);
    join_room(&mut ws, "m", 1);
    send_json(&mut ws, json!({"op":"publish","room":"m","data":1,"id":2}));
    assert_eq!(recv_json(&mut ws)["op"], "message");
    assert_eq!(recv_json(&mut ws)["op"], "ack");
    assert_eq!(metric(&server, "roomcast_messages_received_total"), 2.0);
    assert_eq!(metric(&server, "roomcast_deliveries_total"), 1.0);
    assert!(metric(&server, "roomcast_bytes_received_total") > 0.0);
    assert!(metric(&server, "roomcast_bytes_sent_total") > 0.0);
    // A third message within the second is over the burst of 2.
    send_json(&mut ws, json!({"op":"join","room":"n","id":3}));
    assert_eq!(recv_json(&mut ws)["code"], "rate_limited");
    assert_eq!(metric(&server, "roomcast_dropped_total{reason=\"rate_limited\"}"), 1.0);
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    eventually("the close to be counted", || {
        metric(&server, "roomcast_closes_total{code=\"1005\"}") == 1.0
    });
    assert_eq!(metric(&server, "roomcast_connections"), 0.0);
    assert!(metric(&server, "roomcast_process_resident_memory_bytes") > 0.0);
    let (_, body) = get(&server, "/metrics");
    assert!(body.contains("roomcast_build_info{version=\""), "{body}");
}

#[test]
fn the_api_is_404_without_a_key() {
    let server = Server::start(&[]);
    assert_eq!(post(&server, Some(KEY), r#"{"room":"a","data":1}"#).0, 404);
}

#[test]
fn the_api_refuses_bad_keys_bodies_and_sizes() {
    let server = Server::start(&["--api-key", KEY, "--max-message-bytes", "1000"]);
    assert_eq!(post(&server, None, r#"{"room":"a","data":1}"#).0, 401);
    assert_eq!(post(&server, Some("wrong"), r#"{"room":"a","data":1}"#).0, 401);
    let (status, body) = post(&server, Some(KEY), r#"{"room":"a"}"#);
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "bad_request"
    );
    assert_eq!(post(&server, Some(KEY), "{not json").0, 400);
    assert_eq!(post(&server, Some(KEY), r#"{"room":"","data":1}"#).0, 400);
    let big = format!(r#"{{"room":"a","data":"{}"}}"#, "x".repeat(2000));
    assert_eq!(post(&server, Some(KEY), &big).0, 413);
    let (status, _, _) = http(
        &server,
        "GET /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
}

#[test]
fn api_publishes_reach_room_members_and_users_on_every_shard() {
    let server = Server::start(&["--api-key", KEY, "--shards", "3"]);
    let mut members: Vec<(Client, String)> = (0..3)
        .map(|i| {
            let (mut ws, w) = join_broker(&server, "");
            join_room(&mut ws, "news", i);
            (ws, w["user"].as_str().unwrap().to_string())
        })
        .collect();
    let (status, body) = post(&server, Some(KEY), r#"{"room":"news","data":{"headline":"hi"}}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"published":1}"#));
    for (ws, _) in members.iter_mut() {
        assert_eq!(
            recv_json(ws),
            json!({"op":"message","room":"news","from":"server","data":{"headline":"hi"}})
        );
    }
    let target = members[2].1.clone();
    let batch = json!({"batch":[
        {"room":"news","data":1},
        {"user":target,"data":"just you"},
        {"room":"news","data":2}
    ]});
    let (status, body) = post(&server, Some(KEY), &batch.to_string());
    assert_eq!((status, body.as_str()), (200, r#"{"published":3}"#));
    for (i, (ws, _)) in members.iter_mut().enumerate() {
        assert_eq!(recv_json(ws)["data"], 1);
        if i == 2 {
            assert_eq!(recv_json(ws), json!({"op":"direct","from":"server","data":"just you"}));
        }
        assert_eq!(recv_json(ws)["data"], 2, "batch order is kept");
    }
}

#[test]
fn the_api_keeps_the_connection_alive_and_answers_pipelined_requests_in_order() {
    let server = Server::start(&["--api-key", KEY]);
    let (mut ws, _) = join_broker(&server, "");
    join_room(&mut ws, "k", 1);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let one = |n: u32| {
        let body = format!(r#"{{"room":"k","data":{n}}}"#);
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Three requests in one write, the middle one a probe.
    let burst = format!("{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{}", one(1), one(2));
    s.write_all(burst.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).2, r#"{"published":1}"#);
    assert_eq!(read_response(&mut s).2, "ok\n");
    assert_eq!(read_response(&mut s).2, r#"{"published":1}"#);
    // A body that arrives in pieces.
    let req = one(3);
    let (a, b) = req.split_at(req.len() - 4);
    s.write_all(a.as_bytes()).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    for n in 1..=3 {
        assert_eq!(recv_json(&mut ws)["data"], n);
    }
}

#[test]
fn sigterm_closes_every_client_with_1001_after_delivering_what_was_acked() {
    // A shutdown timeout far beyond TIMEOUT: if roomcast exits within
    // TIMEOUT, it did not wait for it.
    let mut server = Server::start(&["--shards", "3", "--shutdown-timeout-secs", "60"]);
    let mut members: Vec<Client> = (0..6)
        .map(|i| {
            let (mut ws, _) = join_broker(&server, "");
            join_room(&mut ws, "last-words", i);
            ws
        })
        .collect();
    let (mut publisher, _) = join_broker(&server, "");
    for n in 0..50 {
        send_json(
            &mut publisher,
            json!({"op":"publish","room":"last-words","data":n,"id":n}),
        );
    }
    // Every publish is acked before the signal is sent.
    for n in 0..50u64 {
        assert_eq!(recv_json(&mut publisher), json!({"op":"ack","id":n}));
    }
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for (i, ws) in members.iter_mut().enumerate() {
        for n in 0..50u64 {
            assert_eq!(recv_json(ws)["data"], n, "member {i} lost an acked message");
        }
        let (code, reason) = recv_close(ws);
        assert_eq!((code, reason.as_str()), (1001, "going away"), "member {i}");
    }
    assert_eq!(recv_close(&mut publisher).0, 1001);
    // Every client answered its close, so roomcast exits without waiting
    // for the 60 s shutdown timeout.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < TIMEOUT, "roomcast waited for the shutdown timeout");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn print_config_round_trips_through_config() {
    let bin = env!("CARGO_BIN_EXE_roomcast");
    let first = std::process::Command::new(bin)
        .args([
            "--print-config",
            "--shards",
            "3",
            "--heartbeat-secs",
            "7",
            "--jwt-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
            "--api-key",
            "k",
        ])
        .output()
        .unwrap();
    assert!(first.status.success());
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(
        !text.contains("s3cret-s3cret-s3cret-s3cret-s3cret") && !text.contains("\"k\""),
        "secrets are never printed:\n{text}"
    );
    assert!(
        text.contains("shards = 3") && text.contains("heartbeat-secs = 7"),
        "{text}"
    );
    let dir = std::env::temp_dir().join(format!("roomcast-print-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("effective.toml");
    std::fs::write(&path, &text).unwrap();
    let second = std::process::Command::new(bin)
        .args(["--print-config", "--config", path.to_str().unwrap()])
        .env("ROOMCAST_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret")
        .env("ROOMCAST_API_KEY", "k")
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(String::from_utf8(second.stdout).unwrap(), text);
}

#[test]
fn scraping_works_with_5000_connections_open() {
    let server = Server::start(&["--shards", "2"]);
    // Connect from 10 threads at once, like a reconnect storm.
    let addr = server.addr;
    let workers: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
                let mut conns = Vec::with_capacity(500);
                for _ in 0..500 {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.write_all(request.as_bytes()).unwrap();
                    conns.push(s);
                }
                // Each gets its 101 (and a welcome behind it).
                for s in conns.iter_mut() {
                    s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    let mut b = [0u8; 12];
                    s.read_exact(&mut b).unwrap();
                    assert_eq!(&b[..12], b"HTTP/1.1 101");
                }
                conns
            })
        })
        .collect();
    let _conns: Vec<TcpStream> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    eventually("5000 connections", || metric(&server, "roomcast_connections") == 5000.0);
    // How long a scrape takes is measured in docs/benchmarks.md, not here.
    let (status, body) = get(&server, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("roomcast_connections 5000"));
}

/// The listener's accept backlog is the kernel's cap (`somaxconn`), not
/// std's 128: with roomcast frozen, so that nothing is accepted, every
/// connection of a storm still completes its TCP handshake into the
/// backlog. With 128 the 130th connect would time out.
#[test]
fn the_accept_backlog_holds_a_connection_storm() {
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let storm = somaxconn.min(1000);
    let server = Server::start(&[]);
    let pid = server.child.id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success())
    };
    signal("-STOP");
    let mut conns = Vec::with_capacity(storm);
    let mut failed = None;
    for i in 0..storm {
        match TcpStream::connect_timeout(&server.addr, Duration::from_secs(3)) {
            Ok(s) => conns.push(s),
            Err(e) => {
                failed = Some(format!("connect {i} of {storm} failed: {e}"));
                break;
            }
        }
    }
    signal("-CONT");
    if let Some(why) = failed {
        panic!("{why} (somaxconn {somaxconn})");
    }
    drop(conns);
    assert_eq!(get(&server, "/healthz").0, 200);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "info"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    // The address line on standard output is JSON too.
    let mut listening = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut listening).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{v}");
    let v: serde_json::Value = serde_json::from_str(&listening).unwrap_or_else(|e| panic!("{e}: {listening}"));
    let addr = v["fields"]["addr"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(addr.parse::<std::net::SocketAddr>().is_ok(), "{v}");
    assert!(v["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("roomcast listening on "));
}

#[test]
fn a_second_signal_exits_at_once() {
    let (mut server, logs) = Server::start_logged(&["--shutdown-timeout-secs", "30", "--log-level", "info"]);
    // A client that will never answer the close frame keeps the shutdown waiting.
    let _stubborn = raw_upgrade(&server, "/ws");
    let pid = server.child.id().to_string();
    let kill = || {
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success())
    };
    kill();
    let start = Instant::now();
    // Two signals sent at once may reach the process as one: the second
    // goes once the first has been seen.
    loop {
        let line = logs.recv_timeout(TIMEOUT).expect("the first signal is logged");
        if line.contains("shutting down") {
            break;
        }
    }
    // The first signal alone does not end the process (the client holds it).
    assert!(server.child.try_wait().unwrap().is_none());
    kill();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        // TIMEOUT is well under the 30 s the first signal would wait.
        assert!(start.elapsed() < TIMEOUT, "the second signal did not end the process");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
}

#[test]
fn the_stats_line_is_logged_every_interval() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stats-interval-secs",
            "1",
            "--log-level",
            "info",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            if line.contains("stats") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(TIMEOUT).expect("a stats line within the timeout");
    let _ = child.kill();
    let _ = child.wait();
    for field in [
        "connections=",
        "rooms=",
        "msgs_in_per_sec=",
        "msgs_out_per_sec=",
        "rss_mib=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[test]
fn print_config_round_trips_room_sections() {
    let bin = env!("CARGO_BIN_EXE_roomcast");
    let dir = std::env::temp_dir().join(format!("roomcast-print-rooms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let written = dir.join("rooms.toml");
    std::fs::write(
        &written,
        "history-size = 5\n[[rooms]]\nmatch = \"chat:*\"\nhistory_size = 100\nhistory_ttl_secs = 600\n\
         [[rooms]]\nmatch = \"quiet\"\nhistory_size = 0\n",
    )
    .unwrap();
    let print = |path: &std::path::Path| {
        let out = std::process::Command::new(bin)
            .args(["--print-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = print(&written);
    assert!(text.contains("history-size = 5"), "{text}");
    assert!(
        text.contains("[[rooms]]\nmatch = \"chat:*\"\nhistory_size = 100\nhistory_ttl_secs = 600\n"),
        "{text}"
    );
    assert!(text.contains("match = \"quiet\"\nhistory_size = 0\n"), "{text}");
    let effective = dir.join("effective.toml");
    std::fs::write(&effective, &text).unwrap();
    assert_eq!(print(&effective), text);
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 18: a log line about a connection names it by the number its
/// client was told (the welcome's `conn`), with its user.
#[test]
fn log_lines_use_the_welcome_s_connection_number_and_user() {
    let (server, logs) = Server::start_logged(&[
        "--log-level",
        "info",
        "--shards",
        "3",
        "--rate-limit",
        "1",
        "--rate-burst",
        "1",
    ]);
    // A few connections, so shard-local ids and node numbers differ.
    let _others: Vec<_> = (0..4).map(|_| join_broker(&server, "").0).collect();
    let (mut flooder, welcome) = join_broker(&server, "");
    let (conn, user) = (
        welcome["conn"].as_u64().unwrap(),
        welcome["user"].as_str().unwrap().to_string(),
    );
    for _ in 0..200 {
        if flooder.send(tungstenite::Message::text("{}")).is_err() {
            break;
        }
    }
    let line = logs
        .iter()
        .find(|l| l.contains("closing") && l.contains("1008"))
        .expect("the flood's close is logged");
    assert!(line.contains(&format!("conn={conn} ")), "conn {conn}: {line}");
    assert!(line.contains(&user), "user {user}: {line}");
}
