use super::*;

fn agree(v: &str) -> Option<Agreement> {
    negotiate([v])
}

#[test]
fn offers_are_accepted_with_no_context_takeover_both_ways() {
    let a = agree("permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(a.window_bits, 15);
    assert_eq!(
        a.response(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    let a = agree("permessage-deflate; server_no_context_takeover; client_no_context_takeover").unwrap();
    assert_eq!(a.window_bits, 15);
    let a = agree("permessage-deflate; server_max_window_bits=10").unwrap();
    assert_eq!(a.window_bits, 10);
    assert!(a.response().ends_with("; server_max_window_bits=10"));
    assert!(a.reads(1024) && !a.reads(1025));
    let a = agree("permessage-deflate; server_max_window_bits=\"9\"; client_max_window_bits=12").unwrap();
    assert_eq!(a.window_bits, 9);
}

#[test]
fn bad_offers_are_skipped_for_the_next_one() {
    for bad in [
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=99",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; mystery",
    ] {
        assert_eq!(agree(bad), None, "{bad}");
    }
    let a = negotiate([
        "permessage-deflate; mystery, permessage-deflate; server_max_window_bits=12",
        "permessage-deflate",
    ])
    .unwrap();
    assert_eq!(a.window_bits, 12);
}

fn text_frame(payload: &[u8]) -> Bytes {
    frame::encode(OpCode::Text, payload)
}

/// A server frame's first byte and payload.
fn payload_of(f: &[u8]) -> (u8, &[u8]) {
    let header = match f[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (f[0], &f[header..])
}

#[test]
fn a_frame_compresses_once_and_inflates_back() {
    let json = format!(
        r#"{{"op":"message","room":"lobby","from":"ann","data":{{"text":"{}"}}}}"#,
        "hello ".repeat(50)
    );
    let json = json.as_bytes();
    let mut d = Deflater::new();
    let z = d.compress_frame(&text_frame(json)).expect("it pays");
    let (first, body) = payload_of(&z);
    assert_eq!(first, 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
    assert!(body.len() < json.len());
    let mut out = Vec::new();
    Inflater::new().inflate(body, 1 << 20, &mut out).unwrap();
    assert_eq!(out, json);
    // Independent of anything before it (no context takeover): compressing
    // again gives the same bytes.
    assert_eq!(d.compress_frame(&text_frame(json)).unwrap(), z);
}

#[test]
fn short_incompressible_or_control_frames_stay_plain() {
    let mut d = Deflater::new();
    assert_eq!(d.compress_frame(&text_frame(b"{\"op\":\"ack\",\"id\":1}")), None);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    assert_eq!(d.compress_frame(&frame::encode(OpCode::Binary, &noise)), None);
    assert_eq!(d.compress_frame(&frame::encode(OpCode::Ping, &[b'a'; 100])), None);
}

#[test]
fn large_payloads_round_trip() {
    let big: Vec<u8> = (0..300_000u32).map(|i| b"abcdefghij"[(i % 7) as usize]).collect();
    let z = Deflater::new().compress(OpCode::Binary, &big).unwrap();
    let (_, body) = payload_of(&z);
    let mut out = Vec::new();
    Inflater::new().inflate(body, big.len(), &mut out).unwrap();
    assert_eq!(out, big);
}

#[test]
fn a_bomb_stops_at_the_limit() {
    // 16 MiB of zeros deflate to about 1 % of that.
    let zeros = vec![0u8; 16 << 20];
    let z = Deflater::new().compress(OpCode::Binary, &zeros).unwrap();
    let (_, body) = payload_of(&z);
    assert!(body.len() < 256 * 1024, "{} bytes", body.len());
    let mut out = Vec::new();
    let max = 65_536;
    assert_eq!(Inflater::new().inflate(body, max, &mut out), Err(InflateError::TooBig));
    assert!(out.capacity() <= max + 1, "grew to {}", out.capacity());
    // Exactly at the limit is fine.
    let exact = vec![7u8; max];
    let z = Deflater::new().compress(OpCode::Binary, &exact).unwrap();
    let (_, body) = payload_of(&z);
    Inflater::new().inflate(body, max, &mut out).unwrap();
    assert_eq!(out.len(), max);
}

#[test]
fn garbage_is_corrupt_and_the_inflater_recovers() {
    let mut i = Inflater::new();
    let mut out = Vec::new();
    assert_eq!(
        i.inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1024, &mut out),
        Err(InflateError::Corrupt)
    );
    let z = Deflater::new().compress(OpCode::Text, &[b'x'; 500]).unwrap();
    let (_, body) = payload_of(&z);
    i.inflate(body, 1024, &mut out).unwrap();
    assert_eq!(out, vec![b'x'; 500]);
}

#[test]
fn a_message_ending_in_a_final_block_inflates() {
    // What a client with a final block (BFINAL) sends: the whole stream.
    let mut z = Compress::new(Compression::default(), false);
    let mut buf = Vec::with_capacity(1024);
    z.compress_vec(b"final block final block final block", &mut buf, FlushCompress::Finish)
        .unwrap();
    let mut out = Vec::new();
    Inflater::new().inflate(&buf, 1024, &mut out).unwrap();
    assert_eq!(out, b"final block final block final block");
}
