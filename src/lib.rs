//! linger: a single-threaded, event-driven HTTP/1.1 server that gets
//! connection management right. Start at `server.rs` (the loop), then
//! `conn.rs` (a connection's sides), `sched.rs` and `lru.rs` (the
//! scheduler and the timer lists), `service.rs` and `http/` (the pure
//! protocol core).

// One panic in a single-threaded server drops every connection: no
// unwrap/expect outside tests; each remaining invariant says why it holds.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod config;
pub mod conn;
pub mod files;
pub mod http;
pub mod lru;
pub mod policy;
pub mod privileges;
pub mod pubsub;
pub mod replay;
pub mod sched;
pub mod server;
pub mod service;
pub mod site;
pub mod status;
pub mod sys;
pub mod systemd;
