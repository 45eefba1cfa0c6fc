//! # Underworld-Line
//!
//! An anonymous, real-time chat server over raw TCP: the classic **blocking,
//! thread-per-connection** socket server, written to be read.
//!
//! ## Quick start
//!
//! ```
//! use underworld_line::{Config, Server};
//!
//! let server = Server::bind("127.0.0.1:0", Config::default())?;
//! println!("chat on {}", server.local_addr());
//! server.notice_all("hello from the host program").ok();
//! server.shutdown();
//! server.join();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Layout
//!
//! The modules follow one chat line from a socket to its recipients:
//!
//! | module | its one job |
//! |---|---|
//! | [`server`] | [`Server`]: bind, start the threads, the handle to control them |
//! | `acceptor` (private) | the accept loop (two threads), the caps; greets through the dispatcher at once |
//! | `spawner` (private) | one named thread per connection, created off the accept loop, joined when it ends |
//! | [`limits`] | the connection cap derived from the OS limits |
//! | [`netstat`] | the kernel's counters of connections lost before `accept` |
//! | `connection` (private) | a connection thread: read → frame → parse → publish |
//! | [`frame`] | bytes → lines (the framing its predecessor lacked) |
//! | [`text`] | what may be relayed; nick and room rules |
//! | [`command`] | a line → a [`Command`] |
//! | [`rate`] | per-client flood control |
//! | [`event`] | the [`Event`]s threads publish to the dispatcher, the [`ChatEvent`]s observers see |
//! | [`dispatcher`] | the one thread that owns the chat and decides who gets what (`mod.rs` the loop, `lifecycle.rs`, `commands.rs`, `operator.rs`, `outputs.rs`) |
//! | [`table`] | the user table: users, nicks, rooms, history |
//! | [`reply`] | every server line, as a type and as text |
//! | `outbox` (private) | queued output per client, coalesced writes, the flusher thread |
//! | `sendq` (private) | the send-queue watchdog: clients that stopped reading while the kernel buffers for them |
//! | [`transport`] | where output goes: a `TcpStream`, or a channel without sockets |
//! | `cluster` (feature `redis`) | several nodes, one chat: room lines through Redis pub/sub, a register of nicks and nodes, history in Redis |
//! | `web` (feature `web`) | the chat in a browser: the page, WebSocket and HTTP polling users |
//! | [`alias`], [`clock`], [`stats`], [`config`], [`cli`], [`console`] | aliases, time, counters, settings, flags, the operator console |
//!
//! ## Threads
//!
//! `acceptor` → (`spawner`) → one `conn-N` per client → (crossbeam channel) →
//! `dispatcher` → sockets, with the `writer` thread taking half of a long batch;
//! `flusher` retries the sockets of clients that read slowly, and `sendq-watch` finds
//! the clients that stopped reading while the kernel still buffers for them. In
//! cluster mode, `cluster-sub`, `cluster-pub`, `cluster-reg` and `cluster-beat` talk to Redis. With the
//! `web` feature: `web-acceptor`, one `web-N` per web connection (an HTTP client, or a
//! WebSocket user for its whole life), `web-joiner`, which joins them as they end, and
//! `web-sessions`, which expires polling sessions. See the README's "How it works".

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod acceptor;
pub mod alias;
pub mod cli;
pub mod clock;
#[cfg(feature = "redis")]
pub mod cluster;
pub mod command;
pub mod config;
mod connection;
pub mod console;
pub mod dispatcher;
pub mod event;
mod fdtable;
pub mod frame;
pub mod limits;
pub mod netstat;
mod outbox;
pub mod rate;
pub mod reply;
mod sendq;
pub mod server;
mod spawner;
pub mod stats;
pub mod table;
pub mod text;
pub mod transport;
#[cfg(feature = "web")]
pub mod web;

/// The README's Rust examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use command::Command;
pub use config::Config;
pub use dispatcher::Dispatcher;
pub use event::{ChatEvent, ClientId, CloseReason, Event, OperatorError};
pub use server::Server;
pub use table::Snapshot;
