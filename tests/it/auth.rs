//! JWT authentication on `/ws`: every refusal closes with 4001 and no
//! welcome; claims map to the user and its rooms; refresh and expiry.

use crate::util::*;
use serde_json::json;
use tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

fn server() -> Server {
    Server::start(&["--jwt-secret", SECRET, "--jwt-leeway-secs", "0", "--shards", "2"])
}

fn claims(sub: &str, exp_in: i64) -> serde_json::Value {
    json!({"sub": sub, "exp": unix_now() as i64 + exp_in})
}

/// Connects with `?token=` and expects a refusal: 4001 and no welcome.
fn expect_refused(server: &Server, token: Option<&str>) {
    let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
    let mut ws = connect(server, &format!("/ws{query}"));
    let (code, reason) = recv_close(&mut ws);
    assert_eq!((code, reason.as_str()), (4001, "Unauthorized"), "token {token:?}");
}

#[test]
fn missing_bad_expired_or_subjectless_tokens_are_refused_with_4001() {
    let server = server();
    expect_refused(&server, None);
    expect_refused(&server, Some("not.a.jwt"));
    expect_refused(&server, Some(&hs256("some-other-secret", claims("ann", 60))));
    expect_refused(&server, Some(&hs256(SECRET, claims("ann", -10))));
    expect_refused(&server, Some(&hs256(SECRET, json!({"exp": unix_now() + 60}))));
    expect_refused(&server, Some(&hs256(SECRET, json!({"sub": "ann"}))));
    expect_refused(
        &server,
        Some(&hs256(
            SECRET,
            json!({"sub":"ann","exp":unix_now()+60,"nbf":unix_now()+600}),
        )),
    );
    // Right secret, wrong algorithm: the algorithm is fixed by configuration.
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims("ann", 60),
        &key,
    );
    expect_refused(&server, Some(&hs512.unwrap()));
    assert_eq!(metric(&server, "roomcast_auth_failures_total"), 8.0);
    assert_eq!(metric(&server, "roomcast_closes_total{code=\"4001\"}"), 8.0);
}

#[test]
fn a_token_in_the_query_or_the_header_names_the_user() {
    let server = server();
    let token = hs256(SECRET, claims("ann", 60));
    let (_ws, welcome) = join_broker(&server, &format!("?token={token}"));
    assert_eq!(welcome["user"], "ann");

    let mut request = server.url("/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client::client(request, stream).unwrap();
    let second = recv_json(&mut ws);
    assert_eq!(
        (second["op"].as_str(), second["user"].as_str()),
        (Some("welcome"), Some("ann"))
    );
    assert_ne!(second["conn"], welcome["conn"], "connection numbers are unique");
}

#[test]
fn rooms_claims_allow_exact_names_and_prefixes_only() {
    let server = server();
    let token = hs256(
        SECRET,
        json!({"sub":"bo","exp":unix_now()+60,"rooms":["lobby","game-*"]}),
    );
    let (mut ws, _) = join_broker(&server, &format!("?token={token}"));
    join_room(&mut ws, "lobby", 1);
    join_room(&mut ws, "game-7", 2);
    for (op, id) in [("join", 3), ("publish", 4)] {
        send_json(&mut ws, json!({"op":op,"room":"lobby2","data":1,"id":id}));
        let e = recv_json(&mut ws);
        assert_eq!(
            (e["code"].as_str(), e["id"].as_u64()),
            (Some("forbidden"), Some(id)),
            "{op}: {e}"
        );
    }
    ws.send(tungstenite::Message::binary(b"\x05adminhello".to_vec()))
        .unwrap();
    assert_eq!(recv_json(&mut ws)["code"], "forbidden");
}

#[test]
fn send_reaches_every_connection_of_a_user() {
    let server = server();
    let ann = hs256(SECRET, claims("ann", 60));
    let bob = hs256(SECRET, claims("bob", 60));
    let (mut ann1, _) = join_broker(&server, &format!("?token={ann}"));
    let (mut ann2, _) = join_broker(&server, &format!("?token={ann}"));
    let (mut b, _) = join_broker(&server, &format!("?token={bob}"));
    send_json(&mut b, json!({"op":"send","user":"ann","data":"hi","id":1}));
    assert_eq!(recv_json(&mut b), json!({"op":"ack","id":1}));
    for ws in [&mut ann1, &mut ann2] {
        assert_eq!(recv_json(ws), json!({"op":"direct","from":"bob","data":"hi"}));
    }
}

#[test]
fn an_expiring_token_closes_the_connection_with_4001() {
    let server = server();
    let token = hs256(SECRET, claims("ann", 2));
    let (mut ws, _) = join_broker(&server, &format!("?token={token}"));
    let start = std::time::Instant::now();
    let (code, reason) = recv_close(&mut ws);
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert!(start.elapsed() < TIMEOUT);
}

#[test]
fn refresh_extends_the_session_for_the_same_user_only() {
    let server = server();
    let (mut ws, _) = join_broker(&server, &format!("?token={}", hs256(SECRET, claims("ann", 2))));
    let other = hs256(SECRET, claims("eve", 600));
    send_json(&mut ws, json!({"op":"refresh","token":other,"id":1}));
    assert_eq!(recv_json(&mut ws)["code"], "forbidden");
    send_json(&mut ws, json!({"op":"refresh","token":"garbage","id":2}));
    assert_eq!(recv_json(&mut ws)["code"], "forbidden");
    let newer = hs256(SECRET, json!({"sub":"ann","exp":unix_now()+600,"rooms":["after-*"]}));
    send_json(&mut ws, json!({"op":"refresh","token":newer,"id":3}));
    assert_eq!(recv_json(&mut ws), json!({"op":"ack","id":3}));
    // The new token's rooms apply at once.
    join_room(&mut ws, "after-refresh", 4);
    send_json(&mut ws, json!({"op":"join","room":"before","id":5}));
    assert_eq!(recv_json(&mut ws)["code"], "forbidden");
    // Past the first token's expiry the connection is still open.
    std::thread::sleep(std::time::Duration::from_millis(3200));
    join_room(&mut ws, "after-expiry", 6);
}

#[test]
fn rs256_with_a_public_key_file() {
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa_public.pem");
    let server = Server::start(&["--jwt-public-key", key, "--jwt-algorithm", "RS256"]);
    let private = include_bytes!("../keys/rsa_private.pem");
    let signing = jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let token = jsonwebtoken::encode(&header, &claims("rsa-user", 60), &signing).unwrap();
    let (_ws, welcome) = join_broker(&server, &format!("?token={token}"));
    assert_eq!(welcome["user"], "rsa-user");
    // An HS256 token is refused even if signed with the public key's bytes.
    let forged = hs256(
        std::str::from_utf8(&std::fs::read(key).unwrap()).unwrap(),
        claims("x", 60),
    );
    expect_refused(&server, Some(&forged));
}

#[test]
fn dev_mode_refuses_a_non_loopback_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("dev mode") && err.contains("--jwt-secret"), "{err}");
    assert_eq!(err.lines().count(), 1);
}
