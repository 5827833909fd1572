//! Every rule of the frame codec ends the connection with its close code, and
//! the close handshake completes properly.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

/// Sends `bytes` on a fresh `/echo` connection; returns the close code.
fn close_code_for(server: &Server, bytes: &[u8]) -> u16 {
    let mut s = raw_upgrade(server, "/echo");
    s.write_all(bytes).unwrap();
    let code = expect_close(&mut s);
    // Complete the handshake as a polite client would; the server then closes TCP.
    let _ = s.write_all(&client_frame(true, 0x8, &code.to_be_bytes(), true));
    expect_eof(&mut s);
    code
}

fn frames(list: &[(bool, u8, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|(fin, op, p)| client_frame(*fin, *op, p, true))
        .collect()
}

#[test]
fn unmasked_frames_close_with_1002() {
    let server = Server::start(&[]);
    assert_eq!(close_code_for(&server, &client_frame(true, 0x1, b"hi", false)), 1002);
}

#[test]
fn reserved_bits_and_opcodes_close_with_1002() {
    let server = Server::start(&[]);
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut f = client_frame(true, 0x1, b"x", true);
        f[0] |= rsv;
        assert_eq!(close_code_for(&server, &f), 1002, "rsv {rsv:#x}");
    }
    for op in [0x3u8, 0x7, 0xB, 0xF] {
        assert_eq!(
            close_code_for(&server, &client_frame(true, op, b"", true)),
            1002,
            "opcode {op}"
        );
    }
}

#[test]
fn oversize_or_fragmented_control_frames_close_with_1002() {
    let server = Server::start(&[]);
    assert_eq!(close_code_for(&server, &client_frame(true, 0x9, &[0; 126], true)), 1002);
    assert_eq!(close_code_for(&server, &client_frame(false, 0x9, b"x", true)), 1002);
    assert_eq!(
        close_code_for(&server, &client_frame(false, 0x8, &1000u16.to_be_bytes(), true)),
        1002
    );
}

#[test]
fn continuation_rules_close_with_1002() {
    let server = Server::start(&[]);
    assert_eq!(close_code_for(&server, &frames(&[(true, 0x0, b"orphan")])), 1002);
    assert_eq!(
        close_code_for(&server, &frames(&[(false, 0x1, b"a"), (true, 0x1, b"b")])),
        1002
    );
    assert_eq!(
        close_code_for(&server, &frames(&[(false, 0x2, b"a"), (false, 0x1, b"b")])),
        1002
    );
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let server = Server::start(&[]);
    assert_eq!(
        close_code_for(&server, &client_frame(true, 0x1, &[0xce, 0xba, 0xff], true)),
        1007
    );
    // Split across fragments: each fragment alone looks fine up to the cut.
    let bytes = frames(&[(false, 0x1, &[0xce]), (false, 0x0, &[0xba, 0xe1]), (true, 0x0, &[0x28])]);
    assert_eq!(close_code_for(&server, &bytes), 1007);
}

#[test]
fn invalid_utf8_fails_fast_before_the_message_ends() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    // The first fragment already holds an impossible sequence; the message
    // never finishes, so only a fail-fast validator can answer.
    s.write_all(&client_frame(false, 0x1, &[b'o', b'k', 0xf4, 0x90, 0x80, 0x80], true))
        .unwrap();
    assert_eq!(expect_close(&mut s), 1007);
}

#[test]
fn bad_close_frames_are_refused() {
    let server = Server::start(&[]);
    assert_eq!(
        close_code_for(&server, &client_frame(true, 0x8, &[0x03], true)),
        1002,
        "one byte"
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert_eq!(
            close_code_for(&server, &client_frame(true, 0x8, &code.to_be_bytes(), true)),
            1002,
            "{code}"
        );
    }
    assert_eq!(
        close_code_for(&server, &client_frame(true, 0x8, &[0x03, 0xe8, 0xc0, 0xaf], true)),
        1007
    );
}

#[test]
fn messages_over_the_limit_close_with_1009_before_they_are_buffered() {
    let server = Server::start(&["--max-message-bytes", "1000"]);
    let mut s = raw_upgrade(&server, "/echo");
    // Only the header of a 1 MiB frame: the server must not wait for the payload.
    let full = client_frame(true, 0x2, &vec![0u8; 1 << 20], true);
    s.write_all(&full[..14]).unwrap();
    assert_eq!(expect_close(&mut s), 1009);
    // Fragments that add up past the limit.
    let bytes = frames(&[(false, 0x2, &[0u8; 600]), (true, 0x0, &[0u8; 600])]);
    assert_eq!(close_code_for(&server, &bytes), 1009);
    // Exactly the limit is fine.
    let mut s = raw_upgrade(&server, "/echo");
    s.write_all(&client_frame(true, 0x2, &[5u8; 1000], true)).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().payload.len(), 1000);
}

#[test]
fn a_client_close_is_answered_then_the_server_closes_tcp() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    s.write_all(&client_frame(true, 0x8, &payload, true)).unwrap();
    assert_eq!(expect_close(&mut s), 1000);
    expect_eof(&mut s);
    // A close with no payload is answered with no payload.
    let mut s = raw_upgrade(&server, "/echo");
    s.write_all(&client_frame(true, 0x8, b"", true)).unwrap();
    let f = read_frame(&mut s).unwrap();
    assert_eq!((f.opcode, f.payload.len()), (0x8, 0));
    expect_eof(&mut s);
}

#[test]
fn a_real_client_close_completes_cleanly() {
    let server = Server::start(&[]);
    let mut ws = connect(&server, "/echo");
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    ws.close(Some(normal)).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
    eventually("the close to be counted", || {
        metric(&server, "roomcast_closes_total{code=\"1000\"}") == 1.0
    });
}

#[test]
fn a_peer_that_never_answers_our_close_is_cut_after_the_timeout() {
    // A refusal over --max-connections is a close roomcast starts with a
    // healthy stream, so it waits for the peer's close frame: here, in vain.
    let server = Server::start(&["--close-timeout-secs", "1", "--max-connections", "1"]);
    let _admitted = connect(&server, "/echo");
    let mut s = raw_upgrade(&server, "/echo");
    assert_eq!(expect_close(&mut s), 1013);
    let start = Instant::now();
    expect_eof(&mut s);
    assert!(start.elapsed() >= Duration::from_millis(700), "cut before the timeout");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn after_a_protocol_error_the_server_closes_its_side_at_once() {
    let server = Server::start(&[]);
    let mut s = raw_upgrade(&server, "/echo");
    s.write_all(&client_frame(true, 0x1, &[0xff], true)).unwrap();
    assert_eq!(expect_close(&mut s), 1007);
    // No close reply is needed: the stream cannot be trusted any more.
    let start = Instant::now();
    expect_eof(&mut s);
    assert!(start.elapsed() < Duration::from_secs(1));
}
