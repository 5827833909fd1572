//! TLS to Redis (`rediss://`): the roots a client trusts, and a client
//! connection over a non-blocking socket for the subscriber's mio loop.
//!
//! The publisher's blocking connection is the redis crate's own (built
//! with the same rustls); the subscriber speaks RESP itself, so it gets
//! [`ClientStream`], which reads and writes like the socket under it:
//! `WouldBlock` means "wait for the next edge", and records the socket did
//! not take go first at the next write or [`ClientStream::send_pending`].

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::LoadError;

/// The certificates of `ca` (PEM), or the system's roots without one.
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, LoadError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| LoadError(format!("cannot read {}: {e:?}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| LoadError(format!("cannot read {}: {e:?}", path.display())))?;
                store.add(cert).map_err(|e| {
                    LoadError(format!(
                        "{} holds a certificate that cannot be trusted: {e}",
                        path.display()
                    ))
                })?;
            }
            if store.is_empty() {
                return Err(LoadError(format!(
                    "no certificate in {} (expected PEM: -----BEGIN CERTIFICATE-----)",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(LoadError(
                    "no trusted root certificates on this system: give the Redis CA with --redis-tls-ca".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// A client configuration trusting `ca` (or the system's roots).
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, LoadError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS client connection over a non-blocking socket.
#[derive(Debug)]
pub struct ClientStream {
    tcp: TcpStream,
    tls: ClientConnection,
}

impl ClientStream {
    /// Starts TLS to `host` over a connecting socket (the handshake goes
    /// out with the first write).
    pub fn new(tcp: TcpStream, config: Arc<ClientConfig>, host: &str) -> io::Result<ClientStream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(ClientStream { tcp, tls })
    }

    /// The socket, for registration and connect checks.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Writes records waiting for the socket; `WouldBlock` if some remain.
    pub fn send_pending(&mut self) -> io::Result<()> {
        match super::write_records(&mut self.tls, &mut self.tcp)? {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => Ok(()),
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.tls.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            self.tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
            match self.send_pending() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_pending()?;
        let n = self.tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.send_pending() {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}
