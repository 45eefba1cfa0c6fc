//! The messages that cross threads: what connection threads and the server handle
//! publish to the dispatcher ([`Event`]), and what the dispatcher tells observers
//! ([`ChatEvent`]).

use std::fmt::{self, Display};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::command::Command;
use crate::reply::ErrorCode;
use crate::transport::Transport;

/// Names one connection for its whole life. Never reused while the server runs; it is
/// what the log shows instead of an address (`conn-42`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// Hands out [`ClientId`]s, one counter for every listener (the TCP acceptor, and the
/// web listener with the `web` feature), so that ids never collide.
#[derive(Debug)]
pub(crate) struct IdSource(std::sync::atomic::AtomicU64);

impl IdSource {
    /// A source whose first id is `conn-1`.
    pub(crate) fn new() -> IdSource {
        IdSource(std::sync::atomic::AtomicU64::new(1))
    }

    /// The next unused id.
    pub(crate) fn next(&self) -> ClientId {
        ClientId(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Why a connection ends: the text after `BYE` and after `LEAVE <room> <nick>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `/quit`, maybe with a reason.
    Quit(Option<String>),
    /// The client went away (EOF, reset, error) without `/quit`.
    ConnectionClosed,
    /// The operator or an embedding program kicked the client.
    Kicked(String),
    /// No complete line for the idle timeout.
    Idle,
    /// The client stopped reading: its pending output passed the limit, or its socket
    /// accepted nothing for the send timeout.
    TooSlow,
    /// Over the rate limit for too long.
    Flooding,
    /// Too many bytes without a line end.
    LineTooLong,
    /// A WebSocket text message that is not UTF-8: the WebSocket protocol requires
    /// closing the connection (a TCP client's invalid line only gets `ERR invalid-utf8`).
    InvalidUtf8,
    /// The server is shutting down.
    ServerShutdown,
    /// Admitted, but no thread could be created for the connection (should not happen
    /// below the connection cap derived from the OS limits).
    ServerFull,
}

impl CloseReason {
    /// A short label for the log: never the client's own words, which are message text.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Quit(_) => "quit",
            CloseReason::ConnectionClosed => "connection closed",
            CloseReason::Kicked(_) => "kicked",
            CloseReason::Idle => "idle",
            CloseReason::TooSlow => "too slow",
            CloseReason::Flooding => "flooding",
            CloseReason::LineTooLong => "line too long",
            CloseReason::InvalidUtf8 => "invalid utf-8",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::ServerFull => "server full",
        }
    }
}

impl Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Quit(None) => f.write_str("quit"),
            CloseReason::Quit(Some(reason)) => write!(f, "quit: {reason}"),
            CloseReason::ConnectionClosed => f.write_str("connection closed"),
            CloseReason::Kicked(reason) if reason.is_empty() => f.write_str("kicked"),
            CloseReason::Kicked(reason) => write!(f, "kicked: {reason}"),
            CloseReason::Idle => f.write_str("idle"),
            CloseReason::TooSlow => f.write_str("too slow"),
            CloseReason::Flooding => f.write_str("flooding"),
            CloseReason::LineTooLong => f.write_str("line too long"),
            CloseReason::InvalidUtf8 => f.write_str("invalid utf-8"),
            CloseReason::ServerShutdown => f.write_str("server shutting down"),
            CloseReason::ServerFull => f.write_str("server full"),
        }
    }
}

/// Everything the dispatcher reacts to. Connection threads, the acceptor and the
/// [`Server`](crate::Server) handle send these over one crossbeam channel; an embedding
/// program can send them itself to drive a dispatcher without sockets.
///
/// For one connection, the events arrive in this order: `Connected` (from the acceptor),
/// then any number of `Command`/`Rejected`/`Fatal`, then `Closed` (from the connection's
/// own thread, which the spawner starts only after `Connected` was queued): a channel
/// keeps the order of sends that happen one after another.
pub enum Event {
    /// A new client. Its output goes to `transport`.
    Connected {
        /// The new connection.
        id: ClientId,
        /// Where the dispatcher writes this client's lines.
        transport: Arc<dyn Transport>,
    },
    /// A parsed line from a client.
    Command {
        /// Who sent it.
        id: ClientId,
        /// What it asked for.
        command: Command,
    },
    /// A line the connection thread refused (too long, not UTF-8, over the rate
    /// limit, unparseable): the dispatcher answers `ERR`, so that every line the client
    /// receives is written by one thread, in one order.
    Rejected {
        /// Who sent it.
        id: ClientId,
        /// The error code.
        code: ErrorCode,
        /// The explanation.
        text: String,
    },
    /// The connection thread wants the connection closed (idle, flooding, endless
    /// line), or the spawner could not create a thread for it (server full).
    Fatal {
        /// Which connection.
        id: ClientId,
        /// Why; the client gets `BYE <reason>`.
        reason: CloseReason,
    },
    /// The connection's reader has ended: the last event for this id.
    Closed {
        /// Which connection.
        id: ClientId,
    },
    /// A request from the operator console or an embedding program.
    Operator(OperatorRequest),
    /// The acceptor has stopped: no more `Connected` will come.
    AcceptorStopped,
    /// Say `BYE` to everyone, close every connection, and stop.
    Shutdown,
    /// Cluster mode (feature `redis`): news from the threads that talk to Redis.
    #[cfg(feature = "redis")]
    Cluster(crate::cluster::ClusterEvent),
}

/// What an operator or a host program can ask of the dispatcher.
pub enum OperatorRequest {
    /// `NOTICE <text>` to everyone, or to one room.
    Notice {
        /// `None` for everyone.
        room: Option<String>,
        /// The notice.
        text: String,
        /// Where the result goes.
        done: Sender<Result<usize, OperatorError>>,
    },
    /// `DM server <nick> <text>` to one user.
    Whisper {
        /// The user's nick (compared as nicks are: by their look).
        to: String,
        /// The message.
        text: String,
        /// Where the result goes: the nick that matched, as it is spelled online.
        done: Sender<Result<String, OperatorError>>,
    },
    /// Disconnect a user with `BYE kicked: <reason>`.
    Kick {
        /// The user's nick.
        nick: String,
        /// Shown to the user and to their room.
        reason: String,
        /// Where the result goes: the nick that matched, as it is spelled online.
        done: Sender<Result<String, OperatorError>>,
    },
    /// Receive a [`ChatEvent`] for everything that happens from now on.
    Subscribe(Sender<ChatEvent>),
    /// Cluster mode (feature `redis`): every live node's users, read from the register
    /// by the `cluster-reg` thread, which answers `done` itself (the dispatcher only
    /// hands the request on, and never waits for Redis). `None`: not linked, or the
    /// register could not be read. [`Server::roster`](crate::Server::roster) asks it.
    #[cfg(feature = "redis")]
    Roster {
        /// Where the answer goes.
        done: Sender<Option<crate::cluster::roster::Nodes>>,
    },
}

/// Why an operator request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorError {
    /// Nobody online has that nick.
    NoSuchUser(String),
    /// No such room exists now.
    NoSuchRoom(String),
    /// The text is empty once control characters are stripped.
    EmptyText,
    /// The server has stopped.
    Stopped,
}

impl Display for OperatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorError::NoSuchUser(nick) => write!(f, "no user called {nick}"),
            OperatorError::NoSuchRoom(room) => write!(f, "no room called {room}"),
            OperatorError::EmptyText => f.write_str("nothing to send"),
            OperatorError::Stopped => f.write_str("the server has stopped"),
        }
    }
}

impl std::error::Error for OperatorError {}

/// Something that happened in the chat, as an observer sees it. Private messages are
/// deliberately not included: they are nobody else's business, not even the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// A user entered a room (on connect, or with `/join`).
    Joined {
        /// Who.
        nick: String,
        /// Where.
        room: String,
    },
    /// A user left a room (another room, or the server).
    Left {
        /// Who.
        nick: String,
        /// Where from.
        room: String,
        /// Why, as in `LEAVE`.
        reason: String,
    },
    /// A user changed nick.
    NickChanged {
        /// Before.
        old: String,
        /// After.
        new: String,
        /// Their room.
        room: String,
    },
    /// A message to a room.
    Message {
        /// Where.
        room: String,
        /// Who.
        nick: String,
        /// What (control characters already stripped).
        text: String,
    },
    /// A `/me` action.
    Action {
        /// Where.
        room: String,
        /// Who.
        nick: String,
        /// What.
        text: String,
    },
}
