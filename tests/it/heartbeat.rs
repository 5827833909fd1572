//! Heartbeats: silent connections are cut after two intervals; live ones stay.

use std::time::{Duration, Instant};

use crate::util::*;
use tungstenite::Message;

#[test]
fn a_silent_socket_is_cut_while_a_healthy_client_survives() {
    let server = Server::start(&["--heartbeat-secs", "1"]);
    let mut healthy = connect(&server, "/echo");
    let mut silent = raw_upgrade(&server, "/echo");
    let start = Instant::now();

    // The silent socket reads (so it sees the server's pings) but never
    // answers; the server must cut it after two intervals without a close.
    let cutter = std::thread::spawn(move || {
        let mut pings = 0;
        while let Some(f) = read_frame(&mut silent) {
            assert_eq!(f.opcode, 0x9, "only pings are sent to a silent client");
            pings += 1;
        }
        pings
    });

    // The healthy client keeps talking (tungstenite answers pings on read).
    let mut i = 0;
    while !cutter.is_finished() {
        assert!(start.elapsed() < TIMEOUT, "silent socket was never cut");
        healthy.send(Message::text(format!("m{i}"))).unwrap();
        loop {
            match healthy.read().unwrap() {
                Message::Text(t) => {
                    assert_eq!(t.as_str(), format!("m{i}"));
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let pings = cutter.join().unwrap();
    let elapsed = start.elapsed();
    assert!(pings >= 1, "the server pinged before cutting");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "cut after {elapsed:?}, before two intervals"
    );

    // The healthy one outlived it and still works.
    healthy.send(Message::text("still here")).unwrap();
    loop {
        match healthy.read().unwrap() {
            Message::Text(t) => break assert_eq!(t.as_str(), "still here"),
            _ => continue,
        }
    }
    assert_eq!(
        metric(&server, "roomcast_dropped_total{reason=\"heartbeat_timeout\"}"),
        1.0
    );
    assert_eq!(metric(&server, "roomcast_connections"), 1.0);
}
