//! docs/deploy.md's nginx configuration, as written (ports and timeouts
//! shortened), in front of a real roomcast (issue 15): the upgrade, a
//! publish round trip, X-Forwarded-For with --trusted-proxies, and a
//! connection idle past nginx's read timeout kept alive by the heartbeat.
//! Skipped, saying so, where nginx is not installed (`.ci/run` installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::client::IntoClientRequest;

use crate::util::*;

/// A private nginx, killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> Option<String> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|b| Command::new(b).arg("-v").output().is_ok_and(|o| o.status.success()))
        .map(str::to_string)
}

/// Starts nginx with the documented configuration in front of `upstream`.
fn nginx(bin: &str, upstream: std::net::SocketAddr, read_timeout: &str) -> Nginx {
    let doc = include_str!("../../docs/deploy.md");
    let start = doc.find("```nginx\n").expect("an nginx block") + "```nginx\n".len();
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let port = free_port();
    for (from, _) in [
        ("server 127.0.0.1:8080;", ""),
        ("listen 80;", ""),
        ("proxy_read_timeout 75s;", ""),
    ] {
        assert!(block.contains(from), "the documented block has {from}");
    }
    let block = block
        .replace("server 127.0.0.1:8080;", &format!("server {upstream};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "proxy_read_timeout 75s;",
            &format!("proxy_read_timeout {read_timeout};"),
        )
        .replace(
            "proxy_send_timeout 75s;",
            &format!("proxy_send_timeout {read_timeout};"),
        );
    let dir = std::env::temp_dir().join(format!("roomcast-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{block}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .args([
            "-p",
            &dir.to_string_lossy(),
            "-c",
            &dir.join("nginx.conf").to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts");
    let proxy = Nginx { child, port, dir };
    eventually("nginx to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_ok()
    });
    proxy
}

/// A WebSocket through the proxy, optionally claiming to be forwarded for `xff`.
fn through(proxy: &Nginx, xff: Option<&str>) -> Client {
    let mut req = format!("ws://127.0.0.1:{}/ws", proxy.port)
        .into_client_request()
        .unwrap();
    if let Some(x) = xff {
        req.headers_mut().insert("X-Forwarded-For", x.parse().unwrap());
    }
    let stream = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    tungstenite::client::client(req, Stream(stream))
        .expect("upgrade through nginx")
        .0
}

#[test]
fn the_documented_nginx_config_proxies_websockets() {
    let Some(bin) = nginx_binary() else {
        eprintln!("skipping the nginx test: nginx is not installed (.ci/run installs it)");
        return;
    };
    // nginx is the trusted proxy (it connects from 127.0.0.1), and it
    // appends what it saw to the client's X-Forwarded-For.
    let server = Server::start(&[
        "--heartbeat-secs",
        "1",
        "--trusted-proxies",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let proxy = nginx(&bin, server.addr, "3s");

    // The upgrade and a round trip.
    let mut ann = through(&proxy, Some("203.0.113.1"));
    assert_eq!(recv_json(&mut ann)["op"], "welcome");
    join_room(&mut ann, "proxied", 1);
    send_json(
        &mut ann,
        json!({"op":"publish","room":"proxied","data":"through nginx","id":2}),
    );
    assert_eq!(recv_json(&mut ann)["data"], "through nginx");
    assert_eq!(recv_json(&mut ann), json!({"op":"ack","id":2}));
    // Plain HTTP through the proxy too.
    let (status, _, body) = http_to(
        proxy.port,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // Clients are counted by their forwarded address, not nginx's: another
    // client gets in, ann's second connection does not (the limit is 1).
    let mut bob = through(&proxy, Some("198.51.100.2"));
    assert_eq!(recv_json(&mut bob)["op"], "welcome");
    let mut ann_again = through(&proxy, Some("203.0.113.1"));
    assert_eq!(recv_close(&mut ann_again).0, 1013);

    // Idle past nginx's 3 s read timeout: the 1 s heartbeat keeps it open.
    let idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(5) {
        match bob.read().expect("still connected through nginx") {
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // (ann, who read nothing meanwhile, was cut by the heartbeat: bob
    // answered every ping.)
    join_room(&mut bob, "proxied", 3);
    send_json(&mut bob, json!({"op":"publish","room":"proxied","data":"still here"}));
    assert_eq!(recv_json(&mut bob)["data"], "still here");
}

/// One raw HTTP request to 127.0.0.1:`port`; (status, headers, body).
fn http_to(port: u16, raw: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
