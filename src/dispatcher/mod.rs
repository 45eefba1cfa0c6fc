//! The dispatcher: the one thread that owns the chat.
//!
//! Every connection thread publishes [`Event`]s to it over one crossbeam channel; it
//! decides what each event means (a message, a nick change, a disconnect), updates the
//! [user table](crate::table), and queues the resulting lines for their recipients
//! (see `src/outbox.rs` for how they reach the sockets).
//!
//! Why one thread: the chat's state (who is where, which nick is taken, the order of
//! messages in a room) then has a single writer, so there are no races to reason about:
//! two clients claiming the same nick at once are simply handled one after the other,
//! and every member of a room sees that room's lines in the same order.
//!
//! [`Dispatcher`] is also public on its own: a program can run it with no sockets at
//! all, feeding it events and reading each client's lines from a
//! [`ChannelTransport`](crate::transport::ChannelTransport).
//!
//! The code is split by question:
//!
//! | file | answers |
//! |---|---|
//! | `mod.rs` | the thread: take events, batch them, write, expire closing clients |
//! | `lifecycle.rs` | a client arrives, moves between rooms, leaves |
//! | `commands.rs` | what each client command does |
//! | `operator.rs` | what the operator and host programs may do; observers |
//! | `outputs.rs` | which client gets which bytes, and when they are written |
//! | `no_cluster.rs` | without the feature `redis`: the cluster hooks, doing nothing |
//! | `cluster.rs`, `listeners.rs` | cluster mode only (feature `redis`): room lines through the broker |
//! | `register.rs` | cluster mode only: nicks claimed across the cluster, lists of every node's users |
//! | `recall.rs` | cluster mode only: a joiner's history, from Redis, in the room's one order |
//! | `held.rs` | cluster mode only: new users whose greeting waits for a reserved alias |
//! | `remote.rs` | cluster mode only: whispers, notices and kicks that reach other nodes |

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::alias::AliasGenerator;
use crate::config::Config;
use crate::event::{ChatEvent, ClientId, CloseReason, Event};
use crate::outbox::run_flusher;
use crate::stats::Stats;
use crate::table::{SharedTable, Snapshot, UserTable};

use outputs::Outputs;
use shared_write::SharedBatch;

#[cfg(feature = "redis")]
mod announce;
#[cfg(feature = "redis")]
mod cluster;
mod commands;
#[cfg(feature = "redis")]
mod held;
mod lifecycle;
#[cfg(feature = "redis")]
mod listeners;
#[cfg(not(feature = "redis"))]
mod no_cluster;
mod operator;
mod outputs;
#[cfg(feature = "redis")]
mod recall;
#[cfg(feature = "redis")]
mod register;
#[cfg(feature = "redis")]
mod remote;
mod shared_write;

/// Longest list reply (`/users`, `/who`, `/rooms`). A list of 15,000 users would be a
/// 400 KB reply, larger than a client's whole output allowance; the `END` line still
/// gives the true count.
pub const LIST_MAX: usize = 200;

/// Capacity of the event channel. Bounded so that a flood of events (with rate limits
/// off) pushes back on the connection threads, which then stop reading their sockets,
/// and TCP slows the senders down: memory stays bounded instead of the queue growing.
pub const EVENT_QUEUE: usize = 16 * 1024;

/// Under a backlog, handle events until this many lines are queued, then write. Bigger
/// batches mean fewer, larger writes (throughput); smaller mean earlier writes
/// (latency). In a room of 1,000 this is 64 messages per batch.
const FLUSH_AFTER_DELIVERIES: usize = 64 * 1024;

/// Capacity of each observer's channel; an observer that falls further behind misses
/// events rather than slowing the chat down.
pub const OBSERVER_QUEUE: usize = 4096;

/// A dispatcher running on its own threads (the dispatcher and its flusher), driven
/// through [`Event`]s, with no sockets involved.
///
/// ```
/// use std::sync::Arc;
/// use underworld_line::{ClientId, Command, Config, Dispatcher, Event};
/// use underworld_line::transport::ChannelTransport;
///
/// let dispatcher = Dispatcher::start(Config::default()).unwrap();
/// let events = dispatcher.sender();
/// let (transport, lines) = ChannelTransport::new(100);
/// let id = ClientId(1);
/// events.send(Event::Connected { id, transport: Arc::new(transport) }).unwrap();
/// events.send(Event::Command { id, command: Command::Ping("hi".into()) }).unwrap();
///
/// assert!(lines.recv().unwrap().starts_with("HELLO "));
/// assert!(lines.recv().unwrap().starts_with("JOIN lobby "));
/// assert_eq!(lines.recv().unwrap(), "PONG hi");
///
/// dispatcher.shutdown();
/// assert_eq!(lines.recv().unwrap(), "BYE server shutting down");
/// events.send(Event::Closed { id }).unwrap();
/// dispatcher.join();
/// ```
pub struct Dispatcher {
    events: Sender<Event>,
    table: SharedTable,
    stats: Arc<Stats>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("users", &self.table.lock().user_count())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Starts a dispatcher and its flusher thread.
    pub fn start(config: Config) -> io::Result<Dispatcher> {
        Dispatcher::spawn(Arc::new(config), false)
    }

    /// `expects_acceptor`: when serving sockets, the dispatcher must not finish a
    /// shutdown before the acceptor has said it will send no more connections.
    pub(crate) fn spawn(config: Arc<Config>, expects_acceptor: bool) -> io::Result<Dispatcher> {
        let (events, inbox) = crossbeam_channel::bounded(EVENT_QUEUE);
        let stats = Arc::new(Stats::default());
        // Cluster mode's threads first: if Redis's URL is wrong, nothing else has started.
        #[cfg(feature = "redis")]
        let (cluster, cluster_threads) = match &config.cluster {
            Some(settings) => {
                let (bridge, threads) = crate::cluster::Bridge::start(
                    settings,
                    events.clone(),
                    Arc::clone(&stats),
                    config.announce_max,
                )?;
                (
                    Some(cluster::Link::new(bridge, settings.node.clone())),
                    threads,
                )
            }
            None => (None, Vec::new()),
        };
        let (flusher_jobs, flusher_inbox) = crossbeam_channel::unbounded();
        let table = SharedTable::default();
        let send_timeout = config.send_timeout;
        let flusher = thread::Builder::new()
            .name("flusher".into())
            .spawn(move || run_flusher(flusher_inbox, send_timeout))?;
        let (writer, writer_thread) = shared_write::start_writer()?;
        let state = DispatcherState {
            out: Outputs {
                clients: HashMap::new(),
                dirty: Vec::new(),
                overflowed: Vec::new(),
                max_pending: config.max_pending,
                queued: 0,
                watched_bytes: 0,
                flusher: flusher_jobs,
                writer,
            },
            config,
            table: Arc::clone(&table),
            stats: Arc::clone(&stats),
            aliases: AliasGenerator::new(),
            closing: VecDeque::new(),
            observers: Vec::new(),
            stopping: false,
            acceptor_running: expects_acceptor,
            #[cfg(feature = "redis")]
            cluster,
        };
        let dispatcher = thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || state.run(inbox))?;
        #[allow(unused_mut)] // only cluster mode adds threads
        let mut threads = vec![dispatcher, flusher, writer_thread];
        #[cfg(feature = "redis")]
        threads.extend(cluster_threads);
        Ok(Dispatcher {
            events,
            table,
            stats,
            threads: Mutex::new(threads),
        })
    }

    /// Where to send events. Clone it for each thread that publishes.
    pub fn sender(&self) -> Sender<Event> {
        self.events.clone()
    }

    /// A copy of who is online and in which room.
    pub fn snapshot(&self) -> Snapshot {
        self.table.lock().snapshot()
    }

    /// The user table itself, for short read-only looks.
    pub fn table(&self) -> &SharedTable {
        &self.table
    }

    /// The running totals.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Asks every client to leave (`BYE server shutting down`). The dispatcher stops
    /// once every client it knows has sent [`Event::Closed`] or, at the latest, when
    /// the close grace (`Config::close_grace`) has passed.
    pub fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown);
    }

    /// Waits for the dispatcher and flusher threads to end. Safe to call from several
    /// threads; later calls return at once.
    pub fn join(&self) {
        // Holding the lock while joining makes a second caller wait until the threads
        // are really gone, instead of returning early.
        let mut threads = self.threads.lock();
        for thread in threads.drain(..) {
            if thread.join().is_err() {
                log::error!("a dispatcher thread panicked");
            }
        }
    }
}

/// A list command (`/rooms`, `/who`, `/users`), which cluster mode answers from every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Rooms,
    Who,
    Users,
}

/// Everything the dispatcher thread owns.
struct DispatcherState {
    config: Arc<Config>,
    table: SharedTable,
    stats: Arc<Stats>,
    out: Outputs,
    aliases: AliasGenerator,
    /// Clients told `BYE`, with the time after which they are closed hard. Always in
    /// deadline order, since every deadline is "now + close_grace".
    closing: VecDeque<(Instant, ClientId)>,
    observers: Vec<Sender<ChatEvent>>,
    stopping: bool,
    acceptor_running: bool,
    /// Cluster mode (`--redis`): `Some` while this node shares its rooms through Redis.
    #[cfg(feature = "redis")]
    cluster: Option<cluster::Link>,
}

impl DispatcherState {
    fn run(mut self, inbox: Receiver<Event>) {
        loop {
            // Wake for the next client to close hard, or (cluster mode) the end of the
            // holds on new users' greetings, whichever comes first.
            let closing = self.closing.front().map(|&(deadline, _)| deadline);
            let wake = [closing, self.holds_end_at()].into_iter().flatten().min();
            let received = match wake {
                Some(deadline) => inbox.recv_deadline(deadline),
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(event) => {
                    self.handle(event);
                    // Coalescing: take whatever else is already queued before writing,
                    // so that under load one write carries many lines.
                    while self.out.queued < FLUSH_AFTER_DELIVERIES {
                        match inbox.try_recv() {
                            Ok(event) => self.handle(event),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.holds_end_at().is_some() {
                let shared = Arc::clone(&self.table);
                let mut table = shared.lock();
                self.end_overdue_holds(&mut table);
            }
            self.write_dirty();
            self.expire_closing();
            if self.stopping && !self.acceptor_running && self.out.clients.is_empty() {
                break;
            }
        }
        for client in self.out.clients.values() {
            client.outbox.close(None);
        }
        log::debug!("dispatcher stopped");
    }

    fn handle(&mut self, event: Event) {
        // One lock per event: readers on other threads see either all of an event's
        // changes or none. The `Arc` is cloned so the guard borrows the clone, not
        // `self`, leaving `self` free for the `&mut self` methods below.
        let shared = Arc::clone(&self.table);
        let mut table = shared.lock();
        self.dispatch(&mut table, event);
        // A broadcast may have overflowed some outboxes; closing them sends LEAVE
        // lines, which may overflow others, hence the loop.
        while let Some(id) = self.out.overflowed.pop() {
            self.begin_close(&mut table, id, CloseReason::TooSlow);
        }
    }

    /// Handles one event, under the table's lock. (In cluster mode, an event from a
    /// client whose greeting is held is kept for later: `held.rs`.)
    fn dispatch(&mut self, table: &mut UserTable, event: Event) {
        let Some(event) = self.held_back(table, event) else {
            return;
        };
        match event {
            Event::Connected { id, transport } => self.connect(table, id, transport),
            Event::Command { id, command } => self.command(table, id, command),
            Event::Rejected { id, code, text } => self.error(id, code, &text),
            Event::Fatal { id, reason } => self.begin_close(table, id, reason),
            Event::Closed { id } => self.closed(table, id),
            Event::Operator(request) => self.operator(table, request),
            Event::AcceptorStopped => self.acceptor_running = false,
            Event::Shutdown => self.shutdown(table),
            #[cfg(feature = "redis")]
            Event::Cluster(event) => self.on_cluster(table, event),
        }
    }

    fn expire_closing(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, id)) = self.closing.front() {
            if deadline > now {
                break;
            }
            self.closing.pop_front();
            // Closing the transport wakes a TCP reader, which then sends `Closed` (and
            // is ignored). The client is forgotten now rather than then, so a program
            // driving the dispatcher over channels need not send `Closed` at all.
            if let Some(client) = self.out.clients.remove(&id) {
                client.outbox.close(None);
            }
        }
    }

    fn shutdown(&mut self, table: &mut UserTable) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        log::info!(
            "shutting down: saying BYE to {} clients",
            self.out.clients.len()
        );
        let ids: Vec<ClientId> = self.out.clients.keys().copied().collect();
        for id in ids {
            self.begin_close(table, id, CloseReason::ServerShutdown);
        }
        // Clients whose greeting was held: never greeted now, and what they sent is
        // handled as for any closing client.
        self.greet_all_held(table);
    }

    /// Writes every outbox that got lines since the last write: one write each.
    fn write_dirty(&mut self) {
        let dirty = mem::take(&mut self.out.dirty);
        if shared_write::worth_sharing(dirty.len(), self.out.queued) {
            self.write_shared(&dirty);
        } else {
            for id in dirty {
                let Some(client) = self.out.clients.get_mut(&id) else {
                    continue;
                };
                client.dirty = false;
                client.write(id, &self.out.flusher);
            }
        }
        Stats::add(
            &self.stats.deliveries,
            mem::take(&mut self.out.queued) as u64,
        );
        Stats::add(
            &self.stats.watched_bytes,
            mem::take(&mut self.out.watched_bytes) as u64,
        );
    }

    /// Writes a long batch together with the writer thread (see `shared_write.rs`).
    fn write_shared(&mut self, dirty: &[ClientId]) {
        let outboxes = dirty
            .iter()
            .filter_map(|&id| {
                let client = self.out.clients.get_mut(&id)?;
                client.dirty = false;
                Some((id, Arc::clone(&client.outbox)))
            })
            .collect();
        let batch = Arc::new(SharedBatch::new(outboxes, self.out.flusher.clone()));
        // If the writer is gone (it cannot panic, but still), we write it all alone.
        let _ = self.out.writer.send(Arc::clone(&batch));
        batch.write_until_done();
    }
}
