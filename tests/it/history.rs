//! Room history and recovery on one node (issue 13): offsets, positions in
//! acks, replay with no gap and no duplicate at the seam, the `history`
//! query, limits and errors. Real binary, real WebSocket clients.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::util::*;

/// Joins `room` (optionally recovering); returns the ack and the offsets
/// of the messages that came before it (the replay). Acks of other
/// requests are skipped.
pub(crate) fn join_replay(ws: &mut Client, room: &str, id: u64, since: Option<Value>) -> (Value, Vec<u64>) {
    let mut req = json!({"op":"join","room":room,"id":id});
    if let Some(since) = since {
        req["since"] = since;
    }
    send_json(ws, req);
    let mut replay = Vec::new();
    loop {
        let m = recv_json(ws);
        match m["op"].as_str() {
            Some("ack") if m["id"] == id => return (m, replay),
            Some("ack") => {}
            Some("message") => replay.push(m["offset"].as_u64().unwrap()),
            _ => panic!("{m}"),
        }
    }
}

/// Joins `room` and returns the ack.
pub(crate) fn join(ws: &mut Client, room: &str, id: u64, since: Option<Value>) -> Value {
    join_replay(ws, room, id, since).0
}

/// Reads messages until the one with offset `last` (skipping acks);
/// returns their offsets.
pub(crate) fn offsets_until(ws: &mut Client, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let m = recv_json(ws);
        if m["op"] == "ack" {
            continue;
        }
        assert_eq!(m["op"], "message", "{m}");
        got.push(m["offset"].as_u64().unwrap());
    }
    got
}

#[test]
fn messages_are_numbered_and_acks_say_where() {
    let server = Server::start(&["--history-size", "100", "--shards", "2"]);
    let (mut member, _) = join_broker(&server, "");
    let (mut publisher, _) = join_broker(&server, "");
    let ack = join(&mut member, "h", 1, None);
    assert_eq!(ack["offset"], 0, "{ack}");
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch.len(), 12);
    assert!(ack.get("recovered").is_none(), "no since, no recovered: {ack}");
    for n in 1..=5 {
        send_json(&mut publisher, json!({"op":"publish","room":"h","data":n,"id":n}));
        assert_eq!(recv_json(&mut publisher), json!({"op":"ack","id":n,"offset":n}));
    }
    for n in 1..=5 {
        let m = recv_json(&mut member);
        assert_eq!(
            m,
            json!({"op":"message","room":"h","from":m["from"],"data":n,"offset":n})
        );
    }
    // A later member starts at the top.
    let (mut late, _) = join_broker(&server, "");
    let ack = join(&mut late, "h", 2, None);
    assert_eq!(
        (ack["offset"].as_u64(), ack["epoch"].as_str()),
        (Some(5), Some(&*epoch))
    );
}

/// The member's connection dies while a publisher keeps publishing; it
/// reconnects (to whichever shard) with `since` and gets every message
/// exactly once, in order, including those published during the join.
#[test]
fn a_reconnecting_member_misses_nothing_and_gets_nothing_twice() {
    let server = Server::start(&["--history-size", "10000", "--shards", "2", "--rate-limit", "100000"]);
    recover_again_and_again(&[&server], 6);
}

/// A publisher on `servers[0]` publishes to room `live` without pause; a
/// member reads 20 messages, drops its connection and recovers with
/// `since` on the next server (round-robin), `rounds` times. Checks that
/// it got every message exactly once, in order, offsets consecutive,
/// including those published while it was joining.
pub(crate) fn recover_again_and_again(servers: &[&Server], rounds: u64) {
    let (mut publisher, _) = join_broker(servers[0], "");
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                n += 1;
                send_json(&mut publisher, json!({"op":"publish","room":"live","data":n,"id":n}));
                assert_eq!(recv_json(&mut publisher)["offset"], n);
            }
            n
        })
    };
    let (mut member, _) = join_broker(servers[0], "");
    let ack = join(&mut member, "live", 1, None);
    let epoch = ack["epoch"].clone();
    let mut last = ack["offset"].as_u64().unwrap();
    let mut seen: Vec<u64> = vec![];
    for round in 0..rounds {
        // Read a few live messages, then drop the connection.
        for _ in 0..20 {
            let o = offsets_until_any(&mut member);
            assert_eq!(o, last + 1, "round {round}: consecutive");
            last = o;
            seen.push(o);
        }
        drop(member);
        let next = servers[(round as usize + 1) % servers.len()];
        let (mut again, _) = join_broker(next, "");
        let since = Some(json!({"offset":last,"epoch":epoch}));
        let (ack, replay) = join_replay(&mut again, "live", 10 + round, since);
        assert_eq!(ack["recovered"], true, "{ack}");
        assert_eq!(ack["epoch"], epoch);
        // The replay came before the ack: everything after `last` up to
        // the ack's offset; then live from the next one.
        let top = ack["offset"].as_u64().unwrap();
        assert_eq!(replay, (last + 1..=top).collect::<Vec<_>>(), "round {round}");
        seen.extend(&replay);
        last = top;
        member = again;
    }
    stop.store(true, Relaxed);
    let published = publishing.join().unwrap();
    if last < published {
        for o in offsets_until(&mut member, published) {
            assert_eq!(o, last + 1, "consecutive after the last recovery");
            last = o;
            seen.push(o);
        }
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "each offset once, in order");
    assert_eq!(last, published);
}

/// The offset of the next message (acks skipped), checking its data is
/// its offset.
fn offsets_until_any(ws: &mut Client) -> u64 {
    loop {
        let m = recv_json(ws);
        if m["op"] == "ack" {
            continue;
        }
        let o = m["offset"].as_u64().unwrap_or_else(|| panic!("{m}"));
        assert_eq!(m["data"], o);
        return o;
    }
}

#[test]
fn every_member_sees_the_same_consecutive_offsets_from_publishers_on_every_shard() {
    let server = Server::start(&["--history-size", "100", "--shards", "3", "--rate-limit", "100000"]);
    let mut members: Vec<Client> = (0..3).map(|_| join_broker(&server, "").0).collect();
    for (i, m) in members.iter_mut().enumerate() {
        join(m, "many", i as u64 + 1, None);
    }
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let (mut ws, _) = join_broker(&server, "");
            std::thread::spawn(move || {
                for n in 0..200u64 {
                    send_json(&mut ws, json!({"op":"publish","room":"many","data":[p, n],"id":n}));
                    assert_eq!(recv_json(&mut ws)["op"], "ack");
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let mut views = Vec::new();
    for m in &mut members {
        let mut view = Vec::new();
        for _ in 0..600 {
            let msg = recv_json(m);
            view.push((msg["offset"].as_u64().unwrap(), msg["data"].clone()));
        }
        assert_eq!(
            view.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            (1..=600).collect::<Vec<_>>()
        );
        views.push(view);
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "one order for everyone");
}

#[test]
fn recovery_fails_loudly_when_messages_are_gone_or_the_epoch_changed() {
    let server = Server::start(&["--history-size", "3"]);
    let (mut ws, _) = join_broker(&server, "");
    let epoch = join(&mut ws, "small", 1, None)["epoch"].clone();
    for n in 1..=5 {
        send_json(&mut ws, json!({"op":"publish","room":"small","data":n,"id":100 + n}));
    }
    offsets_until(&mut ws, 5);
    send_json(&mut ws, json!({"op":"leave","room":"small","id":2}));
    assert_eq!(recv_json(&mut ws)["op"], "ack");
    // Kept: 3, 4, 5. From 2 every later message is there; from 1 not.
    let ack = join(&mut ws, "small", 3, Some(json!({"offset":2,"epoch":epoch})));
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(true), Some(5))
    );
    leave(&mut ws, "small", 4);
    let ack = join(&mut ws, "small", 5, Some(json!({"offset":1,"epoch":epoch})));
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(false), Some(5))
    );
    leave(&mut ws, "small", 6);
    for since in [
        json!({"offset":9,"epoch":epoch}),
        json!({"offset":4,"epoch":"000000000000"}),
    ] {
        let ack = join(&mut ws, "small", 7, Some(since.clone()));
        assert_eq!(ack["recovered"], false, "{since}");
        assert_eq!(ack["epoch"], epoch, "the current position to start over from");
        leave(&mut ws, "small", 8);
    }
    assert_eq!(metric(&server, "roomcast_recoveries_total{result=\"recovered\"}"), 1.0);
    assert_eq!(metric(&server, "roomcast_recoveries_total{result=\"gap\"}"), 3.0);
    eventually("the history gauge (sampled each sweep)", || {
        metric(&server, "roomcast_history_messages") == 3.0
    });
}

pub(crate) fn leave(ws: &mut Client, room: &str, id: u64) {
    send_json(ws, json!({"op":"leave","room":room,"id":id}));
    loop {
        let m = recv_json(ws);
        if m["op"] == "ack" {
            return;
        }
    }
}

#[test]
fn history_expires_after_its_ttl_and_a_restart_starts_new_epochs() {
    let server = Server::start(&["--history-size", "10", "--history-ttl-secs", "1"]);
    let (mut ws, _) = join_broker(&server, "");
    let epoch = join(&mut ws, "brief", 1, None)["epoch"].clone();
    send_json(&mut ws, json!({"op":"publish","room":"brief","data":1,"id":2}));
    offsets_until(&mut ws, 1);
    leave(&mut ws, "brief", 3);
    // The TTL is time itself: wait it out.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ack = join(&mut ws, "brief", 4, Some(json!({"offset":1,"epoch":epoch})));
    assert_eq!(ack["recovered"], false);
    assert_ne!(ack["epoch"], epoch, "a new stream");
    assert_eq!(ack["offset"], 0);

    let restarted = Server::start(&["--history-size", "10"]);
    let (mut ws, _) = join_broker(&restarted, "");
    let ack = join(&mut ws, "brief", 1, Some(json!({"offset":1,"epoch":epoch})));
    assert_eq!(ack["recovered"], false);
    assert_ne!(ack["epoch"], epoch);
}

#[test]
fn the_history_query_and_its_errors() {
    let file = temp_file("rooms.toml", "[[rooms]]\nmatch = \"chat:*\"\nhistory_size = 4\n");
    let server = Server::start(&["--config", &file, "--shards", "2"]);
    let (mut ws, _) = join_broker(&server, "");
    for n in 1..=6 {
        send_json(&mut ws, json!({"op":"publish","room":"chat:a","data":{"n":n},"id":n}));
        assert_eq!(recv_json(&mut ws)["offset"], n);
    }
    send_json(&mut ws, json!({"op":"history","room":"chat:a","id":7,"limit":2}));
    let h = recv_json(&mut ws);
    let epoch = h["epoch"].clone();
    assert_eq!(h["id"], 7);
    assert_eq!(h["room"], "chat:a");
    assert_eq!(h["offset"], 6);
    let from = h["messages"][0]["from"].clone();
    assert_eq!(
        h["messages"],
        json!([{"offset":5,"from":from,"data":{"n":5}},{"offset":6,"from":from,"data":{"n":6}}])
    );
    send_json(
        &mut ws,
        json!({"op":"history","room":"chat:a","id":8,"since":{"offset":3,"epoch":epoch}}),
    );
    let h = recv_json(&mut ws);
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [4, 5, 6]);
    // A room no section gives history, and bad requests.
    for (req, code) in [
        (json!({"op":"history","room":"lobby","id":9}), "no_history"),
        (
            json!({"op":"history","room":"chat:a","id":9,"limit":100000}),
            "bad_request",
        ),
        (json!({"op":"history","room":"chat:a","id":9,"limit":-1}), "bad_request"),
        (
            json!({"op":"history","room":"chat:a","id":9,"since":"yesterday"}),
            "bad_request",
        ),
        (
            json!({"op":"join","room":"chat:a","id":9,"since":{"offset":-3,"epoch":epoch}}),
            "bad_request",
        ),
        (json!({"op":"history","room":"","id":9}), "invalid_room"),
    ] {
        send_json(&mut ws, req.clone());
        let e = recv_json(&mut ws);
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{req}"
        );
    }
    // Without history, a room's messages carry no offset.
    send_json(&mut ws, json!({"op":"publish","room":"lobby","data":1,"id":10}));
    assert_eq!(recv_json(&mut ws), json!({"op":"ack","id":10}));
    let _ = std::fs::remove_dir_all(std::path::Path::new(&file).parent().unwrap());
}

#[test]
fn the_history_query_follows_the_rooms_claim() {
    let secret = "0123456789abcdef0123456789abcdef";
    let server = Server::start(&["--jwt-secret", secret, "--history-size", "5"]);
    let token = hs256(secret, json!({"sub":"ann","exp":unix_now() + 60,"rooms":["mine"]}));
    let (mut ws, _) = join_broker(&server, &format!("?token={token}"));
    send_json(&mut ws, json!({"op":"history","room":"theirs","id":1}));
    assert_eq!(recv_json(&mut ws)["code"], "forbidden");
    send_json(&mut ws, json!({"op":"history","room":"mine","id":2}));
    let h = recv_json(&mut ws);
    assert_eq!(
        (h["op"].as_str(), h["messages"].as_array().map(Vec::len)),
        (Some("history"), Some(0))
    );
}

#[test]
fn backend_publishes_to_a_room_with_history_are_numbered_too() {
    let server = Server::start(&["--history-size", "10", "--api-key", "k", "--shards", "2"]);
    let (mut ws, _) = join_broker(&server, "");
    join(&mut ws, "h", 1, None);
    let body = r#"{"batch":[{"room":"h","data":1},{"room":"h","data":2}]}"#;
    let (status, _, _) = http(
        &server,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200);
    for n in 1..=2 {
        let m = recv_json(&mut ws);
        assert_eq!((m["data"].as_u64(), m["offset"].as_u64()), (Some(n), Some(n)), "{m}");
    }
}

/// One request on a fresh connection; the raw response.
pub(crate) fn api(server: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http(
        server,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (status, body)
}

#[test]
fn the_http_api_answers_offsets_and_history() {
    let file = temp_file("rooms.toml", "[[rooms]]\nmatch = \"h:*\"\nhistory_size = 10\n");
    let server = Server::start(&["--config", &file, "--api-key", "k", "--shards", "3"]);
    let (status, body) = api(&server, "POST", "/api/publish", r#"{"room":"h:1","data":"a"}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"published":1,"offset":1}"#));
    let batch = r#"{"batch":[{"room":"h:1","data":"b"},{"room":"plain","data":1},{"room":"h:2","data":"c"},{"room":"h:1","data":"d"}]}"#;
    let (status, body) = api(&server, "POST", "/api/publish", batch);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"published":4,"offsets":[2,null,1,3]}"#)
    );

    let (status, body) = api(&server, "GET", "/api/history?room=h%3A1&limit=2", "");
    assert_eq!(status, 200, "{body}");
    let h: Value = body.parse().unwrap();
    assert_eq!((h["room"].as_str(), h["offset"].as_u64()), (Some("h:1"), Some(3)));
    assert!(h.get("id").is_none());
    let data: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["b", "d"]);
    let epoch = h["epoch"].as_str().unwrap();
    let (status, body) = api(
        &server,
        "GET",
        &format!("/api/history?room=h:1&since=1&epoch={epoch}&limit=1"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let h: Value = body.parse().unwrap();
    assert_eq!(h["messages"][0]["data"], "b", "{h}");
    for (path, status, code) in [
        ("/api/history?room=plain", 400, "no_history"),
        ("/api/history", 400, "bad_request"),
        ("/api/history?room=h:1&limit=0", 400, "bad_request"),
        ("/api/history?room=", 400, "invalid_room"),
        ("/api/history?room=h:1&since=1", 400, "bad_request"),
        ("/api/history?room=h:1&since=x&epoch=e", 400, "bad_request"),
    ] {
        let (got, body) = api(&server, "GET", path, "");
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(code), "{path}: {body}");
    }
    let (status, _, _) = http(
        &server,
        "GET /api/history?room=h:1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);
    // Pipelined behind a waiting answer: answered after it, in order.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let publish = r#"{"room":"h:3","data":1}"#;
    let two = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{publish}\
         GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        publish.len()
    );
    std::io::Write::write_all(&mut s, two.as_bytes()).unwrap();
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_str()), (200, r#"{"published":1,"offset":1}"#));
    let (status, _, body) = read_response(&mut s);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let _ = std::fs::remove_dir_all(std::path::Path::new(&file).parent().unwrap());
}

/// A join of a room with history, undone by a leave before the owner shard
/// answered (30 rooms: most are owned by the other shard), is still acked,
/// and the connection is not in the room afterwards.
#[test]
fn a_join_left_before_the_owner_answered_is_acked_and_undone() {
    let server = Server::start(&["--history-size", "10", "--shards", "2"]);
    let (mut ws, _) = join_broker(&server, "");
    let mut batch = Vec::new();
    for i in 0..30u64 {
        batch.push(json!({"op":"join","room":format!("p{i}"),"id":i}).to_string());
        batch.push(json!({"op":"leave","room":format!("p{i}"),"id":100 + i}).to_string());
    }
    for text in &batch {
        ws.write(tungstenite::Message::text(text.clone())).unwrap();
    }
    ws.flush().unwrap();
    let mut acked = std::collections::BTreeSet::new();
    while acked.len() < 60 {
        let m = recv_json(&mut ws);
        assert_eq!(m["op"], "ack", "{m}");
        assert!(acked.insert(m["id"].as_u64().unwrap()), "one ack per request: {m}");
    }
    // Not a member of any: a publish reaches nobody (the publisher is not in).
    let (mut other, _) = join_broker(&server, "");
    send_json(&mut other, json!({"op":"publish","room":"p0","data":1,"id":1}));
    assert_eq!(recv_json(&mut other)["offset"], 1);
    send_json(&mut ws, json!({"op":"ping","id":999}));
    assert_eq!(
        recv_json(&mut ws),
        json!({"op":"ack","id":999}),
        "no message of p0 came first"
    );
}

/// Joining a room one is already in, with `since`: nothing is replayed (it
/// missed nothing), on the owner shard or another; the ack says where the
/// room is and whether that position is still held.
#[test]
fn a_join_with_since_of_a_room_one_is_in_replays_nothing() {
    let server = Server::start(&["--history-size", "3", "--shards", "2"]);
    // Six rooms: owned by one shard or the other, the connection's or not.
    let (mut ws, _) = join_broker(&server, "");
    for r in 0..6 {
        let room = format!("again-{r}");
        let epoch = join(&mut ws, &room, 1, None)["epoch"].clone();
        for n in 1..=5 {
            send_json(&mut ws, json!({"op":"publish","room":room,"data":n,"id":100 + n}));
        }
        offsets_until(&mut ws, 5);
        let (ack, replay) = join_replay(&mut ws, &room, 2, Some(json!({"offset":4,"epoch":epoch})));
        assert!(replay.is_empty(), "{replay:?}");
        assert_eq!(
            (ack["offset"].as_u64(), ack["recovered"].as_bool()),
            (Some(5), Some(true)),
            "{ack}"
        );
        let (ack, replay) = join_replay(&mut ws, &room, 3, Some(json!({"offset":0,"epoch":epoch})));
        assert!(replay.is_empty());
        assert_eq!(ack["recovered"], false, "offset 1 is gone: {ack}");
    }
}
