//! TLS on the listener (`--tls-cert`, `--tls-key`): `wss://` and
//! `https://` on the one port, TLS 1.2 and 1.3, ALPN `http/1.1`; and the
//! client side for `rediss://` ([`client`]).
//!
//! rustls is sans-IO, so a TLS connection is one more transport in the
//! shard's mio loop ([`TlsStream`]): the handshake runs there like the
//! HTTP upgrade, under the same `--handshake-timeout-secs`. The crypto
//! provider is aws-lc-rs (with the post-quantum hybrid key exchange
//! browsers offer first). The certificate can be replaced while running
//! ([`Acceptor::reload`], on `SIGHUP`); connections keep theirs.
//!
//! Fan-out stays encode-once: a room's frame is one `Bytes` in every
//! outbox, and each TLS recipient seals it into its own records at flush
//! time (it must: every connection has its own keys and sequence numbers).
//! `docs/benchmarks.md` measures what that costs.

mod certs;
pub mod client;
mod stream;

use std::io;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;

pub use certs::{Files, LoadError};
pub use stream::{Failure, Outcome, TlsStream};

/// Writes the records `tls` has sealed until none is left (`Ok(false)`) or
/// the socket is full (`Ok(true)`); server and client connections alike.
fn write_records<D>(tls: &mut rustls::ConnectionCommon<D>, tcp: &mut mio::net::TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The ALPN protocol roomcast speaks (WebSockets start as HTTP/1.1).
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Makes TLS connections with the current certificate.
#[derive(Debug)]
pub struct Acceptor {
    config: Arc<ServerConfig>,
    resolver: Arc<certs::Resolver>,
    files: Files,
    provider: Arc<CryptoProvider>,
}

impl Acceptor {
    /// Loads and checks the certificate and key.
    pub fn new(files: &Files) -> Result<Acceptor, LoadError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = files.load(&provider)?;
        let resolver = Arc::new(certs::Resolver::new(key));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| LoadError(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        // Stateless resumption: a reconnecting client skips the full
        // handshake, and the node keeps no session cache for it.
        config.ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| LoadError(format!("TLS session tickets: {e}")))?;
        Ok(Acceptor {
            config: Arc::new(config),
            resolver,
            files: files.clone(),
            provider,
        })
    }

    /// A TLS connection over an accepted socket.
    pub fn accept(&self, tcp: mio::net::TcpStream) -> io::Result<TlsStream> {
        let tls = rustls::ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        Ok(TlsStream::new(tcp, tls))
    }

    /// Reads the files again; on success new handshakes get the new pair,
    /// on failure the old one stays (the error says why).
    pub fn reload(&self) -> Result<(), LoadError> {
        let key = self.files.load(&self.provider)?;
        self.resolver.replace(key);
        Ok(())
    }

    /// The files the certificate is read from.
    pub fn files(&self) -> &Files {
        &self.files
    }
}
