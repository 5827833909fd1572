//! Finds the raw bytes of one top-level field of a JSON object, so `data`
//! can be forwarded exactly as the client wrote it (no float reformatting,
//! no loss on integers past 2^64) without a second serialisation.
//!
//! The input must already be known-valid JSON (simd-json checked it); this
//! scanner only skips values, it does not validate them.

use std::ops::Range;

/// The same key appeared twice at the top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateKey;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Whether any byte of `w` is `c` (the classic zero-byte test on `w ^ c…c`).
#[inline(always)]
fn has_byte(w: u64, c: u8) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let x = w ^ (ONES * u64::from(c));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// Index just past the string starting at `b[i] == '"'`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    loop {
        // Eight bytes at a time up to the next quote or backslash: strings
        // (`data` is usually one) are most of what this scanner walks.
        while let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            if has_byte(w, b'"') || has_byte(w, b'\\') {
                break;
            }
            i += 8;
        }
        match b.get(i) {
            None => return b.len(),
            Some(b'\\') => i += 2,
            Some(b'"') => return i + 1,
            Some(_) => i += 1,
        }
    }
}

/// Index just past the value starting at `b[i]` (in known-valid JSON).
pub fn value_end(b: &[u8], i: usize) -> usize {
    skip_value(b, i)
}

fn skip_value(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            j
        }
    }
}

/// Whether the JSON string literal `lit` (quotes included) decodes to `key`.
fn key_is(lit: &[u8], key: &str) -> bool {
    if lit.len() < 2 {
        return false; // An unterminated string at the end of the input.
    }
    let inner = &lit[1..lit.len() - 1];
    if !inner.contains(&b'\\') {
        return inner == key.as_bytes();
    }
    // Rare: an escaped key such as "d\u0061ta"; let a real decoder decide.
    let mut copy = lit.to_vec();
    matches!(simd_json::from_slice::<String>(&mut copy), Ok(s) if s == key)
}

/// The byte range of the top-level `key`'s value in the object `json`.
pub fn field(json: &[u8], key: &str) -> Result<Option<Range<usize>>, DuplicateKey> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return Ok(None);
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(json, i);
        match json.get(i) {
            Some(b'"') => {}
            _ => return Ok(found),
        }
        let end = skip_string(json, i);
        let matched = key_is(&json[i..end], key);
        i = skip_ws(json, end);
        i = skip_ws(json, i + 1); // past ':'
        let value_end = skip_value(json, i);
        if matched {
            if found.is_some() {
                return Err(DuplicateKey);
            }
            found = Some(i..value_end);
        }
        i = skip_ws(json, value_end);
        if json.get(i) == Some(&b',') {
            i += 1;
        } else {
            return Ok(found);
        }
    }
}

/// The `id` of a request that was not parsed (e.g. refused by the rate
/// limit), if the text looks like an object with a plain integer `id`.
/// Works on any bytes: invalid JSON simply yields `None`.
pub fn request_id(text: &[u8]) -> Option<u64> {
    let range = field(text, "id").ok()??;
    let raw = text.get(range)?;
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(json: &str) -> Option<&str> {
        field(json.as_bytes(), "data").unwrap().map(|r| &json[r])
    }

    #[test]
    fn finds_values_of_every_kind_verbatim() {
        assert_eq!(
            data_of(r#"{"op":"publish","data":{"a":[1,"}"],"b":null}}"#),
            Some(r#"{"a":[1,"}"],"b":null}"#)
        );
        assert_eq!(
            data_of(r#"{ "data" : 12345678901234567890123 , "x":1}"#),
            Some("12345678901234567890123")
        );
        assert_eq!(data_of(r#"{"data":"q\"uo\\te","room":"r"}"#), Some(r#""q\"uo\\te""#));
        assert_eq!(data_of(r#"{"data":1.50e3}"#), Some("1.50e3"));
        assert_eq!(data_of(r#"{"data":[[],[{}]]}"#), Some("[[],[{}]]"));
        assert_eq!(data_of(r#"{"nested":{"data":1},"data":true}"#), Some("true"));
        assert_eq!(data_of(r#"{"room":"x"}"#), None);
        assert_eq!(data_of(r#"[1,2]"#), None);
    }

    #[test]
    fn escaped_keys_are_decoded() {
        assert_eq!(data_of(r#"{"d\u0061ta":"x"}"#), Some(r#""x""#));
    }

    #[test]
    fn request_ids_are_found_without_parsing() {
        assert_eq!(
            request_id(br#"{"op":"publish","room":"r","data":{"id":9},"id":42}"#),
            Some(42)
        );
        assert_eq!(request_id(br#"{"op":"join"}"#), None);
        assert_eq!(request_id(br#"{"id":"x"}"#), None);
        assert_eq!(request_id(br#"{"id":-1}"#), None);
        for junk in [&b"{"[..], b"{\"", b"{\"id", b"{\"id\":", b"\"", b"{\"a\":[", b"[1"] {
            assert_eq!(request_id(junk), None);
        }
    }

    #[test]
    fn strings_end_at_their_quote_wherever_it_falls() {
        // Quotes and escapes at every offset around the 8-byte steps.
        for len in 0..40usize {
            for esc in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut s: String = "x".repeat(len);
                if let Some(at) = esc.filter(|&at| at < len) {
                    s.replace_range(at..at + 1, "\\\"");
                }
                let json = format!(r#"{{"data":"{s}","room":"r"}}"#);
                assert_eq!(data_of(&json), Some(format!("\"{s}\"").as_str()), "{json}");
            }
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_eq!(field(br#"{"data":1,"data":2}"#, "data"), Err(DuplicateKey));
    }
}
