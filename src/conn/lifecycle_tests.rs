//! The rows of `LIFECYCLE.md`, driven through the scripted transport: each
//! test plays the client (reads), the kernel (the write window) and the
//! shard (actions, welcome, sweep ticks) by hand.

use std::time::Duration;

use super::testing::{client_frame, upgrade_request, Harness, Step};
use super::{Action, Phase, Verdict};
use crate::config::Config;
use crate::metrics::DropReason;
use crate::ws::{CloseCode, OpCode};

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

fn close_payload(code: CloseCode) -> Vec<u8> {
    code.0.to_be_bytes().to_vec()
}

fn code_of(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[test]
fn an_upgrade_answers_101_and_echo_sends_messages_back() {
    let mut h = Harness::new(Config::default());
    let head = h.upgrade("/echo");
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    // RFC 6455 §1.3's sample key and accept value.
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert_eq!(h.feed(&client_frame(OpCode::Text, b"hi")), Verdict::Keep);
    assert_eq!(h.frames(), [(TEXT, b"hi".to_vec())]);
    assert_eq!(h.env.metrics.connections.get(), 1);
}

#[test]
fn a_bad_upgrade_is_answered_and_the_connection_drained_then_closed() {
    let mut h = Harness::new(Config::default());
    h.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(h.http_head().starts_with("HTTP/1.1 426 Upgrade Required"));
    assert!(matches!(
        h.conn.phase,
        Phase::Linger {
            drain: true,
            shut: true
        }
    ));
    assert!(h.conn.stream.shut.get(), "our FIN follows the response");
    h.conn.stream.push(Step::Eof);
    assert_eq!(h.ready(), Verdict::Remove, "the client's FIN ends it");
}

#[test]
fn bytes_behind_the_upgrade_wait_for_the_welcome_and_are_then_replayed() {
    let mut h = Harness::new(Config::default());
    let mut input = upgrade_request("/ws");
    input.extend(client_frame(OpCode::Text, br#"{"op":"ping","id":7}"#));
    h.feed(&input);
    assert!(h.http_head().starts_with("HTTP/1.1 101"));
    assert!(h.frames().is_empty(), "nothing is answered before the welcome");
    assert!(matches!(h.actions()[..], [Action::Register]));
    assert!(h.conn.read_paused, "no more input is read before the welcome");
    assert_eq!(h.welcome(), Verdict::ReadAgain);
    let replies = h.actions();
    let [Action::Reply(ack)] = &replies[..] else {
        panic!("the held ping is answered after the welcome: {replies:?}")
    };
    h.conn.push_reply(ack.clone());
    h.with(|c, ctx, _| c.flush(ctx));
    let frames = h.frames();
    assert_eq!(frames.len(), 2);
    assert!(frames[0].1.starts_with(br#"{"op":"welcome""#), "the welcome is first");
    assert_eq!(frames[1].1, br#"{"op":"ack","id":7}"#);
}

#[test]
fn reads_pause_while_the_client_does_not_read_its_replies_and_resume_when_it_does() {
    let config = Config {
        max_queue_bytes: 64 * 1024,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    h.upgrade("/echo");
    h.conn.stream.window = Some(0);
    let message = client_frame(OpCode::Text, &[b'x'; 4000]);
    for _ in 0..40 {
        h.conn.stream.push(Step::Data(message.clone()));
    }
    h.ready();
    assert!(h.conn.read_paused, "past half of --max-queue-bytes, reading stops");
    let queued = h.conn.queued_bytes();
    assert!(queued > 32 * 1024 && queued < 40 * 1024, "{queued}");
    h.ready();
    assert_eq!(h.conn.queued_bytes(), queued, "paused: the script is not read");
    h.conn.stream.window = None;
    assert_eq!(h.ready(), Verdict::ReadAgain, "drained: reading resumes");
    assert!(!h.conn.read_paused);
    while h.ready() == Verdict::ReadAgain {}
    assert_eq!(h.frames().len(), 40, "every message was echoed, none lost");
}

#[test]
fn a_client_close_is_echoed_and_the_connection_closes_at_once() {
    let mut h = Harness::new(Config::default());
    h.upgrade("/echo");
    let verdict = h.feed(&client_frame(OpCode::Close, &close_payload(CloseCode::NORMAL)));
    assert_eq!(
        verdict,
        Verdict::Remove,
        "the handshake is complete once our reply is out"
    );
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].0, code_of(&frames[0].1)), (CLOSE, 1000));
}

#[test]
fn a_server_close_waits_for_the_client_reply_or_times_out() {
    let config = Config::default();
    let close_timeout = config.close_timeout;
    let mut h = Harness::new(config);
    h.upgrade("/echo");
    h.with(|c, ctx, _| {
        c.go_away(ctx);
        c.flush(ctx)
    });
    let frames = h.frames();
    assert_eq!((frames[0].0, code_of(&frames[0].1)), (CLOSE, 1001));
    assert!(!h.conn.accepts_frames());
    assert_eq!(
        h.feed(&client_frame(OpCode::Text, b"late")),
        Verdict::Keep,
        "data after our close is read and dropped"
    );
    assert!(h.frames().is_empty());
    let mut silent = Harness::new(Config::default());
    silent.upgrade("/echo");
    silent.with(|c, ctx, _| c.go_away(ctx));
    assert_eq!(silent.tick(close_timeout - Duration::from_millis(1)), Verdict::Keep);
    assert_eq!(
        silent.tick(Duration::from_millis(1)),
        Verdict::Remove,
        "no reply in time"
    );
    assert_eq!(
        h.feed(&client_frame(OpCode::Close, &close_payload(CloseCode::GOING_AWAY))),
        Verdict::Remove
    );
}

#[test]
fn a_protocol_error_sends_its_close_code_then_drains_to_eof() {
    let mut h = Harness::new(Config::default());
    h.upgrade("/echo");
    // An unmasked client frame is a protocol error (RFC 6455 §5.1).
    h.feed(&[0x81, 0x02, b'h', b'i']);
    let frames = h.frames();
    assert_eq!((frames[0].0, code_of(&frames[0].1)), (CLOSE, 1002));
    assert!(h.conn.stream.shut.get(), "our FIN follows the close frame");
    h.conn.stream.push(Step::Eof);
    assert_eq!(h.ready(), Verdict::Remove);
}

#[test]
fn heartbeats_ping_a_quiet_client_and_cut_a_silent_one() {
    let config = Config::default();
    let hb = config.heartbeat;
    let mut h = Harness::new(config);
    h.upgrade("/echo");
    assert_eq!(h.tick(hb), Verdict::Keep);
    assert_eq!(h.frames(), [(PING, Vec::new())]);
    assert_eq!(h.tick(hb - Duration::from_millis(1)), Verdict::Keep);
    assert_eq!(
        h.tick(Duration::from_millis(1)),
        Verdict::Remove,
        "two heartbeats of silence"
    );
    assert_eq!(h.env.metrics.dropped[DropReason::HeartbeatTimeout as usize].get(), 1);
    assert_eq!(h.conn.close_code, Some(CloseCode::ABNORMAL));
}

#[test]
fn traffic_keeps_a_client_alive() {
    let config = Config::default();
    let hb = config.heartbeat;
    let mut h = Harness::new(config);
    h.upgrade("/echo");
    for _ in 0..4 {
        h.now += hb;
        h.feed(&client_frame(OpCode::Pong, b""));
        assert_eq!(h.tick(Duration::ZERO), Verdict::Keep);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_until_one_asks_to_close() {
    let mut h = Harness::new(Config::default());
    let mut input = Vec::new();
    input.extend(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    input.extend(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    input.extend(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // Split the last head across two reads.
    let (a, b) = input.split_at(input.len() - 10);
    h.conn.stream.push(Step::Data(a.to_vec()));
    h.conn.stream.push(Step::Block);
    h.ready();
    assert!(h.http_head().starts_with("HTTP/1.1 200 OK"));
    h.read_body("ok\n");
    assert!(h.http_head().starts_with("HTTP/1.1 404 Not Found"));
    h.read_body("not found\n");
    assert!(matches!(h.conn.phase, Phase::Http { .. }), "keep-alive");
    h.feed(b);
    let head = h.http_head();
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.contains("Connection: close"),
        "{head}"
    );
    assert!(matches!(h.conn.phase, Phase::Linger { drain: true, .. }));
}

#[test]
fn a_handshake_that_never_completes_times_out() {
    let config = Config::default();
    let timeout = config.handshake_timeout;
    let mut h = Harness::new(config);
    h.feed(b"GET /ws HTTP/1.1\r\n");
    assert_eq!(h.tick(timeout - Duration::from_millis(1)), Verdict::Keep);
    assert_eq!(h.tick(Duration::from_millis(1)), Verdict::Remove);
    assert_eq!(h.env.metrics.dropped[DropReason::HandshakeTimeout as usize].get(), 1);
}

#[test]
fn a_slow_consumer_is_refused_frames_past_its_cap_and_cut_with_4008() {
    let config = Config {
        max_queue_bytes: 1000,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    h.upgrade("/echo");
    h.conn.stream.window = Some(0);
    let frame = crate::ws::frame::encode(OpCode::Text, &[b'x'; 300]);
    let at = h.turn.push(&frame);
    let cap = h.env.config().max_queue_bytes;
    for _ in 0..3 {
        assert!(h.conn.push_foreign(at, frame.len(), cap));
    }
    assert!(
        !h.conn.push_foreign(at, frame.len(), cap),
        "the fourth would pass the cap"
    );
    h.conn.stream.window = None;
    h.with(|c, ctx, _| c.cut_slow_consumer(ctx));
    assert_eq!(h.conn.close_code, Some(CloseCode::SLOW_CONSUMER));
    assert!(matches!(h.conn.phase, Phase::Linger { drain: true, .. }));
    assert_eq!(h.env.metrics.dropped[DropReason::SlowConsumer as usize].get(), 1);
    let frames = h.frames();
    let (op, payload) = frames.last().expect("a close frame");
    assert_eq!((*op, code_of(payload)), (CLOSE, 4008));
}

#[test]
fn eof_and_socket_errors_remove_the_connection_as_abnormal() {
    let mut h = Harness::new(Config::default());
    h.upgrade("/echo");
    h.conn.stream.push(Step::Eof);
    assert_eq!(h.ready(), Verdict::Remove);
    assert_eq!(h.conn.close_code, Some(CloseCode::ABNORMAL));
    let mut h = Harness::new(Config::default());
    h.upgrade("/echo");
    h.conn.stream.push(Step::Fail(std::io::ErrorKind::ConnectionReset));
    assert_eq!(h.ready(), Verdict::Remove);
    h.with(|c, ctx, _| c.finish(ctx));
    assert_eq!(h.env.metrics.connections.get(), 0, "finish updates the gauge");
}

#[test]
fn a_slow_consumer_cut_mid_frame_gets_the_whole_frame_then_4008() {
    let config = Config {
        max_queue_bytes: 10_000,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    h.upgrade("/echo");
    let frame = crate::ws::frame::encode(OpCode::Text, &[b'y'; 3000]);
    let at = h.turn.push(&frame);
    let cap = h.env.config().max_queue_bytes;
    for _ in 0..3 {
        assert!(h.conn.push_foreign(at, frame.len(), cap));
    }
    // The kernel takes half of the first frame, then blocks.
    h.conn.stream.window = Some(1500);
    h.with(|c, ctx, _| c.flush(ctx));
    assert!(!h.conn.push_foreign(at, frame.len(), cap));
    assert_eq!(h.with(|c, ctx, _| c.cut_slow_consumer(ctx)), Verdict::Keep);
    assert_eq!(
        h.with(|c, ctx, _| c.cut_slow_consumer(ctx)),
        Verdict::Keep,
        "a second cut in the same turn changes nothing"
    );
    assert_eq!(h.env.metrics.dropped[DropReason::SlowConsumer as usize].get(), 1);
    h.turn.clear();
    h.conn.stream.window = None;
    h.ready();
    let frames = h.frames();
    assert_eq!(
        frames.len(),
        2,
        "the frame begun, whole, then the close: {}",
        frames.len()
    );
    assert_eq!(frames[0], (TEXT, vec![b'y'; 3000]));
    assert_eq!((frames[1].0, code_of(&frames[1].1)), (CLOSE, 4008));
    assert!(h.conn.stream.shut.get());
}

#[test]
fn a_connection_is_listed_to_read_again_once_however_often_it_asks() {
    let mut h = Harness::new(Config::default());
    assert!(h.conn.queue_read(), "first time: listed");
    assert!(!h.conn.queue_read(), "already listed: not twice");
    h.conn.unqueue_read();
    assert!(h.conn.queue_read(), "taken off, then listed again");
}

#[test]
fn an_api_answer_waiting_for_owner_shards_holds_pipelined_requests_back() {
    let mut config = Config::default();
    config.api_key = Some("k".into());
    config.rooms = crate::config::RoomRules::new(
        Vec::new(),
        crate::config::RoomOptions {
            history_size: 10,
            history_ttl: Duration::from_secs(60),
            presence: false,
            join_leave: false,
        },
    )
    .unwrap();
    let mut h = Harness::new(config);
    let body = r#"{"batch":[{"room":"h","data":1},{"user":"u","data":2}]}"#;
    let mut input = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    input.extend(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    h.feed(&input);
    let actions = h.actions();
    assert!(
        matches!(
            actions[..],
            [
                Action::PublishNumbered {
                    id: Some(0),
                    api: true,
                    ..
                },
                Action::Publish { user: true, .. }
            ]
        ),
        "{actions:?}"
    );
    assert!(
        h.conn.stream.written.is_empty(),
        "nothing answered yet, the probe neither"
    );
    // The owner's answer completes it; the probe behind it is served next.
    let part = crate::bus::ApiPart::Offset { index: 0, offset: 7 };
    let verdict = h.with(|c, ctx, _| c.api_part(ctx, part));
    assert_eq!(verdict, Verdict::ReadAgain);
    h.with(|c, ctx, _| c.flush(ctx));
    assert!(h.http_head().starts_with("HTTP/1.1 200 OK"));
    h.read_body(r#"{"published":2,"offsets":[7,null]}"#);
    h.ready();
    assert!(h.http_head().starts_with("HTTP/1.1 200 OK"));
    h.read_body("ok\n");
}
