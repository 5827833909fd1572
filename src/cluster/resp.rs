//! The slice of RESP (the Redis protocol) the subscriber needs: encoding
//! commands, and parsing replies incrementally from a read buffer.
//!
//! `parse` answers `Ok(None)` until a whole value is buffered, so a reply
//! split across reads is simply parsed again when more bytes arrive.

/// A parsed RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(Vec<u8>),
    /// `-ERR ...`
    Error(Vec<u8>),
    /// `:42`
    Int(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the null array.
    Array(Option<Vec<Value>>),
}

/// The bytes are not RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Largest bulk string accepted (Redis' own limit is 512 MiB; ours is far lower).
const MAX_BULK: usize = 64 * 1024 * 1024;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 8;
/// Most elements in one array.
const MAX_ARRAY: usize = 1 << 20;

/// Encodes a command as an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn int(bytes: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)
}

/// A bulk string's or array's length: `None` for RESP's null (a negative
/// length), an error past `max`.
fn length(head: &[u8], max: usize) -> Result<Option<usize>, Malformed> {
    let n = int(head)?;
    if n < 0 {
        return Ok(None);
    }
    let n = n as usize;
    if n > max {
        return Err(Malformed);
    }
    Ok(Some(n))
}

/// Parses one value at the start of `buf`: `Ok(Some((value, used)))`, or
/// `Ok(None)` if it is not all there yet.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, Malformed> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let Some(&kind) = buf.get(at) else { return Ok(None) };
    let Some((head, next)) = line(buf, at + 1) else {
        // A header line longer than any sane one is not RESP.
        return if buf.len() - at > 64 && kind != b'+' && kind != b'-' {
            Err(Malformed)
        } else {
            Ok(None)
        };
    };
    match kind {
        b'+' => Ok(Some((Value::Simple(head.to_vec()), next))),
        b'-' => Ok(Some((Value::Error(head.to_vec()), next))),
        b':' => Ok(Some((Value::Int(int(head)?), next))),
        b'$' => {
            let Some(n) = length(head, MAX_BULK)? else {
                return Ok(Some((Value::Bulk(None), next)));
            };
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(Malformed);
            }
            Ok(Some((Value::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)))
        }
        b'*' => {
            let Some(n) = length(head, MAX_ARRAY)? else {
                return Ok(Some((Value::Array(None), next)));
            };
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = next;
            for _ in 0..n {
                match parse_at(buf, at, depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        at = used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        command(&mut out, &[b"SUBSCRIBE", b"a", b"bc"]);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n");
    }

    #[test]
    fn parses_pubsub_messages_from_any_prefix() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n";
        for n in 0..msg.len() {
            assert_eq!(parse(&msg[..n]), Ok(None), "prefix {n}");
        }
        let (v, used) = parse(msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(b"message".to_vec())),
                Value::Bulk(Some(b"ch".to_vec())),
                Value::Bulk(Some(b"he\r\nl".to_vec())),
            ]))
        );
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n+OK\r\n";
        let (v, used) = parse(sub).unwrap().unwrap();
        assert!(matches!(v, Value::Array(Some(ref a)) if a[2] == Value::Int(1)));
        assert_eq!(parse(&sub[used..]), Ok(Some((Value::Simple(b"OK".to_vec()), 5))));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse(b"?what\r\n"), Err(Malformed));
        assert_eq!(parse(b"$5\r\nhelloXX"), Err(Malformed));
        assert_eq!(parse(b":12a\r\n"), Err(Malformed));
        assert_eq!(parse(format!("${}\r\n", usize::MAX).as_bytes()), Err(Malformed));
        assert_eq!(parse(&[b'*'; 100]), Err(Malformed));
    }
}
