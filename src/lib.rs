//! linger: a single-threaded, event-driven HTTP/1.1 server that gets
//! connection management right. Start at `server.rs` (the loop and its
//! phases), then `conn/` (a connection's states and `decide`, where it
//! goes after a turn), `transition.rs` (the one function that moves it),
//! `sched.rs` and `timers.rs` (the scheduler and the state lists),
//! `session.rs`, `service.rs` and `http/` (the sans-IO protocol side).

// One panic in a single-threaded server drops every connection: no
// unwrap/expect outside tests; each remaining invariant says why it holds.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod board;
pub mod broker;
pub mod clock;
pub mod closing;
pub mod config;
pub mod conn;
pub mod cors;
pub mod delivery;
pub mod feed;
pub mod files;
pub mod http;
pub mod launch;
pub mod list;
pub mod listeners;
pub mod log_writer;
pub mod metrics;
pub mod phases;
pub mod policy;
pub mod pool;
pub mod privileges;
pub mod pubsub;
pub mod relay;
pub mod replay;
pub mod sched;
pub mod server;
pub mod service;
pub mod session;
pub mod site;
pub mod status;
pub mod supervisor;
pub mod sys;
pub mod systemd;
pub mod timers;
pub mod tls;
pub mod transition;
