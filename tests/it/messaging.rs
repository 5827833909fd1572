//! The broker protocol on `/ws` in dev mode: welcome, every op, every error
//! code, fan-out across shards, direct messages, binary publish, cleanup.

use crate::util::*;
use serde_json::json;
use tungstenite::Message;

#[test]
fn the_welcome_is_the_first_frame_and_names_a_unique_anonymous_user() {
    let server = Server::start(&["--shards", "2"]);
    let (_a, wa) = join_broker(&server, "");
    let (_b, wb) = join_broker(&server, "");
    let user = wa["user"].as_str().unwrap();
    assert!(user.starts_with("anon-"), "{wa}");
    assert_ne!(wa["user"], wb["user"]);
    assert_ne!(wa["conn"], wb["conn"]);
    assert!(wa["conn"].is_u64());
}

#[test]
fn join_leave_and_their_acks() {
    let server = Server::start(&[]);
    let (mut ws, _) = join_broker(&server, "");
    join_room(&mut ws, "lobby", 1);
    join_room(&mut ws, "lobby", 2); // already a member: still acked
    send_json(&mut ws, json!({"op":"leave","room":"lobby","id":3}));
    assert_eq!(recv_json(&mut ws), json!({"op":"ack","id":3}));
    send_json(&mut ws, json!({"op":"leave","room":"never-joined","id":4}));
    assert_eq!(recv_json(&mut ws), json!({"op":"ack","id":4}), "leave is idempotent");
}

#[test]
fn every_error_code_and_the_connection_stays_open() {
    let server = Server::start(&["--max-message-bytes", "400"]);
    let (mut ws, welcome) = join_broker(&server, "");
    let long_room = "r".repeat(129);
    // A publish that fits the limit but whose message frame (with "from") would not.
    let envelope = json!({"op":"message","room":"x","from":welcome["user"],"data":""})
        .to_string()
        .len();
    let too_big = "d".repeat(400 - envelope + 1);
    assert!(
        json!({"op":"publish","room":"x","data":too_big,"id":10})
            .to_string()
            .len()
            <= 400
    );
    let cases = [
        ("{not json".to_string(), None, "bad_json"),
        ("[1,2,3]".to_string(), None, "bad_request"),
        ("\"join\"".to_string(), None, "bad_request"),
        (json!({"op":"join","id":1}).to_string(), Some(1), "bad_request"),
        (json!({"op":"join","room":7,"id":2}).to_string(), Some(2), "bad_request"),
        (
            json!({"op":"publish","room":"x","id":3}).to_string(),
            Some(3),
            "bad_request",
        ),
        (json!({"op":"send","data":1,"id":4}).to_string(), Some(4), "bad_request"),
        (json!({"op":"dance","id":5}).to_string(), Some(5), "unknown_op"),
        (
            json!({"op":"join","room":"","id":6}).to_string(),
            Some(6),
            "invalid_room",
        ),
        (
            json!({"op":"join","room":"a\nb","id":7}).to_string(),
            Some(7),
            "invalid_room",
        ),
        (
            json!({"op":"join","room":long_room,"id":8}).to_string(),
            Some(8),
            "invalid_room",
        ),
        (
            json!({"op":"publish","room":"x\u{1}","data":1,"id":9}).to_string(),
            Some(9),
            "invalid_room",
        ),
        (
            json!({"op":"publish","room":"x","data":too_big,"id":10}).to_string(),
            Some(10),
            "too_large",
        ),
        (
            json!({"op":"refresh","token":"t","id":11}).to_string(),
            Some(11),
            "bad_request",
        ),
        (json!({"op":"dance"}).to_string(), None, "unknown_op"),
    ];
    for (text, id, code) in cases {
        ws.send(Message::text(text.clone())).unwrap();
        let e = recv_json(&mut ws);
        assert_eq!(e["op"], "error", "{text} -> {e}");
        assert_eq!(e["code"], code, "{text} -> {e}");
        assert_eq!(e.get("id").and_then(|v| v.as_u64()), id, "{text} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still usable after all of that; and the keepalive op.
    join_room(&mut ws, "fine", 99);
    send_json(&mut ws, json!({"op":"ping","id":100}));
    assert_eq!(recv_json(&mut ws), json!({"op":"ack","id":100}));
}

#[test]
fn publish_reaches_every_member_on_every_shard_once_in_order_byte_identical() {
    let server = Server::start(&["--shards", "4"]);
    // Eight members: two per shard (connections are dealt round-robin).
    let mut members: Vec<Client> = (0..8)
        .map(|i| {
            let (mut ws, _) = join_broker(&server, "");
            join_room(&mut ws, "fanout", i);
            ws
        })
        .collect();
    let (mut outsider, _) = join_broker(&server, "");
    join_room(&mut outsider, "elsewhere", 1);
    // The publisher is not a member: it gets acks only.
    let (mut publisher, welcome) = join_broker(&server, "");
    let from = welcome["user"].as_str().unwrap().to_string();
    for n in 0..100u64 {
        send_json(
            &mut publisher,
            json!({"op":"publish","room":"fanout","data":{"n":n},"id":n}),
        );
    }
    for n in 0..100u64 {
        assert_eq!(recv_json(&mut publisher), json!({"op":"ack","id":n}));
    }
    let mut first: Vec<String> = Vec::new();
    for (i, ws) in members.iter_mut().enumerate() {
        for n in 0..100u64 {
            let text = recv_text(ws);
            let v: serde_json::Value = text.parse().unwrap();
            assert_eq!(
                v,
                json!({"op":"message","room":"fanout","from":from,"data":{"n":n}}),
                "member {i}"
            );
            if i == 0 {
                first.push(text);
            } else {
                assert_eq!(text, first[n as usize], "frames differ between recipients");
            }
        }
    }
    // Nothing else is queued for anyone: the next frame each gets is a fresh one.
    send_json(
        &mut outsider,
        json!({"op":"publish","room":"elsewhere","data":"marker"}),
    );
    assert_eq!(
        recv_json(&mut outsider)["data"],
        "marker",
        "the outsider got nothing from fanout"
    );
    send_json(&mut members[0], json!({"op":"publish","room":"fanout","data":"last"}));
    for ws in members.iter_mut() {
        assert_eq!(
            recv_json(ws)["data"],
            "last",
            "exactly once: no duplicates before the marker"
        );
    }
}

#[test]
fn a_member_that_publishes_gets_its_own_message() {
    let server = Server::start(&[]);
    let (mut ws, w) = join_broker(&server, "");
    join_room(&mut ws, "echo-room", 1);
    send_json(&mut ws, json!({"op":"publish","room":"echo-room","data":[1,2],"id":2}));
    let msg = recv_json(&mut ws);
    assert_eq!(
        msg,
        json!({"op":"message","room":"echo-room","from":w["user"],"data":[1,2]})
    );
    assert_eq!(recv_json(&mut ws), json!({"op":"ack","id":2}));
}

#[test]
fn data_is_passed_through_exactly_as_written() {
    let server = Server::start(&[]);
    let (mut ws, _) = join_broker(&server, "");
    join_room(&mut ws, "raw", 1);
    let data = r#"{"big":123456789012345678901234567890,"f":1.50,"e":1E3,"s":"\u00e9\"x","n":null}"#;
    let text = format!(r#"{{"op":"publish","room":"raw","data":{data}}}"#);
    ws.send(Message::text(text)).unwrap();
    let got = recv_text(&mut ws);
    assert!(got.ends_with(&format!(r#","data":{data}}}"#)), "{got}");
}

#[test]
fn send_reaches_the_user_on_another_shard() {
    let server = Server::start(&["--shards", "3"]);
    let (mut a, wa) = join_broker(&server, "");
    let (_b, _) = join_broker(&server, "");
    let (mut c, wc) = join_broker(&server, "");
    send_json(&mut a, json!({"op":"send","user":wc["user"],"data":{"hi":true},"id":5}));
    assert_eq!(recv_json(&mut a), json!({"op":"ack","id":5}));
    assert_eq!(
        recv_json(&mut c),
        json!({"op":"direct","from":wa["user"],"data":{"hi":true}})
    );
    // A user with no connection: accepted, delivered to no one.
    send_json(&mut a, json!({"op":"send","user":"nobody","data":1,"id":6}));
    assert_eq!(recv_json(&mut a), json!({"op":"ack","id":6}));
}

#[test]
fn binary_publish_is_delivered_unchanged() {
    let server = Server::start(&["--shards", "2"]);
    let (mut a, _) = join_broker(&server, "");
    let (mut b, _) = join_broker(&server, "");
    join_room(&mut a, "bin", 1);
    join_room(&mut b, "bin", 1);
    let mut small = vec![3u8];
    small.extend_from_slice(b"bin\x00\xff payload");
    a.send(Message::binary(small.clone())).unwrap();
    for ws in [&mut a, &mut b] {
        loop {
            match ws.read().unwrap() {
                Message::Binary(got) => break assert_eq!(&got[..], &small[..]),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected binary, got {other:?}"),
            }
        }
    }
    // A header naming no valid room is an error, and nothing is delivered.
    a.send(Message::binary(vec![9u8, b'x'])).unwrap();
    assert_eq!(recv_json(&mut a)["code"], "bad_request");
    a.send(Message::binary(vec![0u8, b'x'])).unwrap();
    assert_eq!(recv_json(&mut a)["code"], "invalid_room");
}

#[test]
fn leaving_and_disconnecting_free_rooms() {
    let server = Server::start(&["--shards", "2"]);
    let (mut a, _) = join_broker(&server, "");
    let (mut b, _) = join_broker(&server, "");
    join_room(&mut a, "one", 1);
    join_room(&mut a, "two", 2);
    join_room(&mut b, "two", 1);
    // a and b are on different shards; "two" still counts once.
    assert_eq!(metric(&server, "roomcast_rooms"), 2.0);
    send_json(&mut a, json!({"op":"leave","room":"one","id":3}));
    assert_eq!(recv_json(&mut a), json!({"op":"ack","id":3}));
    assert_eq!(metric(&server, "roomcast_rooms"), 1.0);
    // After leaving, publishes no longer reach a.
    send_json(&mut b, json!({"op":"publish","room":"one","data":0,"id":2}));
    assert_eq!(recv_json(&mut b), json!({"op":"ack","id":2}));
    drop(a);
    eventually("a's rooms to be freed on disconnect", || {
        metric(&server, "roomcast_rooms") == 1.0
    });
    b.close(None).unwrap();
    eventually("every room to be freed", || metric(&server, "roomcast_rooms") == 0.0);
}

#[test]
fn a_join_ack_means_publishes_from_every_shard_arrive() {
    // Joins race with publishes from other shards; after the ack, none may be missed.
    let server = Server::start(&["--shards", "4"]);
    let mut publishers: Vec<Client> = (0..4).map(|_| join_broker(&server, "").0).collect();
    for round in 0..20u64 {
        let room = format!("race-{round}");
        let (mut member, _) = join_broker(&server, "");
        join_room(&mut member, &room, 1);
        for (i, p) in publishers.iter_mut().enumerate() {
            send_json(p, json!({"op":"publish","room":room,"data":i,"id":round}));
        }
        let mut got: Vec<u64> = (0..4)
            .map(|_| recv_json(&mut member)["data"].as_u64().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3], "round {round}");
        for p in publishers.iter_mut() {
            assert_eq!(recv_json(p)["op"], "ack");
        }
    }
}
