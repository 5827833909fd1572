//! Presence on one node (issue 14): who is in a room, per user, across
//! shards; `joined`/`left` events once per user; the query's authorization
//! and errors; the HTTP API. Real binary, real WebSocket clients.

use serde_json::{json, Value};

use crate::history::api;
use crate::util::*;

const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

/// A server with JWT auth (named users) and `extra` flags; rooms
/// `lobby:*` track presence with events, `quiet:*` presence only.
pub(crate) fn server(extra: &[&str]) -> Server {
    let file = temp_file(
        "rooms.toml",
        "[[rooms]]\nmatch = \"lobby:*\"\npresence = true\njoin_leave = true\n\
         [[rooms]]\nmatch = \"quiet:*\"\npresence = true\n",
    );
    let mut args = vec!["--config", &file, "--jwt-secret", SECRET, "--api-key", "k"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A connection of `user`, allowed `rooms` (every room when empty).
pub(crate) fn user(server: &Server, user: &str, rooms: &[&str]) -> Client {
    let mut claims = json!({"sub": user, "exp": unix_now() + 600});
    if !rooms.is_empty() {
        claims["rooms"] = json!(rooms);
    }
    join_broker(server, &format!("?token={}", hs256(SECRET, claims))).0
}

/// Asks `room`'s presence; the answer.
fn presence(ws: &mut Client, room: &str, list: bool, id: u64) -> Value {
    let mut req = json!({"op":"presence","room":room,"id":id});
    if !list {
        req["list"] = json!(false);
    }
    send_json(ws, req);
    recv_json(ws)
}

/// The users of an answer, sorted, as (user, conns).
fn users(answer: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = answer["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|u| (u["user"].as_str().unwrap().to_string(), u["conns"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(u, n)| (u.to_string(), *n)).collect()
}

/// Waits until `room`'s presence, asked on `ws`, lists `want`.
pub(crate) fn presence_becomes(ws: &mut Client, room: &str, want: &[(&str, u64)]) -> Value {
    let mut last = Value::Null;
    let mut id = 1000;
    eventually(&format!("presence of {room} to be {want:?}"), || {
        id += 1;
        last = presence(ws, room, true, id);
        users(&last) == pairs(want)
    });
    last
}

#[test]
fn presence_counts_users_not_connections_across_shards() {
    let server = server(&["--shards", "3"]);
    let mut conns: Vec<Client> = Vec::new();
    for (name, n) in [("ann", 3), ("bob", 1)] {
        for i in 0..n {
            let mut ws = user(&server, name, &[]);
            join_room(&mut ws, "quiet:1", i);
            conns.push(ws);
        }
    }
    // Anyone whose token allows the room may ask, member or not.
    let mut asker = user(&server, "cat", &["quiet:*"]);
    let answer = presence_becomes(&mut asker, "quiet:1", &[("ann", 3), ("bob", 1)]);
    assert_eq!(
        (answer["op"].as_str(), answer["room"].as_str(), answer["count"].as_u64()),
        (Some("presence"), Some("quiet:1"), Some(2))
    );
    assert!(answer.get("truncated").is_none(), "{answer}");
    let count = presence(&mut asker, "quiet:1", false, 7);
    assert_eq!(count, json!({"op":"presence","id":7,"room":"quiet:1","count":2}));
    // Leaving and closing take a user's connections out, one by one.
    let mut bob = conns.pop().unwrap();
    send_json(&mut bob, json!({"op":"leave","room":"quiet:1","id":9}));
    assert_eq!(recv_json(&mut bob)["op"], "ack");
    drop(conns.pop());
    presence_becomes(&mut asker, "quiet:1", &[("ann", 2)]);
    conns.clear();
    presence_becomes(&mut asker, "quiet:1", &[]);
    assert_eq!(presence(&mut asker, "quiet:1", false, 8)["count"], 0);
    // A room nobody is in is empty, not an error.
    assert_eq!(
        presence(&mut asker, "quiet:none", true, 9),
        json!({"op":"presence","id":9,"room":"quiet:none","count":0,"users":[]})
    );
    assert!(metric(&server, "roomcast_presence_queries_total") >= 4.0);
}

/// Reads `ws` until a `joined`/`left` event; everything else must be acks.
fn event(ws: &mut Client) -> Value {
    loop {
        let m = recv_json(ws);
        match m["op"].as_str() {
            Some("joined" | "left") => return m,
            Some("ack") => {}
            _ => panic!("unexpected {m}"),
        }
    }
}

/// Publishes a marker to `room` from `ws` (not a member) and reads `reader` up to it:
/// what came before it other than acks and messages (events), in order.
fn until_marker(ws: &mut Client, reader: &mut Client, room: &str) -> Vec<Value> {
    let marker = format!("marker-{}", unique());
    send_json(ws, json!({"op":"publish","room":room,"data":marker}));
    let mut seen = Vec::new();
    loop {
        let m = recv_json(reader);
        if m["op"] == "message" && m["data"] == marker.as_str() {
            return seen;
        }
        if m["op"] != "ack" && m["op"] != "message" {
            seen.push(m);
        }
    }
}

#[test]
fn joined_once_on_the_first_connection_left_once_on_the_last() {
    let server = server(&["--shards", "3"]);
    let mut watcher = user(&server, "wes", &[]);
    join_room(&mut watcher, "lobby:a", 1);
    let mut first = user(&server, "ann", &[]);
    join_room(&mut first, "lobby:a", 1);
    assert_eq!(
        event(&mut watcher),
        json!({"op":"joined","room":"lobby:a","user":"ann"})
    );
    // A second tab: no event. Its first tab leaving: no event.
    let mut second = user(&server, "ann", &[]);
    join_room(&mut second, "lobby:a", 1);
    send_json(&mut first, json!({"op":"leave","room":"lobby:a","id":2}));
    assert_eq!(recv_json(&mut first)["op"], "ack");
    presence_becomes(&mut watcher, "lobby:a", &[("ann", 1), ("wes", 1)]);
    // The last one closing: one `left`.
    drop(second);
    assert_eq!(event(&mut watcher), json!({"op":"left","room":"lobby:a","user":"ann"}));
    // Nothing else came: not about ann, not about the joiner's own join.
    let (mut other, _) = (user(&server, "bob", &[]), ());
    join_room(&mut other, "lobby:a", 1);
    assert_eq!(
        event(&mut watcher),
        json!({"op":"joined","room":"lobby:a","user":"bob"})
    );
    let mut outsider = user(&server, "pub", &[]);
    let seen = until_marker(&mut outsider, &mut watcher, "lobby:a");
    assert!(seen.is_empty(), "{seen:?}");
    let own = until_marker(&mut outsider, &mut other, "lobby:a");
    assert!(own.is_empty(), "the joiner gets no event about itself: {own:?}");
    // The watcher got that marker too.
    while recv_json(&mut watcher)["op"] != "message" {}
    // Rooms with presence but no join_leave send no events.
    join_room(&mut watcher, "quiet:b", 3);
    let mut quiet = user(&server, "cat", &[]);
    join_room(&mut quiet, "quiet:b", 1);
    presence_becomes(&mut watcher, "quiet:b", &[("cat", 1), ("wes", 1)]);
    let seen = until_marker(&mut outsider, &mut watcher, "quiet:b");
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(metric(&server, "roomcast_presence_events_total{event=\"joined\"}"), 3.0);
    assert_eq!(metric(&server, "roomcast_presence_events_total{event=\"left\"}"), 1.0);
    eventually("the presence gauge", || {
        metric(&server, "roomcast_presence_users") == 4.0
    });
}

#[test]
fn a_connection_cut_by_the_heartbeat_leaves() {
    let server = server(&["--heartbeat-secs", "1"]);
    let mut watcher = user(&server, "wes", &[]);
    join_room(&mut watcher, "lobby:hb", 1);
    let mut dead = user(&server, "zed", &[]);
    join_room(&mut dead, "lobby:hb", 1);
    assert_eq!(event(&mut watcher)["user"], "zed");
    // `dead` never reads again, so it never answers a ping: cut after two
    // intervals. The watcher reads (and so answers its pings).
    assert_eq!(event(&mut watcher), json!({"op":"left","room":"lobby:hb","user":"zed"}));
    drop(dead);
}

#[test]
fn who_may_ask_and_what_is_refused() {
    let server = server(&["--presence-max-users", "2"]);
    let mut ws = user(&server, "ann", &["lobby:*", "plain"]);
    for (req, code) in [
        (json!({"op":"presence","room":"other:1","id":1}), "forbidden"),
        (json!({"op":"presence","room":"plain","id":2}), "no_presence"),
        (json!({"op":"presence","room":"bad\nroom","id":3}), "invalid_room"),
        (
            json!({"op":"presence","room":"lobby:x","id":4,"list":"no"}),
            "bad_request",
        ),
        (json!({"op":"presence","id":5}), "bad_request"),
    ] {
        send_json(&mut ws, req.clone());
        let e = recv_json(&mut ws);
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{req}"
        );
        assert_eq!(e["id"], req["id"]);
    }
    // Past --presence-max-users the list is cut and says so.
    let mut others: Vec<Client> = ["bob", "cat", "dan"].iter().map(|u| user(&server, u, &[])).collect();
    for (i, o) in others.iter_mut().enumerate() {
        join_room(o, "lobby:x", i as u64);
    }
    eventually("three users", || presence(&mut ws, "lobby:x", false, 6)["count"] == 3);
    let a = presence(&mut ws, "lobby:x", true, 7);
    assert_eq!(
        (
            a["count"].as_u64(),
            a["users"].as_array().map(Vec::len),
            a["truncated"].as_bool()
        ),
        (Some(3), Some(2), Some(true)),
        "{a}"
    );
}

#[test]
fn the_http_api_answers_presence() {
    let server = server(&["--shards", "2"]);
    let mut ann = user(&server, "ann", &[]);
    join_room(&mut ann, "lobby:api", 1);
    let mut probe = user(&server, "probe", &["lobby:*"]);
    presence_becomes(&mut probe, "lobby:api", &[("ann", 1)]);
    let (status, body) = api(&server, "GET", "/api/presence?room=lobby%3Aapi", "");
    assert_eq!(status, 200, "{body}");
    let v: Value = body.parse().unwrap();
    assert_eq!(
        v,
        json!({"op":"presence","room":"lobby:api","count":1,"users":[{"user":"ann","conns":1}]})
    );
    let (status, body) = api(&server, "GET", "/api/presence?room=lobby%3Aapi&list=false", "");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"op":"presence","room":"lobby:api","count":1}"#)
    );
    for (path, want) in [
        ("/api/presence?room=plain", 400),
        ("/api/presence", 400),
        ("/api/presence?room=lobby%3Aapi&list=maybe", 400),
    ] {
        assert_eq!(api(&server, "GET", path, "").0, want, "{path}");
    }
    let (status, _, _) = http(
        &server,
        "GET /api/presence?room=lobby%3Aapi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401, "the API key is required");
}

// ---- Across nodes, through a private Redis ----

/// A node of a cluster on `redis`, with this file's rooms and users, and
/// presence refreshed every `refresh` seconds.
fn node(redis: &crate::cluster::Redis, refresh: &str) -> Server {
    let url = redis.url();
    let server = server(&["--redis-url", &url, "--shards", "2", "--presence-refresh-secs", refresh]);
    eventually("the link to come up", || get(&server, "/readyz").0 == 200);
    server
}

#[test]
fn across_nodes_users_are_listed_and_events_sent_once() {
    let redis = crate::cluster::Redis::start();
    let (a, b) = (node(&redis, "10"), node(&redis, "10"));
    let mut watcher = user(&a, "wes", &[]);
    join_room(&mut watcher, "lobby:c", 1);
    let mut ann = user(&b, "ann", &[]);
    join_room(&mut ann, "lobby:c", 1);
    assert_eq!(
        event(&mut watcher),
        json!({"op":"joined","room":"lobby:c","user":"ann"})
    );
    presence_becomes(&mut watcher, "lobby:c", &[("ann", 1), ("wes", 1)]);
    // ann's second tab, on node A: no event anywhere; listed as 2 connections.
    let mut ann2 = user(&a, "ann", &[]);
    join_room(&mut ann2, "lobby:c", 1);
    let mut asker = user(&b, "bob", &["lobby:*"]);
    presence_becomes(&mut asker, "lobby:c", &[("ann", 2), ("wes", 1)]);
    // A node with no user in a room reads it from Redis.
    let mut far = user(&b, "far", &["lobby:*"]);
    let mut only_a = user(&a, "cat", &[]);
    join_room(&mut only_a, "lobby:only-a", 1);
    presence_becomes(&mut far, "lobby:only-a", &[("cat", 1)]);
    assert_eq!(presence(&mut far, "lobby:only-a", false, 3)["count"], 1);
    // ann leaves both: one `left`.
    drop(ann);
    drop(ann2);
    assert_eq!(event(&mut watcher), json!({"op":"left","room":"lobby:c","user":"ann"}));
    let mut outsider = user(&b, "pub", &[]);
    let seen = until_marker(&mut outsider, &mut watcher, "lobby:c");
    assert!(seen.is_empty(), "{seen:?}");
}

#[test]
fn a_killed_node_s_users_leave_within_three_refresh_intervals() {
    let redis = crate::cluster::Redis::start();
    let a = node(&redis, "1");
    let b = node(&redis, "1");
    let mut watcher = user(&a, "wes", &[]);
    join_room(&mut watcher, "lobby:k", 1);
    let mut ann = user(&b, "ann", &[]);
    join_room(&mut ann, "lobby:k", 1);
    let mut bob = user(&b, "bob", &[]);
    join_room(&mut bob, "lobby:k", 2);
    assert_eq!(event(&mut watcher)["user"], "ann");
    assert_eq!(event(&mut watcher)["user"], "bob");
    // No goodbye: SIGKILL. Its key expires within 2.5 s, A checks every 0.5 s.
    let killed = std::time::Instant::now();
    drop(b);
    drop((ann, bob));
    // bob reconnects to A at once (within the window): no left/joined pair.
    let mut bob_again = user(&a, "bob", &[]);
    join_room(&mut bob_again, "lobby:k", 3);
    assert_eq!(event(&mut watcher), json!({"op":"left","room":"lobby:k","user":"ann"}));
    let took = killed.elapsed();
    println!("left {took:?} after the kill");
    presence_becomes(&mut watcher, "lobby:k", &[("bob", 1), ("wes", 1)]);
    let mut outsider = user(&a, "pub", &[]);
    let seen = until_marker(&mut outsider, &mut watcher, "lobby:k");
    assert!(seen.is_empty(), "nothing about bob: {seen:?}");
}

#[test]
fn a_clean_shutdown_leaves_at_once_and_a_user_moving_nodes_makes_no_events() {
    let redis = crate::cluster::Redis::start();
    // A long refresh: only a goodbye can explain a quick `left`.
    let a = node(&redis, "60");
    let b = node(&redis, "60");
    let mut watcher = user(&a, "wes", &[]);
    join_room(&mut watcher, "lobby:s", 1);
    let mut ann = user(&b, "ann", &[]);
    join_room(&mut ann, "lobby:s", 1);
    let mut bob = user(&b, "bob", &[]);
    join_room(&mut bob, "lobby:s", 2);
    assert_eq!(event(&mut watcher)["user"], "ann");
    assert_eq!(event(&mut watcher)["user"], "bob");
    // bob moves to A before B goes: no event about bob, ever.
    let mut bob_on_a = user(&a, "bob", &[]);
    join_room(&mut bob_on_a, "lobby:s", 3);
    let pid = b.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(event(&mut watcher), json!({"op":"left","room":"lobby:s","user":"ann"}));
    presence_becomes(&mut watcher, "lobby:s", &[("bob", 1), ("wes", 1)]);
    let mut outsider = user(&a, "pub", &[]);
    let seen = until_marker(&mut outsider, &mut watcher, "lobby:s");
    assert!(seen.is_empty(), "nothing about bob: {seen:?}");
    drop((ann, bob));
}
