//! The JWT claims roomcast reads and how their JSON is read. Anything else
//! in the payload (`iat`, `aud`, `iss`, custom claims) is ignored.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The payload of a token whose signature has already been checked.
///
/// Each field is optional here so that a missing one becomes its own
/// [`AuthError`](super::AuthError) rather than a generic parse failure;
/// a field that is present but of the wrong type fails the whole token.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    /// The user id.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, unix seconds.
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
    /// Not-before, unix seconds.
    #[serde(default, deserialize_with = "numeric_date")]
    pub nbf: Option<u64>,
    /// Room patterns; absent means every room.
    #[serde(default, deserialize_with = "room_list")]
    pub rooms: Option<Vec<String>>,
}

/// An RFC 7519 NumericDate: a non-negative JSON number of seconds, possibly
/// fractional (the fraction is dropped). `null`, strings and negative
/// numbers are refused rather than read as "absent" or 0.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Seconds;

    impl Visitor<'_> for Seconds {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 is exactly representable and nothing from it up fits; NaN
            // and infinities fall outside the range too.
            if (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }

    d.deserialize_any(Seconds).map(Some)
}

/// Called only when `rooms` is present, so `"rooms": null` fails the token
/// instead of silently meaning "every room": when unsure, grant less.
fn room_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Vec::<String>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Claims, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn absent_fields_are_none() {
        let c = parse("{}").unwrap();
        assert!(c.sub.is_none() && c.exp.is_none() && c.nbf.is_none() && c.rooms.is_none());
    }

    #[test]
    fn dates_accept_integers_and_fractions() {
        let c = parse(r#"{"exp": 1700000000, "nbf": 1699999999.75}"#).unwrap();
        assert_eq!((c.exp, c.nbf), (Some(1_700_000_000), Some(1_699_999_999)));
    }

    #[test]
    fn dates_refuse_null_strings_negatives_and_overflow() {
        for bad in [
            r#"{"exp": null}"#,
            r#"{"exp": "1700000000"}"#,
            r#"{"exp": -1}"#,
            r#"{"nbf": -0.5}"#,
            r#"{"exp": 1e300}"#,
            r#"{"exp": true}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rooms_must_be_a_list_of_strings_when_present() {
        assert_eq!(parse(r#"{"rooms": []}"#).unwrap().rooms, Some(vec![]));
        for bad in [r#"{"rooms": null}"#, r#"{"rooms": "lobby"}"#, r#"{"rooms": [1]}"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_repeated_claim_fails_rather_than_picking_one() {
        assert!(parse(r#"{"sub": "alice", "sub": "root"}"#).is_err());
    }

    #[test]
    fn other_claims_are_ignored() {
        let c = parse(r#"{"sub": "a", "aud": ["x"], "iat": 1, "role": {"admin": true}}"#).unwrap();
        assert_eq!(c.sub.as_deref(), Some("a"));
    }
}
