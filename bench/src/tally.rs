//! Counts every scenario keeps about the server's behaviour besides its own
//! measurements: how connections ended, welcomes, acks and error replies.
//!
//! The first few problems are also printed to stderr, one line each, so a
//! failed run says why without flooding the terminal.

use crate::client::End;
use crate::report::Report;
use crate::wire;

/// Problem lines printed to stderr per run; the rest are only counted.
const MAX_NOTES: u32 = 5;

/// Counters shared by all scenarios.
#[derive(Default, Debug)]
pub struct Tally {
    /// `{"op":"welcome"}` frames received.
    pub welcomes: u64,
    /// `{"op":"ack"}` frames received.
    pub acks: u64,
    /// `{"op":"error"}` frames received.
    pub server_errors: u64,
    /// Frames that are neither stamped messages nor a known op (binary included).
    pub unexpected: u64,
    /// TCP connects that failed.
    pub connect_failed: u64,
    /// Upgrades the server refused or botched.
    pub refused: u64,
    /// Connections the server closed (close frame) while the scenario still needed them.
    pub server_closed: u64,
    /// Connections that broke RFC 6455 or ended without a close handshake.
    pub broken: u64,
    notes: u32,
}

impl Tally {
    /// Classifies an unstamped text frame by its `op`.
    pub fn control(&mut self, payload: &[u8]) {
        match wire::op(payload) {
            Some(b"welcome") => self.welcomes += 1,
            Some(b"ack") => self.acks += 1,
            Some(b"error") => {
                self.server_errors += 1;
                self.note(&format!(
                    "server error: {}",
                    String::from_utf8_lossy(&payload[..payload.len().min(200)])
                ));
            }
            _ => self.unexpected += 1,
        }
    }

    /// Counts a connect that failed before reaching the socket layer's event loop.
    pub fn connect_error(&mut self, e: &std::io::Error) {
        self.connect_failed += 1;
        self.note(&format!("connect: {e}"));
    }

    /// Counts how a connection ended; `wanted` says the scenario had asked it to close.
    /// Returns whether the end counts as an error.
    pub fn end(&mut self, end: &End, wanted: bool) -> bool {
        let counter = match end {
            End::Closed { by_server: false, .. } => return false,
            End::Closed { by_server: true, .. } | End::Abrupt(_) if wanted => return false,
            End::Closed { by_server: true, .. } => &mut self.server_closed,
            End::Connect(_) => &mut self.connect_failed,
            End::Refused(_) => &mut self.refused,
            End::Protocol(_) | End::Abrupt(_) => &mut self.broken,
        };
        *counter += 1;
        self.note(&format!("connection ended: {end:?}"));
        true
    }

    /// All errors: failed connections, unwanted ends, error replies, unknown frames.
    pub fn errors(&self) -> u64 {
        self.connect_failed + self.refused + self.server_closed + self.broken + self.server_errors + self.unexpected
    }

    /// Adds `errors` and its breakdown, plus welcomes and acks, to a report.
    pub fn add_to(&self, r: &mut Report) {
        r.int("errors", self.errors())
            .int("err_connect", self.connect_failed)
            .int("err_refused", self.refused)
            .int("err_server_closed", self.server_closed)
            .int("err_broken", self.broken)
            .int("err_server_error_ops", self.server_errors)
            .int("err_unexpected_frames", self.unexpected)
            .int("welcomes", self.welcomes)
            .int("acks", self.acks);
    }

    fn note(&mut self, line: &str) {
        if self.notes < MAX_NOTES {
            eprintln!("roomcast-bench: {line}");
        } else if self.notes == MAX_NOTES {
            eprintln!("roomcast-bench: (further problems are only counted)");
        }
        self.notes += 1;
    }
}
