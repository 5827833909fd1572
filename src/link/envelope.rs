//! What travels through Redis: the origin node, a timestamp and the frame
//! exactly as it goes to clients, so a receiving node forwards bytes
//! without parsing or encoding anything.
//!
//! Layout: `[b'R'][u8 n][n bytes node id][u64 BE unix nanos][frame]`.

use bytes::{BufMut, Bytes};

const MAGIC: u8 = b'R';

/// Builds an envelope.
pub fn encode(node: &str, sent_unix_nanos: u64, frame: &[u8]) -> Vec<u8> {
    encode_parts(node, sent_unix_nanos, &[frame])
}

/// Builds an envelope whose frame part is `parts` one after the other (no
/// copy of them joined first).
pub fn encode_parts(node: &str, sent_unix_nanos: u64, parts: &[&[u8]]) -> Vec<u8> {
    let node = &node.as_bytes()[..node.len().min(255)];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(10 + node.len() + len);
    out.put_u8(MAGIC);
    out.put_u8(node.len() as u8);
    out.put_slice(node);
    out.put_u64(sent_unix_nanos);
    for p in parts {
        out.put_slice(p);
    }
    out
}

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The node that published it.
    pub node: &'a [u8],
    /// When it was published, unix nanoseconds (the origin's clock).
    pub sent_unix_nanos: u64,
    /// The frame to queue to members.
    pub frame: &'a [u8],
}

/// Decodes an envelope; `None` if it is not one of ours.
pub fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
    let (&magic, rest) = bytes.split_first()?;
    if magic != MAGIC {
        return None;
    }
    let (&n, rest) = rest.split_first()?;
    let node = rest.get(..n as usize)?;
    let rest = &rest[n as usize..];
    let ts = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some(Envelope {
        node,
        sent_unix_nanos: ts,
        frame: &rest[8..],
    })
}

/// The frame of an envelope as its own `Bytes` (one copy per node, shared
/// by every local recipient).
pub fn frame_bytes(env: &Envelope<'_>) -> Bytes {
    Bytes::copy_from_slice(env.frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = encode("node-a", 42, b"\x81\x02hi");
        let d = decode(&e).unwrap();
        assert_eq!(
            d,
            Envelope {
                node: b"node-a",
                sent_unix_nanos: 42,
                frame: b"\x81\x02hi"
            }
        );
        assert_eq!(decode(b"nope"), None);
        assert_eq!(decode(&e[..5]), None);
    }
}
