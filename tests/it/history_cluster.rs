//! Room history through Redis (issue 13): Redis numbers and keeps each
//! room's messages, so every node sees the same offsets and any node can
//! recover a client that was on another. Real binaries linked by a private
//! `redis-server`, real WebSocket clients.

use serde_json::{json, Value};

use crate::cluster::{node, Redis};
use crate::history::{api, join, join_replay, leave, offsets_until, recover_again_and_again};
use crate::util::*;

/// Reads one non-ack message.
fn message(ws: &mut Client) -> Value {
    loop {
        let m = recv_json(ws);
        if m["op"] != "ack" {
            assert_eq!(m["op"], "message", "{m}");
            return m;
        }
    }
}

#[test]
fn every_node_sees_the_same_consecutive_offsets() {
    let redis = Redis::start();
    let (a, b) = (
        node(&redis, &["--history-size", "1000", "--rate-limit", "100000"]),
        node(&redis, &["--history-size", "1000", "--rate-limit", "100000"]),
    );
    let mut members: Vec<Client> = vec![join_broker(&a, "").0, join_broker(&b, "").0, join_broker(&b, "").0];
    let mut epoch = None;
    for (i, m) in members.iter_mut().enumerate() {
        let ack = join(m, "shared", i as u64 + 1, None);
        assert_eq!(ack["offset"], 0, "{ack}");
        // One stream for the room, whichever node is asked.
        assert_eq!(*epoch.get_or_insert(ack["epoch"].clone()), ack["epoch"]);
    }
    // Publishers on both nodes, interleaved, each waiting for nothing.
    let mut publishers = [join_broker(&a, "").0, join_broker(&b, "").0];
    const EACH: u64 = 100;
    for n in 0..EACH {
        for (p, ws) in publishers.iter_mut().enumerate() {
            send_json(ws, json!({"op":"publish","room":"shared","data":[p, n],"id":n}));
        }
    }
    let mut acked = Vec::new();
    for ws in publishers.iter_mut() {
        for n in 0..EACH {
            let ack = recv_json(ws);
            assert_eq!(ack["id"], n, "{ack}");
            acked.push(ack["offset"].as_u64().expect("the ack says where it landed"));
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=2 * EACH).collect::<Vec<_>>(), "every offset once");
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for m in members.iter_mut() {
        let got: Vec<Value> = (0..2 * EACH).map(|_| message(m)).collect();
        let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, (1..=2 * EACH).collect::<Vec<_>>(), "consecutive, in order");
        // Per publisher, in its order.
        for p in 0..2 {
            let mine: Vec<u64> = got
                .iter()
                .filter(|m| m["data"][0] == p)
                .map(|m| m["data"][1].as_u64().unwrap())
                .collect();
            assert_eq!(mine, (0..EACH).collect::<Vec<_>>());
        }
        seen.push(got);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "every member, the same messages");
}

/// The member's connection dies while a publisher keeps publishing; it
/// reconnects to the *other* node with `since`, again and again, and gets
/// every message exactly once, in order, including those published while
/// it was joining.
#[test]
fn a_member_recovers_on_the_other_node_with_no_gap_and_no_duplicate() {
    let redis = Redis::start();
    let args = ["--history-size", "100000", "--rate-limit", "100000"];
    let nodes = [node(&redis, &args), node(&redis, &args)];
    recover_again_and_again(&[&nodes[0], &nodes[1]], 8);
    let recovered = |n: &Server| metric(n, "roomcast_recoveries_total{result=\"recovered\"}");
    assert_eq!(recovered(&nodes[0]) + recovered(&nodes[1]), 8.0);
}

#[test]
fn history_trimmed_by_size_or_ttl_is_not_recovered() {
    let redis = Redis::start();
    let a = node(&redis, &["--history-size", "3", "--history-ttl-secs", "1"]);
    let b = node(&redis, &["--history-size", "3", "--history-ttl-secs", "1"]);
    let (mut ws, _) = join_broker(&a, "");
    let epoch = join(&mut ws, "small", 1, None)["epoch"].clone();
    for n in 1..=5 {
        send_json(&mut ws, json!({"op":"publish","room":"small","data":n,"id":100 + n}));
    }
    offsets_until(&mut ws, 5);
    // Kept: 3, 4, 5. From 2 every later message is there; from 1 not.
    let (mut other, _) = join_broker(&b, "");
    let (ack, replay) = join_replay(&mut other, "small", 2, Some(json!({"offset":2,"epoch":epoch})));
    assert_eq!(
        (ack["recovered"].as_bool(), ack["offset"].as_u64()),
        (Some(true), Some(5))
    );
    assert_eq!(replay, [3, 4, 5]);
    leave(&mut other, "small", 3);
    for since in [
        json!({"offset":1,"epoch":epoch}),
        json!({"offset":9,"epoch":epoch}),
        json!({"offset":4,"epoch":"000000000000"}),
    ] {
        let (ack, replay) = join_replay(&mut other, "small", 4, Some(since.clone()));
        assert_eq!(ack["recovered"], false, "{since}");
        assert_eq!((ack["epoch"].clone(), ack["offset"].as_u64()), (epoch.clone(), Some(5)));
        assert!(replay.is_empty());
        leave(&mut other, "small", 5);
    }
    // A second after the last publish the room's keys expire in Redis:
    // the next join is told of a new stream.
    leave(&mut ws, "small", 6);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ack = join(&mut other, "small", 7, Some(json!({"offset":5,"epoch":epoch})));
    assert_eq!(ack["recovered"], false);
    assert_ne!(ack["epoch"], epoch, "a new stream");
    assert_eq!(ack["offset"], 0);
    let gaps = |n: &Server| metric(n, "roomcast_recoveries_total{result=\"gap\"}");
    assert_eq!(gaps(&a) + gaps(&b), 4.0);
}

/// While Redis is down, what needs it is refused, never acked falsely; when
/// it comes back empty, its rooms start new epochs.
#[test]
fn a_redis_restart_starts_new_epochs_and_an_outage_answers_unavailable() {
    let mut redis = Redis::start();
    let file = temp_file("rooms.toml", "[[rooms]]\nmatch = \"r\"\nhistory_size = 10\n");
    let a = node(&redis, &["--config", &file, "--api-key", "k"]);
    let (mut ws, _) = join_broker(&a, "");
    let epoch = join(&mut ws, "r", 1, None)["epoch"].clone();
    for n in 1..=3 {
        send_json(&mut ws, json!({"op":"publish","room":"r","data":n,"id":10 + n}));
    }
    // Acks come from the publisher, messages from the subscription: in any order.
    let (mut acks, mut messages) = (0, 0);
    while acks < 3 || messages < 3 {
        match recv_json(&mut ws)["op"].as_str() {
            Some("ack") => acks += 1,
            Some("message") => messages += 1,
            other => panic!("{other:?}"),
        }
    }

    redis.stop();
    eventually("the link to notice", || get(&a, "/readyz").0 == 503);
    send_json(&mut ws, json!({"op":"publish","room":"r","data":4,"id":20}));
    let e = recv_json(&mut ws);
    assert_eq!(
        (e["op"].as_str(), e["id"].as_u64(), e["code"].as_str()),
        (Some("error"), Some(20), Some("unavailable")),
        "{e}"
    );
    send_json(&mut ws, json!({"op":"history","room":"r","id":21}));
    assert_eq!(recv_json(&mut ws)["code"], "unavailable");
    let (mut late, _) = join_broker(&a, "");
    send_json(&mut late, json!({"op":"join","room":"r","id":22}));
    assert_eq!(recv_json(&mut late)["code"], "unavailable");
    // The refused join is undone: publishes elsewhere do not reach it.
    let (status, body) = api(&a, "POST", "/api/publish", r#"{"room":"r","data":5}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"unavailable\""), "{body}");
    let (status, _) = api(&a, "GET", "/api/history?room=r", "");
    assert_eq!(status, 503);
    // A room without history still works locally.
    join_room(&mut late, "plain", 23);
    send_json(&mut late, json!({"op":"publish","room":"plain","data":"x"}));
    assert_eq!(recv_json(&mut late)["data"], "x");
    assert!(metric(&a, "roomcast_history_store_errors_total") >= 5.0);

    redis.restart();
    eventually("the link to come back", || get(&a, "/readyz").0 == 200);
    leave(&mut ws, "r", 30);
    let ack = join(&mut ws, "r", 31, Some(json!({"offset":3,"epoch":epoch})));
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], epoch, "Redis lost the stream: a new epoch");
    assert_eq!(ack["offset"], 0);
    let new_epoch = ack["epoch"].clone();
    send_json(&mut ws, json!({"op":"publish","room":"r","data":6,"id":32}));
    let mut got = (None, None);
    while got.0.is_none() || got.1.is_none() {
        let m = recv_json(&mut ws);
        match m["op"].as_str() {
            Some("ack") => got.0 = m["offset"].as_u64(),
            Some("message") => got.1 = m["offset"].as_u64(),
            _ => panic!("{m}"),
        }
    }
    assert_eq!(got, (Some(1), Some(1)));
    let h = {
        send_json(&mut ws, json!({"op":"history","room":"r","id":33}));
        recv_json(&mut ws)
    };
    assert_eq!((h["epoch"].clone(), h["offset"].as_u64()), (new_epoch, Some(1)));
}

#[test]
fn history_queries_and_the_api_read_redis_from_any_node() {
    let redis = Redis::start();
    let args = ["--history-size", "10", "--api-key", "k"];
    let (a, b) = (node(&redis, &args), node(&redis, &args));
    let (status, body) = api(&a, "POST", "/api/publish", r#"{"room":"q","data":"first"}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"published":1,"offset":1}"#));
    let batch = r#"{"batch":[{"room":"q","data":2},{"room":"other","data":0},{"room":"q","data":3}]}"#;
    let (status, body) = api(&b, "POST", "/api/publish", batch);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"published":3,"offsets":[2,1,3]}"#),
        "another room, its own offsets"
    );
    let (mut ws, w) = join_broker(&b, "");
    for n in 4..=6 {
        send_json(&mut ws, json!({"op":"publish","room":"q","data":n,"id":n}));
        assert_eq!(recv_json(&mut ws)["offset"], n);
    }
    send_json(&mut ws, json!({"op":"history","room":"q","id":1,"limit":3}));
    let h = recv_json(&mut ws);
    assert_eq!(
        (
            h["op"].as_str(),
            h["id"].as_u64(),
            h["room"].as_str(),
            h["offset"].as_u64()
        ),
        (Some("history"), Some(1), Some("q"), Some(6))
    );
    let messages = h["messages"].as_array().unwrap();
    let offsets: Vec<u64> = messages.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [4, 5, 6], "the latest, oldest first");
    assert_eq!(messages[0], json!({"offset":4,"from":w["user"],"data":4}));
    let epoch = h["epoch"].clone();
    send_json(
        &mut ws,
        json!({"op":"history","room":"q","id":2,"limit":2,"since":{"offset":1,"epoch":epoch}}),
    );
    let h = recv_json(&mut ws);
    let data: Vec<Value> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!(2), json!(3)], "the first after since");
    let (status, body) = api(&a, "GET", "/api/history?room=q&limit=2", "");
    assert_eq!(status, 200, "{body}");
    let h: Value = body.parse().unwrap();
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!((offsets, h["epoch"].clone()), (vec![5, 6], epoch));
}
