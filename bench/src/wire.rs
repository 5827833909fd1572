//! What the generator says in the JSON protocol and how it recognises answers
//! without parsing them.
//!
//! Every published `data` is a JSON string that starts with a fixed-width
//! stamp — `@rcb`, a kind byte, then sender, sequence and send time in hex —
//! padded with `.` to the requested size. Servers forward `data` verbatim (or,
//! like `JSON.stringify`, re-encode an ASCII string to the same bytes), so a
//! receiver finds the stamp with a byte search and never builds a JSON tree.

/// The marker that starts every stamp.
const MARK: &[u8; 4] = b"@rcb";
/// Bytes of a stamp: marker, kind, 4 hex sender, 8 hex sequence, 16 hex time.
pub const STAMP_LEN: usize = 4 + 1 + 4 + 8 + 16;

/// Why a message was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Confirms a join before the clock starts; not measured.
    Probe,
    /// Counted and timed.
    Measured,
}

/// The fields a publisher stamps into `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Probe or measured.
    pub kind: Kind,
    /// The publishing connection's index.
    pub sender: u16,
    /// The sender's sequence number.
    pub seq: u32,
    /// Send time in ns since the run's epoch.
    pub ts_ns: u64,
}

/// Writes `{"op":"join","room":R[,"id":N]}` into `out` (cleared first).
pub fn join(out: &mut Vec<u8>, room: &str, id: Option<u64>) {
    out.clear();
    out.extend_from_slice(br#"{"op":"join","room":"#);
    push_str(out, room);
    if let Some(id) = id {
        out.extend_from_slice(br#","id":"#);
        out.extend_from_slice(id.to_string().as_bytes());
    }
    out.push(b'}');
}

/// What pads `data` after the stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Filler {
    /// `.` repeated: the cheapest to write, and absurdly compressible.
    #[default]
    Dots,
    /// Words of chat, different in every message: compresses like text.
    Words,
}

/// Words for [`Filler::Words`].
const WORDS: [&str; 32] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "chat", "message", "room",
    "typing", "online", "status", "meeting", "tomorrow", "sounds", "good", "thanks", "see", "you", "later", "what",
    "about", "lunch", "deploy", "ready", "review", "merged", "ship",
];

/// Writes `{"op":"publish","room":R,"data":"<stamp><padding>"}` into `out`
/// (cleared first); the `data` string is `max(size, STAMP_LEN)` bytes long.
pub fn publish(out: &mut Vec<u8>, room: &str, stamp: &Stamp, size: usize) {
    publish_with(out, room, stamp, size, Filler::Dots);
}

/// [`publish`] with the padding chosen.
pub fn publish_with(out: &mut Vec<u8>, room: &str, stamp: &Stamp, size: usize, filler: Filler) {
    out.clear();
    out.extend_from_slice(br#"{"op":"publish","room":"#);
    push_str(out, room);
    out.extend_from_slice(br#","data":""#);
    out.extend_from_slice(MARK);
    out.push(match stamp.kind {
        Kind::Probe => b'P',
        Kind::Measured => b'M',
    });
    push_hex(out, u64::from(stamp.sender), 4);
    push_hex(out, u64::from(stamp.seq), 8);
    push_hex(out, stamp.ts_ns, 16);
    let pad = size.saturating_sub(STAMP_LEN);
    match filler {
        Filler::Dots => out.resize(out.len() + pad, b'.'),
        Filler::Words => {
            let end = out.len() + pad;
            let mut x = (u64::from(stamp.seq) << 16 | u64::from(stamp.sender)) ^ 0x9E37_79B9_7F4A_7C15;
            while out.len() < end {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push(b' ');
                out.extend_from_slice(WORDS[(x & 31) as usize].as_bytes());
            }
            out.truncate(end);
        }
    }
    out.extend_from_slice(b"\"}");
}

/// Finds and decodes the stamp in a received message. `size` is the run's
/// payload size: when `data` is the last field (as every known server writes
/// it), the stamp is at a known offset from the end and no search is needed.
pub fn find_stamp(payload: &[u8], size: usize) -> Option<Stamp> {
    let data_len = size.max(STAMP_LEN);
    if let Some(at) = payload.len().checked_sub(data_len + 2) {
        if let Some(s) = decode(&payload[at..]) {
            return Some(s);
        }
    }
    // A numbered message (roomcast's rooms with history) ends with
    // `,"offset":N}` right after `data`: walk back over N's digits, then
    // the stamp is at a known place again (this runs for every message of
    // a numbered run, so it must cost no more than the plain case).
    const OFFSET: &[u8] = br#","offset":"#;
    if let Some(body) = payload.strip_suffix(b"}") {
        let digits = body.iter().rev().take(20).take_while(|b| b.is_ascii_digit()).count();
        let end = body.len() - digits;
        if digits > 0 && body[..end].ends_with(OFFSET) {
            if let Some(at) = (end - OFFSET.len()).checked_sub(data_len + 1) {
                if let Some(s) = decode(&payload[at..]) {
                    return Some(s);
                }
            }
        }
    }
    let mut from = 0;
    while let Some(i) = payload[from..].iter().position(|&b| b == MARK[0]) {
        if let Some(s) = decode(&payload[from + i..]) {
            return Some(s);
        }
        from += i + 1;
    }
    None
}

fn decode(at: &[u8]) -> Option<Stamp> {
    let s = at.get(..STAMP_LEN)?;
    if &s[..4] != MARK {
        return None;
    }
    let kind = match s[4] {
        b'P' => Kind::Probe,
        b'M' => Kind::Measured,
        _ => return None,
    };
    Some(Stamp {
        kind,
        sender: hex(&s[5..9])? as u16,
        seq: hex(&s[9..17])? as u32,
        ts_ns: hex(&s[17..33])?,
    })
}

fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}

fn push_hex(out: &mut Vec<u8>, v: u64, width: u32) {
    for i in (0..width).rev() {
        out.push(b"0123456789abcdef"[(v >> (i * 4) & 0xF) as usize]);
    }
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..=0x1F => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The value of the top-level `"op"` field, found by a scan that tolerates the
/// spacing of any JSON encoder. Used only for the rare non-stamped frames.
pub fn op(payload: &[u8]) -> Option<&[u8]> {
    let key = b"\"op\"";
    let i = payload.windows(key.len()).position(|w| w == key)?;
    let rest = payload[i + key.len()..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data_from_publish: &[u8], sep: &str) -> Vec<u8> {
        // Rebuild a server `message` around the publish's data value.
        let d = data_from_publish.windows(7).position(|w| w == b"\"data\":").unwrap();
        let data = &data_from_publish[d + 7..data_from_publish.len() - 1];
        let mut m = format!(r#"{{"op":{sep}"message","room":{sep}"r","from":{sep}"anon-1","data":{sep}"#).into_bytes();
        m.extend_from_slice(data);
        m.push(b'}');
        m
    }

    #[test]
    fn stamps_round_trip_through_a_message() {
        let st = Stamp {
            kind: Kind::Measured,
            sender: 0xBEE,
            seq: 123_456,
            ts_ns: 9_876_543_210,
        };
        for size in [0, 33, 64, 500] {
            let mut out = Vec::new();
            publish(&mut out, "room-1", &st, size);
            let msg = message(&out, "");
            assert_eq!(find_stamp(&msg, size), Some(st), "size {size}");
            // A different size (stamp not at the expected offset) still finds it.
            assert_eq!(find_stamp(&msg, size + 7), Some(st));
            assert_eq!(find_stamp(&message(&out, " "), size), Some(st));
            // A numbered message: `,"offset":N` after `data`.
            let mut numbered = msg.clone();
            numbered.pop();
            numbered.extend_from_slice(br#","offset":18446744073709551615}"#);
            assert_eq!(find_stamp(&numbered, size), Some(st), "numbered, size {size}");
        }
    }

    #[test]
    fn garbage_has_no_stamp() {
        assert_eq!(find_stamp(b"", 64), None);
        assert_eq!(find_stamp(b"@rcbMzzzz", 0), None);
        assert_eq!(find_stamp(br#"{"op":"ack","id":1}"#, 64), None);
    }

    #[test]
    fn op_is_found_with_any_spacing() {
        assert_eq!(op(br#"{"op":"welcome","user":"a"}"#), Some(&b"welcome"[..]));
        assert_eq!(op(br#"{"op": "ack", "id": 3}"#), Some(&b"ack"[..]));
        assert_eq!(op(b"[1,2]"), None);
    }

    #[test]
    fn joins_escape_room_names() {
        let mut out = Vec::new();
        join(&mut out, "a\"b", Some(7));
        assert_eq!(out, br#"{"op":"join","room":"a\"b","id":7}"#);
    }
}
