use super::*;

/// Builds a masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    crate::ws::frame::encode_client(fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Compressed(bool, Vec<u8>),
}

/// Feeds `bytes` cut into the given chunks; returns the events and the error.
fn run(max: usize, bytes: &[u8], cuts: &[usize]) -> (Vec<Got>, Option<ProtocolError>) {
    run_with(Decoder::new(max), bytes, cuts)
}

/// `run` with a decoder of one's own (permessage-deflate on, say).
fn run_with(mut d: Decoder, bytes: &[u8], cuts: &[usize]) -> (Vec<Got>, Option<ProtocolError>) {
    let mut got = Vec::new();
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.to_vec();
    ends.push(bytes.len());
    for end in ends {
        let mut chunk = bytes[start..end].to_vec();
        start = end;
        let r = d.feed(&mut chunk, |e| {
            got.push(match e {
                // Counted by `every_frame_of_a_fragmented_message_is_an_event`.
                Event::Fragment => return ControlFlow::Continue(()),
                Event::Text(p) => Got::Text(p.to_vec()),
                Event::Binary(p) => Got::Binary(p.to_vec()),
                Event::Ping(p) => Got::Ping(p.to_vec()),
                Event::Pong(p) => Got::Pong(p.to_vec()),
                Event::Close { code, reason } => Got::Close(code.map(|c| c.0), reason.to_string()),
                Event::Compressed { text, payload } => Got::Compressed(text, payload.to_vec()),
            });
            ControlFlow::Continue(())
        });
        if let Err(e) = r {
            return (got, Some(e));
        }
    }
    (got, None)
}

fn code_of(bytes: &[u8]) -> Option<u16> {
    run(1 << 20, bytes, &[]).1.map(|e| e.code.0)
}

#[test]
fn whole_frames_decode_in_one_feed() {
    let mut bytes = frame(true, 1, b"hello");
    bytes.extend(frame(true, 2, &[0, 1, 2]));
    bytes.extend(frame(true, 9, b"p"));
    bytes.extend(frame(true, 10, b""));
    let (got, err) = run(1024, &bytes, &[]);
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![
            Got::Text(b"hello".to_vec()),
            Got::Binary(vec![0, 1, 2]),
            Got::Ping(b"p".to_vec()),
            Got::Pong(vec![])
        ]
    );
}

#[test]
fn any_split_of_the_input_gives_the_same_events() {
    let text = "héllo wörld 🎉".repeat(3);
    let mut bytes = frame(false, 1, &text.as_bytes()[..7]);
    bytes.extend(frame(true, 9, b"ping!"));
    bytes.extend(frame(true, 0, &text.as_bytes()[7..]));
    bytes.extend(frame(true, 2, &[9u8; 300]));
    bytes.extend(frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']));
    let want = vec![
        Got::Ping(b"ping!".to_vec()),
        Got::Text(text.as_bytes().to_vec()),
        Got::Binary(vec![9u8; 300]),
        Got::Close(Some(1000), "bye".into()),
    ];
    for a in 0..bytes.len() {
        for b in [a, a + 1, a + 5, a + 13].into_iter().filter(|&b| b <= bytes.len()) {
            let (got, err) = run(1024, &bytes, &[a, b]);
            assert_eq!(err, None, "cuts {a} {b}");
            assert_eq!(got, want, "cuts {a} {b}");
        }
    }
}

#[test]
fn byte_at_a_time_decodes_extended_lengths() {
    for len in [0usize, 125, 126, 65535, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let bytes = frame(true, 2, &payload);
        let cuts: Vec<usize> = if len < 200 {
            (1..bytes.len()).collect()
        } else {
            vec![1, 2, 3, 5, 9, 13, 100]
        };
        let (got, err) = run(1 << 20, &bytes, &cuts);
        assert_eq!(err, None);
        assert_eq!(got, vec![Got::Binary(payload)], "len {len}");
    }
}

#[test]
fn framing_violations_close_with_1002() {
    let unmasked = vec![0x81, 0x01, b'a'];
    assert_eq!(code_of(&unmasked), Some(1002), "unmasked");
    for rsv in [0x40, 0x20, 0x10] {
        let mut f = frame(true, 1, b"a");
        f[0] |= rsv;
        assert_eq!(code_of(&f), Some(1002), "rsv {rsv:#x}");
    }
    for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_eq!(code_of(&frame(true, op, b"")), Some(1002), "opcode {op}");
    }
    assert_eq!(code_of(&frame(true, 9, &[0; 126])), Some(1002), "big ping");
    assert_eq!(code_of(&frame(false, 9, b"")), Some(1002), "fragmented ping");
    assert_eq!(code_of(&frame(true, 0, b"x")), Some(1002), "lone continuation");
    let mut two_starts = frame(false, 1, b"a");
    two_starts.extend(frame(true, 1, b"b"));
    assert_eq!(code_of(&two_starts), Some(1002), "text inside text");
    let mut huge = frame(true, 2, b"");
    huge[1] = 0x80 | 127;
    huge.splice(2..2, [0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(code_of(&huge), Some(1002), "64-bit length top bit");
}

#[test]
fn invalid_utf8_closes_with_1007_and_fails_fast() {
    assert_eq!(code_of(&frame(true, 1, &[0xff])), Some(1007));
    // The bad byte is in the first fragment: the error comes before the rest.
    let first = frame(false, 1, &[b'o', b'k', 0xed, 0xa0, 0x80]);
    let (_, err) = run(1024, &first, &[]);
    assert_eq!(err.map(|e| e.code.0), Some(1007));
    // A frame cut in the middle fails on the part that has arrived.
    let long = frame(true, 1, &[&[0xce, 0xba, 0xf4, 0x90][..], &[b'a'; 100]].concat());
    let (_, err) = run(1024, &long[..12], &[]);
    assert_eq!(err.map(|e| e.code.0), Some(1007));
    // A message that ends inside a code point.
    let mut cut = frame(false, 1, &[0xe2, 0x82]);
    cut.extend(frame(true, 0, b""));
    assert_eq!(code_of(&cut), Some(1007));
}

#[test]
fn close_frames_are_validated() {
    assert_eq!(
        run(64, &frame(true, 8, b""), &[]).0,
        vec![Got::Close(None, String::new())]
    );
    assert_eq!(code_of(&frame(true, 8, &[3])), Some(1002), "one-byte close");
    for bad in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
        assert_eq!(code_of(&frame(true, 8, &bad.to_be_bytes())), Some(1002), "code {bad}");
    }
    assert_eq!(code_of(&frame(true, 8, &[0x03, 0xe8, 0xff])), Some(1007), "bad reason");
    assert_eq!(
        run(64, &frame(true, 8, &[0x0f, 0xa0]), &[]).0,
        vec![Got::Close(Some(4000), String::new())]
    );
}

#[test]
fn oversize_messages_close_with_1009_from_the_header_alone() {
    let bytes = frame(true, 2, &[0u8; 101]);
    // Only the header is fed: the decision must not wait for the payload.
    let (_, err) = run(100, &bytes[..4], &[]);
    assert_eq!(err.map(|e| e.code.0), Some(1009));
    let mut frags = frame(false, 2, &[0u8; 60]);
    frags.extend(frame(true, 0, &[0u8; 41]));
    assert_eq!(run(100, &frags, &[]).1.map(|e| e.code.0), Some(1009));
    assert_eq!(run(101, &bytes, &[]).1, None, "exactly the limit is fine");
}

#[test]
fn input_after_close_or_error_is_ignored() {
    let mut bytes = frame(true, 8, b"");
    bytes.extend(frame(true, 1, b"late"));
    assert_eq!(run(64, &bytes, &[]).0, vec![Got::Close(None, String::new())]);
    let mut d = Decoder::new(64);
    let mut bad = vec![0x81, 0x01, b'a'];
    assert!(d.feed(&mut bad, |_| ControlFlow::Continue(())).is_err());
    let mut good = frame(true, 1, b"x");
    let mut n = 0;
    d.feed(&mut good, |_| {
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn large_message_buffers_are_released() {
    let bytes = frame(true, 2, &[1u8; 10_000]);
    let mut d = Decoder::new(1 << 20);
    let (a, b) = bytes.split_at(100);
    d.feed(&mut a.to_vec(), |_| ControlFlow::Continue(())).unwrap();
    assert!(d.is_mid_message());
    d.feed(&mut b.to_vec(), |_| ControlFlow::Continue(())).unwrap();
    assert!(!d.is_mid_message());
    assert_eq!(d.buffered_capacity(), 0);
}

#[test]
fn unmask_matches_bytewise_at_any_offset() {
    let mask = [1, 2, 3, 4];
    for offset in 0..4 {
        for len in 0..40 {
            let mut a: Vec<u8> = (0..len as u8).collect();
            let want: Vec<u8> = a.iter().enumerate().map(|(i, b)| b ^ mask[(i + offset) & 3]).collect();
            unmask(&mut a, mask, offset);
            assert_eq!(a, want);
        }
    }
}

#[test]
fn every_frame_of_a_fragmented_message_is_an_event() {
    // "ab" in three frames (one empty), then an unfragmented message.
    let mut bytes = frame(false, 0x1, b"a");
    bytes.extend(frame(false, 0x0, b""));
    bytes.extend(frame(true, 0x0, b"b"));
    bytes.extend(frame(true, 0x1, b"c"));
    for cuts in [vec![], vec![1], vec![3, 7, 9, 12]] {
        let mut d = Decoder::new(1 << 20);
        let mut events = Vec::new();
        let mut start = 0;
        let mut ends = cuts.clone();
        ends.push(bytes.len());
        for end in ends {
            let mut chunk = bytes[start..end].to_vec();
            start = end;
            d.feed(&mut chunk, |e| {
                events.push(match e {
                    Event::Fragment => "fragment".to_string(),
                    Event::Text(p) => String::from_utf8(p.to_vec()).unwrap(),
                    other => panic!("{other:?}"),
                });
                ControlFlow::Continue(())
            })
            .unwrap();
        }
        assert_eq!(events, ["fragment", "fragment", "ab", "c"], "cut at {cuts:?}");
    }
}

/// A masked client frame with RSV1 set when `rsv1`.
fn rsv1_frame(fin: bool, opcode: u8, payload: &[u8], rsv1: bool) -> Vec<u8> {
    let mut f = crate::ws::frame::encode_client(fin, opcode, payload, Some([1, 2, 3, 4]));
    if rsv1 {
        f[0] |= crate::ws::frame::RSV1;
    }
    f
}

#[test]
fn rsv1_is_a_protocol_error_unless_deflate_was_negotiated() {
    let f = rsv1_frame(true, 1, b"xx", true);
    assert_eq!(code_of(&f), Some(1002));
    let (got, err) = run_with(Decoder::new(1024).with_deflate(true), &f, &[]);
    assert_eq!(err, None);
    assert_eq!(got, vec![Got::Compressed(true, b"xx".to_vec())]);
}

#[test]
fn a_fragmented_compressed_message_is_one_event_at_every_cut() {
    // The compressed bytes are not UTF-8, and need not be: they are
    // checked once inflated.
    let mut bytes = rsv1_frame(false, 2, &[0xff, 0xfe, 0x00], true);
    bytes.extend(rsv1_frame(false, 0, &[0xc3], false));
    bytes.extend(rsv1_frame(true, 0, &[0x28, 0x01], false));
    for cut in 0..bytes.len() {
        let d = Decoder::new(1024).with_deflate(true);
        let (got, err) = run_with(d, &bytes, &[cut]);
        assert_eq!(err, None, "cut at {cut}");
        assert_eq!(
            got,
            vec![Got::Compressed(false, vec![0xff, 0xfe, 0x00, 0xc3, 0x28, 0x01])]
        );
    }
    // Text with bytes that are not UTF-8 once compressed, too.
    let (got, err) = run_with(
        Decoder::new(1024).with_deflate(true),
        &rsv1_frame(true, 1, &[0xff, 0xff], true),
        &[],
    );
    assert_eq!((got, err), (vec![Got::Compressed(true, vec![0xff, 0xff])], None));
}

#[test]
fn rsv1_belongs_on_the_first_frame_of_a_data_message_only() {
    let on = || Decoder::new(1024).with_deflate(true);
    let mut cont = rsv1_frame(false, 1, b"a", true);
    cont.extend(rsv1_frame(true, 0, b"b", true));
    assert_eq!(run_with(on(), &cont, &[]).1.map(|e| e.code.0), Some(1002));
    let ping = rsv1_frame(true, 9, b"p", true);
    assert_eq!(run_with(on(), &ping, &[]).1.map(|e| e.code.0), Some(1002));
    // RSV2 and RSV3 stay reserved.
    let mut rsv2 = rsv1_frame(true, 1, b"a", false);
    rsv2[0] |= 0x20;
    assert_eq!(run_with(on(), &rsv2, &[]).1.map(|e| e.code.0), Some(1002));
    // The limit counts compressed bytes as they come (the inflated size is
    // checked when inflating).
    let big = rsv1_frame(true, 2, &[0u8; 2000], true);
    assert_eq!(run_with(on(), &big, &[]).1.map(|e| e.code.0), Some(1009));
}
