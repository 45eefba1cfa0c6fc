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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use crate::alias::AliasGenerator;
use crate::clock::format_utc;
use crate::command::{Command, HELP_LINES};
use crate::config::Config;
use crate::event::{ChatEvent, ClientId, CloseReason, Event, OperatorError, OperatorRequest};
use crate::outbox::{run_flusher, Flush, Outbox, Push};
use crate::reply::{ErrorCode, Reply};
use crate::stats::Stats;
use crate::table::{SharedTable, Snapshot, User, UserTable, LOBBY};
use crate::text::{normalize_room, sanitize_text, validate_nick, NickError};
use crate::transport::Transport;

/// The greeting after `HELLO <nick>`.
const HELLO_TEXT: &str = "welcome to Underworld-Line: you are anonymous; /help lists the commands";

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
/// (latency). 64 K lines is about 1.5 ms of appending here.
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
        let (flusher_jobs, flusher_inbox) = crossbeam_channel::unbounded();
        let table = SharedTable::default();
        let stats = Arc::new(Stats::default());
        let send_timeout = config.send_timeout;
        let flusher = thread::Builder::new()
            .name("flusher".into())
            .spawn(move || run_flusher(flusher_inbox, send_timeout))?;
        let state = DispatcherState {
            out: Outputs {
                clients: HashMap::new(),
                dirty: Vec::new(),
                overflowed: Vec::new(),
                max_pending: config.max_pending,
                queued: 0,
                flusher: flusher_jobs,
            },
            config,
            table: Arc::clone(&table),
            stats: Arc::clone(&stats),
            aliases: AliasGenerator::new(),
            closing: VecDeque::new(),
            observers: Vec::new(),
            stopping: false,
            acceptor_running: expects_acceptor,
        };
        let dispatcher = thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || state.run(inbox))?;
        Ok(Dispatcher {
            events,
            table,
            stats,
            threads: Mutex::new(vec![dispatcher, flusher]),
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

/// A client as the dispatcher's output side knows it.
struct Client {
    outbox: Arc<Outbox>,
    /// Already in `Outputs::dirty`.
    dirty: bool,
    /// Told `BYE` (or dropped as too slow); waiting for its reader to end.
    closing: bool,
}

/// The output side: each client's outbox, and which ones have something to write.
struct Outputs {
    clients: HashMap<ClientId, Client>,
    /// Clients with queued bytes, in the order they got them, written after the batch.
    dirty: Vec<ClientId>,
    /// Clients whose outbox overflowed while handling the current event.
    overflowed: Vec<ClientId>,
    max_pending: usize,
    /// Lines queued since the last write.
    queued: usize,
    /// Where outboxes go when their socket is full.
    flusher: Sender<Arc<Outbox>>,
}

impl Outputs {
    /// Queues one line for one client (nothing happens if it is gone or closing).
    fn send(&mut self, id: ClientId, line: &[u8]) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if client.closing {
            return;
        }
        let mut pushed = client.outbox.push(line, self.max_pending);
        if pushed == Push::Overflow {
            // This batch alone may have queued a lot for this client: that is not the
            // client's fault until the socket has refused it. Write now, then retry; only
            // what the socket would not take counts against `max_pending`.
            if client.outbox.flush() == Flush::BackedUp {
                log::debug!("{id} backed up: its socket buffer is full");
                let _ = self.flusher.send(Arc::clone(&client.outbox));
            }
            pushed = client.outbox.push(line, self.max_pending);
        }
        match pushed {
            Push::Queued => {
                self.queued += 1;
                if !client.dirty {
                    client.dirty = true;
                    self.dirty.push(id);
                }
            }
            Push::Overflow => self.overflowed.push(id),
        }
    }

    fn send_all(&mut self, ids: &[ClientId], line: &[u8]) {
        for id in ids {
            self.send(*id, line);
        }
    }

    fn mark_dirty(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(&id) {
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(id);
            }
        }
    }
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
}

impl DispatcherState {
    fn run(mut self, inbox: Receiver<Event>) {
        loop {
            let received = match self.closing.front() {
                Some(&(deadline, _)) => inbox.recv_deadline(deadline),
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
        let shared = Arc::clone(&self.table);
        let mut table = shared.lock();
        match event {
            Event::Connected { id, transport } => self.connect(&mut table, id, transport),
            Event::Command { id, command } => self.command(&mut table, id, command),
            Event::Rejected { id, code, text } => self.error(id, code, &text),
            Event::Fatal { id, reason } => self.begin_close(&mut table, id, reason),
            Event::Closed { id } => self.closed(&mut table, id),
            Event::Operator(request) => self.operator(&mut table, request),
            Event::AcceptorStopped => self.acceptor_running = false,
            Event::Shutdown => self.shutdown(&mut table),
        }
        // A broadcast may have overflowed some outboxes; closing them sends LEAVE
        // lines, which may overflow others, hence the loop.
        while let Some(id) = self.out.overflowed.pop() {
            self.begin_close(&mut table, id, CloseReason::TooSlow);
        }
    }

    // ----- connections -----

    fn connect(&mut self, table: &mut UserTable, id: ClientId, transport: Arc<dyn Transport>) {
        let client = Client {
            outbox: Arc::new(Outbox::new(transport)),
            dirty: false,
            closing: false,
        };
        self.out.clients.insert(id, client);
        if self.stopping {
            self.begin_close(table, id, CloseReason::ServerShutdown);
            return;
        }
        let nick = self.fresh_alias(table, id);
        log::info!("{id} connected");
        log::debug!("{id} is {nick}");
        table.add(id, nick.clone(), LOBBY);
        self.reply(
            id,
            Reply::Hello {
                nick: &nick,
                text: HELLO_TEXT,
            },
        );
        self.enter_room(table, id, &nick, LOBBY);
    }

    /// A random alias nobody has (by look). After 64 tries (a nearly full name space)
    /// it falls back to `anon<id>`: `anon` + digits is reserved, so nobody else can hold
    /// it, and ids are unique.
    fn fresh_alias(&mut self, table: &UserTable, id: ClientId) -> String {
        for attempt in 0..64 {
            let candidate = self.aliases.candidate(attempt);
            if table.nick_owner(&candidate).is_none() {
                return candidate;
            }
        }
        format!("anon{}", id.0)
    }

    /// Tells the room (and the joiner) about a join, and replays the room's history.
    fn enter_room(&mut self, table: &UserTable, id: ClientId, nick: &str, room: &str) {
        let join = Reply::Join { room, nick }.to_line();
        self.announce(table, room, id, join.as_bytes());
        for entry in table.history(room) {
            let time = format_utc(entry.time);
            let line = Reply::Hist {
                time: &time,
                line: &entry.line,
            }
            .to_line();
            self.out.send(id, line.as_bytes());
        }
        self.notify(|| ChatEvent::Joined {
            nick: nick.to_string(),
            room: room.to_string(),
        });
    }

    /// Tells a room that someone left it (they are no longer a member).
    fn left_room(&mut self, table: &UserTable, user: &User, reason: &str) {
        let leave = Reply::Leave {
            room: &user.room,
            nick: &user.nick,
            reason,
        }
        .to_line();
        let members = table.members(&user.room);
        if members.len() <= self.config.announce_max {
            self.out.send_all(members, leave.as_bytes());
        }
        self.notify(|| ChatEvent::Left {
            nick: user.nick.clone(),
            room: user.room.clone(),
            reason: reason.to_string(),
        });
    }

    /// `JOIN`/`NICK` lines: to the whole room while it is small enough, otherwise only
    /// to the one concerned (see `Config::announce_max`).
    fn announce(&mut self, table: &UserTable, room: &str, concerned: ClientId, line: &[u8]) {
        let members = table.members(room);
        if members.len() <= self.config.announce_max {
            self.out.send_all(members, line);
        } else {
            self.out.send(concerned, line);
        }
    }

    /// Says `BYE` and starts closing: the user leaves the table (their nick is free at
    /// once), the room is told, and the socket gets a FIN after the `BYE`. If the client
    /// has not closed after `close_grace`, [`Self::expire_closing`] closes it hard.
    fn begin_close(&mut self, table: &mut UserTable, id: ClientId, reason: CloseReason) {
        match self.out.clients.get(&id) {
            Some(client) if !client.closing => {}
            _ => return,
        }
        let text = reason.to_string();
        if let Some(user) = table.remove(id) {
            if reason == CloseReason::ServerShutdown {
                // Everyone leaves at once: nobody needs LEAVE lines, but observers
                // still hear who left.
                self.notify(|| ChatEvent::Left {
                    nick: user.nick.clone(),
                    room: user.room.clone(),
                    reason: text.clone(),
                });
            } else {
                self.left_room(table, &user, &text);
            }
        }
        log::info!("{id} closing: {}", reason.label());
        let Some(client) = self.out.clients.get_mut(&id) else {
            return;
        };
        client.closing = true;
        if reason == CloseReason::TooSlow {
            // Its buffer is full, so a BYE could not get through: close now.
            Stats::add(&self.stats.too_slow, 1);
            client.outbox.close(Some(reason));
        } else {
            let bye = Reply::Bye { reason: &text }.to_line();
            client.outbox.push_final(bye.as_bytes());
            self.out.mark_dirty(id);
        }
        let deadline = Instant::now() + self.config.close_grace;
        self.closing.push_back((deadline, id));
    }

    /// The connection's reader ended (the last event for this id).
    fn closed(&mut self, table: &mut UserTable, id: ClientId) {
        let Some(client) = self.out.clients.remove(&id) else {
            return;
        };
        if !client.closing {
            let reason = client
                .outbox
                .close_reason()
                .unwrap_or(CloseReason::ConnectionClosed);
            if reason == CloseReason::TooSlow {
                Stats::add(&self.stats.too_slow, 1);
            }
            if let Some(user) = table.remove(id) {
                self.left_room(table, &user, &reason.to_string());
            }
            log::info!("{id} gone: {}", reason.label());
        } else {
            log::debug!("{id} closed");
        }
        // Also tells the flusher to forget it.
        client.outbox.close(None);
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
    }

    /// Writes every outbox that got lines since the last write: one write each.
    fn write_dirty(&mut self) {
        for id in mem::take(&mut self.out.dirty) {
            let Some(client) = self.out.clients.get_mut(&id) else {
                continue;
            };
            client.dirty = false;
            if client.outbox.flush() == Flush::BackedUp {
                log::debug!("{id} backed up: its socket buffer is full");
                let _ = self.out.flusher.send(Arc::clone(&client.outbox));
            }
        }
        Stats::add(
            &self.stats.deliveries,
            mem::take(&mut self.out.queued) as u64,
        );
    }

    // ----- commands -----

    fn command(&mut self, table: &mut UserTable, id: ClientId, command: Command) {
        let Some(user) = table.user(id).cloned() else {
            return; // closing, or never connected: ignore
        };
        match command {
            Command::Say(text) => {
                let line = Reply::Msg {
                    room: &user.room,
                    nick: &user.nick,
                    text: &text,
                };
                self.relay(table, &user, line.to_string());
                self.notify(|| ChatEvent::Message {
                    room: user.room.clone(),
                    nick: user.nick.clone(),
                    text,
                });
            }
            Command::Me(text) => {
                let line = Reply::Me {
                    room: &user.room,
                    nick: &user.nick,
                    text: &text,
                };
                self.relay(table, &user, line.to_string());
                self.notify(|| ChatEvent::Action {
                    room: user.room.clone(),
                    nick: user.nick.clone(),
                    text,
                });
            }
            Command::Nick(new) => self.change_nick(table, id, &user, new),
            Command::Join(room) => self.join(table, id, &user, &room),
            Command::Rooms => {
                let rooms: Vec<(String, usize)> = table
                    .rooms()
                    .map(|(name, members)| (name.to_string(), members))
                    .collect();
                for (room, members) in rooms.iter().take(LIST_MAX) {
                    self.reply(
                        id,
                        Reply::Room {
                            room,
                            members: *members,
                        },
                    );
                }
                self.end_list(id, "rooms", rooms.len());
            }
            Command::Who => {
                let members = table.members(&user.room);
                for member in members.iter().take(LIST_MAX) {
                    if let Some(other) = table.user(*member) {
                        let who = Reply::Who {
                            room: &user.room,
                            nick: &other.nick,
                        };
                        self.out.send(id, who.to_line().as_bytes());
                    }
                }
                self.end_list(id, "who", members.len());
            }
            Command::Users => {
                let mut users: Vec<&User> = table.users().collect();
                users.sort_by(|a, b| a.nick.cmp(&b.nick));
                for other in users.iter().take(LIST_MAX) {
                    let line = Reply::User {
                        nick: &other.nick,
                        room: &other.room,
                    };
                    self.out.send(id, line.to_line().as_bytes());
                }
                self.end_list(id, "users", users.len());
            }
            Command::Whisper { to, text } => self.whisper(table, id, &user, &to, &text),
            Command::Ping(token) => self.reply(id, Reply::Pong { token: &token }),
            Command::Help => {
                for text in HELP_LINES {
                    self.reply(id, Reply::Help { text });
                }
                self.end_list(id, "help", HELP_LINES.len());
            }
            Command::Quit(reason) => self.begin_close(table, id, CloseReason::Quit(reason)),
        }
    }

    /// A message to the sender's room: kept for history and sent to every member, the
    /// sender included, so that everyone sees the same order.
    fn relay(&mut self, table: &mut UserTable, user: &User, line: String) {
        let bytes = format!("{line}\n");
        table.record(&user.room, line, self.config.history);
        self.out
            .send_all(table.members(&user.room), bytes.as_bytes());
        Stats::add(&self.stats.messages, 1);
    }

    fn change_nick(&mut self, table: &mut UserTable, id: ClientId, user: &User, new: String) {
        if let Err(problem) = validate_nick(&new) {
            let code = match problem {
                NickError::Reserved => ErrorCode::NickReserved,
                _ => ErrorCode::InvalidNick,
            };
            return self.error(id, code, problem.message());
        }
        match table.nick_owner(&new) {
            Some(owner) if owner != id => {
                let text = format!("{new} is taken (or looks too much like a nick that is)");
                return self.error(id, ErrorCode::NickTaken, &text);
            }
            Some(_) if user.nick == new => {
                return self.error(id, ErrorCode::NickTaken, "that is already your nick");
            }
            _ => {}
        }
        table.rename(id, new.clone());
        let line = Reply::Nick {
            old: &user.nick,
            new: &new,
        }
        .to_line();
        self.announce(table, &user.room, id, line.as_bytes());
        self.notify(|| ChatEvent::NickChanged {
            old: user.nick.clone(),
            new,
            room: user.room.clone(),
        });
    }

    fn join(&mut self, table: &mut UserTable, id: ClientId, user: &User, room: &str) {
        let room = match normalize_room(room) {
            Ok(room) => room,
            Err(problem) => return self.error(id, ErrorCode::InvalidRoom, problem.message()),
        };
        if room == user.room {
            let text = format!("you are already in {room}");
            return self.error(id, ErrorCode::AlreadyThere, &text);
        }
        table.move_to(id, &room);
        self.left_room(table, user, "joined another room");
        self.enter_room(table, id, &user.nick, &room);
    }

    fn whisper(&mut self, table: &UserTable, id: ClientId, user: &User, to: &str, text: &str) {
        let Some(target) = table.nick_owner(to) else {
            let text = format!("nobody is called {to}");
            return self.error(id, ErrorCode::NoSuchUser, &text);
        };
        if target == id {
            return self.error(id, ErrorCode::WhisperSelf, "you cannot whisper to yourself");
        }
        let Some(recipient) = table.user(target) else {
            return;
        };
        let line = Reply::Dm {
            from: &user.nick,
            to: &recipient.nick,
            text,
        }
        .to_line();
        self.out.send(id, line.as_bytes());
        self.out.send(target, line.as_bytes());
        Stats::add(&self.stats.messages, 1);
    }

    fn reply(&mut self, id: ClientId, reply: Reply<'_>) {
        self.out.send(id, reply.to_line().as_bytes());
    }

    fn error(&mut self, id: ClientId, code: ErrorCode, text: &str) {
        self.reply(id, Reply::Err { code, text });
    }

    fn end_list(&mut self, id: ClientId, list: &str, count: usize) {
        let note = if count > LIST_MAX {
            format!("showing the first {LIST_MAX}")
        } else {
            String::new()
        };
        self.reply(
            id,
            Reply::End {
                list,
                count,
                note: &note,
            },
        );
    }

    // ----- the operator and observers -----

    fn operator(&mut self, table: &mut UserTable, request: OperatorRequest) {
        match request {
            OperatorRequest::Notice { room, text, done } => {
                let _ = done.send(self.notice(table, room.as_deref(), &text));
            }
            OperatorRequest::Whisper { to, text, done } => {
                let text = sanitize_text(&text);
                let result = match table.nick_owner(&to) {
                    _ if text.trim().is_empty() => Err(OperatorError::EmptyText),
                    None => Err(OperatorError::NoSuchUser(to)),
                    Some(target) => {
                        let nick = table.user(target).map_or("", |u| u.nick.as_str());
                        let line = Reply::Dm {
                            from: "server",
                            to: nick,
                            text: &text,
                        };
                        self.out.send(target, line.to_line().as_bytes());
                        Stats::add(&self.stats.messages, 1);
                        Ok(1)
                    }
                };
                let _ = done.send(result);
            }
            OperatorRequest::Kick { nick, reason, done } => {
                let result = match table.nick_owner(&nick) {
                    None => Err(OperatorError::NoSuchUser(nick)),
                    Some(target) => {
                        let reason = sanitize_text(&reason).trim().to_string();
                        self.begin_close(table, target, CloseReason::Kicked(reason));
                        Ok(1)
                    }
                };
                let _ = done.send(result);
            }
            OperatorRequest::Subscribe(observer) => self.observers.push(observer),
        }
    }

    fn notice(
        &mut self,
        table: &UserTable,
        room: Option<&str>,
        text: &str,
    ) -> Result<usize, OperatorError> {
        let text = sanitize_text(text);
        if text.trim().is_empty() {
            return Err(OperatorError::EmptyText);
        }
        let line = Reply::Notice { text: &text }.to_line();
        let recipients: Vec<ClientId> = match room {
            None => table.ids().collect(),
            Some(name) => {
                let room = normalize_room(name).unwrap_or_default();
                if !table.has_room(&room) {
                    return Err(OperatorError::NoSuchRoom(name.to_string()));
                }
                table.members(&room).to_vec()
            }
        };
        self.out.send_all(&recipients, line.as_bytes());
        Ok(recipients.len())
    }

    /// Hands an event to every observer without ever waiting for one: a full observer
    /// misses it, a gone one is forgotten.
    fn notify(&mut self, make: impl FnOnce() -> ChatEvent) {
        if self.observers.is_empty() {
            return;
        }
        let event = make();
        let stats = &self.stats;
        self.observers
            .retain(|observer| match observer.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    Stats::add(&stats.observer_drops, 1);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}
