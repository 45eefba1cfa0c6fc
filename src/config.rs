//! Every tunable of the server, with its default and the reason for it.
//!
//! The binary fills a [`Config`] from command-line flags (see [`crate::cli`]); an
//! embedding program builds one in code, usually starting from `Config::default()`.

use std::time::Duration;

use crate::rate::RateLimit;

/// How the server behaves and what it allows. Every field has a documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Most connections held at once; over it, `BYE server full`. `None` (the default)
    /// derives the cap from what the OS lets this process hold (see [`crate::limits`]);
    /// a value above that safe cap is lowered to it, because going past it aborts the
    /// whole process when a thread cannot be created.
    pub max_clients: Option<usize>,
    /// Most connections from one IPv4 address or one IPv6 /64 prefix (an IPv6 host can
    /// use any address of its /64); `0` means unlimited. Default 16: enough for a
    /// household behind one NAT, too few for one host to take the server. Loopback is
    /// not exempt.
    pub max_per_ip: usize,
    /// Messages a room keeps and replays to each joiner. Default 20.
    pub history: usize,
    /// Longest line in bytes, without its line end. Default 1024 (IRC allows 512;
    /// ssh-chat rejects over 1024). A longer line gets `ERR line-too-long`.
    pub max_line: usize,
    /// Bytes without a line end after which the client is disconnected
    /// (`BYE line too long`). Default 64 KiB: no chat client sends that by accident.
    pub max_unterminated: usize,
    /// Per-client flood limit; `None` turns it off (for benchmarks).
    /// Default: a burst of 10 lines, then 2 per second.
    pub rate_limit: Option<RateLimit>,
    /// Most bytes queued for one client that is not reading. Default 64 KiB: about 800
    /// chat lines, more than a full history replay plus a busy minute, while 15,000
    /// stuck clients still cost under 1 GiB. (ngircd: 32 KiB; ergo: 96 KiB.) The same
    /// bound applies to what waits unread in the kernel's send queue: over it for
    /// `send_timeout`, the client is too slow (see the send-queue watchdog).
    pub max_pending: usize,
    /// A client whose socket accepts no byte for this long while output waits, or whose
    /// kernel send queue stays over `max_pending` this long, is disconnected as too
    /// slow. Default 2 s: a reading client empties its queue in far less.
    pub send_timeout: Duration,
    /// A client that completes no line for this long gets `BYE idle`. Default 10 min.
    /// Bytes that do not complete a line do not count, so trickling a byte at a time
    /// (slowloris) does not keep a connection open.
    pub idle_timeout: Duration,
    /// A `JOIN`, `LEAVE` or `NICK` line that would reach more members than this goes
    /// only to the one concerned (`LEAVE`: to nobody). Default 200. Without it, N people
    /// arriving in one room cost N²/2 lines: 112 million for 15,000 users, which no one
    /// reads.
    ///
    /// The rule that keeps members consistent (never a `LEAVE` or `NICK` for someone
    /// they were not told about):
    ///
    /// - A user is *announced* in their room when their `JOIN` went to the whole room
    ///   (the room, them included, had at most `announce_max` members) and so did every
    ///   `NICK` of theirs since ([`User::announced`](crate::table::User::announced)).
    /// - The room hears a user's `NICK` and `LEAVE` only while that user is announced,
    ///   and only if the line reaches at most `announce_max` members. A rename the room
    ///   does not hear ends the announced state until the user enters a room again.
    ///
    /// Why that is enough: every member present at the user's `JOIN` and at each
    /// rename got the line; a member who arrived later found the user already there
    /// under their current nick (what `/who` shows). So whoever gets a `LEAVE` or `NICK`
    /// knows the nick in it. A room that never grows past `announce_max` announces
    /// everyone, and then every member gets every `JOIN`, `LEAVE` and `NICK`.
    ///
    /// In cluster mode (feature `redis`) a room is counted on every node (this node's
    /// members and, as of the register's last look, at most a second old, the other
    /// nodes'), the user's own node decides for its line and every node obeys, and the
    /// `LEAVE … node lost` lines of a lost node follow the same rule (see
    /// `src/dispatcher/announce.rs`).
    pub announce_max: usize,
    /// Stack size of each connection thread. Default 128 KiB: plenty for reading,
    /// framing and logging, and only touched pages cost memory anyway; it mostly decides
    /// address space and page tables (measured: 35.6 MiB of page tables for 9,000
    /// threads with 2 MiB stacks, 1.4 MiB with 64 KiB stacks). An idle connection
    /// touches two pages of it.
    pub thread_stack: usize,
    /// How long a client that was told `BYE` may take to close before the server
    /// closes it hard. Default 500 ms, so a shutdown finishes well within 2 s.
    pub close_grace: Duration,
    /// Cluster mode (feature `redis`): `Some` to share rooms with other nodes through
    /// Redis (`--redis URL`, `--node NAME`). Default `None`: a single node.
    #[cfg(feature = "redis")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The web listener (feature `web`): `Some` to also serve the chat page, WebSocket
    /// and HTTP polling (`--web-addr HOST:PORT`). Default `None`: raw TCP only.
    #[cfg(feature = "web")]
    pub web: Option<crate::web::WebConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_clients: None,
            max_per_ip: 16,
            history: 20,
            max_line: 1024,
            max_unterminated: 64 * 1024,
            rate_limit: Some(RateLimit::default()),
            max_pending: 64 * 1024,
            send_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
            announce_max: 200,
            thread_stack: 128 * 1024,
            close_grace: Duration::from_millis(500),
            #[cfg(feature = "redis")]
            cluster: None,
            #[cfg(feature = "web")]
            web: None,
        }
    }
}
