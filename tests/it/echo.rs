//! `/echo`: every data message comes back verbatim, nothing else is sent.

use std::io::Write;

use crate::util::*;
use tungstenite::Message;

#[test]
fn text_and_binary_of_every_length_class_come_back() {
    let server = Server::start(&[]);
    let mut ws = connect(&server, "/echo");
    for len in [0usize, 1, 125, 126, 65535, 65536] {
        let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text), "text of {len} bytes");
        let bin: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        ws.send(Message::binary(bin.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(bin), "binary of {len} bytes");
    }
}

#[test]
fn the_first_frame_is_the_echo_not_a_welcome() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    s.write_all(&client_frame(true, 0x1, b"first", true)).unwrap();
    let f = read_frame(&mut s).unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (0x1, &b"first"[..]));
}

#[test]
fn fragmented_messages_come_back_whole_with_the_same_opcode() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    let mut bytes = client_frame(false, 0x1, "héllo ".as_bytes(), true);
    bytes.extend(client_frame(true, 0x9, b"mid", true)); // a ping between fragments
    bytes.extend(client_frame(false, 0x0, "wö".as_bytes(), true));
    bytes.extend(client_frame(true, 0x0, "rld".as_bytes(), true));
    bytes.extend(client_frame(false, 0x2, &[1, 2], true));
    bytes.extend(client_frame(true, 0x0, &[3], true));
    // Byte by byte: every boundary inside headers and payloads is crossed.
    for b in bytes {
        s.write_all(&[b]).unwrap();
    }
    let pong = read_frame(&mut s).unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"mid"[..]));
    let text = read_frame(&mut s).unwrap();
    assert_eq!(
        text,
        Frame {
            fin: true,
            rsv1: false,
            opcode: 0x1,
            payload: "héllo wörld".as_bytes().to_vec()
        }
    );
    let bin = read_frame(&mut s).unwrap();
    assert_eq!(
        bin,
        Frame {
            fin: true,
            rsv1: false,
            opcode: 0x2,
            payload: vec![1, 2, 3]
        }
    );
}

#[test]
fn pings_are_answered_with_the_same_payload() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    s.write_all(&client_frame(true, 0x9, &[7u8; 125], true)).unwrap();
    let f = read_frame(&mut s).unwrap();
    assert_eq!((f.opcode, f.payload), (0xA, vec![7u8; 125]));
}

#[test]
fn a_burst_of_messages_comes_back_complete_and_in_order() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        burst.extend(client_frame(true, 0x2, &i.to_be_bytes(), true));
    }
    s.write_all(&burst).unwrap();
    for i in 0..2000u32 {
        let f = read_frame(&mut s).unwrap();
        assert_eq!(f.payload, i.to_be_bytes(), "message {i}");
    }
}

#[test]
fn a_client_that_does_not_read_is_paused_not_killed() {
    // The client writes far more than its outbox cap without reading;
    // roomcast stops reading it (TCP backpressure) and resumes when it drains.
    let server = Server::start(&["--max-queue-bytes", "65536"]);
    let mut s = raw_upgrade(&server, "/echo");
    let mut reader = s.try_clone().unwrap();
    let total = 4000usize;
    let payload = vec![b'x'; 1000];
    let writer = std::thread::spawn(move || {
        for _ in 0..total {
            s.write_all(&client_frame(true, 0x2, &payload, true)).unwrap();
        }
        s
    });
    for i in 0..total {
        let f = read_frame(&mut reader).unwrap_or_else(|| panic!("EOF after {i} echoes"));
        assert_eq!(f.payload.len(), 1000);
    }
    writer.join().unwrap();
}
