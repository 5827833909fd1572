//! Files served from the binary itself: the JavaScript client and the demo
//! page (no build step, nothing to deploy beside the binary).

/// `clients/js/roomcast.js`, served at `/client.js`.
pub const CLIENT_JS: &str = include_str!("../../clients/js/roomcast.js");
/// `clients/demo/index.html`, served at `/` with `--demo`.
pub const DEMO_HTML: &str = include_str!("../../clients/demo/index.html");
