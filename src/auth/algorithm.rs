//! The JWT signature algorithms roomcast accepts, spelled as in configuration
//! and in the token's `alg` header.

use std::fmt;
use std::str::FromStr;

use super::AuthSetupError;

/// A JWT signature algorithm. Configuration fixes exactly one, and a token
/// whose `alg` header names any other is refused: the token never chooses
/// how it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256, keyed by a shared secret.
    HS256,
    /// HMAC with SHA-384, keyed by a shared secret.
    HS384,
    /// HMAC with SHA-512, keyed by a shared secret.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256, checked with an RSA public key.
    RS256,
    /// ECDSA on P-256 with SHA-256, checked with an EC public key.
    ES256,
}

impl Algorithm {
    /// Every supported algorithm, in the order the docs list them.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::ES256,
    ];

    /// The name used in configuration and in the `alg` header, e.g. `"HS256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }

    /// The shortest secret accepted for an HMAC algorithm: as long as its
    /// hash output (RFC 7518 §3.2).
    pub fn min_secret_bytes(self) -> usize {
        match self {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        }
    }

    /// Whether the key is a shared secret (HMAC) rather than a PEM public key.
    pub fn uses_secret(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    pub(super) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::HS384 => jsonwebtoken::Algorithm::HS384,
            Algorithm::HS512 => jsonwebtoken::Algorithm::HS512,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = AuthSetupError;

    /// Parses a configuration value; case does not matter (`hs256` is `HS256`).
    fn from_str(s: &str) -> Result<Algorithm, AuthSetupError> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| AuthSetupError::UnknownAlgorithm(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ignore_case() {
        for a in Algorithm::ALL {
            assert_eq!(a.to_string().parse::<Algorithm>().unwrap(), a);
            assert_eq!(a.as_str().to_lowercase().parse::<Algorithm>().unwrap(), a);
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        for bad in ["", "none", "RS384", "ES256K", "HS 256"] {
            let err = bad.parse::<Algorithm>().unwrap_err().to_string();
            assert!(err.contains("HS256, HS384, HS512, RS256 or ES256"), "{err}");
        }
    }

    #[test]
    fn blanks_around_a_config_value_are_forgiven() {
        assert_eq!(" HS512\n".parse::<Algorithm>().unwrap(), Algorithm::HS512);
    }

    #[test]
    fn only_hmac_uses_a_secret() {
        let secret: Vec<_> = Algorithm::ALL.into_iter().filter(|a| a.uses_secret()).collect();
        assert_eq!(secret, [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    }
}
