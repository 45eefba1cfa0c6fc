//! One connection thread: read the socket, frame lines, parse commands, publish events.
//!
//! This is the "thread per connection" of the classic design. The thread blocks in
//! `read` (costing nothing while the client is quiet), and everything it learns goes to
//! the dispatcher as an [`Event`]. It never writes to the socket: all output goes through
//! the dispatcher, so each client receives its lines in one well-defined order.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::command::{parse_line, Command};
use crate::config::Config;
use crate::event::{ClientId, CloseReason, Event};
use crate::frame::{Frame, LineFramer};
use crate::rate::{FloodGuard, Verdict};
use crate::reply::ErrorCode;

/// Bytes read per `read` call. Small, because it lives on every connection thread's
/// stack and touched stack pages are memory; chat lines are short, and a long line
/// simply takes a few reads.
const READ_CHUNK: usize = 1024;

/// Once the connection is closing, stop reading after this long even if the peer
/// neither closes nor is closed by the dispatcher (a backstop; the dispatcher's close
/// grace normally ends it much sooner).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one connection until its socket is closed; publishes `Connected` first and
/// `Closed` last.
pub(crate) fn run_connection(
    id: ClientId,
    stream: Arc<TcpStream>,
    events: Sender<Event>,
    config: Arc<Config>,
) {
    let connected = Event::Connected {
        id,
        transport: stream.clone(),
    };
    if events.send(connected).is_ok() {
        let mut reader = Reader::new(id, &config, events.clone());
        reader.read_until_closed(&stream);
        let _ = events.send(Event::Closed { id });
    }
    // Dropping our `Arc` here; the socket (its one file descriptor) is closed when the
    // dispatcher drops its own, after `Closed`.
}

/// The state of one connection's reading side.
struct Reader {
    id: ClientId,
    events: Sender<Event>,
    framer: LineFramer,
    flood: Option<FloodGuard>,
    idle_timeout: Duration,
    /// When the connection counts as idle: reset by every complete line, and only by
    /// a complete line, so a byte-at-a-time trickle cannot keep it alive.
    idle_deadline: Instant,
    /// The connection is being closed: read and discard until the peer or the
    /// dispatcher closes it. Reading on (instead of closing at once) lets the client
    /// receive its `BYE`: closing a socket with unread input makes the kernel send a
    /// reset, which can destroy the `BYE` before the client reads it.
    draining: bool,
}

impl Reader {
    fn new(id: ClientId, config: &Config, events: Sender<Event>) -> Reader {
        let now = Instant::now();
        Reader {
            id,
            events,
            framer: LineFramer::new(config.max_line, config.max_unterminated),
            flood: config.rate_limit.map(|limit| FloodGuard::new(limit, now)),
            idle_timeout: config.idle_timeout,
            idle_deadline: now + config.idle_timeout,
            draining: false,
        }
    }

    fn read_until_closed(&mut self, stream: &TcpStream) {
        let mut stream: &TcpStream = stream;
        let mut buffer = [0u8; READ_CHUNK];
        let mut frames = Vec::new();
        loop {
            let timeout = if self.draining {
                DRAIN_TIMEOUT
            } else {
                self.idle_deadline.saturating_duration_since(Instant::now())
            };
            // A zero timeout would mean "block forever" to the OS; std refuses it.
            let timeout = timeout.max(Duration::from_millis(1));
            if stream.set_read_timeout(Some(timeout)).is_err() {
                return;
            }
            match stream.read(&mut buffer) {
                Ok(0) => return,
                Ok(_) if self.draining => {}
                Ok(n) => {
                    self.framer.push(&buffer[..n], &mut frames);
                    for frame in frames.drain(..) {
                        if !self.handle(frame) {
                            return; // the dispatcher is gone
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if self.draining {
                        return;
                    }
                    if Instant::now() >= self.idle_deadline {
                        self.fatal(CloseReason::Idle);
                    }
                }
                Err(_) => return, // reset, or closed by the dispatcher
            }
        }
    }

    /// Handles one frame; `false` when the dispatcher has gone away.
    fn handle(&mut self, frame: Frame) -> bool {
        if self.draining {
            return true;
        }
        let event = match frame {
            Frame::Line(bytes) => {
                self.idle_deadline = Instant::now() + self.idle_timeout;
                match self.line_event(bytes) {
                    Some(event) => event,
                    None => return true,
                }
            }
            Frame::TooLong => self.rejected(ErrorCode::LineTooLong, "line too long; dropped"),
            Frame::Unterminated => {
                self.fatal(CloseReason::LineTooLong);
                return true;
            }
        };
        self.events.send(event).is_ok()
    }

    /// What one complete line means, if anything.
    fn line_event(&mut self, bytes: Vec<u8>) -> Option<Event> {
        let Ok(line) = String::from_utf8(bytes) else {
            return Some(self.rejected(ErrorCode::InvalidUtf8, "line is not valid UTF-8; dropped"));
        };
        let command = match parse_line(&line) {
            Ok(Some(command)) => command,
            Ok(None) => return None, // an empty line: nothing to do, and not counted
            Err(error) => return Some(self.rejected(error.code, &error.text)),
        };
        // `/quit` is never rate limited: leaving must always work.
        if !matches!(command, Command::Quit(_)) {
            match self.flood.as_mut().map(|f| f.check(Instant::now())) {
                Some(Verdict::Limited) => {
                    let text = "slow down: too many lines; dropped";
                    return Some(self.rejected(ErrorCode::RateLimited, text));
                }
                Some(Verdict::Disconnect) => {
                    self.fatal(CloseReason::Flooding);
                    return None;
                }
                Some(Verdict::Allowed) | None => {}
            }
        }
        Some(Event::Command {
            id: self.id,
            command,
        })
    }

    fn rejected(&self, code: ErrorCode, text: &str) -> Event {
        Event::Rejected {
            id: self.id,
            code,
            text: text.to_string(),
        }
    }

    /// Asks the dispatcher to close this connection, then keeps draining input.
    fn fatal(&mut self, reason: CloseReason) {
        if !self.draining {
            self.draining = true;
            let _ = self.events.send(Event::Fatal {
                id: self.id,
                reason,
            });
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
