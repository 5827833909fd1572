//! Authentication: a JWT presented at the upgrade becomes a [`Principal`]
//! (user id, allowed rooms, expiry).
//!
//! The algorithm is fixed by configuration; a token whose `alg` header names
//! any other (including `none`) is refused, so a token cannot pick how it is
//! checked. [`Authenticator`] parses the key once at startup and is then
//! shared read-only by every shard. With no key configured (dev mode, where
//! everyone is anonymous) there is no [`AuthConfig`] and no [`Authenticator`]:
//! callers hold `Option<AuthConfig>` / `Option<Authenticator>`.
//!
//! `aud` and `iss` are not checked: give roomcast a key that signs tokens
//! for roomcast only. `docs/protocol.md` (Authentication) is the user-facing
//! summary.

mod algorithm;
mod claims;
mod origin;
mod policy;
mod request;

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{DecodingKey, Validation};

pub(crate) use algorithm::Algorithm;
pub(crate) use origin::{OriginPolicy, LOOPBACK_ORIGINS};
pub(crate) use policy::RoomPolicy;
pub(crate) use request::{bearer, constant_time_eq, query_param, token_from_request};

/// Default clock-skew allowance, in seconds, applied to `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Longest token [`Authenticator::verify`] will look at. Far above any real
/// token, and it bounds the decoding work an unauthenticated peer can cause.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How tokens are verified. Its absence (`Option<AuthConfig>::None`) is dev
/// mode: everyone is anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The shared secret or public key tokens are checked against.
    pub key: KeySource,
    /// The one algorithm tokens must be signed with; it must suit `key`.
    pub algorithm: Algorithm,
    /// Clock-skew allowance, in seconds, for `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl AuthConfig {
    /// A configuration with the default leeway ([`DEFAULT_LEEWAY_SECS`]).
    pub fn new(key: KeySource, algorithm: Algorithm) -> AuthConfig {
        AuthConfig {
            key,
            algorithm,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Where the verification key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A shared secret, used as raw bytes, for HS256/HS384/HS512.
    Secret(String),
    /// The contents of a PEM public key file (`-----BEGIN PUBLIC KEY-----`)
    /// for RS256 (RSA) or ES256 (P-256).
    PublicKeyPem(Vec<u8>),
}

// Hand-written so that logging a config never prints the secret.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret([redacted])"),
            KeySource::PublicKeyPem(pem) => write!(f, "PublicKeyPem({} bytes)", pem.len()),
        }
    }
}

/// An authentication configuration that cannot be used. Display is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSetupError {
    /// The algorithm name is not one roomcast supports.
    #[error("unknown JWT algorithm {0:?}; expected one of HS256, HS384, HS512, RS256 or ES256")]
    UnknownAlgorithm(String),
    /// An RS256/ES256 algorithm was paired with a shared secret.
    #[error("JWT algorithm {0} verifies with a PEM public key, but a shared secret was configured")]
    NeedsPublicKey(Algorithm),
    /// An HMAC algorithm was paired with a PEM public key.
    #[error("JWT algorithm {0} verifies with a shared secret, but a PEM public key was configured")]
    NeedsSecret(Algorithm),
    /// The shared secret is empty, which would let anyone sign tokens.
    #[error("the JWT shared secret is empty")]
    EmptySecret,
    /// The PEM data is not a public key usable with the algorithm.
    #[error("the PEM key cannot verify {algorithm} tokens: {reason}")]
    BadPublicKey {
        /// The configured algorithm.
        algorithm: Algorithm,
        /// What is wrong with the key.
        reason: &'static str,
    },
}

/// Why a token was refused. Display is a short reason for logs; clients get
/// close code 4001 whatever the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// Malformed, badly signed, signed with another algorithm, too long, or
    /// a claim of the wrong type.
    #[error("invalid token")]
    Invalid,
    /// `exp` has passed, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `sub` is absent or empty.
    #[error("token has no subject")]
    MissingSubject,
    /// `exp` is absent; roomcast refuses tokens that never expire.
    #[error("token has no expiry")]
    MissingExpiry,
}

/// Who a verified token says the client is, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user id, from `sub`.
    pub user: Arc<str>,
    /// The rooms the user may use, from `rooms`.
    pub rooms: RoomPolicy,
    /// When the token expires, unix seconds (from `exp`, without leeway);
    /// see [`Authenticator::is_expired`].
    pub exp: u64,
}

/// Verifies tokens against the configured key and algorithm. Built once at
/// startup; `Send + Sync`, so one `Arc<Authenticator>` serves every shard.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
    leeway_secs: u64,
}

impl Authenticator {
    /// Parses the key and checks that it suits the algorithm.
    pub fn new(cfg: &AuthConfig) -> Result<Authenticator, AuthSetupError> {
        let alg = cfg.algorithm;
        let key = match (&cfg.key, alg.uses_secret()) {
            (KeySource::Secret(s), true) if s.is_empty() => return Err(AuthSetupError::EmptySecret),
            (KeySource::Secret(s), true) => DecodingKey::from_secret(s.as_bytes()),
            (KeySource::Secret(_), false) => return Err(AuthSetupError::NeedsPublicKey(alg)),
            (KeySource::PublicKeyPem(_), true) => return Err(AuthSetupError::NeedsSecret(alg)),
            (KeySource::PublicKeyPem(pem), false) => public_key(pem, alg)?,
        };
        // Only the signature and `alg` are left to jsonwebtoken; the claims
        // are checked in `verify_at` so that `now` can be passed in and each
        // missing claim gets its own error.
        let mut validation = Validation::new(alg.to_jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Authenticator {
            key,
            validation,
            algorithm: alg,
            leeway_secs: cfg.leeway_secs,
        })
    }

    /// Verifies `token` against the current system time.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as of `now_unix` (unix seconds).
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        let claims = jsonwebtoken::decode::<claims::Claims>(token, &self.key, &self.validation)
            .map_err(|_| AuthError::Invalid)?
            .claims;
        let user: Arc<str> = match claims.sub {
            Some(sub) if !sub.is_empty() => sub.into(),
            _ => return Err(AuthError::MissingSubject),
        };
        let exp = claims.exp.ok_or(AuthError::MissingExpiry)?;
        if self.expired(exp, now_unix) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now_unix.saturating_add(self.leeway_secs) < nbf)
        {
            return Err(AuthError::NotYetValid);
        }
        let rooms = claims.rooms.map_or_else(RoomPolicy::any, RoomPolicy::from_patterns);
        Ok(Principal { user, rooms, exp })
    }

    /// Whether a token that expires at `exp` (a [`Principal`]'s) has
    /// expired as of `now_unix`, by the same rule (and leeway) `verify`
    /// applies, so a connection is cut exactly when its token would stop
    /// being accepted.
    pub fn is_expired(&self, exp: u64, now_unix: u64) -> bool {
        self.expired(exp, now_unix)
    }

    // RFC 7519: the token is valid strictly before `exp`.
    fn expired(&self, exp: u64, now_unix: u64) -> bool {
        now_unix >= exp.saturating_add(self.leeway_secs)
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// Reads a PEM public key for `alg` and proves it usable now, so a wrong
/// file fails at startup instead of failing every token later.
fn public_key(pem: &[u8], alg: Algorithm) -> Result<DecodingKey, AuthSetupError> {
    let bad = |reason| AuthSetupError::BadPublicKey { algorithm: alg, reason };
    // jsonwebtoken reads a private key PEM as if it were public and only
    // fails per token, so the commonest mistake is caught by its label.
    if String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
        return Err(bad("it is a private key; configure the matching public key"));
    }
    match alg {
        Algorithm::RS256 => {
            let key = DecodingKey::from_rsa_pem(pem).map_err(|_| bad("not an RSA public key in PEM format"))?;
            let der = key.try_get_as_bytes().map_err(|_| bad("not an RSA public key"))?;
            // The RSA verifier parses its key per token; parse it once here to
            // know it will succeed.
            let utils = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.key_utils;
            (utils.rsa_pub_components_from_public_key)(der).map_err(|_| bad("the RSA public key does not parse"))?;
            Ok(key)
        }
        Algorithm::ES256 => {
            let key = DecodingKey::from_ec_pem(pem).map_err(|_| bad("not an EC public key in PEM format"))?;
            // Building a verifier parses the point; a wrong curve fails here.
            jsonwebtoken::crypto::verify("", b"", &key, jsonwebtoken::Algorithm::ES256)
                .map_err(|_| bad("not a P-256 public key"))?;
            Ok(key)
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(AuthSetupError::NeedsSecret(alg)),
    }
}

/// Seconds since the Unix epoch; a clock set before 1970 reads as 0.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
