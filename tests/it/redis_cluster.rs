//! Redis Cluster (issue 16): a private cluster of `redis-server`s on free
//! loopback ports, made with `redis-cli --cluster create` as an operator
//! would, and the link's slot routing checked against it.
//!
//! The cluster bus port of each node is chosen free too: Redis's default
//! (port + 10 000) can land in the ephemeral range, where a leftover client
//! socket makes the node fail to start.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::free_port;
use roomcast::internals::{cluster_slot, Masters, NodeAddr, OnMoved, Redirect, SlotMap, Topology};

struct Node {
    port: u16,
    child: Option<Child>,
}

/// A private Redis Cluster, every node killed on drop.
pub(crate) struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, slots spread evenly;
    /// returns once every node says `cluster_state:ok` and knows all others.
    pub(crate) fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("roomcast-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster { nodes: Vec::new(), dir };
        for _ in 0..masters * (1 + replicas) {
            let node = cluster.spawn_node();
            cluster.nodes.push(node);
        }
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is installed with redis-server");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let total = cluster.nodes.len().to_string();
        for n in &cluster.nodes {
            wait_for(&format!("node {} to see the cluster ok", n.port), || {
                let info = cli(n.port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{total}"))
            });
        }
        // Replicas appear in CLUSTER SLOTS once they have synced.
        let first = cluster.nodes[0].port;
        wait_for("every node in CLUSTER SLOTS", || {
            let slots = cli(first, &["CLUSTER", "SLOTS"]);
            cluster
                .nodes
                .iter()
                .all(|n| slots.lines().any(|l| l.trim() == n.port.to_string()))
        });
        cluster
    }

    /// Starts one empty cluster node on free ports. A port found free can
    /// be taken before the node binds it (by another test's outgoing
    /// connection): a node that exits at once is started again on others.
    fn spawn_node(&self) -> Node {
        for _ in 0..10 {
            let (port, bus) = (free_port(), free_port());
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                ])
                .args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no"])
                // Replicas sync at once instead of after the default 5 s.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (.ci/run installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if cli(port, &["PING"]).trim() == "PONG" {
                    return Node {
                        port,
                        child: Some(child),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("no cluster node would start");
    }

    /// Every node's client port.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Kills one node at once (`SIGKILL`: a crash, not a shutdown).
    pub(crate) fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p PORT ARGS...`, its output (errors included) as text.
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One command on a fresh connection, its reply as the link's parser
/// reads it (an error reply is a value, not a failed call).
pub(crate) fn raw(port: u16, args: &[&str]) -> redis::Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    std::io::Write::write_all(&mut s, &cmd.get_packed_command()).unwrap();
    redis::Parser::new().parse_value(&mut s).unwrap()
}

/// Polls `cond` for up to 30 s (cluster creation and failover take seconds).
pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(port: u16) -> NodeAddr {
    NodeAddr {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A topology learnt from `seeds`, with no credentials (the private
/// clusters have none).
fn topology(seeds: Vec<NodeAddr>) -> Topology {
    let info = redis::IntoConnectionInfo::into_connection_info("redis://127.0.0.1:1").unwrap();
    Topology::new(seeds, info)
}

/// `CLUSTER SLOTS` from the node at `port`, as the link reads it.
pub(crate) fn slot_map(port: u16) -> SlotMap {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let reply: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
    let asked = NodeAddr {
        host: "127.0.0.1".into(),
        port,
    };
    SlotMap::parse(&reply, &asked).unwrap()
}

#[test]
fn the_link_routes_each_room_to_the_master_that_owns_it() {
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.ports();
    let map = slot_map(ports[0]);
    assert_eq!(map.covered(), 16_384);
    let mut masters: Vec<u16> = map.masters().iter().map(|n| n.addr.port).collect();
    masters.sort();
    let mut expected = ports.clone();
    expected.sort();
    assert_eq!(masters, expected, "three masters, the nodes started");
    // Every node gives the same map.
    for &p in &ports[1..] {
        assert_eq!(slot_map(p), map);
    }
    let mut used = std::collections::HashSet::new();
    for room in [
        "lobby",
        "game-42",
        "a{b}",
        "über ☃",
        "x}y",
        "room-7",
        "room-8",
        "room-9",
    ] {
        for name in [
            format!("rc:room:{{{room}}}"),
            format!("rc:hist:{{{room}}}"),
            format!("rc:meta:{{{room}}}"),
        ] {
            let slot = cluster_slot(name.as_bytes());
            let theirs = cli(ports[0], &["CLUSTER", "KEYSLOT", &name]);
            assert_eq!(theirs.trim(), slot.to_string(), "slot of {name}");
            // The master the map names takes the sharded subscription; the
            // others redirect to it.
            let owner = map.master(slot).unwrap().addr.port;
            used.insert(owner);
            for &p in &ports {
                match raw(p, &["SPUBLISH", &name, "x"]) {
                    redis::Value::Int(0) => assert_eq!(p, owner, "{name} published on {p}"),
                    redis::Value::ServerError(e) => assert_eq!(
                        Redirect::parse(&e),
                        Some(Redirect::Moved { slot, to: addr(owner) }),
                        "{name} on {p}"
                    ),
                    other => panic!("{name} on {p}: {other:?}"),
                }
            }
        }
    }
    assert_eq!(used.len(), 3, "the rooms above spread over all three masters");
}

#[test]
fn the_link_finds_the_promoted_replica_after_a_master_crashes() {
    let mut cluster = RedisCluster::start(3, 1);
    let ports = cluster.ports();
    // A seed that is not there first: the next one answers.
    let mut topology = topology(vec![addr(free_port()), addr(ports[0])]);
    let map = topology.refresh().unwrap().clone();
    assert_eq!((map.covered(), map.masters().len(), map.nodes().len()), (16_384, 3, 6));
    let slot = cluster_slot(b"rc:room:{lobby}");
    let old = map.master(slot).unwrap().addr.port;
    cluster.kill(old);
    // Asked again (the dead master is asked first, and skipped), the
    // cluster names the replica once it has taken over: within a few
    // node timeouts (1 s here).
    let started = Instant::now();
    let new = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "no replica promoted");
        if let Ok(map) = topology.refresh() {
            let owner = map.master(slot).unwrap().addr.port;
            if owner != old {
                break owner;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ports.contains(&new));
    assert_eq!(
        cli(new, &["SPUBLISH", "rc:room:{lobby}", "x"]).trim(),
        "0",
        "the new master serves the room"
    );
    // Every node gone: the last map stays, and the error names each node.
    drop(cluster);
    let err = topology.refresh().unwrap_err();
    assert!(err.contains(&format!("127.0.0.1:{new}")), "{err}");
    assert_eq!(topology.map().master(slot).unwrap().addr.port, new);
}

/// A raw sharded subscriber on one node, as the link's will be.
struct Listener {
    stream: std::net::TcpStream,
    parser: redis::Parser,
}

impl Listener {
    fn new(port: u16, channel: &str) -> Listener {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut l = Listener {
            stream,
            parser: redis::Parser::new(),
        };
        let cmd = redis::cmd("SSUBSCRIBE").arg(channel).get_packed_command();
        std::io::Write::write_all(&mut l.stream, &cmd).unwrap();
        assert_eq!(l.next(), ("ssubscribe".to_string(), channel.to_string()));
        l
    }

    /// The next push: its kind and its last text field (the payload of a
    /// message, the channel of a (un)subscription).
    fn next(&mut self) -> (String, String) {
        let value = self.parser.parse_value(&mut self.stream).unwrap();
        let (redis::Value::Array(items) | redis::Value::Push { data: items, .. }) = value else {
            panic!("not a push: {value:?}");
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        let kind = text(&items[0]);
        let last = if kind == "smessage" {
            text(&items[2])
        } else {
            text(&items[1])
        };
        (kind, last)
    }
}

/// Marks `slot` as migrating from the master at `from` to the one at `to`
/// (keys then move one by one with MIGRATE); returns `to`'s node id.
pub(crate) fn begin_migration(slot: u16, from: u16, to: u16) -> String {
    let id = |p: u16| cli(p, &["CLUSTER", "MYID"]).trim().to_string();
    let (from_id, to_id, slot) = (id(from), id(to), slot.to_string());
    assert_eq!(
        cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).trim(),
        "OK"
    );
    assert_eq!(
        cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).trim(),
        "OK"
    );
    to_id
}

/// Moves one (empty) slot from the master at `from` to the one at `to`,
/// the way `redis-cli --cluster reshard` does it for each slot.
pub(crate) fn move_slot(ports: &[u16], slot: u16, from: u16, to: u16) {
    let to_id = begin_migration(slot, from, to);
    let slot = slot.to_string();
    assert_eq!(cli(from, &["CLUSTER", "COUNTKEYSINSLOT", &slot]).trim(), "0");
    for p in std::iter::once(to)
        .chain(std::iter::once(from))
        .chain(ports.iter().copied())
    {
        assert_eq!(cli(p, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).trim(), "OK");
    }
}

#[test]
fn commands_go_to_each_rooms_master_in_order_and_follow_a_moved_slot() {
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.ports();
    let mut masters = Masters::connect(topology(vec![addr(ports[0])])).unwrap();
    let map = masters.topology().map().clone();
    let rooms: Vec<String> = (0..12).map(|i| format!("rc:room:{{r{i}}}")).collect();
    let owner = |ch: &str| map.master(cluster_slot(ch.as_bytes())).unwrap().addr.port;
    let mut owners: Vec<u16> = rooms.iter().map(|ch| owner(ch)).collect();
    let mut spread = owners.clone();
    spread.sort();
    spread.dedup();
    assert_eq!(spread.len(), 3, "the rooms spread over the three masters");
    let mut listeners: Vec<Listener> = rooms.iter().zip(&owners).map(|(ch, &p)| Listener::new(p, ch)).collect();
    // Ten messages per room, the rooms interleaved.
    let batch = |b: usize| -> Vec<(u16, redis::Cmd)> {
        (0..10)
            .flat_map(|k| {
                rooms.iter().map(move |ch| {
                    let mut cmd = redis::cmd("SPUBLISH");
                    cmd.arg(ch).arg(format!("{b}-{k}"));
                    (cluster_slot(ch.as_bytes()), cmd)
                })
            })
            .collect()
    };
    let check = |replies: Vec<redis::RedisResult<redis::Value>>, listeners: &mut [Listener], b: usize| {
        assert!(
            replies.iter().all(|r| matches!(r, Ok(redis::Value::Int(1)))),
            "{replies:?}"
        );
        for l in listeners.iter_mut() {
            for k in 0..10 {
                assert_eq!(l.next(), ("smessage".to_string(), format!("{b}-{k}")));
            }
        }
    };
    check(masters.run(&batch(0), OnMoved::Follow), &mut listeners, 0);
    assert_eq!(masters.refreshes(), 0);

    // The first room's slot moves to another master: its subscriber there
    // is told, and subscribes again where the slot lives now. The map the
    // commands use is stale: the old master redirects, and every message
    // still reaches the room, in order.
    let slot = cluster_slot(rooms[0].as_bytes());
    let to = *ports.iter().find(|&&p| p != owners[0]).unwrap();
    move_slot(&ports, slot, owners[0], to);
    assert_eq!(listeners[0].next(), ("sunsubscribe".to_string(), rooms[0].clone()));
    owners[0] = to;
    listeners[0] = Listener::new(to, &rooms[0]);
    check(masters.run(&batch(1), OnMoved::Follow), &mut listeners, 1);
    assert!(masters.refreshes() >= 1);
    assert_eq!(masters.topology().map().master(slot).unwrap().addr.port, to);
}

#[test]
fn a_slot_half_way_through_a_migration_is_followed_with_asking() {
    let cluster = RedisCluster::start(3, 0);
    let ports = cluster.ports();
    let mut masters = Masters::connect(topology(vec![addr(ports[0])])).unwrap();
    let (key, other) = ("rc:meta:{migrating}", "rc:hist:{migrating}");
    let slot = cluster_slot(key.as_bytes());
    let from = masters.topology().map().master(slot).unwrap().addr.port;
    let to = *ports.iter().find(|&&p| p != from).unwrap();
    let set = |k: &str, v: &str| {
        let mut cmd = redis::cmd("SET");
        cmd.arg(k).arg(v);
        (slot, cmd)
    };
    let get = |k: &str| {
        let mut cmd = redis::cmd("GET");
        cmd.arg(k);
        (slot, cmd)
    };
    let replies = masters.run(&[set(key, "1"), set(other, "2")], OnMoved::Follow);
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    // Half-way: one of the slot's keys is on the importing node already.
    begin_migration(slot, from, to);
    let to_s = to.to_string();
    let migrated = cli(from, &["MIGRATE", "127.0.0.1", &to_s, key, "0", "5000"]);
    assert_eq!(migrated.trim(), "OK");
    // The source answers ASK for the moved key and serves the other; both
    // come back in order, and the map is not asked for again (the slot
    // still belongs to the source).
    let replies = masters.run(&[get(key), get(other)], OnMoved::Follow);
    let values: Vec<_> = replies.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        values,
        [
            redis::Value::BulkString(b"1".to_vec()),
            redis::Value::BulkString(b"2".to_vec())
        ]
    );
    assert_eq!(masters.refreshes(), 0);
}
