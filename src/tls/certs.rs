//! The listener's certificate: read from PEM files, checked, and swapped
//! whole on reload.
//!
//! A [`Resolver`] hands rustls the current [`CertifiedKey`] at each
//! handshake; `SIGHUP` loads the files again and, only if the new pair is
//! good (parses, and the key matches the certificate), swaps it in. A
//! connection keeps the certificate it was made with, so nothing is dropped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate and key could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Where the listener's certificate chain and private key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

impl Files {
    /// Reads and checks the pair: a chain with at least one certificate,
    /// a key the provider can sign with, and the key matching the leaf.
    pub fn load(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, LoadError> {
        let chain = read_chain(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => LoadError(format!(
                "no private key in {} (expected PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
                self.key.display()
            )),
            e => LoadError(format!(
                "cannot read a private key from {}: {}",
                self.key.display(),
                pem_error(&e)
            )),
        })?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| LoadError(format!("the private key in {} cannot be used: {e}", self.key.display())))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => Ok(Arc::new(certified)),
            Err(rustls::Error::InconsistentKeys(_)) => Err(LoadError(format!(
                "the private key in {} does not belong to the certificate in {}",
                self.key.display(),
                self.cert.display()
            ))),
            Err(e) => Err(LoadError(format!(
                "the certificate in {} cannot be used: {e}",
                self.cert.display()
            ))),
        }
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let mut chain = Vec::new();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| {
        LoadError(format!(
            "cannot read certificates from {}: {}",
            path.display(),
            pem_error(&e)
        ))
    })?;
    for cert in iter {
        let cert = cert.map_err(|e| {
            LoadError(format!(
                "cannot read certificates from {}: {}",
                path.display(),
                pem_error(&e)
            ))
        })?;
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(LoadError(format!(
            "no certificate in {} (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(chain)
}

/// The PEM reader's errors, in words.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM section of that kind found".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Hands rustls the current certificate; [`Resolver::replace`] swaps it.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    /// A resolver that serves `key` until replaced.
    pub fn new(key: Arc<CertifiedKey>) -> Resolver {
        Resolver {
            current: RwLock::new(key),
        }
    }

    /// Serves `key` to every handshake from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// The certificate being served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
