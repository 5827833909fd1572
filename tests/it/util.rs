//! Shared helpers for the integration tests: start the real `roomcast`
//! binary on an ephemeral loopback port, and talk to it with a real
//! WebSocket client or with hand-made frames.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running `roomcast` process, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts roomcast on 127.0.0.1:0 with extra flags.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Starts roomcast with extra flags and its log lines (stderr) sent to
    /// the returned channel, one line each.
    pub fn start_logged(args: &[&str]) -> (Server, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let server = Server::spawn(args, &[], Some(tx));
        (server, rx)
    }

    /// Starts roomcast with extra flags and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(args, env, None)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], logs: Option<mpsc::Sender<String>>) -> Server {
        // `ROOMCAST_BIN` runs another build (the measurements in `measure`
        // compare one before a fix with one after it).
        let bin = std::env::var_os("ROOMCAST_BIN")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_roomcast").into());
        let mut cmd = Command::new(bin);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--log-level") {
            cmd.args(["--log-level", "error"]);
        }
        let stderr = if logs.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn roomcast");
        if let (Some(tx), Some(stderr)) = (logs, child.stderr.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(TIMEOUT).expect("roomcast printed its address");
        let addr = line.rsplit(' ').next().unwrap().parse().expect("address");
        Server { child, addr }
    }

    /// `ws://` URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking tungstenite client.
pub type Client = tungstenite::WebSocket<Stream>;

/// A client's TCP stream, whose interrupted reads are read again
/// ([`interrupted`]); everything else is the `TcpStream`'s.
#[derive(Debug)]
pub struct Stream(pub TcpStream);

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if interrupted(&e) => continue,
                r => return r,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl std::ops::Deref for Stream {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.0
    }
}

impl std::ops::DerefMut for Stream {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.0
    }
}

/// Connects a real WebSocket client to `path`.
pub fn connect(server: &Server, path: &str) -> Client {
    let stream = TcpStream::connect(server.addr).expect("tcp connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (ws, resp) = tungstenite::client::client(server.url(path), Stream(stream)).expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends one HTTP request and reads the whole response (the server closes
/// or the body is complete). Returns (status, headers, body).
pub fn http(server: &Server, raw: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s)
}

/// A read interrupted without an answer: a socket read with a timeout is
/// not restarted after the process was stopped and continued, or took a
/// signal (seen on the CI machine as EINTR in random tests); it is read again.
pub fn interrupted(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Interrupted
}

/// Reads one HTTP response from `s`.
pub fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = match s.read(&mut byte) {
            Err(e) if interrupted(&e) => continue,
            n => n.expect("read response head"),
        };
        assert!(
            n > 0,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

/// GET `path` and return (status, body).
pub fn get(server: &Server, path: &str) -> (u16, String) {
    let (status, _, body) = http(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    (status, body)
}

/// The value of a metric line (name with labels, exactly as exposed).
pub fn metric(server: &Server, series: &str) -> f64 {
    let (_, body) = get(server, "/metrics");
    series_value(&body, series)
}

/// The value of one series in a metrics exposition.
pub fn series_value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
}

/// A loopback port nothing listens on right now (for a private
/// redis-server, nginx, or a port that must refuse connections).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` until it holds or `TIMEOUT` passes (for state only visible
/// by asking, like metrics); panics with `what` on timeout.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a TCP connection and completes a WebSocket upgrade by hand, so the
/// test can then write arbitrary (even invalid) frames.
pub fn raw_upgrade(server: &Server, path: &str) -> TcpStream {
    raw_upgrade_with(server, path, "").0
}

/// [`raw_upgrade`] with extra request header lines (each ending in
/// `\r\n`); also returns the response head.
pub fn raw_upgrade_with(server: &Server, path: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .unwrap();
    let (status, head, _) = read_response(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    (s, head)
}

/// Encodes a client frame; `masked` false makes an illegal unmasked frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    roomcast::internals::frame::encode_client(fin, opcode, payload, masked.then_some([0xa1, 0x5e, 0x03, 0x7c]))
}

/// A frame the server sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: compressed (permessage-deflate).
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Reads one server frame; `None` on a clean EOF.
pub fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut h = [0u8; 2];
    loop {
        match s.read(&mut h[..1]) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) if interrupted(&e) => continue,
            Err(e) => panic!("read frame: {e}"),
        }
    }
    s.read_exact(&mut h[1..]).unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).unwrap();
    Some(Frame {
        fin: h[0] & 0x80 != 0,
        rsv1: h[0] & 0x40 != 0,
        opcode: h[0] & 0x0F,
        payload,
    })
}

/// Reads frames until a close frame; returns its code (1005 if it had none).
pub fn expect_close(s: &mut TcpStream) -> u16 {
    loop {
        let f = read_frame(s).expect("a close frame before EOF");
        if f.opcode == 0x8 {
            return if f.payload.len() >= 2 {
                u16::from_be_bytes([f.payload[0], f.payload[1]])
            } else {
                1005
            };
        }
    }
}

/// Reads until the server closes the TCP connection; fails on timeout.
pub fn expect_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if interrupted(&e) => {}
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
    }
}

/// Sends a JSON value as a text message.
pub fn send_json<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, value: serde_json::Value) {
    ws.send(tungstenite::Message::text(value.to_string())).expect("send");
}

/// Reads the next text message as JSON (pings and pongs are skipped).
pub fn recv_json<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> serde_json::Value {
    recv_text(ws)
        .parse()
        .map(|v: serde_json::Value| v)
        .expect("server sent JSON")
}

/// Reads the next text message verbatim (pings and pongs are skipped).
pub fn recv_text<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> String {
    loop {
        let read = match ws.read() {
            Err(tungstenite::Error::Io(e)) if interrupted(&e) => continue,
            read => read,
        };
        match read.expect("read a message") {
            tungstenite::Message::Text(t) => return t.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Connects to `/ws` (with an optional query) and reads the welcome.
pub fn join_broker(server: &Server, query: &str) -> (Client, serde_json::Value) {
    let mut ws = connect(server, &format!("/ws{query}"));
    let welcome = recv_json(&mut ws);
    assert_eq!(welcome["op"], "welcome", "first frame must be the welcome: {welcome}");
    (ws, welcome)
}

/// Joins `room` with request id `id` and waits for the ack.
pub fn join_room<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, room: &str, id: u64) {
    send_json(ws, serde_json::json!({"op":"join","room":room,"id":id}));
    let ack = recv_json(ws);
    assert_eq!(ack, serde_json::json!({"op":"ack","id":id}), "join {room}");
}

/// Reads until the server's close frame; returns its code and reason.
pub fn recv_close<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                // tungstenite queues the close reply; send it now.
                let _ = ws.flush();
                return frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if interrupted(&e) => continue,
            Err(e) => panic!("expected a close frame, got error {e}"),
        }
    }
}

/// Signs an HS256 token with `secret` for `claims`.
pub fn hs256(secret: &str, claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes `text` to a file `name` of its own temporary directory (one per
/// call: tests run in parallel) and returns the file's path, as a string
/// for a command line.
pub fn temp_file(name: &str, text: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("roomcast-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Runs roomcast with `args` expecting it to refuse to start; its stderr.
pub fn refused(args: &[&str]) -> String {
    let listen: &[&str] = if args.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(listen)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "roomcast started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
