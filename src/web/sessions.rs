//! HTTP polling sessions: the "HTTP programming" side of the socket-versus-HTTP
//! comparison.
//!
//! A session is a user like any other (an alias, the lobby, `JOIN` and `LEAVE` seen by
//! the others), but with no connection of its own: the dispatcher writes its lines into
//! a bounded buffer ([`SessionLines`], its [`Transport`]), and the client fetches them
//! with requests, each line numbered so that a request says where it stopped
//! (`since=N`). A fetch answers at once when lines are waiting; otherwise it waits up
//! to `wait=S` seconds for the next one (long polling), or returns nothing at once
//! (short polling, `wait=0`).
//!
//! Limits, as for a TCP client:
//!
//! - the buffer holds at most `--max-pending` bytes not yet fetched; a client that stops
//!   fetching fills it, and is dropped as `too slow` after `--send-timeout`;
//! - lines sent go through the same [`Reader`] (flood limit, idle timeout);
//! - `--max-per-ip` sessions per address, `--max-clients` in all;
//! - a client that makes no request for [`WebConfig::session_gone`](super::WebConfig)
//!   is gone (`connection closed`).
//!
//! The `web-sessions` thread expires sessions; the token that names a session is its
//! only credential, so it is long and unpredictable.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use super::Context;
use crate::config::Config;
use crate::connection::Reader;
use crate::event::{ClientId, CloseReason, Event, IdSource};
use crate::frame::{Frame, LineFramer};
use crate::limits::{connection_cap, Sources};
use crate::transport::Transport;

/// Every session, by token.
pub(crate) struct Sessions {
    state: Mutex<Table>,
    events: Sender<Event>,
    ids: Arc<IdSource>,
    config: Arc<Config>,
    max_sessions: usize,
    /// `--max-per-ip`, counted with the address's TCP and WebSocket users.
    users: Arc<Sources>,
}

#[derive(Default)]
struct Table {
    by_token: HashMap<String, Arc<Session>>,
    /// Sessions being created (counted, not yet in `by_token`).
    reserved: usize,
}

/// One polling user.
struct Session {
    id: ClientId,
    source: IpAddr,
    lines: Arc<SessionLines>,
    /// The same line handling as a TCP client's: flood limit, idle deadline, `/quit`.
    reader: Mutex<(Reader, LineFramer)>,
    /// When the client last made a request.
    last_request: Mutex<Instant>,
}

/// What [`Sessions::create`] did.
pub(crate) enum Created {
    /// A new session, with its token.
    Session(String),
    /// `--max-per-ip` sessions already come from this address.
    TooManyFromSource,
    /// `--max-clients` sessions exist.
    Full,
    /// The dispatcher has stopped.
    DispatcherGone,
    /// The kernel's random generator could not be read (no `/dev/urandom`).
    NoToken,
}

/// What [`Sessions::send`] did with a line.
pub(crate) enum Sent {
    /// Handed to the dispatcher (an error, if any, arrives as an `ERR` line).
    Accepted,
    /// Over the flood limit: dropped.
    RateLimited,
    /// Over `--max-line`: dropped.
    TooLong,
    /// No session has that token.
    NoSuchSession,
}

/// What one poll found.
pub(crate) struct Fetched {
    /// The lines from the requested number on.
    pub(crate) lines: Vec<String>,
    /// The number to ask for next time.
    pub(crate) next: u64,
    /// The session has ended (`BYE` is the last line): there is nothing more to fetch.
    pub(crate) ended: bool,
}

impl Sessions {
    pub(crate) fn new(
        config: &Arc<Config>,
        events: Sender<Event>,
        ids: Arc<IdSource>,
        users: Arc<Sources>,
    ) -> Sessions {
        Sessions {
            state: Mutex::new(Table::default()),
            events,
            ids,
            config: Arc::clone(config),
            max_sessions: connection_cap(config.max_clients).max_clients,
            users,
        }
    }

    /// A new session: a user the dispatcher greets (its `HELLO` is line 0).
    pub(crate) fn create(&self, source: IpAddr) -> Created {
        // The counts are checked and a place reserved under the lock; the rest happens
        // without it, because `Connected` goes into the dispatcher's bounded queue and
        // may wait there, and every other session's requests need this lock.
        {
            let mut table = self.state.lock();
            if table.by_token.len() + table.reserved >= self.max_sessions {
                return Created::Full;
            }
            if !self.users.take(source) {
                return Created::TooManyFromSource;
            }
            table.reserved += 1;
        }
        let made = self.greet(source);
        let mut table = self.state.lock();
        table.reserved -= 1;
        match made {
            Ok((token, session)) => {
                table.by_token.insert(token.clone(), Arc::new(session));
                Created::Session(token)
            }
            Err(why) => {
                self.users.give_back(source);
                why
            }
        }
    }

    /// A token, and the dispatcher told of a new user.
    fn greet(&self, source: IpAddr) -> Result<(String, Session), Created> {
        let token = mint_token().map_err(|e| {
            log::error!("could not make a session token: {e}");
            Created::NoToken
        })?;
        let id = self.ids.next();
        let lines = Arc::new(SessionLines::new(self.config.max_pending));
        let connected = Event::Connected {
            id,
            transport: lines.clone(),
        };
        if self.events.send(connected).is_err() {
            return Err(Created::DispatcherGone);
        }
        log::debug!("{id} is a polling session");
        let session = Session {
            id,
            source,
            lines,
            reader: Mutex::new((
                Reader::new(id, &self.config, self.events.clone()),
                LineFramer::new(self.config.max_line, self.config.max_unterminated),
            )),
            last_request: Mutex::new(Instant::now()),
        };
        Ok((token, session))
    }

    /// The session with this token, marked as just heard from.
    fn touch(&self, token: &str) -> Option<Arc<Session>> {
        let session = Arc::clone(self.state.lock().by_token.get(token)?);
        *session.last_request.lock() = Instant::now();
        Some(session)
    }

    /// One line from the client (a trailing line end is allowed).
    pub(crate) fn send(&self, token: &str, body: &[u8]) -> Sent {
        let Some(session) = self.touch(token) else {
            return Sent::NoSuchSession;
        };
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.len() > self.config.max_line {
            return Sent::TooLong;
        }
        // One request is one line: a line end inside is just a character to drop.
        let line: Vec<u8> = body.iter().copied().filter(|&b| b != b'\n').collect();
        let mut guard = session.reader.lock();
        let (reader, _) = &mut *guard;
        reader.handle(Frame::Line(line));
        if reader.take_over_budget() {
            Sent::RateLimited
        } else {
            Sent::Accepted
        }
    }

    /// The lines from number `since` on, waiting up to `wait` for one when there are
    /// none yet. `None`: no such session.
    pub(crate) fn poll(&self, token: &str, since: u64, wait: Duration) -> Option<Fetched> {
        let session = self.touch(token)?;
        // Heard from until the poll ends, so the reaper never takes a session in the
        // middle of a long poll, whatever `session_gone` is.
        *session.last_request.lock() = Instant::now() + wait;
        let fetched = session.lines.fetch(since, Instant::now() + wait);
        *session.last_request.lock() = Instant::now();
        if fetched.ended {
            // The client has its `BYE`: the session is over.
            self.remove(token);
        }
        Some(fetched)
    }

    /// Forgets a session and tells the dispatcher its "connection" is closed.
    fn remove(&self, token: &str) {
        let mut table = self.state.lock();
        let Some(session) = table.by_token.remove(token) else {
            return;
        };
        drop(table);
        self.users.give_back(session.source);
        session.lines.close();
        let _ = self.events.send(Event::Closed { id: session.id });
    }

    /// Ends the sessions that are idle (no line for `--idle-timeout`: `BYE idle`, as
    /// for TCP) or gone (no request for `gone_after`).
    fn expire(&self, now: Instant, gone_after: Duration) {
        let sessions: Vec<(String, Arc<Session>)> = self
            .state
            .lock()
            .by_token
            .iter()
            .map(|(token, session)| (token.clone(), Arc::clone(session)))
            .collect();
        for (token, session) in sessions {
            let last_request = *session.last_request.lock();
            if now.duration_since(last_request) >= gone_after {
                log::debug!("{} gone: no request for {gone_after:?}", session.id);
                self.remove(&token);
                continue;
            }
            let mut guard = session.reader.lock();
            let (reader, _) = &mut *guard;
            if now >= reader.idle_deadline() && !reader.is_draining() {
                reader.fatal(CloseReason::Idle);
            }
        }
    }
}

/// How often the `web-sessions` thread looks for expired sessions: a fraction of the
/// shortest timeout, so an expiry is late by at most that.
fn reaper_tick(config: &Config, gone_after: Duration) -> Duration {
    (config.idle_timeout.min(gone_after) / 8)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Starts the `web-sessions` thread; it ends when `stop` disconnects.
pub(super) fn start_reaper(
    context: Arc<Context>,
    stop: Receiver<()>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("web-sessions".into())
        .spawn(move || {
            let gone_after = context.web.session_gone;
            let tick = reaper_tick(&context.config, gone_after);
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
                context.sessions.expire(Instant::now(), gone_after);
            }
        })
}

/// 128 bits from the kernel's random generator, in hex. A token is a session's only
/// credential, so it must be unguessable: `/dev/urandom` is the kernel's CSPRNG (std has
/// no public random generator, and its hasher's algorithm is unspecified, so it is not
/// one to lean on).
fn mint_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A session's output: the dispatcher writes lines in, polls take them out.
pub(crate) struct SessionLines {
    state: Mutex<Buffer>,
    /// Notified when lines arrive or the session ends: what a long poll waits on.
    arrived: Condvar,
    max_bytes: usize,
}

#[derive(Default)]
struct Buffer {
    /// Lines not yet acknowledged; the first has number `first`.
    lines: VecDeque<String>,
    first: u64,
    /// Bytes in `lines`.
    bytes: usize,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// No more lines will come.
    ended: bool,
}

impl SessionLines {
    fn new(max_bytes: usize) -> SessionLines {
        SessionLines {
            state: Mutex::new(Buffer::default()),
            arrived: Condvar::new(),
            max_bytes,
        }
    }

    /// The lines from number `since` on; lines before it are acknowledged and dropped.
    /// Waits until `deadline` when there are none.
    fn fetch(&self, since: u64, deadline: Instant) -> Fetched {
        let mut buffer = self.state.lock();
        loop {
            let next = buffer.first + buffer.lines.len() as u64;
            let since = since.min(next);
            while buffer.first < since {
                if let Some(line) = buffer.lines.pop_front() {
                    buffer.bytes -= line.len();
                }
                buffer.first += 1;
            }
            if !buffer.lines.is_empty() || buffer.ended {
                return Fetched {
                    lines: buffer.lines.iter().cloned().collect(),
                    next,
                    ended: buffer.ended,
                };
            }
            if self.arrived.wait_until(&mut buffer, deadline).timed_out() {
                return Fetched {
                    lines: Vec::new(),
                    next,
                    ended: false,
                };
            }
        }
    }

    fn close(&self) {
        self.state.lock().ended = true;
        self.arrived.notify_all();
    }
}

impl Transport for SessionLines {
    /// Takes the complete lines that fit in the buffer; `WouldBlock` when none does, as
    /// a full socket would (the client is not fetching).
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut buffer = self.state.lock();
        if buffer.ended {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut accepted = 0;
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let Some(end) = chunk.strip_suffix(b"\n") else {
                buffer.partial.extend_from_slice(chunk);
                accepted += chunk.len();
                break;
            };
            let length = buffer.partial.len() + end.len();
            if buffer.bytes + length > self.max_bytes && !buffer.lines.is_empty() {
                break;
            }
            let mut line = std::mem::take(&mut buffer.partial);
            line.extend_from_slice(end);
            buffer.bytes += line.len();
            buffer
                .lines
                .push_back(String::from_utf8_lossy(&line).into_owned());
            accepted += chunk.len();
        }
        if accepted > 0 {
            self.arrived.notify_all();
        }
        if accepted == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    fn finish(&self) {
        self.close();
    }

    fn close(&self) {
        SessionLines::close(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_acknowledged_and_bounded() {
        let lines = SessionLines::new(13);
        assert_eq!(lines.send(b"HELLO a\nJO").unwrap(), 10);
        assert_eq!(lines.send(b"IN x\n").unwrap(), 5);
        let now = Instant::now();
        let fetched = lines.fetch(0, now);
        assert_eq!(fetched.lines, ["HELLO a", "JOIN x"]);
        assert_eq!((fetched.next, fetched.ended), (2, false));
        // Full (13 bytes waiting, 5 more would pass 13): nothing fits until acknowledged.
        let full = lines.send(b"MSG 1\n").unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        assert!(lines.fetch(2, now).lines.is_empty());
        assert_eq!(lines.send(b"MSG 1\n").unwrap(), 6);
        let fetched = lines.fetch(2, now);
        assert_eq!((fetched.lines.len(), fetched.next), (1, 3));
        lines.finish();
        assert!(lines.fetch(3, now).ended);
        assert!(lines.send(b"x\n").is_err());
    }
}
