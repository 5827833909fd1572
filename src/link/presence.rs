//! Presence across nodes (`docs/cluster.md`): the keys, the script, and
//! what travels through them. Socket-free, like `history.rs`.
//!
//! Per room, in the slot of its `{<room>}` hash tag, one hash
//! `<prefix>:presence:{<room>}`: field `<node>|u|<user>` is how many
//! connections `user` has in the room on `node`, field `<node>|s` the
//! number of that node's last change. The hash expires 3 refresh intervals
//! after the last change or refresh of any node; each node renews it for
//! the rooms it has users in every `--presence-refresh-secs`.
//!
//! Per node, `<prefix>:node:<node>` lives while the node does: it is set
//! with a TTL of 2 refresh intervals at every refresh. Nodes check the
//! ones they know of every quarter interval; one whose key is gone died
//! without a goodbye (at most 2.25 intervals earlier), and its users leave
//! every room (their fields are deleted by the next node that reads the
//! room's hash). A node that shuts down cleanly says `gone` on
//! `<prefix>:nodes` (every node listens) and deletes its key.
//!
//! A change is applied by [`PRESENCE_SCRIPT`] (only if newer than the
//! node's last, so a retried pipeline changes nothing) and published on the
//! room's channel as `P` + [`encode_change`]; every node with users in the
//! room applies it too. A node that starts following a room reads the hash
//! once its subscription is in place ([`parse_snapshot`]); changes numbered
//! after what it read are applied on top.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use redis::Value;

use crate::presence::Remote;

/// First byte of a presence change on a room's channel (messages start
/// with `R` or a digit).
pub(crate) const CHANGE: u8 = b'P';

/// Sets (or deletes, at 0 connections) one user's connections on one node,
/// if the change is newer than that node's last, renews the hash's TTL and
/// publishes the change. `KEYS`: the hash. `ARGV`: node, user, conns, seq,
/// TTL in ms, the room's channel, the change as published. Returns 1 if
/// applied.
pub(crate) const PRESENCE_SCRIPT: &str = r#"
local sk = ARGV[1] .. '|s'
local s = tonumber(redis.call('HGET', KEYS[1], sk) or '0')
if tonumber(ARGV[4]) <= s then return 0 end
local uk = ARGV[1] .. '|u|' .. ARGV[2]
if ARGV[3] == '0' then redis.call('HDEL', KEYS[1], uk) else redis.call('HSET', KEYS[1], uk, ARGV[3]) end
redis.call('HSET', KEYS[1], sk, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"#;

/// The presence hash of `room`.
pub(crate) fn hash_key(prefix: &str, room: &str) -> Vec<u8> {
    super::slot::key(prefix, "presence", room)
}

/// The liveness key of `node`.
pub(crate) fn node_key(prefix: &str, node: &str) -> Vec<u8> {
    format!("{prefix}:node:{node}").into_bytes()
}

/// The channel every node listens on for other nodes' goodbyes.
pub(crate) fn nodes_channel(prefix: &str) -> Vec<u8> {
    format!("{prefix}:nodes").into_bytes()
}

/// A goodbye on [`nodes_channel`].
pub(crate) fn goodbye(node: &str) -> Vec<u8> {
    format!("gone {node}").into_bytes()
}

/// The node a goodbye names.
pub(crate) fn parse_goodbye(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload.strip_prefix(b"gone ")?).ok()
}

/// The fields of `node`'s share in a room's hash, given its users: what a
/// node that saw it die deletes.
pub(crate) fn node_fields<'a>(node: &'a str, users: impl IntoIterator<Item = &'a str>) -> Vec<Vec<u8>> {
    let mut fields = vec![format!("{node}|s").into_bytes()];
    fields.extend(users.into_iter().map(|u| format!("{node}|u|{u}").into_bytes()));
    fields
}

/// A change as published: `P`, node (u8 length), seq (u64), conns (u32),
/// then the user.
pub(crate) fn encode_change(node: &str, seq: u64, user: &str, conns: u32) -> Vec<u8> {
    let node = &node.as_bytes()[..node.len().min(255)];
    let mut out = BytesMut::with_capacity(14 + node.len() + user.len());
    out.put_u8(CHANGE);
    out.put_u8(node.len() as u8);
    out.put_slice(node);
    out.put_u64(seq);
    out.put_u32(conns);
    out.put_slice(user.as_bytes());
    out.to_vec()
}

/// A published change; `None` if malformed.
pub(crate) fn decode_change(bytes: &[u8]) -> Option<Remote> {
    let (&kind, rest) = bytes.split_first()?;
    if kind != CHANGE {
        return None;
    }
    let (&n, rest) = rest.split_first()?;
    let node = std::str::from_utf8(rest.get(..n as usize)?).ok()?;
    let rest = &rest[n as usize..];
    let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let conns = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
    let user = std::str::from_utf8(&rest[12..]).ok()?;
    Some(Remote {
        node: Arc::from(node),
        seq,
        user: Arc::from(user),
        conns,
    })
}

pub(crate) use crate::presence::Shares;

/// Reads an `HGETALL` reply of a presence hash (a map in RESP3, pairs in
/// RESP2); fields it does not know are skipped.
pub(crate) fn parse_snapshot(reply: &Value) -> Shares {
    let pairs: Vec<(&[u8], &[u8])> = match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] => Some((&k[..], &v[..])),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|kv| match kv {
                (Value::BulkString(k), Value::BulkString(v)) => Some((&k[..], &v[..])),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut shares: Shares = Vec::new();
    fn share(shares: &mut Shares, node: &str) -> usize {
        match shares.iter().position(|(n, _, _)| &**n == node) {
            Some(i) => i,
            None => {
                shares.push((Arc::from(node), 0, Vec::new()));
                shares.len() - 1
            }
        }
    }
    for (field, value) in pairs {
        let (Ok(field), Ok(value)) = (std::str::from_utf8(field), std::str::from_utf8(value)) else {
            continue;
        };
        let Ok(number) = value.parse::<u64>() else { continue };
        let Some((node, rest)) = field.split_once('|') else {
            continue;
        };
        if rest == "s" {
            let i = share(&mut shares, node);
            shares[i].1 = number;
        } else if let Some(user) = rest.strip_prefix("u|") {
            let i = share(&mut shares, node);
            shares[i]
                .2
                .push((Arc::from(user), number.min(u64::from(u32::MAX)) as u32));
        }
    }
    shares
}

/// Every node's share merged per user: distinct users and their
/// connections, for a presence query on a node that follows no user of the
/// room (the shares of nodes that are gone already dropped).
pub(crate) fn merge(shares: &Shares) -> Vec<(Arc<str>, u32)> {
    let mut users: hashbrown::HashMap<Arc<str>, u32> = hashbrown::HashMap::new();
    for (_, _, list) in shares {
        for (user, conns) in list {
            *users.entry(user.clone()).or_default() += conns;
        }
    }
    users.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        let bytes = encode_change("n1", 42, "ann|x", 3);
        let c = decode_change(&bytes).unwrap();
        assert_eq!((&*c.node, c.seq, &*c.user, c.conns), ("n1", 42, "ann|x", 3));
        assert!(decode_change(b"R...").is_none());
        assert!(decode_change(&bytes[..10]).is_none());
        assert_eq!(parse_goodbye(&goodbye("n1")), Some("n1"));
        assert_eq!(parse_goodbye(b"hello"), None);
    }

    #[test]
    fn snapshots_group_fields_by_node() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            b("n1|s"),
            b("7"),
            b("n1|u|ann"),
            b("2"),
            b("n2|u|bob|x"),
            b("1"),
            b("n2|s"),
            b("3"),
            b("junk"),
            b("1"),
        ]);
        let shares = parse_snapshot(&reply);
        assert_eq!(shares.len(), 2);
        assert_eq!((&*shares[0].0, shares[0].1, shares[0].2.len()), ("n1", 7, 1));
        assert_eq!((&*shares[1].0, shares[1].1), ("n2", 3));
        assert_eq!(&*shares[1].2[0].0, "bob|x");
        let alive: Shares = shares.iter().filter(|(n, _, _)| &**n != "n2").cloned().collect();
        let mut merged = merge(&alive);
        merged.sort();
        assert_eq!(merged, [(Arc::from("ann"), 2)]);
        assert_eq!(node_fields("n1", ["ann"]), [b"n1|s".to_vec(), b"n1|u|ann".to_vec()]);
    }
}
