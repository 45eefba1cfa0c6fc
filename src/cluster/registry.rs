//! The `cluster-reg` thread: this node's side of the cluster's register (`presence.rs`).
//!
//! It does these jobs, one at a time, on one Redis connection:
//!
//! - **requests** from the dispatcher, in the order it sent them: claim a nick (the
//!   answer comes back as [`ClusterEvent::Claimed`]), free one, move a user, re-register
//!   everyone; find the node of a nick for a whisper or a kick and send it there; read
//!   every node's users for `/users`, `/who`, `/rooms` (a user's, or the console's);
//! - **a look around**, every [`BEAT`]: the count of live nodes for `/stats`, and each
//!   room's members on the other nodes for `--announce-max` (one read of every live
//!   node's users: the same read as a user's `/users`; if that is ever measured to cost
//!   too much at tens of thousands of users, per-node room counts kept in the register
//!   would make it a read of a few fields);
//! - **aliases reserved ahead**, [`ALIAS_POOL`] of them by default, so that a new
//!   user's alias is theirs across the cluster from their first line (see *Aliases*
//!   below);
//! - **finding lost nodes**, at each beat: a registered node whose heartbeat has stopped
//!   (killed, frozen, or cut off from Redis) is cleaned up in one script (`presence::reap`): its
//!   users' `LEAVE <room> <nick> node lost` lines are published for every node's rooms,
//!   its nicks are freed, and it is forgotten. A node whose heartbeat (the
//!   `cluster-beat` thread, `heartbeat.rs`) finds it forgotten (it was only frozen or
//!   starved) registers and announces its users again, here.
//!
//! While Redis is unreachable, claims are answered "unknown" at once (the dispatcher
//! then follows the local rules alone), and the rest waits for the resync: each time
//! the thread connects, it asks the dispatcher for every local user
//! ([`ClusterEvent::ResyncWanted`]) and registers them all again.
//!
//! **Aliases.** The pool is topped up a batch of candidates per round trip (one script,
//! `presence::reserve_many`), never one alias per round trip: with one thread for
//! everything, every round trip spent on the pool is a round trip a waiting claim (a
//! `/nick`) waits behind, and on a starved machine each round trip costs two thread
//! wake-ups. So the refill goes on only while no request is waiting, except for one
//! batch at a time once the pool is below half full (a burst of arrivals, each one a
//! claim, must not starve it): a request waits behind one round trip of refill at
//! most. Plain aliases (`QuietOtter`) are tried first; once fewer than half of a batch
//! of them are free, numbered ones (`QuietOtter417`), until the next beat. If even a
//! batch of numbered ones is all taken (a name space that full), or the batch fails,
//! the refill waits for the next beat instead of trying again after every request.
//! When the dispatcher has run out of aliases and holds new users' greetings, it asks
//! for more (`Request::Aliases`) and is answered at once ([`ClusterEvent::Aliases`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::{Connection, RedisResult};

use super::after_outage::{self, AfterOutage};
use super::announce::Audience;
use super::direct::{self, Direct};
use super::presence::{self, Entry};
use super::retry::Backoff;
use super::wire::{self, RoomLine};
use super::{tell_dispatcher, ClusterEvent, CHANNEL};
use crate::alias::{AliasGenerator, PLAIN_ATTEMPTS};
use crate::event::{ClientId, Event, OperatorError};
use crate::stats::Stats;
use crate::text::nick_key;

/// How often the node looks for lost nodes (as often as it beats).
pub const BEAT: Duration = super::heartbeat::BEAT;

/// How long connecting, or one command, may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The reason other nodes' rooms see when a node is lost.
pub const NODE_LOST: &str = "node lost";

/// The reason other nodes' rooms see when a node stops cleanly (its users get `BYE`
/// with the same reason).
const SHUTTING_DOWN: &str = "server shutting down";

/// What the dispatcher asks of the register.
#[derive(Debug)]
pub(crate) enum Request {
    /// Claim `nick` for local user `id`, who is (or will be) in `room`.
    Claim {
        /// The user.
        id: ClientId,
        /// The nick wanted.
        nick: String,
        /// Their room.
        room: String,
    },
    /// A local user no longer holds `nick`.
    Release {
        /// The nick given up.
        nick: String,
    },
    /// The local user called `nick` is now in `room`.
    Moved {
        /// Who.
        nick: String,
        /// Where.
        room: String,
    },
    /// Every local user: register them all again.
    Resync(Vec<(ClientId, String, String)>),
    /// Publish this message (a direct one: it is in no room's order).
    Publish(String),
    /// A whisper to `to`, on whichever node holds that nick.
    Whisper {
        /// The whisperer's nick, or `server`.
        from: String,
        /// The nick asked for.
        to: String,
        /// What.
        text: String,
        /// Who waits for the answer.
        answer: Answer,
    },
    /// The operator kicks `nick`, on whichever node holds it.
    Kick {
        /// Who.
        nick: String,
        /// Why (may be empty).
        reason: String,
        /// Where the answer goes: the nick that matched.
        done: Sender<Result<String, OperatorError>>,
    },
    /// The dispatcher holds new users' greetings until the pool has aliases: reserve
    /// some now, and answer with [`ClusterEvent::Aliases`]. `check`: first reserve again
    /// what is left in the pool (the link was down: Redis may have come back empty).
    Aliases {
        /// Whether to check the pool first.
        check: bool,
    },
    /// Who is online on every live node, for a list command of local user `id`.
    Roster {
        /// Who asked.
        id: ClientId,
        /// What they asked for (`/users`, `/who`, `/rooms`), handed back with the answer.
        list: super::List,
    },
    /// Who is online on every live node, for the operator console or a host program
    /// ([`Server::roster`](crate::Server::roster)), waiting on its own thread: the
    /// answer goes straight to it, never through the dispatcher.
    OperatorRoster {
        /// Where the answer goes: `None` if the register could not be read.
        done: Sender<Option<super::roster::Nodes>>,
    },
}

/// Who waits for the answer to a whisper.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A local user: the answer comes as [`ClusterEvent::Whispered`].
    User(ClientId),
    /// The operator console or a host program, waiting on its own thread.
    Operator(Sender<Result<String, OperatorError>>),
}

/// Aliases reserved ahead for new users, by default
/// ([`ClusterConfig::alias_pool`](super::ClusterConfig::alias_pool)): a new user gets one
/// at once, and it is already theirs across the cluster. Hundreds, so that a burst of
/// arrivals rarely finds the pool empty (its greeting would then wait a round trip).
pub const ALIAS_POOL: usize = 256;

/// Most candidates tried in one round trip when the pool is topped up: a few
/// milliseconds of Redis's time at most, so that nothing else waits long behind it.
const RESERVE_BATCH: usize = 128;

struct Registry<'a> {
    client: &'a redis::Client,
    node: &'a str,
    /// Where reserved aliases go; the dispatcher takes them without waiting.
    pool: &'a Sender<String>,
    /// The same pool, read from this side: after a reconnection, what is left in it is
    /// taken back and reserved again ([`Registry::reserve_pool_again`]).
    left: &'a Receiver<String>,
    aliases: AliasGenerator,
    events: &'a Sender<Event>,
    stop: &'a AtomicBool,
    stats: &'a Stats,
    connection: Option<Connection>,
    backoff: Backoff,
    /// A failure is logged once, then not again until the thread has connected.
    failing: bool,
    /// Whether the aliases reserved under this node's name by an earlier process (one
    /// that stopped without leaving the register: killed, crashed) were given back.
    /// Done once, at the first connection: without it, each unclean restart under a
    /// fixed `--node` name would keep [`ALIAS_POOL`] more aliases reserved for good.
    released_old_reservations: bool,
    /// This node's users as it last registered them, by their nick's look: what the
    /// other nodes last heard of. Redis may come back from an outage empty; the users
    /// who left meanwhile are then found here, and the other nodes' rooms see them leave.
    registered: HashMap<String, Entry>,
    /// When the pool may next be refilled, after a refill found every candidate taken
    /// (the alias space is nearly full) or could not reserve: once a beat, not after
    /// every request.
    refill_after: Option<Instant>,
    /// The `LEAVE` lines of a resync, held until the other nodes listen again.
    after_outage: AfterOutage,
    /// Whether the next batch tries plain aliases (`QuietOtter`) rather than numbered
    /// ones: until a batch finds most plain ones taken, and again from the next beat.
    plain_first: bool,
    /// `--announce-max`, for the lines this thread publishes (`announce.rs`).
    announce_max: usize,
    /// The other nodes' room sizes as last sent to the dispatcher.
    room_sizes: HashMap<String, usize>,
}

/// The `cluster-beat` thread, as `cluster-reg` holds it: it stops it before the node
/// leaves the register, so that no late beat registers the node again.
pub(super) struct Heartbeat {
    /// Dropped to stop the thread.
    pub(super) stop: Sender<()>,
    /// Joined before leaving the register.
    pub(super) thread: std::thread::JoinHandle<()>,
    /// Raised by the thread when a beat found this node forgotten by the register.
    pub(super) forgotten: std::sync::Arc<AtomicBool>,
}

#[allow(clippy::too_many_arguments)] // one call site, each argument named there
pub(super) fn run(
    client: &redis::Client,
    node: &str,
    requests: Receiver<Request>,
    (pool, left): (&Sender<String>, &Receiver<String>),
    events: &Sender<Event>,
    stop: &AtomicBool,
    stats: &Stats,
    heartbeat: Heartbeat,
    announce_max: usize,
) {
    let mut registry = Registry {
        client,
        node,
        pool,
        left,
        aliases: AliasGenerator::new(),
        events,
        stop,
        stats,
        connection: None,
        backoff: Backoff::new(),
        failing: false,
        released_old_reservations: false,
        refill_after: None,
        after_outage: AfterOutage::default(),
        plain_first: true,
        registered: HashMap::new(),
        announce_max,
        room_sizes: HashMap::new(),
    };
    let mut next_beat = Instant::now();
    loop {
        // While lines wait for the other nodes to listen again, look more often.
        let wake = if registry.after_outage.waiting() {
            next_beat.min(Instant::now() + after_outage::ASK_EVERY)
        } else {
            next_beat
        };
        match requests.recv_deadline(wake) {
            Ok(request) => registry.handle(request),
            Err(RecvTimeoutError::Timeout) => {}
            // The dispatcher has stopped: this node leaves the cluster.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if heartbeat.forgotten.swap(false, Ordering::SeqCst) {
            // Another node declared us lost (we were too slow to beat: frozen or
            // starved) while our connections stayed open: our users are gone from the
            // register and the other nodes saw them leave. Register them again and
            // announce them, exactly as after a reconnect.
            log::warn!("cluster-reg: this node was declared lost: registering its users again");
            // Its reservations were freed with it: reserved again first.
            registry.reserve_pool_again();
            tell_dispatcher(events, stop, ClusterEvent::ResyncWanted);
        }
        if Instant::now() >= next_beat {
            registry.beat();
            next_beat = Instant::now() + BEAT;
        }
        registry.publish_after_outage();
        registry.refill_pool(&requests);
    }
    // No beat after this: the node leaves the register for good.
    drop(heartbeat.stop);
    if heartbeat.thread.join().is_err() {
        log::error!("cluster-beat panicked");
    }
    registry.leave_cluster();
    log::debug!("cluster-reg stopped");
}

impl Registry<'_> {
    /// The connection, made now if there is none and the back-off allows. A fresh
    /// connection beats at once and asks the dispatcher for a resync.
    fn connection(&mut self) -> Option<&mut Connection> {
        if self.connection.is_none() && self.backoff.ready() {
            match self.connect() {
                Ok(connection) => {
                    self.backoff.succeeded();
                    if self.failing {
                        log::info!("cluster-reg: the register is reachable again");
                        self.failing = false;
                    }
                    self.connection = Some(connection);
                    // First: the dispatcher takes the resync request as "the pool is
                    // checked" (`held.rs`).
                    self.reserve_pool_again();
                    tell_dispatcher(self.events, self.stop, ClusterEvent::ResyncWanted);
                }
                Err(e) => self.failed(&e),
            }
        }
        self.connection.as_mut()
    }

    fn connect(&mut self) -> RedisResult<Connection> {
        let mut connection = self.client.get_connection_with_timeout(TIMEOUT)?;
        connection.set_write_timeout(Some(TIMEOUT))?;
        connection.set_read_timeout(Some(TIMEOUT))?;
        if !self.released_old_reservations {
            // Before this process reserves any: whatever is reserved is an earlier one's.
            match presence::release_reserved(&mut connection, self.node) {
                Ok(0) => {}
                Ok(released) => {
                    log::info!(
                        "cluster-reg: {released} aliases reserved by an earlier run released"
                    )
                }
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    return Err(e)
                }
                // An error answer (the key has another type): nothing we can give back.
                Err(e) => log::debug!("cluster-reg: {e}"),
            }
            self.released_old_reservations = true;
        }
        // The first beat registers the node; the resync follows anyway (see above).
        presence::beat(&mut connection, self.node)?;
        Ok(connection)
    }

    /// A command failed: drop the connection (the next request or beat reconnects, with
    /// back-off, and the dispatcher resyncs then).
    fn failed(&mut self, e: &redis::RedisError) {
        if !self.failing {
            // The subscriber logs the outage itself; this is the register's detail.
            log::debug!("cluster-reg: {e}");
            self.failing = true;
        }
        self.connection = None;
        self.backoff.failed();
        self.after_outage.link_lost();
    }

    /// Runs `op` on the connection; `None` if there is none or it failed.
    fn with<T>(&mut self, op: impl FnOnce(&mut Connection, &str) -> RedisResult<T>) -> Option<T> {
        let node = self.node;
        let result = op(self.connection()?, node);
        match result {
            Ok(value) => Some(value),
            // The connection is broken (or in doubt): start over on a new one.
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                self.failed(&e);
                None
            }
            // Redis answered, with an error (e.g. a key of the wrong type, written there
            // by someone else): this one operation failed, the connection is fine.
            // Dropping it would make one bad key stop every node's work at each beat.
            Err(e) => {
                log::debug!("cluster-reg: {e}");
                None
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Claim { id, nick, room } => {
                let won = self.with(|con, node| presence::claim(con, node, &nick, &room));
                if won == Some(true) {
                    let entry = Entry {
                        nick: nick.clone(),
                        room,
                    };
                    self.registered.insert(nick_key(&nick), entry);
                }
                let event = ClusterEvent::Claimed { id, nick, won };
                tell_dispatcher(self.events, self.stop, event);
            }
            Request::Release { nick } => {
                // Kept while the register could not be told: the resync announces it.
                if self
                    .with(|con, node| presence::release(con, node, &nick))
                    .is_some()
                {
                    self.registered.remove(&nick_key(&nick));
                }
            }
            Request::Moved { nick, room } => {
                if self
                    .with(|con, node| presence::moved(con, node, &nick, &room))
                    .is_some()
                {
                    if let Some(entry) = self.registered.get_mut(&nick_key(&nick)) {
                        entry.room = room;
                    }
                }
            }
            Request::Resync(users) => self.resync(&users),
            Request::Publish(payload) => {
                self.with(|con, _| publish(con, &payload));
            }
            Request::Whisper {
                from,
                to,
                text,
                answer,
            } => self.whisper(from, to, text, answer),
            Request::Kick { nick, reason, done } => {
                let found = self
                    .with(|con, me| presence::locate(con, me, &nick))
                    .flatten();
                let result = match found {
                    Some((node, entry)) => {
                        let kick = Direct::Kick {
                            node,
                            nick: entry.nick.clone(),
                            reason,
                        };
                        let me = self.node;
                        self.with(|con, _| publish(con, &direct::encode(me, &kick)))
                            .map(|()| entry.nick)
                            .ok_or(OperatorError::NoSuchUser(nick))
                    }
                    None => Err(OperatorError::NoSuchUser(nick)),
                };
                let _ = done.send(result);
            }
            Request::Aliases { check } => {
                // Not behind the back-off: a user waits for this answer. It is the
                // batch itself that is skipped while the back-off lasts.
                if check {
                    self.reserve_pool_again();
                }
                let won = self.reserve_batch();
                let ready = won > 0 || !self.pool.is_empty();
                tell_dispatcher(self.events, self.stop, ClusterEvent::Aliases { ready });
            }
            Request::Roster { id, list } => {
                let nodes = self.with(|con, _| presence::live_nodes(con));
                let event = ClusterEvent::Roster { id, list, nodes };
                tell_dispatcher(self.events, self.stop, event);
            }
            Request::OperatorRoster { done } => {
                let _ = done.send(self.with(|con, _| presence::live_nodes(con)));
            }
        }
    }

    /// Finds the node that holds `to` and sends it the whisper; tells `answer` the nick
    /// that matched, or that nobody has it.
    fn whisper(&mut self, from: String, to: String, text: String, answer: Answer) {
        let found = self
            .with(|con, me| presence::locate(con, me, &to))
            .flatten();
        let me = self.node;
        let matched = found.and_then(|(node, entry)| {
            let dm = Direct::Dm {
                node,
                from,
                to: entry.nick.clone(),
                text: text.clone(),
            };
            self.with(|con, _| publish(con, &direct::encode(me, &dm)))
                .map(|()| entry.nick)
        });
        match answer {
            Answer::User(id) => {
                let event = ClusterEvent::Whispered {
                    id,
                    to,
                    matched,
                    text,
                };
                tell_dispatcher(self.events, self.stop, event);
            }
            Answer::Operator(done) => {
                let _ = done.send(matched.ok_or(OperatorError::NoSuchUser(to)));
            }
        }
    }

    /// Registers every local user again; users registered before who are not among them
    /// left while the register could not be told: the cluster's rooms see them leave.
    fn resync(&mut self, users: &[(ClientId, String, String)]) {
        let pairs: Vec<(String, String)> = users
            .iter()
            .map(|(_, nick, room)| (nick.clone(), room.clone()))
            .collect();
        let Some(found) = self.with(|con, node| presence::resync(con, node, &pairs)) else {
            return;
        };
        let node = self.node;
        // Declared lost while cut off: the other nodes' rooms saw all our users leave.
        let declared_lost = self.with(|con, _| presence::take_lost_note(con, node)) == Some(true);
        // Sets, not scans: a node may have thousands of users, and each list is checked
        // against the other.
        let now: HashSet<String> = pairs.iter().map(|(nick, _)| nick_key(nick)).collect();
        let lost: HashSet<&str> = found.lost.iter().map(String::as_str).collect();
        // Gone since the last registration: as the register had them, and as this node
        // last registered them (Redis may have come back empty), unless the other nodes
        // already saw them leave (declared lost).
        let mut gone: HashMap<String, Entry> = HashMap::new();
        if !declared_lost {
            gone.extend(self.registered.drain());
        }
        gone.extend(found.before.into_iter().map(|e| (nick_key(&e.nick), e)));
        gone.retain(|key, _| !now.contains(key));
        let gone: Vec<Entry> = gone.into_values().collect();
        let present: Vec<Entry> = pairs
            .iter()
            .map(|(nick, room)| Entry {
                nick: nick.clone(),
                room: room.clone(),
            })
            .collect();
        let audience = self.audience(node, &present);
        // Not published at once: after an outage, the other nodes may not listen yet.
        let leaves = leave_lines(node, &gone, NODE_LOST, &audience);
        self.after_outage.hold(leaves, Instant::now());
        self.publish_after_outage();
        self.registered = pairs
            .iter()
            .filter(|(nick, _)| !lost.contains(nick.as_str()))
            .map(|(nick, room)| {
                let entry = Entry {
                    nick: nick.clone(),
                    room: room.clone(),
                };
                (nick_key(nick), entry)
            })
            .collect();
        // They see our users come back.
        if declared_lost {
            let back: Vec<Entry> = pairs
                .iter()
                .filter(|(nick, _)| !lost.contains(nick.as_str()))
                .map(|(nick, room)| Entry {
                    nick: nick.clone(),
                    room: room.clone(),
                })
                .collect();
            let audience = self.audience(node, &back);
            self.with(|con, _| publish_joins(con, node, &back, &audience));
        }
        log::info!(
            "cluster-reg: {} users registered, {} gone since the last registration, \
             {} nicks held by another node",
            pairs.len() - found.lost.len(),
            gone.len(),
            found.lost.len()
        );
        let ids: HashMap<&str, ClientId> = users
            .iter()
            .map(|(id, nick, _)| (nick.as_str(), *id))
            .collect();
        for nick in &found.lost {
            let Some(&id) = ids.get(nick.as_str()) else {
                continue;
            };
            let nick = nick.clone();
            let event = ClusterEvent::Claimed {
                id,
                nick,
                won: Some(false),
            };
            if !tell_dispatcher(self.events, self.stop, event) {
                return;
            }
        }
    }

    /// Tops the pool up: while no request is waiting, batch after batch until it is
    /// full; and once it is below half full, one batch even if requests wait, so that a
    /// burst of arrivals (each one a claim) cannot starve it (see the module's
    /// *Aliases*). During an outage the batch fails (or the back-off of reconnection
    /// says not yet) and the next try waits a beat: an outage's new users get their
    /// aliases the other way, claimed after the fact.
    fn refill_pool(&mut self, requests: &Receiver<Request>) {
        let size = self.pool.capacity().unwrap_or(0);
        if self.pool.len() * 2 < size && self.reserve_batch() == 0 {
            return;
        }
        while !self.pool.is_full() && requests.is_empty() && self.reserve_batch() > 0 {}
    }

    /// One round trip: reserves up to [`RESERVE_BATCH`] of the aliases the pool lacks
    /// and puts those won in it. Returns how many it won: 0 when Redis cannot be
    /// reached, in back-off, with a full pool, or when every candidate was taken.
    /// (It connects if need be: the dispatcher's first request for aliases may come
    /// before the first beat has connected.)
    fn reserve_batch(&mut self) -> usize {
        if self.refill_after.is_some_and(|t| Instant::now() < t) {
            return 0;
        }
        self.refill_after = None;
        let missing = self.pool.capacity().unwrap_or(0) - self.pool.len();
        let attempt = if self.plain_first { 0 } else { PLAIN_ATTEMPTS };
        // Each look once: a duplicate would only cost a slot of the batch.
        let mut looks = HashSet::new();
        let candidates: Vec<String> = (0..missing.min(RESERVE_BATCH))
            .map(|_| self.aliases.candidate(attempt))
            .filter(|alias| looks.insert(nick_key(alias)))
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        let reserved = self.with(|con, node| presence::reserve_many(con, node, &candidates, false));
        let Some(won) = reserved else {
            // Redis failed, or answered an error (a key of the wrong type): not again
            // after every request.
            self.refill_after = Some(Instant::now() + BEAT);
            return 0;
        };
        if won.len() * 2 < candidates.len() {
            if self.plain_first {
                // Plain aliases are running out: numbered ones until the next beat.
                self.plain_first = false;
            } else if won.is_empty() {
                // Every candidate was taken: the alias space is (nearly) full. Try
                // again at the next beat, not after every request.
                self.refill_after = Some(Instant::now() + BEAT);
            }
        }
        let count = won.len();
        for alias in won {
            // Only this thread fills the pool, so it has room; it fails only if the
            // dispatcher is gone. (What is not handed over stays reserved until the
            // node leaves the register, which frees it.)
            if self.pool.try_send(alias).is_err() {
                break;
            }
        }
        count
    }

    /// After a reconnection: the aliases still in the pool were reserved before it, and
    /// Redis may have come back empty (it keeps nothing on disk here) or forgotten this
    /// node (declared lost), so another node may take them now. They are taken back and
    /// reserved again in one script; any another node holds by now is dropped, never
    /// given. If Redis fails again right away, they are dropped too: the pool is
    /// refilled with fresh ones. Either way, afterwards the pool holds only aliases
    /// reserved on the connection of now. Also done when the dispatcher asks for it
    /// (`Request::Aliases { check: true }`): it stops taking aliases from the pool when
    /// its link goes down, until a check has been done.
    fn reserve_pool_again(&mut self) {
        let left: Vec<String> = self.left.try_iter().collect();
        if left.is_empty() {
            return;
        }
        let Some(kept) = self.with(|con, node| presence::reserve_many(con, node, &left, true))
        else {
            return; // dropped: the pool is empty
        };
        if kept.len() < left.len() {
            log::debug!(
                "cluster-reg: {} of the aliases reserved before the reconnection are gone",
                left.len() - kept.len()
            );
        }
        for alias in kept {
            if self.pool.try_send(alias).is_err() {
                break;
            }
        }
    }

    /// Publishes the lines held since a resync (`after_outage.rs`) once the other nodes
    /// listen again, or once they have had long enough.
    fn publish_after_outage(&mut self) {
        let now = Instant::now();
        if !self.after_outage.ask_now(now) {
            return;
        }
        let Some(listeners) = self.with(|con, _| listeners(con)) else {
            return; // asked again later
        };
        let Some(lines) = self.after_outage.due(listeners, now) else {
            return;
        };
        if self.with(|con, _| publish_all(con, &lines)).is_some() {
            self.after_outage.published();
        } else {
            self.after_outage.hold(lines, now); // not out: held for the next link
        }
    }

    /// The count of nodes for `/stats`, then the search for lost nodes (the heartbeat
    /// itself is `cluster-beat`'s).
    fn beat(&mut self) {
        self.plain_first = true;
        match self.with(|con, _| presence::census(con)) {
            Some(census) => *self.stats.cluster_nodes.lock() = census,
            None => self.stats.cluster_nodes.lock().clear(),
        }
        self.send_room_sizes();
        // Counted while all is well: once the link is lost it is too late to ask how
        // many listened before (`after_outage.rs`).
        if let Some(count) = self.with(|con, _| listeners(con)) {
            self.after_outage.listeners(count);
        }
        let Some(lost) = self.with(presence::lost_nodes) else {
            return;
        };
        for node in lost {
            self.reap(&node);
        }
    }

    /// Cleans up after a lost node (one script: see [`presence::reap`]): its users leave
    /// every room (`node lost`) and its nicks are free, unless it beat again meanwhile or
    /// another node cleaned up first.
    fn reap(&mut self, lost: &str) {
        // Its users leave; every other live node's stay.
        let audience = self.audience(lost, &[]);
        let leaves = |users: &[Entry]| leave_lines(lost, users, NODE_LOST, &audience);
        if let Some(presence::Reaped::Done(users)) =
            self.with(|con, _| presence::reap(con, lost, leaves))
        {
            log::info!(
                "cluster: node {lost} stopped beating: its {} users left",
                users.len()
            );
        }
    }

    /// The rooms' sizes once `node`'s users are `present` (`announce.rs`), read now;
    /// unknown (every line quiet) if the register cannot be read.
    fn audience(&mut self, node: &str, present: &[Entry]) -> Audience {
        let max = self.announce_max;
        self.with(|con, _| Audience::read(con, node, present, max))
            .unwrap_or_else(Audience::unknown)
    }

    /// Tells the dispatcher how many users each room has on the other nodes, if that
    /// changed since it was last told (it counts rooms across the cluster with it).
    fn send_room_sizes(&mut self) {
        let Some(nodes) = self.with(|con, _| presence::live_nodes(con)) else {
            return;
        };
        let sizes = super::roster::room_sizes(self.node, &nodes);
        if sizes != self.room_sizes {
            self.room_sizes = sizes.clone();
            tell_dispatcher(self.events, self.stop, ClusterEvent::RoomSizes(sizes));
        }
    }

    /// The node is stopping: its users leave the cluster's rooms, its nicks are free.
    fn leave_cluster(&mut self) {
        // Users who left during the last outage, not yet announced: now, without waiting
        // for listeners (a node that stops cannot announce them later).
        let held = self.after_outage.take_all();
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        if let Err(e) = publish_all(connection, &held) {
            log::debug!("cluster-reg: could not announce the users gone in the outage: {e}");
        }
        let node = self.node;
        let max = self.announce_max;
        let result = presence::users_of(connection, node)
            .and_then(|users| {
                let audience = Audience::read(connection, node, &[], max)?;
                publish_leaves(connection, node, &users, SHUTTING_DOWN, &audience)
            })
            .and_then(|()| presence::forget(connection, node));
        if let Err(e) = result {
            log::debug!("cluster-reg: could not leave the register: {e}");
        }
    }
}

/// How many subscribe to the cluster's channel now (every linked node's `cluster-sub`).
fn listeners(con: &mut Connection) -> RedisResult<usize> {
    let (_channel, count): (String, usize) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(CHANNEL).query(con)?;
    Ok(count)
}

/// Publishes encoded messages, in order, in one round trip.
fn publish_all(con: &mut Connection, lines: &[String]) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    for line in lines {
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(line).ignore();
    }
    pipe.query(con)
}

fn publish(con: &mut Connection, payload: &str) -> RedisResult<()> {
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(payload)
        .query::<i64>(con)
        .map(drop)
}

/// Publishes `JOIN <room> <nick>` for each user of `node` (number 0: its own
/// dispatcher ignores them; its users never saw them leave); quiet in a room too big
/// for `audience`.
fn publish_joins(
    con: &mut Connection,
    node: &str,
    users: &[Entry],
    audience: &Audience,
) -> RedisResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for Entry { nick, room } in users {
        let line = RoomLine::Join {
            room: room.clone(),
            nick: nick.clone(),
        };
        let quiet = audience.quiet(room);
        pipe.cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(wire::encode_marked(node, 0, &line, quiet))
            .ignore();
    }
    pipe.query(con)
}

/// Publishes `LEAVE <room> <nick> <reason>` for each user, signed with `node` (the node
/// they were on) and number 0: no node takes it for one of its own lines.
fn publish_leaves(
    con: &mut Connection,
    node: &str,
    users: &[Entry],
    reason: &str,
    audience: &Audience,
) -> RedisResult<()> {
    if users.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for line in leave_lines(node, users, reason, audience) {
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(line).ignore();
    }
    pipe.query(con)
}

/// The `LEAVE <room> <nick> <reason>` message of each user, signed with `node` and
/// number 0; quiet (`QLEAVE`) in a room too big for `audience`.
fn leave_lines(node: &str, users: &[Entry], reason: &str, audience: &Audience) -> Vec<String> {
    users
        .iter()
        .map(|Entry { nick, room }| {
            let line = RoomLine::Leave {
                room: room.clone(),
                nick: nick.clone(),
                reason: reason.to_string(),
            };
            wire::encode_marked(node, 0, &line, audience.quiet(room))
        })
        .collect()
}
