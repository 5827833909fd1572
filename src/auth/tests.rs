//! Tests of `Authenticator`: tokens signed here with `jsonwebtoken::encode`
//! and the test-only keys in `tests/keys/`, verified at a fixed `NOW`.

use std::sync::OnceLock;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "a shared secret that is long enough for HS512 tests!!!!!!!!!!!!!";

const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");
const P384_PUBLIC: &[u8] = b"-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEDhNEL5n6SuuOckhRIuVCpa7MNblFcAj3
Qv6uS+qaBdB8RQMRrFpLj7JYuNTGTs3DwpjXp0+2L/8ZoIYSOo9xQlAu8P4OQ/4H
j39hCpcBmbBO3RG5l3zJ+EYx3RebM6Z6
-----END PUBLIC KEY-----
";
/// base64url of `{"alg":"none","typ":"JWT"}`.
const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

fn claims() -> Value {
    json!({"sub": "alice", "exp": NOW + 3600})
}

fn hmac_auth(alg: Algorithm) -> Authenticator {
    Authenticator::new(&AuthConfig::new(KeySource::Secret(SECRET.into()), alg)).unwrap()
}

fn pem_auth(alg: Algorithm, pem: &[u8]) -> Authenticator {
    Authenticator::new(&AuthConfig::new(KeySource::PublicKeyPem(pem.to_vec()), alg)).unwrap()
}

fn sign_hmac(alg: jsonwebtoken::Algorithm, secret: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign_hmac(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), claims)
}

/// RSA signing is slow in debug builds, so the one RS256 token is shared.
fn rs256_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        encode(&Header::new(jsonwebtoken::Algorithm::RS256), &claims(), &key).unwrap()
    })
}

fn es256_token() -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    encode(&Header::new(jsonwebtoken::Algorithm::ES256), &claims(), &key).unwrap()
}

fn setup_err(key: KeySource, alg: Algorithm) -> AuthSetupError {
    Authenticator::new(&AuthConfig::new(key, alg)).unwrap_err()
}

#[test]
fn a_valid_hs256_token_gives_its_principal() {
    let p = hmac_auth(Algorithm::HS256).verify_at(&hs256(&claims()), NOW).unwrap();
    assert_eq!(&*p.user, "alice");
    assert_eq!(p.exp, NOW + 3600);
    assert!(p.rooms.allows_every_room());
}

#[test]
fn hs384_and_hs512_verify_when_configured() {
    for (ours, theirs) in [
        (Algorithm::HS384, jsonwebtoken::Algorithm::HS384),
        (Algorithm::HS512, jsonwebtoken::Algorithm::HS512),
    ] {
        let token = sign_hmac(theirs, SECRET.as_bytes(), &claims());
        assert_eq!(
            &*hmac_auth(ours).verify_at(&token, NOW).unwrap().user,
            "alice",
            "{ours}"
        );
    }
}

#[test]
fn the_wrong_secret_is_invalid() {
    let token = sign_hmac(jsonwebtoken::Algorithm::HS256, b"another secret", &claims());
    assert_eq!(
        hmac_auth(Algorithm::HS256).verify_at(&token, NOW).unwrap_err(),
        AuthError::Invalid
    );
}

#[test]
fn another_hmac_algorithm_than_configured_is_invalid() {
    let hs512 = sign_hmac(jsonwebtoken::Algorithm::HS512, SECRET.as_bytes(), &claims());
    assert_eq!(
        hmac_auth(Algorithm::HS256).verify_at(&hs512, NOW).unwrap_err(),
        AuthError::Invalid
    );
    let hs256 = hs256(&claims());
    assert_eq!(
        hmac_auth(Algorithm::HS512).verify_at(&hs256, NOW).unwrap_err(),
        AuthError::Invalid
    );
}

#[test]
fn an_unsigned_alg_none_token_is_invalid() {
    let payload = hs256(&claims()).split('.').nth(1).unwrap().to_string();
    let auth = hmac_auth(Algorithm::HS256);
    for token in [format!("{NONE_HEADER}.{payload}."), format!("{NONE_HEADER}.{payload}")] {
        assert_eq!(auth.verify_at(&token, NOW).unwrap_err(), AuthError::Invalid, "{token}");
    }
}

#[test]
fn a_tampered_payload_is_invalid() {
    let token = hs256(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = hs256(&json!({"sub": "root", "exp": NOW + 3600}));
    parts[1] = forged.split('.').nth(1).unwrap();
    let auth = hmac_auth(Algorithm::HS256);
    assert_eq!(auth.verify_at(&parts.join("."), NOW).unwrap_err(), AuthError::Invalid);
}

#[test]
fn malformed_tokens_are_invalid_and_empty_is_missing() {
    let auth = hmac_auth(Algorithm::HS256);
    for junk in ["abc", "a.b", "a.b.c", "...", "\u{0}", "Bearer x.y.z", "é.é.é"] {
        assert_eq!(auth.verify_at(junk, NOW).unwrap_err(), AuthError::Invalid, "{junk:?}");
    }
    assert_eq!(auth.verify_at("", NOW).unwrap_err(), AuthError::Missing);
}

#[test]
fn an_oversized_token_is_invalid_before_decoding() {
    let big = hs256(&json!({"sub": "alice", "exp": NOW + 3600, "pad": "x".repeat(MAX_TOKEN_BYTES)}));
    assert_eq!(
        hmac_auth(Algorithm::HS256).verify_at(&big, NOW).unwrap_err(),
        AuthError::Invalid
    );
}

#[test]
fn expiry_honours_the_leeway() {
    let auth = hmac_auth(Algorithm::HS256);
    let token = hs256(&json!({"sub": "alice", "exp": NOW}));
    // Within the default 30 s leeway.
    assert!(auth.verify_at(&token, NOW).is_ok());
    assert!(auth.verify_at(&token, NOW + 29).is_ok());
    // Valid strictly before exp + leeway.
    assert_eq!(auth.verify_at(&token, NOW + 30).unwrap_err(), AuthError::Expired);
    assert_eq!(auth.verify_at(&token, NOW + 3600).unwrap_err(), AuthError::Expired);

    let strict = Authenticator::new(&AuthConfig {
        leeway_secs: 0,
        ..AuthConfig::new(KeySource::Secret(SECRET.into()), Algorithm::HS256)
    })
    .unwrap();
    assert_eq!(strict.verify_at(&token, NOW).unwrap_err(), AuthError::Expired);
    assert!(strict.verify_at(&token, NOW - 1).is_ok());
}

#[test]
fn is_expired_uses_the_same_rule_as_verify() {
    let auth = hmac_auth(Algorithm::HS256);
    let p = auth
        .verify_at(&hs256(&json!({"sub": "alice", "exp": NOW})), NOW)
        .unwrap();
    assert!(!auth.is_expired(p.exp, NOW + 29));
    assert!(auth.is_expired(p.exp, NOW + 30));
}

#[test]
fn not_before_honours_the_leeway() {
    let auth = hmac_auth(Algorithm::HS256);
    let soon = hs256(&json!({"sub": "alice", "exp": NOW + 3600, "nbf": NOW + 30}));
    assert!(auth.verify_at(&soon, NOW).is_ok());
    let later = hs256(&json!({"sub": "alice", "exp": NOW + 3600, "nbf": NOW + 31}));
    assert_eq!(auth.verify_at(&later, NOW).unwrap_err(), AuthError::NotYetValid);
    assert!(auth.verify_at(&later, NOW + 1).is_ok());
}

#[test]
fn a_huge_leeway_saturates_instead_of_overflowing() {
    let auth = Authenticator::new(&AuthConfig {
        leeway_secs: u64::MAX,
        ..AuthConfig::new(KeySource::Secret(SECRET.into()), Algorithm::HS256)
    })
    .unwrap();
    let token = hs256(&json!({"sub": "alice", "exp": u64::MAX, "nbf": u64::MAX}));
    assert!(auth.verify_at(&token, u64::MAX - 1).is_ok());
}

#[test]
fn exp_is_required_and_must_be_a_number() {
    let auth = hmac_auth(Algorithm::HS256);
    let no_exp = hs256(&json!({"sub": "alice"}));
    assert_eq!(auth.verify_at(&no_exp, NOW).unwrap_err(), AuthError::MissingExpiry);
    for exp in [json!("1700003600"), json!(null), json!(-1)] {
        let token = hs256(&json!({"sub": "alice", "exp": exp}));
        assert_eq!(auth.verify_at(&token, NOW).unwrap_err(), AuthError::Invalid, "{exp}");
    }
    let fractional = hs256(&json!({"sub": "alice", "exp": (NOW + 10) as f64 + 0.5}));
    assert_eq!(auth.verify_at(&fractional, NOW).unwrap().exp, NOW + 10);
}

#[test]
fn a_missing_or_empty_subject_is_refused() {
    let auth = hmac_auth(Algorithm::HS256);
    for c in [json!({"exp": NOW + 60}), json!({"sub": "", "exp": NOW + 60})] {
        assert_eq!(
            auth.verify_at(&hs256(&c), NOW).unwrap_err(),
            AuthError::MissingSubject,
            "{c}"
        );
    }
    let numeric = hs256(&json!({"sub": 42, "exp": NOW + 60}));
    assert_eq!(auth.verify_at(&numeric, NOW).unwrap_err(), AuthError::Invalid);
}

#[test]
fn the_rooms_claim_becomes_the_policy() {
    let auth = hmac_auth(Algorithm::HS256);
    let token = hs256(&json!({"sub": "alice", "exp": NOW + 60, "rooms": ["lobby", "game-*"]}));
    let p = auth.verify_at(&token, NOW).unwrap();
    assert!(p.rooms.allows("lobby") && p.rooms.allows("game-3"));
    assert!(!p.rooms.allows("admin"));

    let none = hs256(&json!({"sub": "alice", "exp": NOW + 60, "rooms": []}));
    assert!(!auth.verify_at(&none, NOW).unwrap().rooms.allows("lobby"));

    for bad in [json!(null), json!("lobby"), json!([1])] {
        let token = hs256(&json!({"sub": "alice", "exp": NOW + 60, "rooms": bad}));
        assert_eq!(auth.verify_at(&token, NOW).unwrap_err(), AuthError::Invalid, "{bad}");
    }
}

#[test]
fn rs256_verifies_with_the_public_key() {
    let p = pem_auth(Algorithm::RS256, RSA_PUBLIC)
        .verify_at(rs256_token(), NOW)
        .unwrap();
    assert_eq!(&*p.user, "alice");
}

#[test]
fn es256_verifies_with_the_public_key() {
    let p = pem_auth(Algorithm::ES256, EC_PUBLIC)
        .verify_at(&es256_token(), NOW)
        .unwrap();
    assert_eq!(&*p.user, "alice");
}

#[test]
fn an_hs256_token_keyed_with_the_public_key_is_refused_under_rs256() {
    // The classic confusion attack: the public key, which anyone may have,
    // used as an HMAC secret.
    let auth = pem_auth(Algorithm::RS256, RSA_PUBLIC);
    for secret in [RSA_PUBLIC, SECRET.as_bytes()] {
        let token = sign_hmac(jsonwebtoken::Algorithm::HS256, secret, &claims());
        assert_eq!(auth.verify_at(&token, NOW).unwrap_err(), AuthError::Invalid);
    }
}

#[test]
fn asymmetric_algorithms_do_not_stand_in_for_each_other() {
    let rs = pem_auth(Algorithm::RS256, RSA_PUBLIC);
    assert_eq!(rs.verify_at(&es256_token(), NOW).unwrap_err(), AuthError::Invalid);
    let es = pem_auth(Algorithm::ES256, EC_PUBLIC);
    assert_eq!(es.verify_at(rs256_token(), NOW).unwrap_err(), AuthError::Invalid);
    let hs = hmac_auth(Algorithm::HS256);
    assert_eq!(hs.verify_at(rs256_token(), NOW).unwrap_err(), AuthError::Invalid);
}

#[test]
fn verify_uses_the_system_clock() {
    let now = unix_now();
    let auth = hmac_auth(Algorithm::HS256);
    assert!(auth.verify(&hs256(&json!({"sub": "alice", "exp": now + 600}))).is_ok());
    let stale = hs256(&json!({"sub": "alice", "exp": now - 600}));
    assert_eq!(auth.verify(&stale).unwrap_err(), AuthError::Expired);
}

#[test]
fn key_and_algorithm_must_match() {
    assert_eq!(
        setup_err(KeySource::Secret(SECRET.into()), Algorithm::RS256),
        AuthSetupError::NeedsPublicKey(Algorithm::RS256)
    );
    assert_eq!(
        setup_err(KeySource::PublicKeyPem(RSA_PUBLIC.to_vec()), Algorithm::HS256),
        AuthSetupError::NeedsSecret(Algorithm::HS256)
    );
    assert_eq!(
        setup_err(KeySource::Secret(String::new()), Algorithm::HS256),
        AuthSetupError::EmptySecret
    );
}

#[test]
fn unusable_pem_keys_fail_at_setup() {
    let cases: [(&[u8], Algorithm); 8] = [
        (b"not a pem", Algorithm::RS256),
        // Well-formed PEM and DER, but SEQUENCE { INTEGER 5 } is no RSA key.
        (
            b"-----BEGIN RSA PUBLIC KEY-----\nMAMCAQU=\n-----END RSA PUBLIC KEY-----\n",
            Algorithm::RS256,
        ),
        (
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            Algorithm::ES256,
        ),
        (RSA_PRIVATE, Algorithm::RS256),
        (EC_PRIVATE, Algorithm::ES256),
        (EC_PUBLIC, Algorithm::RS256),
        (RSA_PUBLIC, Algorithm::ES256),
        (P384_PUBLIC, Algorithm::ES256),
    ];
    for (i, (pem, alg)) in cases.into_iter().enumerate() {
        let err = setup_err(KeySource::PublicKeyPem(pem.to_vec()), alg);
        assert!(
            matches!(err, AuthSetupError::BadPublicKey { algorithm, .. } if algorithm == alg),
            "{i}: {err}"
        );
        assert!(!err.to_string().contains('\n'), "{i}: {err}");
    }
    let err = setup_err(KeySource::PublicKeyPem(RSA_PRIVATE.to_vec()), Algorithm::RS256).to_string();
    assert!(err.contains("private key"), "{err}");
}

#[test]
fn the_authenticator_is_shareable_and_debug_hides_the_secret() {
    fn shared<T: Send + Sync>() {}
    shared::<Authenticator>();
    shared::<Principal>();

    let cfg = AuthConfig::new(KeySource::Secret(SECRET.into()), Algorithm::HS256);
    for shown in [format!("{cfg:?}"), format!("{:?}", hmac_auth(Algorithm::HS256))] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
