//! roomcast nodes linked through a private Redis Cluster (issue 16):
//! sharded pub/sub across three masters, a master's crash, and a slot
//! resharded while messages flow. The cluster harness is
//! `redis_cluster.rs`'s.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::redis_cluster::{cli, raw, slot_map, wait_for, RedisCluster};
use crate::util::*;
use roomcast::internals::cluster_slot;

/// A roomcast node on the cluster whose seed is the node at `seed`.
fn node(seed: u16, extra: &[&str]) -> Server {
    let seeds = format!("127.0.0.1:{seed}");
    let mut args = vec!["--redis-cluster-nodes", seeds.as_str(), "--shards", "2"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    wait_for("the link to come up", || get(&server, "/readyz").0 == 200);
    server
}

/// The channel of `room` (the default prefix).
fn channel(room: &str) -> String {
    format!("roomcast:room:{{{room}}}")
}

/// Room names whose channels live on each master: `per` per master, by port.
fn rooms_per_master(seed: u16, per: usize) -> BTreeMap<u16, Vec<String>> {
    let map = slot_map(seed);
    let mut out: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for m in map.masters() {
        out.insert(m.addr.port, Vec::new());
    }
    for i in 0.. {
        let room = format!("room-{i}");
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
