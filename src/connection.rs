//! One connection thread: read the socket, frame lines, parse commands, publish events.
//!
//! This is the "thread per connection" of the classic design. The thread blocks in
//! `read` (costing nothing while the client is quiet), and everything it learns goes to
//! the dispatcher as an [`Event`]. It never writes to the socket: all output goes through
//! the dispatcher, so each client receives its lines in one well-defined order.

use std::io::{self, Read};
use std::mem;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::command::{parse_line, Command};
use crate::config::Config;
use crate::event::{ClientId, CloseReason, Event};
use crate::frame::{Frame, LineFramer};
use crate::rate::{FloodGuard, Verdict};
use crate::reply::ErrorCode;
use crate::transport::{TcpConnection, SMALLEST_WRITE_TIMEOUT};

/// Bytes read per `read` call. Small, because it lives on every connection thread's
/// stack and touched stack pages are memory; chat lines are short, and a long line
/// simply takes a few reads.
const READ_CHUNK: usize = 1024;

/// Once the connection is closing, stop reading after this long even if the peer
/// neither closes nor is closed by the dispatcher, and even if it keeps sending (a
/// backstop; the dispatcher's close grace normally ends it much sooner).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// While closing, the pause after each read that brought data: the bytes are thrown
/// away, so there is no hurry, and a client that floods on gets no more of our time.
const DRAIN_PAUSE: Duration = Duration::from_millis(50);

/// Runs one connection until its socket is closed; publishes `Closed` last.
///
/// The acceptor has already published `Connected` (and the dispatcher has greeted the
/// client, maybe long before this thread existed), so every event this thread sends
/// comes after it.
pub(crate) fn run_connection(
    id: ClientId,
    connection: Arc<TcpConnection>,
    events: Sender<Event>,
    config: Arc<Config>,
) {
    // Sends `Closed` when this function ends, however it ends, even by a panic: the
    // dispatcher must always hear that the reader is gone, or the user would linger.
    let _closed = SendOnDrop {
        events: events.clone(),
        id,
    };
    // Set here rather than by the acceptor, which must stay as quick as it can (see
    // `acceptor.rs`); the dispatcher's first writes do not depend on them.
    if let Err(e) = configure(connection.stream()) {
        log::debug!("{id}: could not configure the socket (gone already?): {e}");
    }
    let mut reader = Reader::new(id, &config, events);
    reader.read_until_closed(&connection);
    // Dropping our `Arc` here; the socket (its one file descriptor) is closed when the
    // dispatcher drops its own, after `Closed`.
}

/// Socket options every client connection gets.
fn configure(stream: &TcpStream) -> io::Result<()> {
    // Chat lines are small and interactive: send them at once rather than waiting to
    // fill a packet (Nagle). Our own batching already coalesces under load.
    stream.set_nodelay(true)?;
    // Writes are non-blocking (see `transport.rs`); this timeout is the backstop that
    // bounds a write that would block after all.
    stream.set_write_timeout(Some(SMALLEST_WRITE_TIMEOUT))
}

/// Publishes `Closed` for its connection when dropped.
pub(crate) struct SendOnDrop {
    pub(crate) events: Sender<Event>,
    pub(crate) id: ClientId,
}

impl Drop for SendOnDrop {
    fn drop(&mut self) {
        // An error means the dispatcher is gone already: nobody left to tell.
        let _ = self.events.send(Event::Closed { id: self.id });
    }
}

/// The state of one connection's reading side: what each complete line means (the
/// flood limit, the idle deadline, `/quit`, the events to publish). The TCP read loop
/// below drives it; so do the web listener's WebSocket and polling clients (feature
/// `web`), which is how they get the very same limits.
pub(crate) struct Reader {
    id: ClientId,
    events: Sender<Event>,
    framer: LineFramer,
    flood: Option<FloodGuard>,
    idle_timeout: Duration,
    /// When the connection counts as idle: reset by every complete line, and only by
    /// a complete line, so a byte-at-a-time trickle cannot keep it alive.
    idle_deadline: Instant,
    /// The connection is being closed: read and discard until the peer or the
    /// dispatcher closes it, or until this deadline. Reading on (instead of closing at
    /// once) lets the client receive its `BYE`: closing a socket with unread input
    /// makes the kernel send a reset, which can destroy the `BYE` before the client
    /// reads it.
    draining_until: Option<Instant>,
    /// A line of the last read was over the flood limit.
    over_budget: bool,
}

impl Reader {
    pub(crate) fn new(id: ClientId, config: &Config, events: Sender<Event>) -> Reader {
        let now = Instant::now();
        Reader {
            id,
            events,
            framer: LineFramer::new(config.max_line, config.max_unterminated),
            flood: config.rate_limit.map(|limit| FloodGuard::new(limit, now)),
            idle_timeout: config.idle_timeout,
            idle_deadline: now + config.idle_timeout,
            draining_until: None,
            over_budget: false,
        }
    }

    fn read_until_closed(&mut self, connection: &TcpConnection) {
        let mut stream: &TcpStream = connection.stream();
        let mut buffer = [0u8; READ_CHUNK];
        let mut frames = Vec::new();
        loop {
            let now = Instant::now();
            let deadline = match self.draining_until {
                Some(deadline) if now >= deadline => return,
                Some(deadline) => deadline,
                None => self.idle_deadline,
            };
            // The timeout is what makes the idle limit fire while we block in `read`. It
            // is set before every read because the deadline moves with each complete line;
            // one `setsockopt` costs well under a microsecond, next to a read that wakes a
            // thread. A zero timeout would mean "block forever" to the OS; std refuses it.
            let timeout = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if stream.set_read_timeout(Some(timeout)).is_err() {
                return;
            }
            match stream.read(&mut buffer) {
                Ok(0) => return,
                Ok(_) if self.draining_until.is_some() => {
                    // Read only to keep the socket open for the `BYE`, and slowly: a
                    // client that goes on flooding gets no more of our time.
                    thread::sleep(DRAIN_PAUSE);
                }
                Ok(n) => {
                    self.framer.push(&buffer[..n], &mut frames);
                    for frame in frames.drain(..) {
                        if !self.handle(frame) {
                            return; // the dispatcher is gone
                        }
                    }
                    self.pause_if_over_budget();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    // The deadlines are checked against the clock, not trusted to the
                    // error: a `WouldBlock` also comes back, early, when a write has left
                    // the socket in non-blocking mode (see `transport.rs`). Then the
                    // socket goes back to blocking mode and we read again.
                    let now = Instant::now();
                    if now < deadline {
                        if connection.make_blocking().is_err() {
                            return;
                        }
                    } else if self.draining_until.is_none() {
                        self.fatal(CloseReason::Idle);
                    }
                }
                Err(_) => return, // reset, or closed by the dispatcher
            }
        }
    }

    /// After a read that held lines over the flood limit, stops reading until the
    /// client has earned a line again (at most `FloodGuard::MAX_PAUSE`). Meanwhile the
    /// kernel's receive buffer fills and TCP makes the flooder wait: refusing a flood
    /// costs this server one read per pause, not one event per line.
    pub(crate) fn pause_if_over_budget(&mut self) {
        if !mem::take(&mut self.over_budget) || self.draining_until.is_some() {
            return;
        }
        if let Some(flood) = &self.flood {
            let wait = flood.until_next_token(Instant::now());
            thread::sleep(wait.min(FloodGuard::MAX_PAUSE));
        }
    }

    /// When the connection counts as idle (moved on by every complete line).
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    pub(crate) fn idle_deadline(&self) -> Instant {
        self.idle_deadline
    }

    /// Whether the connection is closing (after `/quit`, or a fatal limit).
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    pub(crate) fn is_draining(&self) -> bool {
        self.draining_until.is_some()
    }

    /// Whether a line since the last call was over the flood limit (and dropped).
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    pub(crate) fn take_over_budget(&mut self) -> bool {
        mem::take(&mut self.over_budget)
    }

    /// Handles one frame; `false` when the dispatcher has gone away.
    pub(crate) fn handle(&mut self, frame: Frame) -> bool {
        if self.draining_until.is_some() {
            return true;
        }
        let bytes = match frame {
            Frame::Line(bytes) => {
                self.idle_deadline = Instant::now() + self.idle_timeout;
                bytes
            }
            Frame::TooLong => {
                if !self.within_rate(None) {
                    return self.answer_limited();
                }
                return self.send_rejected(ErrorCode::LineTooLong, "line too long; dropped");
            }
            Frame::Unterminated => {
                self.fatal(CloseReason::LineTooLong);
                return true;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return true; // an empty line: nothing to do, and not counted
        }
        // Every line counts against the flood limit, valid or not: a flood of garbage
        // costs the dispatcher as much as a flood of chat. Only `/quit` is exempt.
        if !self.within_rate(Some(&bytes)) {
            return self.answer_limited();
        }
        let Ok(line) = String::from_utf8(bytes) else {
            return self.send_rejected(ErrorCode::InvalidUtf8, "line is not valid UTF-8; dropped");
        };
        match parse_line(&line) {
            Ok(Some(command)) => {
                if matches!(command, Command::Quit(_)) {
                    // Nothing after /quit matters; read on only to let the BYE arrive.
                    self.start_draining();
                }
                self.events
                    .send(Event::Command {
                        id: self.id,
                        command,
                    })
                    .is_ok()
            }
            Ok(None) => true,
            Err(error) => self.send_rejected(error.code, &error.text),
        }
    }

    /// A WebSocket ping or pong (feature `web`): no line, but it costs the server a
    /// write (the pong), so it counts against the flood limit like a line, and over the
    /// limit reading pauses as it does for lines (a long flood ends in `BYE flooding`).
    #[cfg_attr(not(feature = "web"), allow(dead_code))]
    pub(crate) fn count_control_frame(&mut self) {
        if !self.within_rate(None) {
            self.pause_if_over_budget();
        }
    }

    /// Checks the flood limit for one line (`None`: a line too long to keep). `false`
    /// means "drop it"; when the flooding has lasted too long this also starts closing.
    fn within_rate(&mut self, line: Option<&[u8]>) -> bool {
        if line.is_some_and(is_quit) {
            return true;
        }
        let Some(flood) = self.flood.as_mut() else {
            return true;
        };
        match flood.check(Instant::now()) {
            Verdict::Allowed => true,
            Verdict::Limited => {
                self.over_budget = true;
                false
            }
            Verdict::Disconnect => {
                self.fatal(CloseReason::Flooding);
                false
            }
        }
    }

    /// A line was dropped by the flood limit: answers `ERR rate-limited`, but at most
    /// once a second, so a flood costs the dispatcher almost nothing. `false` when the
    /// dispatcher has gone away.
    fn answer_limited(&mut self) -> bool {
        if self.draining_until.is_some() {
            return true; // closing for flooding: the `BYE` says it all
        }
        let answer = self
            .flood
            .as_mut()
            .is_some_and(|flood| flood.should_answer(Instant::now()));
        !answer || self.send_rejected(ErrorCode::RateLimited, RATE_LIMITED)
    }

    /// Tells the dispatcher to answer `ERR`; `false` when the dispatcher has gone away.
    fn send_rejected(&self, code: ErrorCode, text: &str) -> bool {
        let event = Event::Rejected {
            id: self.id,
            code,
            text: text.to_string(),
        };
        self.events.send(event).is_ok()
    }

    /// Asks the dispatcher to close this connection, then keeps draining input.
    pub(crate) fn fatal(&mut self, reason: CloseReason) {
        if self.draining_until.is_none() {
            self.start_draining();
            let _ = self.events.send(Event::Fatal {
                id: self.id,
                reason,
            });
        }
    }

    fn start_draining(&mut self) {
        self.draining_until = Some(Instant::now() + DRAIN_TIMEOUT);
    }
}

/// The `ERR rate-limited` text.
const RATE_LIMITED: &str = "slow down: too many lines; dropped";

/// Whether a raw line is `/quit` (any case, with or without a reason), which the flood
/// limit never blocks: leaving must always work.
fn is_quit(line: &[u8]) -> bool {
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or(&[]);
    word.eq_ignore_ascii_case(b"/quit")
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
