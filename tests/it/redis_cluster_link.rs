//! roomcast nodes linked through a private Redis Cluster (issue 16):
//! sharded pub/sub across three masters, a master's crash, and a slot
//! resharded while messages flow. The cluster harness is
//! `redis_cluster.rs`'s.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::history::{join, join_replay};
use crate::redis_cluster::{cli, raw, slot_map, wait_for, RedisCluster};
use crate::util::*;
use roomcast::internals::cluster_slot;

/// A roomcast node on the cluster whose one seed is the node at `seed`.
fn node(seed: u16, extra: &[&str]) -> Server {
    node_seeded(&format!("127.0.0.1:{seed}"), extra)
}

/// The channel of `room` (the default prefix).
fn channel(room: &str) -> String {
    format!("roomcast:room:{{{room}}}")
}

/// Room names whose channels live on each master: `per` per master, by port.
fn rooms_per_master(seed: u16, per: usize) -> BTreeMap<u16, Vec<String>> {
    named_per_master(seed, per, "room-")
}

/// The same, named `<prefix><i>`.
fn named_per_master(seed: u16, per: usize, prefix: &str) -> BTreeMap<u16, Vec<String>> {
    let map = slot_map(seed);
    let mut out: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for m in map.masters() {
        out.insert(m.addr.port, Vec::new());
    }
    for i in 0.. {
        let room = format!("{prefix}{i}");
        let owner = map.master(cluster_slot(channel(&room).as_bytes())).unwrap().addr.port;
        let list = out.get_mut(&owner).unwrap();
        if list.len() < per {
            list.push(room);
        }
        if out.values().all(|l| l.len() == per) {
            break;
        }
    }
    out
}

/// `PUBSUB SHARDNUMSUB channel` on the master at `port`.
fn shardnumsub(port: u16, channel: &str) -> i64 {
    match raw(port, &["PUBSUB", "SHARDNUMSUB", channel]) {
        redis::Value::Array(v) => match v.get(1) {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Reads messages until `n` have come; returns each room's data, in order.
fn collect(ws: &mut Client, n: usize) -> HashMap<String, Vec<u64>> {
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..n {
        let m = recv_json(ws);
        assert_eq!(m["op"], "message", "{m}");
        got.entry(m["room"].as_str().unwrap().to_string())
            .or_default()
            .push(m["data"].as_u64().unwrap());
    }
    got
}

#[test]
fn rooms_on_every_master_reach_three_nodes_once_and_in_order() {
    let cluster = RedisCluster::start(3, 0);
    let seed = cluster.ports()[0];
    let (a, b, c) = (
        node(seed, &["--rate-limit", "100000"]),
        node(seed, &[]),
        node(seed, &[]),
    );
    let rooms = rooms_per_master(seed, 2);
    let all: Vec<&String> = rooms.values().flatten().collect();
    let (mut on_b, _) = join_broker(&b, "");
    let (mut on_c, _) = join_broker(&c, "");
    for ws in [&mut on_b, &mut on_c] {
        for (i, room) in all.iter().enumerate() {
            join_room(ws, room, i as u64);
        }
    }
    // Each room's channel is subscribed on its own master only, by the two
    // nodes with members (not by A, which has none).
    for (&master, owned) in &rooms {
        for room in owned {
            assert_eq!(shardnumsub(master, &channel(room)), 2, "{room} on its master");
        }
        let listed = cli(master, &["PUBSUB", "SHARDCHANNELS", "roomcast:room:*"]);
        let mut listed: Vec<&str> = listed.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        listed.sort();
        let mut expected: Vec<String> = owned.iter().map(|r| channel(r)).collect();
        expected.sort();
        assert_eq!(listed, expected, "the room channels subscribed on master {master}");
    }
    let (mut publisher, _) = join_broker(&a, "");
    let per_room = 50u64;
    let mut id = 0;
    for n in 0..per_room {
        for room in &all {
            id += 1;
            send_json(&mut publisher, json!({"op":"publish","room":room,"data":n,"id":id}));
        }
    }
    for i in 1..=id {
        assert_eq!(recv_json(&mut publisher), json!({"op":"ack","id":i}));
    }
    for ws in [&mut on_b, &mut on_c] {
        let got = collect(ws, all.len() * per_room as usize);
        for room in &all {
            assert_eq!(got[room.as_str()], (0..per_room).collect::<Vec<_>>(), "{room}");
        }
    }
    // Exactly once: the next thing each member sees is a fresh marker.
    send_json(&mut publisher, json!({"op":"publish","room":all[0],"data":"marker"}));
    for ws in [&mut on_b, &mut on_c] {
        assert_eq!(recv_json(ws)["data"], "marker");
    }
    for server in [&a, &b, &c] {
        let body = get(server, "/metrics").1;
        assert!(body.contains("roomcast_redis_shard_up{node=\"127.0.0.1:"), "{body}");
    }
    // B and C heard every room on all three masters.
    for server in [&b, &c] {
        let body = get(server, "/metrics").1;
        let lanes = body
            .lines()
            .filter(|l| l.starts_with("roomcast_redis_shard_subscriptions{") && !l.ends_with(" 0"))
            .count();
        assert_eq!(lanes, 3, "{body}");
    }
}

/// Every node's client port, comma-separated: seeds for `node`.
fn seeds(cluster: &RedisCluster) -> String {
    let ports: Vec<String> = cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")).collect();
    ports.join(",")
}

/// A roomcast node given every cluster node as a seed.
fn node_seeded(seeds: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--redis-cluster-nodes", seeds, "--shards", "2"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    wait_for("the link to come up", || get(&server, "/readyz").0 == 200);
    server
}

/// Reads `room`'s messages on `ws` until `last` has come; their data, in
/// the order received (other rooms' messages are skipped).
fn until(ws: &mut Client, room: &str, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let m = recv_json(ws);
        if m["op"] != "message" || m["room"] != room {
            continue;
        }
        let n = m["data"].as_u64().unwrap();
        got.push(n);
        if n == last {
            return got;
        }
    }
}

/// `got` is `from..=to` in order, each possibly repeated at once (a
/// pipeline cut by a crash is sent again: at least once).
fn in_order_at_least_once(got: &[u64], from: u64, to: u64) {
    let mut deduped = got.to_vec();
    deduped.dedup();
    assert_eq!(deduped, (from..=to).collect::<Vec<_>>(), "{got:?}");
}

#[test]
fn a_crashed_master_is_replaced_by_its_replica_and_delivery_resumes() {
    let mut cluster = RedisCluster::start(3, 1);
    let seeds = seeds(&cluster);
    let a = node_seeded(&seeds, &["--rate-limit", "100000"]);
    let b = node_seeded(&seeds, &[]);
    let rooms = rooms_per_master(cluster.ports()[0], 1);
    let (&victim, on_victim) = rooms.iter().next().unwrap();
    let room = on_victim[0].clone();
    let (mut member, _) = join_broker(&b, "");
    join_room(&mut member, &room, 1);
    let (mut publisher, _) = join_broker(&a, "");
    for n in 0..10u64 {
        send_json(&mut publisher, json!({"op":"publish","room":room,"data":n}));
    }
    in_order_at_least_once(&until(&mut member, &room, 9), 0, 9);
    cluster.kill(victim);
    // Accepted while the master is gone: buffered by A, published once the
    // replica has taken over and B has subscribed on it.
    for n in 10..30u64 {
        send_json(&mut publisher, json!({"op":"publish","room":room,"data":n}));
    }
    wait_for("B to notice its master is gone", || {
        get(&b, "/readyz").0 != 200 || {
            // The replica may already have taken over.
            metric(&b, "roomcast_redis_reconnects_total") > 0.0
        }
    });
    let got = until(&mut member, &room, 29);
    in_order_at_least_once(&got, 10, 29);
    for server in [&a, &b] {
        wait_for("the link to be ready again", || get(server, "/readyz").0 == 200);
    }
    // And new publishes flow on the promoted replica, without a restart.
    send_json(&mut publisher, json!({"op":"publish","room":room,"data":30}));
    assert_eq!(until(&mut member, &room, 30), [30]);
    assert_eq!(metric(&a, "roomcast_redis_unconfirmed_total"), 0.0);
}

#[test]
fn a_slot_resharded_while_publishing_loses_nothing_uncounted() {
    reshard_while_publishing(&[]);
}

#[test]
fn a_room_with_history_resharded_while_publishing_keeps_every_offset() {
    reshard_while_publishing(&["--history-size", "1000"]);
}

/// Publishes 600 messages to a room whose slot `redis-cli --cluster
/// reshard` moves meanwhile; its member on another node must get all of
/// them in order, or the publishing node must count what it may have missed.
fn reshard_while_publishing(rooms: &[&str]) {
    let cluster = RedisCluster::start(3, 0);
    let seeds = seeds(&cluster);
    let port = cluster.ports()[0];
    let map = slot_map(port);
    let (from, to) = (map.masters()[0].addr.port, map.masters()[1].addr.port);
    // `redis-cli --cluster reshard` moves the source's lowest slots first:
    // a room in the source's first slot moves with the first one.
    let first = map.ranges().iter().find(|r| r.master.addr.port == from).unwrap().first;
    let room = (0..)
        .map(|i| format!("moving-{i}"))
        .find(|r| cluster_slot(channel(r).as_bytes()) == first)
        .unwrap();
    let mut args = vec!["--rate-limit", "100000"];
    args.extend_from_slice(rooms);
    let a = node_seeded(&seeds, &args);
    let b = node_seeded(&seeds, rooms);
    let (mut member, _) = join_broker(&b, "");
    let ack = join(&mut member, &room, 1, None);
    assert_eq!(ack["op"], "ack", "{ack}");
    let (mut publisher, _) = join_broker(&a, "");
    let id = |p: u16| cli(p, &["CLUSTER", "MYID"]).trim().to_string();
    let (from_id, to_id) = (id(from), id(to));
    let total = 600u64;
    let mut reshard = None;
    for n in 0..total {
        send_json(&mut publisher, json!({"op":"publish","room":room,"data":n}));
        if n == 100 {
            let (from_id, to_id) = (from_id.clone(), to_id.clone());
            reshard = Some(std::thread::spawn(move || {
                std::process::Command::new("redis-cli")
                    .args(["--cluster", "reshard", &format!("127.0.0.1:{port}")])
                    .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
                    .args(["--cluster-slots", "10", "--cluster-yes"])
                    .output()
                    .expect("redis-cli runs")
            }));
        }
        // Paced, so the move happens while messages flow.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let out = reshard.unwrap().join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        slot_map(port).master(first).unwrap().addr.port,
        to,
        "the room's slot moved"
    );
    let mut offsets = Vec::new();
    let mut got = Vec::new();
    while got.last() != Some(&(total - 1)) {
        let m = recv_json(&mut member);
        if m["op"] != "message" {
            continue;
        }
        got.push(m["data"].as_u64().unwrap());
        offsets.extend(m["offset"].as_u64());
    }
    got.dedup();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    let lost = total - got.len() as u64;
    let counted =
        metric(&a, "roomcast_redis_unconfirmed_total") + metric(&a, "roomcast_dropped_total{reason=\"link_buffer\"}");
    assert!(lost as f64 <= counted, "{lost} lost, {counted} counted");
    if !rooms.is_empty() {
        assert_eq!(offsets, (1..=total).collect::<Vec<_>>(), "every offset, once, in order");
    }
    // B follows the slot: subscribed on its new master.
    assert_eq!(shardnumsub(to, &channel(&room)), 1);
    wait_for("the link to be ready", || get(&b, "/readyz").0 == 200);
    send_json(&mut publisher, json!({"op":"publish","room":room,"data":total}));
    assert_eq!(until(&mut member, &room, total), [total]);
}

#[test]
fn rooms_with_history_are_numbered_and_recovered_on_their_own_masters() {
    let cluster = RedisCluster::start(3, 0);
    let seeds = seeds(&cluster);
    let args = ["--history-size", "1000", "--rate-limit", "100000"];
    let (a, b) = (node_seeded(&seeds, &args), node_seeded(&seeds, &args));
    let rooms: Vec<String> = rooms_per_master(cluster.ports()[0], 1)
        .into_values()
        .flatten()
        .collect();
    let (mut member, _) = join_broker(&b, "");
    let mut epochs = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let ack = join(&mut member, room, i as u64 + 1, None);
        assert_eq!(ack["offset"], 0, "{ack}");
        epochs.push(ack["epoch"].clone());
    }
    let (mut publisher, _) = join_broker(&a, "");
    let mut id = 0;
    for n in 0..20u64 {
        for room in &rooms {
            id += 1;
            send_json(&mut publisher, json!({"op":"publish","room":room,"data":n,"id":id}));
        }
    }
    for _ in 0..id {
        let ack = recv_json(&mut publisher);
        assert!(ack["offset"].as_u64().is_some(), "numbered by the room's master: {ack}");
    }
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for _ in 0..id {
        let m = recv_json(&mut member);
        seen.entry(m["room"].as_str().unwrap().to_string())
            .or_default()
            .push(m["offset"].as_u64().unwrap());
    }
    for room in &rooms {
        assert_eq!(seen[room.as_str()], (1..=20).collect::<Vec<_>>(), "{room}");
    }
    // A member that was away recovers what it missed, in each room, from
    // the stream on that room's master.
    let (mut back, _) = join_broker(&b, "");
    for (i, room) in rooms.iter().enumerate() {
        let since = json!({"offset": 15, "epoch": epochs[i]});
        let (ack, replay) = join_replay(&mut back, room, 100 + i as u64, Some(since));
        assert_eq!(ack["recovered"], true, "{ack}");
        assert_eq!(replay, (16..=20).collect::<Vec<_>>(), "{room}");
    }
    // The keys live in each room's slot, on its master.
    let map = slot_map(cluster.ports()[0]);
    for room in &rooms {
        let key = format!("roomcast:history:{{{room}}}");
        let master = map.master(cluster_slot(key.as_bytes())).unwrap().addr.port;
        assert_eq!(cli(master, &["XLEN", &key]).trim(), "20", "{room}");
    }
}

#[test]
fn cluster_options_are_checked_at_start_up() {
    let both = refused(&[
        "--redis-url",
        "redis://127.0.0.1:1",
        "--redis-cluster-nodes",
        "127.0.0.1:2",
    ]);
    assert!(both.contains("exclude each other"), "{both}");
    let bad = refused(&["--redis-cluster-nodes", "http://127.0.0.1:2"]);
    assert!(bad.contains("--redis-cluster-nodes"), "{bad}");
    let mixed = refused(&["--redis-cluster-nodes", "redis://127.0.0.1:2,rediss://127.0.0.1:3"]);
    assert!(mixed.contains("the same way"), "{mixed}");
    let ca = refused(&["--redis-cluster-nodes", "127.0.0.1:2", "--redis-tls-ca", "/nonexistent"]);
    assert!(ca.contains("--redis-tls-ca needs a rediss://"), "{ca}");
}

#[test]
fn a_master_lost_for_good_costs_only_its_own_rooms() {
    let mut cluster = RedisCluster::start(3, 0);
    for p in cluster.ports() {
        // The other masters keep serving their slots.
        assert_eq!(
            cli(p, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]).trim(),
            "OK"
        );
    }
    let seeds = seeds(&cluster);
    let a = node_seeded(&seeds, &["--rate-limit", "100000"]);
    let b = node_seeded(&seeds, &[]);
    let rooms = rooms_per_master(cluster.ports()[0], 1);
    let mut masters = rooms.iter();
    let (&victim, lost_rooms) = masters.next().unwrap();
    let (_, kept_rooms) = masters.next().unwrap();
    let (lost, kept) = (lost_rooms[0].clone(), kept_rooms[0].clone());
    let (mut member, _) = join_broker(&b, "");
    join_room(&mut member, &lost, 1);
    join_room(&mut member, &kept, 2);
    let (mut publisher, _) = join_broker(&a, "");
    cluster.kill(victim);
    for n in 0..10u64 {
        send_json(&mut publisher, json!({"op":"publish","room":lost,"data":n}));
        send_json(&mut publisher, json!({"op":"publish","room":kept,"data":n}));
    }
    // The other master's room is delivered while the victim stays dead...
    assert_eq!(until(&mut member, &kept, 9), (0..10).collect::<Vec<_>>());
    // ...the victim's messages wait in A's buffer, counted...
    wait_for("A to hold the lost master's messages", || {
        metric(&a, "roomcast_redis_buffer_depth") >= 10.0
    });
    // ...and B says which master it misses.
    let victim_node = format!("127.0.0.1:{victim}");
    wait_for("B to name the lost master", || {
        let (status, body) = get(&b, "/readyz");
        status == 503 && body.contains(&victim_node)
    });
    let up = format!("roomcast_redis_shard_up{{node=\"{victim_node}\"}}");
    assert_eq!(metric(&b, &up), 0.0);
    // Still: more of the other room, in order, nothing of the lost one.
    send_json(&mut publisher, json!({"op":"publish","room":kept,"data":10}));
    let m = recv_json(&mut member);
    assert_eq!(
        (m["room"].as_str(), m["data"].as_u64()),
        (Some(kept.as_str()), Some(10)),
        "{m}"
    );
}

#[test]
fn presence_spans_nodes_with_each_room_on_its_own_master() {
    use crate::presence::{presence_becomes, server, user};
    let cluster = RedisCluster::start(3, 0);
    let seeds = seeds(&cluster);
    let start = || {
        let s = server(&[
            "--redis-cluster-nodes",
            &seeds,
            "--shards",
            "2",
            "--presence-refresh-secs",
            "1",
        ]);
        wait_for("the link to come up", || get(&s, "/readyz").0 == 200);
        s
    };
    let (a, b) = (start(), start());
    let rooms: Vec<String> = named_per_master(cluster.ports()[0], 1, "quiet:c")
        .into_values()
        .flatten()
        .collect();
    let mut wes = user(&a, "wes", &[]);
    let mut ann = user(&b, "ann", &[]);
    for (i, room) in rooms.iter().enumerate() {
        join(&mut wes, room, i as u64 + 1, None);
        join(&mut ann, room, i as u64 + 1, None);
    }
    // Each room's presence hash is on its own master, and A sees B's user.
    let map = slot_map(cluster.ports()[0]);
    for room in &rooms {
        presence_becomes(&mut wes, room, &[("ann", 1), ("wes", 1)]);
        let key = format!("roomcast:presence:{{{room}}}");
        let master = map.master(cluster_slot(key.as_bytes())).unwrap().addr.port;
        assert_eq!(cli(master, &["EXISTS", &key]).trim(), "1", "{room}");
    }
    drop(ann);
    for room in &rooms {
        presence_becomes(&mut wes, room, &[("wes", 1)]);
    }
    // A node that dies without a goodbye: its liveness key (on whichever
    // master its slot is) expires, and its users leave every room.
    let mut bob = user(&b, "bob", &[]);
    for (i, room) in rooms.iter().enumerate() {
        join(&mut bob, room, 10 + i as u64, None);
    }
    for room in &rooms {
        presence_becomes(&mut wes, room, &[("bob", 1), ("wes", 1)]);
    }
    drop(b);
    for room in &rooms {
        presence_becomes(&mut wes, room, &[("wes", 1)]);
    }
}
