//! Which Redis Cluster master owns which slot, read from `CLUSTER SLOTS`,
//! and the redirections (`MOVED`, `ASK`) a master answers with when it
//! does not own a slot (any more).
//!
//! `CLUSTER SLOTS` rather than `CLUSTER SHARDS`: every node answers it the
//! same way and in slot order, a failed master that lost its slots is left
//! out, and it exists since Redis 3 (`CLUSTER SHARDS` lists shards in a
//! different order on each node and keeps a dead master as a slot-less
//! shard, both seen with redis-server 7.0).

use redis::Value;

use super::slot::SLOTS;

/// A cluster node's address for clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// Host name or IP address.
    pub host: String,
    /// Client port.
    pub port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A node as `CLUSTER SLOTS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where clients reach it.
    pub addr: NodeAddr,
    /// The node id (40 hex digits); empty if the reply had none.
    pub id: String,
}

/// A contiguous range of slots, its master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First slot of the range.
    pub first: u16,
    /// Last slot of the range (included).
    pub last: u16,
    /// The node that serves it.
    pub master: Node,
    /// Its replicas.
    pub replicas: Vec<Node>,
}

/// Slot → master, as one node saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Sorted by `first`, not overlapping.
    ranges: Vec<Range>,
}

/// Why a `CLUSTER SLOTS` reply was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReply(
    /// What was wrong with it.
    pub &'static str,
);

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply; `asked` is the address of the node
    /// that gave it (a node that does not know its own IP lists it empty).
    pub fn parse(reply: &Value, asked: &NodeAddr) -> Result<SlotMap, BadReply> {
        let Value::Array(entries) = reply else {
            return Err(BadReply("CLUSTER SLOTS did not answer an array"));
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err(BadReply("a slot range is not an array"));
            };
            let (Some(first), Some(last)) = (fields.first().and_then(int), fields.get(1).and_then(int)) else {
                return Err(BadReply("a slot range has no bounds"));
            };
            if first > last || last >= i64::from(SLOTS) || first < 0 {
                return Err(BadReply("a slot range is out of bounds"));
            }
            let mut nodes = fields[2..].iter().map(|n| node(n, asked));
            let master = nodes.next().ok_or(BadReply("a slot range has no master"))??;
            let replicas = nodes.collect::<Result<Vec<_>, _>>()?;
            ranges.push(Range {
                first: first as u16,
                last: last as u16,
                master,
                replicas,
            });
        }
        ranges.sort_by_key(|r| r.first);
        if ranges.windows(2).any(|w| w[0].last >= w[1].first) {
            return Err(BadReply("slot ranges overlap"));
        }
        Ok(SlotMap { ranges })
    }

    /// The master of `slot`; `None` if no node serves it (a cluster still
    /// being set up, or a master lost with no replica to take over).
    pub fn master(&self, slot: u16) -> Option<&Node> {
        let i = self.ranges.partition_point(|r| r.first <= slot);
        let range = self.ranges.get(i.checked_sub(1)?)?;
        (slot <= range.last).then_some(&range.master)
    }

    /// Every master, once each, in slot order of their first range.
    pub fn masters(&self) -> Vec<&Node> {
        let mut seen: Vec<&Node> = Vec::new();
        for range in &self.ranges {
            if !seen.iter().any(|n| n.addr == range.master.addr) {
                seen.push(&range.master);
            }
        }
        seen
    }

    /// Every node listed (masters and replicas), once each: where to ask
    /// for the map again when the one asked last is gone.
    pub fn nodes(&self) -> Vec<&NodeAddr> {
        let mut seen: Vec<&NodeAddr> = Vec::new();
        for range in &self.ranges {
            for node in std::iter::once(&range.master).chain(&range.replicas) {
                if !seen.contains(&&node.addr) {
                    seen.push(&node.addr);
                }
            }
        }
        seen
    }

    /// Slots that have a master.
    pub fn covered(&self) -> usize {
        self.ranges.iter().map(|r| usize::from(r.last - r.first) + 1).sum()
    }

    /// The ranges, in slot order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[ip, port, id, metadata]` (Redis 7; older versions stop after the id).
fn node(v: &Value, asked: &NodeAddr) -> Result<Node, BadReply> {
    let Value::Array(f) = v else {
        return Err(BadReply("a node is not an array"));
    };
    let host = f.first().and_then(text).ok_or(BadReply("a node has no address"))?;
    let port = f
        .get(1)
        .and_then(int)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(BadReply("a node has no port"))?;
    let host = if host.is_empty() || host == "?" {
        asked.host.clone()
    } else {
        host
    };
    Ok(Node {
        addr: NodeAddr { host, port },
        id: f.get(2).and_then(text).unwrap_or_default(),
    })
}

/// A master's answer for a slot it does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives at `to` now: update the map (ask for it again).
    Moved {
        /// The slot asked for.
        slot: u16,
        /// Its master now.
        to: NodeAddr,
    },
    /// The slot is being migrated to `to`: send this one command there,
    /// after `ASKING`, and keep the map.
    Ask {
        /// The slot asked for.
        slot: u16,
        /// The node it is moving to.
        to: NodeAddr,
    },
}

impl Redirect {
    /// From an error reply such as `MOVED 5801 127.0.0.1:30001`; `None` for
    /// any other error.
    pub fn parse(error: &redis::ServerError) -> Option<Redirect> {
        Redirect::read(error.code(), error.details()?)
    }

    /// The same, from an error the `redis` crate returned for a command.
    pub fn of(error: &redis::RedisError) -> Option<Redirect> {
        Redirect::read(error.code()?, error.detail()?)
    }

    fn read(code: &str, details: &str) -> Option<Redirect> {
        let moved = match code {
            "MOVED" => true,
            "ASK" => false,
            _ => return None,
        };
        let mut words = details.split_whitespace();
        let slot = words.next()?.parse::<u16>().ok().filter(|&s| s < SLOTS)?;
        let (host, port) = words.next()?.rsplit_once(':')?;
        let to = NodeAddr {
            // `[::1]:6379` for IPv6 nodes.
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port: port.parse().ok()?,
        };
        Some(if moved {
            Redirect::Moved { slot, to }
        } else {
            Redirect::Ask { slot, to }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node_v(ip: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![bulk(ip), Value::Int(port), bulk(id), Value::Array(vec![])])
    }

    fn range_v(first: i64, last: i64, nodes: Vec<Value>) -> Value {
        let mut f = vec![Value::Int(first), Value::Int(last)];
        f.extend(nodes);
        Value::Array(f)
    }

    fn asked() -> NodeAddr {
        NodeAddr {
            host: "10.0.0.9".into(),
            port: 7000,
        }
    }

    /// Three masters with a replica each, in the shape redis-server 7.0
    /// answers (given out of order here: the map sorts).
    fn three() -> SlotMap {
        let reply = Value::Array(vec![
            range_v(
                5461,
                10922,
                vec![node_v("127.0.0.1", 30001, "b"), node_v("127.0.0.1", 30005, "e")],
            ),
            range_v(
                0,
                5460,
                vec![node_v("127.0.0.1", 30000, "a"), node_v("127.0.0.1", 30004, "d")],
            ),
            range_v(
                10923,
                16383,
                vec![node_v("127.0.0.1", 30002, "c"), node_v("127.0.0.1", 30003, "f")],
            ),
        ]);
        SlotMap::parse(&reply, &asked()).unwrap()
    }

    #[test]
    fn every_slot_finds_its_master() {
        let map = three();
        assert_eq!(map.covered(), 16_384);
        let port = |slot| map.master(slot).map(|n| n.addr.port);
        assert_eq!(port(0), Some(30000));
        assert_eq!(port(5460), Some(30000));
        assert_eq!(port(5461), Some(30001));
        assert_eq!(port(10923), Some(30002));
        assert_eq!(port(16383), Some(30002));
        assert_eq!(map.master(16383).unwrap().id, "c");
        let masters: Vec<u16> = map.masters().iter().map(|n| n.addr.port).collect();
        assert_eq!(masters, [30000, 30001, 30002]);
        assert_eq!(map.nodes().len(), 6);
    }

    #[test]
    fn split_ranges_and_gaps() {
        // After moving single slots: one master owns several ranges; and a
        // slot no one serves has no master.
        let reply = Value::Array(vec![
            range_v(0, 0, vec![node_v("127.0.0.1", 30001, "b")]),
            range_v(1, 5460, vec![node_v("127.0.0.1", 30000, "a")]),
            range_v(5461, 8156, vec![node_v("127.0.0.1", 30001, "b")]),
            range_v(8158, 16383, vec![node_v("127.0.0.1", 30002, "c")]),
        ]);
        let map = SlotMap::parse(&reply, &asked()).unwrap();
        assert_eq!(map.master(0).unwrap().addr.port, 30001);
        assert_eq!(map.master(1).unwrap().addr.port, 30000);
        assert_eq!(map.master(8157), None);
        assert_eq!(map.covered(), 16_383);
        assert_eq!(map.masters().len(), 3);
    }

    #[test]
    fn a_node_without_an_address_is_the_one_asked() {
        let reply = Value::Array(vec![range_v(0, 16383, vec![node_v("", 7000, "a")])]);
        let map = SlotMap::parse(&reply, &asked()).unwrap();
        assert_eq!(map.master(42).unwrap().addr, asked());
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = [
            Value::Nil,
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![range_v(0, 16384, vec![node_v("h", 1, "a")])]),
            Value::Array(vec![range_v(5, 4, vec![node_v("h", 1, "a")])]),
            Value::Array(vec![range_v(0, 10, vec![])]),
            Value::Array(vec![range_v(0, 10, vec![node_v("h", 70000, "a")])]),
            Value::Array(vec![
                range_v(0, 10, vec![node_v("h", 1, "a")]),
                range_v(10, 20, vec![node_v("h", 2, "b")]),
            ]),
        ];
        for reply in bad {
            assert!(SlotMap::parse(&reply, &asked()).is_err(), "{reply:?}");
        }
    }

    fn server_error(text: &str) -> redis::ServerError {
        // Through the crate's own parser, as the link receives them.
        let wire = format!("-{text}\r\n");
        match redis::parse_redis_value(wire.as_bytes()).unwrap() {
            Value::ServerError(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirections_are_read() {
        let to = |host: &str, port| NodeAddr {
            host: host.into(),
            port,
        };
        assert_eq!(
            Redirect::parse(&server_error("MOVED 5801 127.0.0.1:30001")),
            Some(Redirect::Moved {
                slot: 5801,
                to: to("127.0.0.1", 30001)
            })
        );
        assert_eq!(
            Redirect::parse(&server_error("ASK 16287 127.0.0.1:30000")),
            Some(Redirect::Ask {
                slot: 16287,
                to: to("127.0.0.1", 30000)
            })
        );
        assert_eq!(
            Redirect::parse(&server_error("MOVED 1 [::1]:7001")),
            Some(Redirect::Moved {
                slot: 1,
                to: to("::1", 7001)
            })
        );
        for other in [
            "CROSSSLOT Keys in request don't hash to the same slot",
            "MOVED 16384 h:1",
            "MOVED x h:1",
            "MOVED 5 nowhere",
            "NOSCRIPT No matching script. Please use EVAL.",
        ] {
            assert_eq!(Redirect::parse(&server_error(other)), None, "{other}");
        }
    }
}
