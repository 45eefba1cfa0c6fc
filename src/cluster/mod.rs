//! Cluster mode (cargo feature `redis`): several nodes share their rooms through Redis
//! pub/sub, so that users of any node chat in one room.
//!
//! ```text
//!   node A                                             node B
//!   dispatcher ──Outgoing──► cluster-pub ──PUBLISH──┐   (the same, mirrored)
//!       ▲                                           ▼
//!       └──Event::Cluster── cluster-sub ◄── Redis channel "underworld-line:rooms"
//! ```
//!
//! The dispatcher never waits on the network: it hands each room line to the
//! `cluster-pub` thread over a bounded crossbeam channel (without blocking), and the
//! `cluster-sub` thread hands it every message it hears as an [`Event::Cluster`],
//! like any other thread. Both threads reconnect on their own, with back-off. Two more
//! threads keep the register (who is online where): `cluster-reg`, which answers the
//! dispatcher's requests, and `cluster-beat`, the heartbeat alone, on its own connection
//! so that it never waits behind `cluster-reg` (which may wait for a busy dispatcher).
//!
//! **One order.** Every node publishes to one Redis channel, and Redis delivers a
//! channel's messages to each subscriber in one order. A node delivers even its own
//! users' room lines only when they come back from Redis, so every member of a room,
//! on any node, sees the lines in that order. The price of a single channel: every node
//! hears every room's lines, even rooms where it has nobody (a node drops those at the
//! cost of a parse and a look-up). One channel per room would spread the load but
//! would need SUBSCRIBE bookkeeping as rooms come and go: a later step, if measured to
//! matter.
//!
//! **When Redis is unreachable** (at start or later), the node delivers its lines
//! locally at once, as a single node does: local chat keeps working, and those lines
//! never reach other nodes.
//!
//! | file | its one job |
//! |---|---|
//! | `mod.rs` | the settings, the events, starting and stopping the four threads |
//! | [`wire`] | the message format and its strict parser |
//! | [`direct`] | the messages that are not room lines: whispers, notices, kicks |
//! | [`history`] | room history in Redis, written and read with the room lines |
//! | [`presence`] | the register in Redis: nicks, users, heartbeats (keys and scripts) |
//! | `registry.rs` | the `cluster-reg` thread: claims, lost nodes, list queries |
//! | `after_outage.rs` | the `LEAVE`s of users gone during an outage, held until the other nodes listen again |
//! | `announce.rs` | `--announce-max` for the lines `cluster-reg` publishes (lost nodes) |
//! | [`roster`] | the lists of every node's users, merged with this node's own table |
//! | `heartbeat.rs` | the `cluster-beat` thread: this node's heartbeat, and nothing else |
//! | `subscriber.rs` | the `cluster-sub` thread: SUBSCRIBE, parse, hand to the dispatcher |
//! | `publisher.rs` | the `cluster-pub` thread: PUBLISH what the dispatcher hands it |
//! | `lua.rs` | Lua scripts sent whole once, then by their SHA-1 (`EVALSHA`) |
//! | `retry.rs` | back-off between connection attempts, and a log that does not flood |
//!
//! The dispatcher's side (which lines go out, what to do with what comes in) is in
//! `src/dispatcher/cluster.rs`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};

use crate::event::{ClientId, Event};
use crate::stats::Stats;

mod after_outage;
mod announce;
pub mod direct;
mod heartbeat;
pub mod history;
mod lua;
pub mod presence;
mod publisher;
pub mod registry;
mod retry;
pub mod roster;
mod subscriber;
pub mod wire;

pub use presence::Entry;
pub(crate) use registry::{Answer, Request};
pub(crate) use retry::LogLimiter;
pub use wire::{Record, RoomLine};

/// The Redis pub/sub channel every node publishes its room lines to.
pub const CHANNEL: &str = "underworld-line:rooms";

/// Lines waiting for the publisher. When it falls this far behind (Redis slow or
/// stuck), further lines are delivered locally instead of queueing without bound.
pub const PUBLISH_QUEUE: usize = 16 * 1024;

/// How long a thread waits on Redis before it looks at the stop flag again: what
/// stopping a node costs at most. Also the time a connection attempt may take.
const POLL: Duration = Duration::from_millis(250);

/// The cluster settings of a node ([`Config::cluster`](crate::Config::cluster)).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where Redis is: `redis://HOST:PORT`, `redis://:PASSWORD@HOST:PORT/DB`.
    pub redis_url: String,
    /// This node's name, unique in the cluster (see [`wire::validate_node_name`]).
    pub node: String,
    /// How many aliases the node keeps reserved ahead for its next users
    /// ([`registry::ALIAS_POOL`] by default; at least 2). A new user who finds none
    /// ready waits for their greeting until the register has reserved more.
    pub alias_pool: usize,
}

impl ClusterConfig {
    /// Settings for `redis_url`, with a random node name (`node-` and 8 hex digits).
    pub fn new(redis_url: &str) -> ClusterConfig {
        ClusterConfig {
            redis_url: redis_url.to_string(),
            node: random_node_name(),
            alias_pool: registry::ALIAS_POOL,
        }
    }

    /// Whether `url` is a Redis URL the client accepts (it does not connect), so that a
    /// typo is a usage error at start-up rather than a node that never links.
    pub fn check_url(url: &str) -> Result<(), String> {
        redis::Client::open(url)
            .map(|_| ())
            .map_err(|e| format!("not a Redis URL ({e}); e.g. redis://127.0.0.1:6379"))
    }

    /// The broker's address for the log: the URL without any password.
    pub fn broker(&self) -> String {
        match self.redis_url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{host}")
            }
            None => "(invalid URL)".to_string(),
        }
    }
}

/// Never prints the URL, which may hold a password.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("broker", &self.broker())
            .field("node", &self.node)
            .field("alias_pool", &self.alias_pool)
            .finish()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `node-` and 8 hex digits, drawn from the standard library's per-process random keys.
fn random_node_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_nanos());
    format!("node-{:08x}", hasher.finish() as u32)
}

/// What the cluster threads tell the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Subscribed: room lines go through Redis from now on.
    Up,
    /// The subscription is lost: room lines stay on this node until [`ClusterEvent::Up`].
    Down,
    /// A well-formed room line heard on the channel (this node's own lines included).
    /// Boxed, so that this rare event does not make every [`Event`] larger.
    Heard(Box<Record>),
    /// A well-formed direct message heard on the channel (a whisper, a notice, a kick).
    Direct(Box<direct::Signed>),
    /// The answer to a local user's whisper to someone not on this node: the nick that
    /// matched on another node (the whisper is on its way), or `None` (nobody has it).
    Whispered {
        /// Who whispered.
        id: ClientId,
        /// The nick they asked for.
        to: String,
        /// The nick that matched, as spelled.
        matched: Option<String>,
        /// What they said.
        text: String,
    },
    /// The publisher could not hand the line with this number to Redis: the
    /// dispatcher delivers it (and any earlier one still waiting) locally.
    Unpublished(u64),
    /// Our `JOIN` with this number is published, and this is its room's history as it
    /// was just before it (entries as Redis holds them, newest first; unchecked).
    Recalled {
        /// The `JOIN`'s number.
        seq: u64,
        /// The entries.
        entries: Vec<String>,
    },
    /// The answer to a nick claim for local user `id`: `Some(true)` the nick is theirs
    /// across the cluster, `Some(false)` a user of another node holds it (or a
    /// lookalike), `None` the register could not be reached (local rules only).
    Claimed {
        /// The user.
        id: ClientId,
        /// The nick claimed.
        nick: String,
        /// Won, lost, or unknown.
        won: Option<bool>,
    },
    /// The answer to a request for aliases (`Request::Aliases`): `ready`, the pool has
    /// aliases now; otherwise none could be reserved (Redis unreachable or failing, or
    /// the alias space full), and the dispatcher draws its new users' aliases itself,
    /// claimed after the fact.
    Aliases {
        /// Whether there are aliases to take.
        ready: bool,
    },
    /// The register thread has (re)connected: it needs every local user, to register
    /// them again (after an outage, the register may have lost them all).
    ResyncWanted,
    /// The users of every live node, for local user `id`'s list command; `None` if the
    /// register could not be read.
    Roster {
        /// Who asked.
        id: ClientId,
        /// What they asked for.
        list: List,
        /// Each live node and its users.
        nodes: Option<Vec<(String, Vec<Entry>)>>,
    },
    /// How many users each room has on the other live nodes, by room, as the register
    /// held them at the last look (once a [`registry::BEAT`], sent when it changed): the
    /// dispatcher adds its own members to count a room across the cluster for the
    /// `--announce-max` rule.
    RoomSizes(std::collections::HashMap<String, usize>),
}

/// A list command answered from the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum List {
    /// `/users`: everyone online.
    Users,
    /// `/who`: the members of this room.
    Who(String),
    /// `/rooms`: every room and its size.
    Rooms,
}

/// A room line for the publisher thread.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The line's number, returned in [`ClusterEvent::Unpublished`] if it fails.
    pub(crate) seq: u64,
    /// The message, as [`Record::encode`] wrote it.
    pub(crate) payload: String,
    /// What it does to its room's history, in the same step as the publish.
    pub(crate) history: history::HistoryOp,
}

/// The threads of a node in cluster mode, as the dispatcher holds them
/// (`cluster-beat` is held, stopped and joined by `cluster-reg`).
/// Dropping it stops them: the publisher and the register thread see their channels
/// close, the subscriber the flag.
pub(crate) struct Bridge {
    outgoing: Sender<Outgoing>,
    requests: Sender<Request>,
    /// Aliases the register thread reserved for this node's next users.
    aliases: crossbeam_channel::Receiver<String>,
    stop: Arc<AtomicBool>,
}

impl Bridge {
    /// Starts `cluster-sub`, `cluster-pub`, `cluster-reg` and `cluster-beat` for
    /// `config`; they send to `events`. `announce_max` is
    /// [`Config::announce_max`](crate::Config::announce_max), for the lines the
    /// register thread publishes.
    pub(crate) fn start(
        config: &ClusterConfig,
        events: Sender<Event>,
        stats: Arc<Stats>,
        announce_max: usize,
    ) -> io::Result<(Bridge, Vec<JoinHandle<()>>)> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--redis: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (outgoing, to_publish) = crossbeam_channel::bounded(PUBLISH_QUEUE);
        let broker = config.broker();
        log::info!("cluster: node {} via {broker}", config.node);
        // How many times cluster-sub subscribed: each time, Redis may have restarted
        // under cluster-pub's idle connection (see publisher.rs).
        let subscriptions = Arc::new(AtomicU64::new(0));
        let subscriber = {
            let (client, events, stop, broker, subscriptions) = (
                client.clone(),
                events.clone(),
                Arc::clone(&stop),
                broker.clone(),
                Arc::clone(&subscriptions),
            );
            thread::Builder::new()
                .name("cluster-sub".into())
                .spawn(move || subscriber::run(&client, &events, &stop, &broker, &subscriptions))?
        };
        let heartbeat = {
            let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
            let forgotten = Arc::new(AtomicBool::new(false));
            let (client, node, flag) =
                (client.clone(), config.node.clone(), Arc::clone(&forgotten));
            let thread = thread::Builder::new()
                .name("cluster-beat".into())
                .spawn(move || heartbeat::run(&client, &node, &stopped, &flag))?;
            registry::Heartbeat {
                stop,
                thread,
                forgotten,
            }
        };
        let pub_stats = Arc::clone(&stats);
        let (requests, to_register) = crossbeam_channel::bounded(PUBLISH_QUEUE);
        let (pool, aliases) = crossbeam_channel::bounded(config.alias_pool.max(2));
        let left = aliases.clone();
        let registry = {
            let (client, events, stop, node) = (
                client.clone(),
                events.clone(),
                Arc::clone(&stop),
                config.node.clone(),
            );
            thread::Builder::new()
                .name("cluster-reg".into())
                .spawn(move || {
                    registry::run(
                        &client,
                        &node,
                        to_register,
                        (&pool, &left),
                        &events,
                        &stop,
                        &stats,
                        heartbeat,
                        announce_max,
                    )
                })?
        };
        let publisher = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("cluster-pub".into())
                .spawn(move || {
                    publisher::run(
                        &client,
                        to_publish,
                        &events,
                        &stop,
                        &pub_stats,
                        &subscriptions,
                    )
                })?
        };
        let bridge = Bridge {
            outgoing,
            requests,
            aliases,
            stop,
        };
        Ok((bridge, vec![subscriber, registry, publisher]))
    }

    /// Hands a request to the register thread without waiting; false if its queue is
    /// full (Redis slow or stuck) or it is gone.
    pub(crate) fn ask(&self, request: Request) -> bool {
        self.try_ask(request).is_ok()
    }

    /// An alias reserved across the cluster for a new user, if one is ready.
    pub(crate) fn reserved_alias(&self) -> Option<String> {
        self.aliases.try_recv().ok()
    }

    /// How many aliases the pool holds at most.
    pub(crate) fn alias_pool(&self) -> usize {
        self.aliases.capacity().unwrap_or(0)
    }

    /// Whether the register thread's queue has room now.
    pub(crate) fn has_room(&self) -> bool {
        !self.requests.is_full()
    }

    /// [`Bridge::ask`], giving the request back when it cannot be queued.
    pub(crate) fn try_ask(&self, request: Request) -> Result<(), Request> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(request) | TrySendError::Disconnected(request) => request,
        })
    }

    /// Queues a line for publishing without waiting; gives it back if the queue is full.
    pub(crate) fn publish(&self, line: Outgoing) -> Result<(), Outgoing> {
        self.outgoing.try_send(line).map_err(|e| match e {
            TrySendError::Full(line) | TrySendError::Disconnected(line) => line,
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Hands an event to the dispatcher, waiting while its queue is full, but giving up when
/// the node stops (the dispatcher no longer drains the queue then). False: give up.
fn tell_dispatcher(events: &Sender<Event>, stop: &AtomicBool, event: ClusterEvent) -> bool {
    let mut event = Event::Cluster(event);
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match events.send_timeout(event, POLL) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(again)) => event = again,
            Err(SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}
