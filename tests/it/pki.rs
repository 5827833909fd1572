//! Certificates made at test time (rcgen): a root CA, an intermediate and
//! leaves for `localhost` / `127.0.0.1`, written as PEM files; and TLS
//! clients (rustls) that trust a chosen set of roots.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::util::{temp_file, TIMEOUT};

/// A TLS client stream over TCP.
pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A WebSocket over TLS.
pub type Wss = tungstenite::WebSocket<TlsClient>;

/// A certificate authority that signs server certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A server certificate (with its chain) and key, in files.
pub struct Leaf {
    /// The chain file: the leaf, then any intermediate.
    pub cert: String,
    /// The key file (PKCS#8).
    pub key: String,
    /// The chain, PEM.
    pub chain_pem: String,
    /// The key, PEM.
    pub key_pem: String,
}

impl Ca {
    /// A fresh root CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.issuer).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A certificate for localhost and 127.0.0.1, its chain (`extra`
    /// certificates after the leaf) and key, written to files.
    pub fn leaf(&self, extra: &[&Ca]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain_pem = cert.pem();
        for ca in extra {
            chain_pem.push_str(&ca.pem);
        }
        let key_pem = key.serialize_pem();
        Leaf {
            cert: temp_file("cert.pem", &chain_pem),
            key: temp_file("key.pem", &key_pem),
            chain_pem,
            key_pem,
        }
    }
}

/// A client configuration trusting `roots` (PEM), offering ALPN http/1.1,
/// with TLS 1.2 only when `tls12_only`.
pub fn client_config(roots: &[&str], tls12_only: bool) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects and completes the handshake (as `localhost`); the error is
/// what the handshake failed with.
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<TlsClient, std::io::Error> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Opens `wss://localhost:PORT{path}` trusting `roots`.
pub fn wss_connect(addr: SocketAddr, path: &str, roots: &[&str]) -> Wss {
    let stream = tls_connect(addr, client_config(roots, false)).expect("TLS handshake");
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, resp) = tungstenite::client::client(url, stream).expect("websocket handshake over TLS");
    assert_eq!(resp.status(), 101);
    ws
}

/// `GET path` over https; (status, body).
pub fn https_get(addr: SocketAddr, path: &str, roots: &[&str]) -> (u16, String) {
    let mut s = tls_connect(addr, client_config(roots, false)).expect("TLS handshake");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    // The server closes after the response (close_notify, then FIN).
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the https response: {e}"),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One series of `/metrics`, over https.
pub fn https_metric(addr: SocketAddr, series: &str, roots: &[&str]) -> f64 {
    let (status, body) = https_get(addr, "/metrics", roots);
    assert_eq!(status, 200);
    crate::util::series_value(&body, series)
}
