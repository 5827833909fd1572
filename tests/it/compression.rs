//! permessage-deflate (RFC 7692) with `--compression`: negotiation, room
//! messages compressed once and the same bytes for every member that
//! negotiated it (plain frames for the others, the same data), compressed
//! publishes inflated, the inflate bound, and the RSV1 rules.

use std::io::Write;
use std::net::TcpStream;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::json;

use crate::util::*;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ACCEPTED: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Raw deflate with the sync-flush tail removed, as a client sends it.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(z.total_in() as usize, data.len());
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates a server message (the tail added back).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut z = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(64 * 1024);
    z.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

/// A compressed client frame (RSV1 on the first frame only).
fn compressed_frame(fin: bool, opcode: u8, payload: &[u8], first: bool) -> Vec<u8> {
    let mut f = client_frame(fin, opcode, payload, true);
    if first {
        f[0] |= 0x40;
    }
    f
}

/// A raw `/ws` member, compressed or not, in `room`.
fn member(server: &Server, offer: bool, room: &str) -> (TcpStream, String) {
    let (mut s, head) = raw_upgrade_with(server, "/ws", if offer { OFFER } else { "" });
    let welcome = read_frame(&mut s).unwrap();
    assert!(!welcome.rsv1 && welcome.opcode == 1);
    let join = format!(r#"{{"op":"join","room":"{room}","id":1}}"#);
    s.write_all(&client_frame(true, 1, join.as_bytes(), true)).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().payload, br#"{"op":"ack","id":1}"#);
    (s, head)
}

/// The next data message's payload, inflated if it came compressed.
fn next_message(s: &mut TcpStream) -> (bool, Vec<u8>) {
    loop {
        let f = read_frame(s).expect("a frame");
        match f.opcode {
            1 | 2 if f.rsv1 => return (true, inflate(&f.payload)),
            1 | 2 => return (false, f.payload),
            _ => continue,
        }
    }
}

#[test]
fn deflate_is_negotiated_only_with_compression_on() {
    let off = Server::start(&[]);
    let (_, head) = raw_upgrade_with(&off, "/ws", OFFER);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");

    let on = Server::start(&["--compression"]);
    let (_, head) = raw_upgrade_with(&on, "/ws", OFFER);
    assert!(head.contains(ACCEPTED), "{head}");
    let (_, head) = raw_upgrade_with(
        &on,
        "/ws",
        "Sec-WebSocket-Extensions: x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10\r\n",
    );
    assert!(head.contains("; server_max_window_bits=10"), "{head}");
    // An offer roomcast cannot honour is declined, not refused.
    let (_, head) = raw_upgrade_with(&on, "/ws", "Sec-WebSocket-Extensions: permessage-deflate; foo=1\r\n");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let (_, head) = raw_upgrade_with(&on, "/ws", "");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
}

#[test]
fn members_with_and_without_compression_get_the_same_messages() {
    // Two shards: the room's members are dealt to both, so the compressed
    // twin made on the publisher's shard travels to the other.
    let server = Server::start(&["--compression", "--shards", "2"]);
    let (mut z1, _) = member(&server, true, "mixed");
    let (mut plain, _) = member(&server, false, "mixed");
    let (mut z2, _) = member(&server, true, "mixed");
    let (mut publisher, _) = join_broker(&server, "");

    let text = "the quick brown fox jumps over the lazy dog; ".repeat(24);
    send_json(
        &mut publisher,
        json!({"op":"publish","room":"mixed","data":{"text":text}}),
    );
    let (c1, m1) = next_message(&mut z1);
    let (c2, m2) = next_message(&mut z2);
    let (cp, mp) = next_message(&mut plain);
    assert!(c1 && c2, "members that negotiated it get the message compressed");
    assert!(!cp, "the others get it plain");
    assert_eq!(m1, mp);
    assert_eq!(m2, mp);
    let v: serde_json::Value = serde_json::from_slice(&mp).unwrap();
    assert_eq!(v["data"]["text"], text);

    // A short message is not worth compressing: plain for everyone.
    send_json(&mut publisher, json!({"op":"publish","room":"mixed","data":1}));
    assert_eq!(next_message(&mut z1), (false, next_message(&mut plain).1));
    assert!(!next_message(&mut z2).0);

    let compressed = metric(&server, "roomcast_compressed_deliveries_total");
    assert_eq!(compressed, 2.0, "one compressed delivery per member that negotiated it");
}

#[test]
fn compressed_publishes_are_inflated_whole_or_fragmented() {
    let server = Server::start(&["--compression"]);
    let (mut sender, _) = member(&server, true, "in");
    let (mut plain, _) = member(&server, false, "in");
    let publish = json!({"op":"publish","room":"in","data":"ünïcödé ".repeat(50)}).to_string();
    let z = deflate(publish.as_bytes());
    sender.write_all(&compressed_frame(true, 1, &z, true)).unwrap();
    let (_, got) = next_message(&mut plain);
    let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(v["data"], "ünïcödé ".repeat(50));
    let _ = next_message(&mut sender);
    // The same, cut into three frames (RSV1 on the first only).
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    sender.write_all(&compressed_frame(false, 1, a, true)).unwrap();
    sender.write_all(&compressed_frame(false, 0, b, false)).unwrap();
    sender.write_all(&compressed_frame(true, 0, c, false)).unwrap();
    let (_, again) = next_message(&mut plain);
    assert_eq!(again, got);
}

#[test]
fn a_compression_bomb_is_closed_with_1009_without_growing_memory() {
    let server = Server::start(&["--compression", "--max-message-bytes", "65536"]);
    let (mut s, _) = member(&server, true, "bomb");
    let rss_before = metric(&server, "roomcast_process_resident_memory_bytes");
    // 64 MiB of zeros: about 64 KiB compressed.
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 65536, "{} bytes", bomb.len());
    s.write_all(&compressed_frame(true, 2, &bomb, true)).unwrap();
    assert_eq!(expect_close(&mut s), 1009);
    let grown = metric(&server, "roomcast_process_resident_memory_bytes") - rss_before;
    assert!(grown < 8.0 * 1024.0 * 1024.0, "RSS grew by {grown} bytes");
}

#[test]
fn rsv1_and_bad_data_are_protocol_errors() {
    let server = Server::start(&["--compression"]);
    // RSV1 from a client that did not negotiate: 1002.
    let mut s = raw_upgrade(&server, "/echo");
    s.write_all(&compressed_frame(true, 1, &deflate(b"hello hello"), true))
        .unwrap();
    assert_eq!(expect_close(&mut s), 1002);
    // RSV1 on a continuation: 1002.
    let (mut s, _) = raw_upgrade_with(&server, "/echo", OFFER);
    s.write_all(&compressed_frame(false, 1, b"ab", true)).unwrap();
    s.write_all(&compressed_frame(true, 0, b"cd", true)).unwrap();
    assert_eq!(expect_close(&mut s), 1002);
    // Not deflate data: 1007; text that is not UTF-8 once inflated: 1007.
    let (mut s, _) = raw_upgrade_with(&server, "/echo", OFFER);
    s.write_all(&compressed_frame(true, 1, &[0xff, 0xff, 0xff, 0xff, 0x07], true))
        .unwrap();
    assert_eq!(expect_close(&mut s), 1007);
    let (mut s, _) = raw_upgrade_with(&server, "/echo", OFFER);
    s.write_all(&compressed_frame(true, 1, &deflate(&[0xc3, 0x28, 0x41]), true))
        .unwrap();
    assert_eq!(expect_close(&mut s), 1007);
}

#[test]
fn echo_answers_compressed_when_negotiated() {
    let server = Server::start(&["--compression"]);
    let (mut s, _) = raw_upgrade_with(&server, "/echo", OFFER);
    let text = "echo me, echo me, echo me, echo me, echo me, echo me, echo me!".repeat(6);
    s.write_all(&compressed_frame(true, 1, &deflate(text.as_bytes()), true))
        .unwrap();
    let f = read_frame(&mut s).unwrap();
    assert!(f.rsv1 && f.opcode == 1);
    assert_eq!(inflate(&f.payload), text.as_bytes());
    s.write_all(&client_frame(true, 1, b"short", true)).unwrap();
    let f = read_frame(&mut s).unwrap();
    assert!(!f.rsv1);
    assert_eq!(f.payload, b"short");
}
