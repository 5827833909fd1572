//! Room history in Redis (`docs/cluster.md`): the keys, the two server-side
//! scripts, and what travels through them. Socket-free: the publisher and
//! the subscriber's command connection send what this builds and hand the
//! replies back here to read.
//!
//! Per room, in the slot of its `{<room>}` hash tag:
//! - `<prefix>:meta:{<room>}`, a hash: `e`, the epoch; `n`, the last offset;
//! - `<prefix>:history:{<room>}`, a stream of the kept messages, entry
//!   `0-<offset>`, one field `m` holding the message's draft.
//!
//! [`PUBLISH_SCRIPT`] numbers a room's messages, keeps them and publishes
//! them, in one atomic step, so every node sees the same offsets in the
//! same order (a script runs alone, and its PUBLISH reaches subscribers in
//! the order the scripts ran). One call takes every message of a room in a
//! pipeline: one offset increment, one TTL renewal and one PUBLISH for all
//! of them, so a busy room costs Redis little more than its `XADD`s. A room whose meta is gone (expired, or a Redis that lost
//! its data) starts a new epoch. [`READ_SCRIPT`] answers a join (position,
//! or the replay a recovery needs) and history queries.
//!
//! A message is sent as a draft (`protocol::encode::Draft`: the frame's
//! payload without its offset) in an envelope; each node finishes it with
//! the offset once, for all its members. On the room's channel the messages
//! of one call go together as `<first offset>:` followed by each envelope
//! as `<length>:<envelope>`, their offsets counting up from the first.

use bytes::Bytes;
use redis::Value;

use crate::history::Epoch;
use crate::protocol::encode::Draft;

use super::envelope;

/// Numbers, keeps and publishes messages of one room. `KEYS`: meta,
/// stream. `ARGV`: a fresh epoch (used if the room has none), the stream's
/// size, its TTL in ms, the room's channel, then the drafts' envelopes, in
/// order. Returns `{first offset, epoch, subscribers reached}`.
pub(crate) const PUBLISH_SCRIPT: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'n', 0)
end
local k = #ARGV - 4
local first = redis.call('HINCRBY', KEYS[1], 'n', k) - k + 1
local parts = {}
for i = 1, k do
  local m = ARGV[4 + i]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '0-' .. (first + i - 1), 'm', m)
  parts[i] = #m .. ':' .. m
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local r = redis.call('PUBLISH', ARGV[4], first .. ':' .. table.concat(parts))
return {first, e, r}
"#;

/// Most messages of one room in one [`PUBLISH_SCRIPT`] call (so one call
/// keeps Redis busy for at most a few hundred microseconds).
pub(crate) const PUBLISH_MAX_MESSAGES: usize = 256;

/// Reads a room's position and messages. `KEYS`: meta, stream. `ARGV`: a
/// fresh epoch (a room without one gets it, expiring after the TTL: a
/// member must be told the epoch later publishes continue), the TTL in ms,
/// the mode, the `since` epoch and offset, a limit. Modes: `p` position
/// only; `r` recover (every message after `since`, if all are held in its
/// epoch); `c` check (whether they are, without them); `l` the latest
/// `limit`; `a` the first `limit` after `since` (after 0 in another
/// epoch). Returns `{epoch, top, held (0/1), messages}`, the messages
/// oldest first in one string, as [`PUBLISH_SCRIPT`] publishes them (one
/// bulk string instead of a reply per entry: a replay of 100 messages is
/// one value to parse, not 500).
pub(crate) const READ_SCRIPT: &str = r#"
local function pack(entries, from, to, step)
  if #entries == 0 then return '' end
  local parts = {}
  for i = from, to, step do
    local m = entries[i][2][2]
    parts[#parts + 1] = #m .. ':' .. m
  end
  return string.sub(entries[from][1], 3) .. ':' .. table.concat(parts)
end
local function oldest_first(entries) return pack(entries, 1, #entries, 1) end
local e = redis.call('HGET', KEYS[1], 'e')
local n = 0
if e then
  n = tonumber(redis.call('HGET', KEYS[1], 'n'))
else
  e = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'n', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local mode = ARGV[3]
if mode == 'p' then return {e, n, 0, ''} end
if mode == 'l' then
  local latest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[6])
  return {e, n, 0, pack(latest, #latest, 1, -1)}
end
local since = tonumber(ARGV[5])
local same = ARGV[4] == e
if mode == 'a' then
  local after = 0
  if same and since <= n then after = since end
  return {e, n, 0, oldest_first(redis.call('XRANGE', KEYS[2], '0-' .. (after + 1), '+', 'COUNT', ARGV[6]))}
end
if not same or since > n then return {e, n, 0, ''} end
if since == n then return {e, n, 1, ''} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 or tonumber(string.sub(first[1][1], 3)) > since + 1 then return {e, n, 0, ''} end
if mode == 'c' then return {e, n, 1, ''} end
return {e, n, 1, oldest_first(redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '+'))}
"#;

/// The SHA1 of a script, as `EVALSHA` names it (lowercase hex).
pub(crate) fn script_sha(script: &str) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(script.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The meta hash of `room`.
pub(crate) fn meta_key(prefix: &str, room: &str) -> Vec<u8> {
    super::slot::key(prefix, "meta", room)
}

/// The stream of `room`.
pub(crate) fn stream_key(prefix: &str, room: &str) -> Vec<u8> {
    super::slot::key(prefix, "history", room)
}

/// What [`READ_SCRIPT`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// The position.
    Position,
    /// Everything after `since`, if all of it is held.
    Recover,
    /// Whether everything after `since` is held.
    Check,
    /// The latest messages.
    Latest,
    /// The first messages after `since`.
    After,
}

impl Mode {
    /// The script's name for it.
    pub fn arg(self) -> &'static [u8] {
        match self {
            Mode::Position => b"p",
            Mode::Recover => b"r",
            Mode::Check => b"c",
            Mode::Latest => b"l",
            Mode::After => b"a",
        }
    }
}

/// A draft in its envelope: `envelope(node, ts, [body start u32][body end
/// u32][payload])`.
pub(crate) fn encode_draft(node: &str, sent_unix_nanos: u64, draft: &Draft) -> Vec<u8> {
    let (payload, (start, end)) = draft.parts();
    let (start, end) = (start.to_be_bytes(), end.to_be_bytes());
    envelope::encode_parts(node, sent_unix_nanos, &[&start, &end, payload])
}

/// A kept or published message: its offset and draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Numbered<'a> {
    /// Its offset.
    pub offset: u64,
    /// Where `"from":U,"data":D` is in `payload`.
    pub body: (u32, u32),
    /// The frame's payload, without the offset.
    pub payload: &'a [u8],
}

impl Numbered<'_> {
    /// The finished frame, as every member gets it.
    pub fn frame(&self) -> Option<Bytes> {
        Draft::from_parts(self.payload, self.body).map(|d| d.finish(self.offset).0)
    }

    /// `"from":U,"data":D`, for a history answer.
    pub fn body(&self) -> &[u8] {
        &self.payload[self.body.0 as usize..self.body.1 as usize]
    }
}

/// The draft inside an envelope's frame part.
fn decode_draft(offset: u64, env_frame: &[u8]) -> Option<Numbered<'_>> {
    let start = u32::from_be_bytes(env_frame.get(..4)?.try_into().ok()?);
    let end = u32::from_be_bytes(env_frame.get(4..8)?.try_into().ok()?);
    let payload = &env_frame[8..];
    if start > end || end as usize > payload.len() {
        return None;
    }
    Some(Numbered {
        offset,
        body: (start, end),
        payload,
    })
}

/// The messages of one [`PUBLISH_SCRIPT`] call, from a room's channel:
/// `<first offset>:` then `<length>:<envelope>` each. Yields each message
/// with the node that published it; stops at anything malformed. `None`
/// if the payload is not numbered at all.
pub(crate) fn decode_published(bytes: &[u8]) -> Option<impl Iterator<Item = (&[u8], Numbered<'_>)>> {
    let (first, mut rest) = split_number(bytes)?;
    let mut offset = first;
    Some(std::iter::from_fn(move || {
        let (len, after) = split_number(rest)?;
        let env = after.get(..usize::try_from(len).ok()?)?;
        rest = &after[env.len()..];
        let env = envelope::decode(env)?;
        let m = decode_draft(offset, env.frame)?;
        offset += 1;
        Some((env.node, m))
    }))
}

/// `<digits>:` at the front of `bytes`: the number and what follows.
fn split_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let colon = bytes.iter().take(21).position(|&b| b == b':')?;
    Some((parse_u64(&bytes[..colon])?, &bytes[colon + 1..]))
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => parse_u64(b),
        _ => None,
    }
}

fn epoch(v: &Value) -> Option<Epoch> {
    match v {
        Value::BulkString(b) => Epoch::parse(std::str::from_utf8(b).ok()?),
        _ => None,
    }
}

/// [`PUBLISH_SCRIPT`]'s answer: the offset and the epoch.
pub(crate) fn published(v: &Value) -> Option<(u64, Epoch, u64)> {
    let Value::Array(items) = v else { return None };
    let receivers = items.get(2).and_then(int).unwrap_or(0);
    Some((int(items.first()?)?, epoch(items.get(1)?)?, receivers))
}

/// [`READ_SCRIPT`]'s answer.
#[derive(Debug)]
pub(crate) struct Read {
    /// The room's epoch.
    pub epoch: Epoch,
    /// Its last offset.
    pub top: u64,
    /// Every message after `since` is held (modes `r` and `c`).
    pub held: bool,
    /// The messages, packed.
    messages: Vec<u8>,
}

impl Read {
    /// Reads the reply; `None` if it is not one.
    pub fn parse(reply: Value) -> Option<Read> {
        let Value::Array(mut items) = reply else { return None };
        let (epoch, top) = (epoch(items.first()?)?, int(items.get(1)?)?);
        let held = int(items.get(2)?)? == 1;
        let messages = match items.get_mut(3)? {
            Value::BulkString(b) => std::mem::take(b),
            _ => return None,
        };
        Some(Read {
            epoch,
            top,
            held,
            messages,
        })
    }

    /// The messages, oldest first (up to the first that is not roomcast's).
    pub fn entries(&self) -> impl Iterator<Item = Numbered<'_>> {
        decode_published(&self.messages).into_iter().flatten().map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;

    fn draft() -> Draft {
        encode::message_draft("chat", "ann", br#"{"t":"hi"}"#)
    }

    /// What the script publishes for `envs`, numbered from `first`.
    fn published_payload(first: u64, envs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("{first}:").into_bytes();
        for env in envs {
            out.extend_from_slice(format!("{}:", env.len()).as_bytes());
            out.extend_from_slice(env);
        }
        out
    }

    #[test]
    fn drafts_through_redis_finish_as_the_local_ones() {
        let envs = [encode_draft("node-a", 7, &draft()), encode_draft("node-b", 8, &draft())];
        let payload = published_payload(42, &envs);
        let got: Vec<_> = decode_published(&payload).unwrap().collect();
        assert_eq!(got.len(), 2);
        let (node, m) = &got[0];
        assert_eq!((*node, m.offset), (&b"node-a"[..], 42));
        let (local, (start, end)) = draft().finish(42);
        assert_eq!(m.frame().unwrap(), local);
        assert_eq!(m.body(), &local[start as usize..end as usize]);
        assert_eq!(m.body(), br#""from":"ann","data":{"t":"hi"}"#);
        assert_eq!((got[1].0, got[1].1.offset), (&b"node-b"[..], 43));
        assert_eq!(got[1].1.frame().unwrap(), draft().finish(43).0);
    }

    #[test]
    fn plain_envelopes_and_garbage_are_not_numbered() {
        let plain = envelope::encode("n", 1, b"\x81\x02hi");
        assert!(decode_published(&plain).is_none());
        assert_eq!(decode_published(b"12:nope").unwrap().count(), 0);
        assert!(decode_published(b":").is_none());
        let bad_body = published_payload(1, &[envelope::encode("n", 1, &[0, 0, 0, 9, 0, 0, 0, 99, b'x'])]);
        assert_eq!(decode_published(&bad_body).unwrap().count(), 0);
        // A length past the end yields nothing rather than a partial message.
        let mut cut = published_payload(1, &[encode_draft("n", 1, &draft())]);
        cut.truncate(cut.len() - 1);
        assert_eq!(decode_published(&cut).unwrap().count(), 0);
    }

    #[test]
    fn script_names_are_their_sha1() {
        assert_eq!(script_sha(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(script_sha(PUBLISH_SCRIPT).len(), 40);
    }

    #[test]
    fn read_replies_give_position_and_entries() {
        let envs = [encode_draft("n", 1, &draft()), encode_draft("n", 2, &draft())];
        let reply = Value::Array(vec![
            Value::BulkString(b"0123456789ab".to_vec()),
            Value::Int(9),
            Value::Int(1),
            Value::BulkString(published_payload(8, &envs)),
        ]);
        let read = Read::parse(reply).unwrap();
        assert_eq!(read.epoch.as_str(), "0123456789ab");
        assert_eq!((read.top, read.held), (9, true));
        let offsets: Vec<u64> = read.entries().map(|m| m.offset).collect();
        assert_eq!(offsets, [8, 9]);
        let empty = Value::Array(vec![
            Value::BulkString(b"0123456789ab".to_vec()),
            Value::Int(0),
            Value::Int(0),
            Value::BulkString(Vec::new()),
        ]);
        assert_eq!(Read::parse(empty).unwrap().entries().count(), 0);
        assert!(Read::parse(Value::Array(vec![Value::Int(1)])).is_none());
        assert!(Read::parse(Value::Nil).is_none());
        let p = Value::Array(vec![
            Value::Int(3),
            Value::BulkString(b"0123456789ab".to_vec()),
            Value::Int(2),
        ]);
        assert_eq!(
            published(&p).map(|(n, e, r)| (n, e.as_str().to_string(), r)),
            Some((3, "0123456789ab".into(), 2))
        );
    }
}
