//! [`WsConnection`]: how the dispatcher writes to a WebSocket client, without ever
//! waiting for it.
//!
//! # Why frames are written here, and not by a thread per client
//!
//! The dispatcher writes every client itself, and a write must never wait (see
//! [`TcpConnection`]). Two ways keep that true for a WebSocket:
//!
//! - a bounded queue per client, written by a writer thread of its own: a second thread
//!   per WebSocket user, and a thread wake-up per delivery, which is what the project
//!   measured to be the expensive part (see `src/outbox.rs`);
//! - or encode each line as a text frame (tungstenite's [`Frame`] API) and write the
//!   frame bytes without blocking, exactly as a TCP client's line.
//!
//! This is the second. The outbox already queues, bounds and retries a client's bytes;
//! this transport only turns its lines into frames, one line at a time, and tells the
//! outbox it took a line only once the line's whole frame is in the socket. A frame the
//! socket took only in part waits in `unsent` and goes before anything else; its line
//! stays in the outbox (which therefore backs up, so the flusher comes back), and is
//! counted as taken, without being framed again, once the rest of its frame is out.
//! So nothing waits here unseen by the outbox, and the slow-reader rules apply
//! unchanged. Control frames from the reader side (tungstenite's automatic pong,
//! the reply to a client's close) go through the same `unsent`, so frames never
//! interleave.

use std::io;
use std::mem;
use std::sync::Arc;

use parking_lot::Mutex;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};

use crate::transport::{TcpConnection, Transport};

/// Most bytes of control frames (pongs) that may wait for a client that does not read;
/// past it, tungstenite keeps its pong and retries later.
const CONTROL_BACKLOG: usize = 4096;

/// A WebSocket client's connection, as a [`Transport`]: each line the dispatcher writes
/// becomes one text frame.
pub struct WsConnection {
    tcp: Arc<TcpConnection>,
    out: Mutex<Framing>,
}

#[derive(Default)]
struct Framing {
    /// Frame bytes not yet taken by the socket: they go first.
    unsent: Vec<u8>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The length of the line (newline included) whose frame went out only in part:
    /// still at the front of the outbox, already framed in `unsent`.
    framed_ahead: usize,
    /// The reason of the last `BYE` line sent: the close frame carries it.
    bye: Option<String>,
    /// The close frame is queued: nothing more may be written.
    finished: bool,
}

impl WsConnection {
    /// Wraps the connection of a completed upgrade.
    pub(crate) fn new(tcp: Arc<TcpConnection>) -> WsConnection {
        WsConnection {
            tcp,
            out: Mutex::new(Framing::default()),
        }
    }

    /// The TCP connection underneath, for the reader.
    pub(crate) fn tcp(&self) -> &TcpConnection {
        &self.tcp
    }

    /// Control frames that tungstenite (on the reader's side) wants written. All or
    /// nothing, so a frame is never split between two writers.
    pub(crate) fn write_control(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut out = self.out.lock();
        if out.finished {
            return Ok(bytes.len()); // our close frame is out: nothing may follow it
        }
        if out.unsent.len() + bytes.len() > CONTROL_BACKLOG.max(bytes.len()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        out.unsent.extend_from_slice(bytes);
        self.write_unsent(&mut out)?;
        Ok(bytes.len())
    }

    /// Writes as much of `unsent` as the socket takes now.
    fn write_unsent(&self, out: &mut Framing) -> io::Result<()> {
        while !out.unsent.is_empty() {
            match self.tcp.send(&out.unsent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_full(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Transport for WsConnection {
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut out = self.out.lock();
        if out.finished {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.write_unsent(&mut out)?;
        if !out.unsent.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // The line whose frame was out in part last time is at the front of `bytes`:
        // its frame is now complete, so it is taken, without framing it again.
        let mut taken = mem::take(&mut out.framed_ahead).min(bytes.len());
        for chunk in bytes[taken..].split_inclusive(|&b| b == b'\n') {
            let Some(end) = chunk.strip_suffix(b"\n") else {
                out.partial.extend_from_slice(chunk);
                taken += chunk.len();
                break;
            };
            let mut line = mem::take(&mut out.partial);
            line.extend_from_slice(end);
            // The dispatcher writes valid UTF-8; lossy only so a bug cannot panic here.
            let text = String::from_utf8_lossy(&line).into_owned();
            if let Some(reason) = text.strip_prefix("BYE ") {
                out.bye = Some(reason.to_string());
            }
            let frame = Frame::message(text, OpCode::Data(Data::Text), true);
            frame
                .format(&mut out.unsent)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.write_unsent(&mut out)?;
            if !out.unsent.is_empty() {
                // The socket is full in the middle of this line's frame.
                out.framed_ahead = chunk.len();
                break;
            }
            taken += chunk.len();
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// The close frame, carrying the `BYE` reason, after everything sent; then a FIN
    /// once it is out. A client that does not read may miss it: the dispatcher closes
    /// the connection after its close grace anyway.
    fn finish(&self) {
        let mut out = self.out.lock();
        if out.finished {
            return;
        }
        let reason = out.bye.take().unwrap_or_default();
        let close = Frame::close(Some(CloseFrame {
            code: close_code(&reason),
            reason: truncate(&reason, 123).into(),
        }));
        let _ = close.format(&mut out.unsent);
        out.finished = true;
        if self.write_unsent(&mut out).is_ok() && out.unsent.is_empty() {
            self.tcp.finish();
        }
    }

    fn close(&self) {
        self.tcp.close();
    }
}

/// The close code for a `BYE` reason (RFC 6455, 7.4.1).
pub(crate) fn close_code(reason: &str) -> CloseCode {
    match reason {
        r if r == "quit" || r.starts_with("quit:") => CloseCode::Normal,
        "server shutting down" => CloseCode::Away,
        "server full" | "too many connections from your address" => CloseCode::Again,
        "line too long" => CloseCode::Size,
        "invalid utf-8" => CloseCode::Invalid, // 1007, as RFC 6455 asks
        _ => CloseCode::Policy,                // idle, too slow, flooding, kicked
    }
}

/// At most `max` bytes of `text`, cut at a character boundary (a close frame's reason
/// may hold 123 bytes).
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn is_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_the_bye_reason() {
        assert_eq!(close_code("quit"), CloseCode::Normal);
        assert_eq!(close_code("quit: bye all"), CloseCode::Normal);
        assert_eq!(close_code("server shutting down"), CloseCode::Away);
        assert_eq!(close_code("idle"), CloseCode::Policy);
        assert_eq!(close_code("line too long"), CloseCode::Size);
        assert_eq!(close_code("invalid utf-8"), CloseCode::Invalid);
        assert_eq!(truncate("밤손님", 4), "밤");
    }
}
