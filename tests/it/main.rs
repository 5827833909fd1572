//! The integration tests, in one binary (one link of the library instead of
//! one per file). Each module starts the real `roomcast` binary on an
//! ephemeral loopback port (or private `redis-server`s, `cluster`) and talks
//! to it through real clients; `util` holds the shared helpers.

mod pki;
mod util;

mod auth;
mod close_codes;
mod cluster;
mod compression;
mod config;
mod deploy;
mod echo;
mod edge;
mod hardening;
mod heartbeat;
mod history;
mod history_cluster;
mod http_endpoints;
mod layering;
mod limits;
mod measure;
mod messaging;
mod operations;
mod presence;
mod protection;
mod redis_cluster;
mod redis_cluster_link;
mod redis_tls;
mod tls;
