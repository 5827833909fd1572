//! Connection cap and the spread of connections over shards.

mod util;

use util::*;

#[test]
fn connections_over_the_cap_are_closed_with_1013() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut a = connect(&server, "/ws");
    let _b = connect(&server, "/ws");
    let mut extra = raw_upgrade(&server, "/ws");
    assert_eq!(expect_close(&mut extra), 1013);
    eventually("the refusal to be counted", || {
        metric(&server, "roomcast_dropped_total{reason=\"connection_limit\"}") == 1.0
    });
    assert_eq!(metric(&server, "roomcast_closes_total{code=\"1013\"}"), 1.0);

    // Freeing a slot lets a new client in.
    a.close(None).unwrap();
    while a.read().is_ok() {}
    eventually("a freed slot to be reused", || {
        // Admitted clients are welcomed with a text frame; refused ones get 1013.
        let mut s = raw_upgrade(&server, "/ws");
        read_frame(&mut s).is_some_and(|f| f.opcode == 0x1)
    });
}

#[test]
fn connections_spread_evenly_over_shards() {
    let server = Server::start(&["--shards", "4"]);
    let clients: Vec<_> = (0..40).map(|_| connect(&server, "/echo")).collect();
    eventually("all 40 to be registered", || {
        metric(&server, "roomcast_connections") == 40.0
    });
    for shard in 0..4 {
        let n = metric(&server, &format!("roomcast_shard_connections{{shard=\"{shard}\"}}"));
        assert_eq!(n, 10.0, "shard {shard}");
    }
    drop(clients);
    eventually("all to be gone", || metric(&server, "roomcast_connections") == 0.0);
}
