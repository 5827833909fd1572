//! Redis Cluster hash slots: which of the 16 384 slots a key or channel
//! belongs to, so the link can send a room's commands and its sharded
//! subscription to the master that owns the room.
//!
//! The rule is Redis's own (the cluster specification, "Hash tags"): CRC16
//! (XMODEM: polynomial 0x1021, initial value 0) of the key modulo 16 384,
//! where a key with a non-empty `{...}` hashes only what is between its
//! first `{` and the first `}` after it. Every key and channel of a room is
//! written `<prefix>:<kind>:{<room>}` ([`key`]), so they all share the
//! room's slot (a room named `a{b}` has the tag `a{b`: still the same for
//! all of them). A name starting with `}` would make the tag empty (each
//! key would hash whole, into different slots), so such a name, and one
//! starting with `%`, is written with a `%` in front ([`tag`]): the tag is
//! never empty and two names never share a key.

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16/XMODEM, one table lookup per byte; the table is built at compile time.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .fold(0u16, |crc, &b| (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)])
}

/// The part of `key` that is hashed: the first non-empty `{...}`, else all of it.
fn hashed(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// How `name` is written between a key's braces: as it is, or with a `%`
/// in front when it starts with `}` (its tag would be empty) or `%` (so the
/// escape cannot collide with a name).
pub(crate) fn tag(name: &str) -> std::borrow::Cow<'_, str> {
    if name.starts_with(['}', '%']) {
        std::borrow::Cow::Owned(format!("%{name}"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The key (or channel) `<prefix>:<kind>:{<name>}`, in `name`'s slot.
pub(crate) fn key(prefix: &str, kind: &str, name: &str) -> Vec<u8> {
    format!("{prefix}:{kind}:{{{}}}", tag(name)).into_bytes()
}

/// The slot of a key or sharded channel.
pub fn of(key: &[u8]) -> u16 {
    crc16(hashed(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem() {
        // The check value of CRC-16/XMODEM, as the cluster spec gives it.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_redis() {
        // Each checked against `CLUSTER KEYSLOT` of redis-server 7.0.
        for (key, slot) in [
            ("foo", 12182),
            ("ch", 13271),
            ("ch2", 5801),
            ("rc:room:{x}", 16287),
            ("rc:hist:{x}", 16287),
            ("123456789", 12739),
        ] {
            assert_eq!(of(key.as_bytes()), slot, "{key}");
        }
    }

    #[test]
    fn hash_tags_follow_the_spec() {
        let slot = |k: &str| of(k.as_bytes());
        // The examples of the cluster specification.
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("{user1000}.followers"), slot("user1000"));
        assert_eq!(
            slot("foo{}{bar}"),
            crc16(b"foo{}{bar}") % SLOTS,
            "an empty tag hashes the whole key"
        );
        assert_eq!(
            slot("foo{{bar}}zap"),
            slot("{bar"),
            "from the first {{ to the first }} after it"
        );
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"), "only the first tag");
        assert_eq!(slot("no{close"), crc16(b"no{close") % SLOTS);
        // A room's keys and channels share one slot, whatever its name...
        for room in ["lobby", "a{b}", "{", "x}y"] {
            let room_slot = slot(&format!("rc:room:{{{room}}}"));
            for kind in ["hist", "meta", "presence", "user"] {
                assert_eq!(slot(&format!("rc:{kind}:{{{room}}}")), room_slot, "{kind} of {room:?}");
            }
        }
        // ...unless it starts with `}` (an empty tag)...
        assert_ne!(slot("rc:room:{}x}"), slot("rc:hist:{}x}"));
    }

    #[test]
    fn every_name_keeps_its_keys_in_one_slot_and_apart_from_the_others() {
        let names = ["lobby", "}x", "%}x", "%x", "}", "%", "a}b", "{}", "}{"];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let room = key("rc", "room", name);
            for kind in ["history", "meta", "presence"] {
                assert_eq!(of(&key("rc", kind, name)), of(&room), "{kind} of {name:?}");
            }
            assert!(seen.insert(room), "{name:?} shares its channel with another name");
        }
        assert_eq!(key("rc", "room", "lobby"), b"rc:room:{lobby}", "plain names unchanged");
        assert_eq!(key("rc", "room", "}x"), b"rc:room:{%}x}");
    }
}
