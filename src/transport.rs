//! Where a client's output goes: a [`Transport`].
//!
//! For a real client it is a [`TcpConnection`]: the `TcpStream` itself, shared (through
//! an `Arc`) between the connection thread, which reads it, and the dispatcher, the
//! writer and the flusher, which write it. `&TcpStream`
//! implements both `Read` and `Write`, so one socket needs **one file descriptor**, not
//! the two a `try_clone` would cost: with an open-file limit of 20,000 that is the
//! difference between ~19,900 and ~9,900 possible users.
//!
//! [`ChannelTransport`] is the socket-free stand-in: each line the dispatcher would
//! write arrives on a crossbeam channel, which is how a program (or a test) drives the
//! dispatcher without any network.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

/// A client's outgoing byte stream, as the dispatcher sees it.
pub trait Transport: Send + Sync {
    /// Writes a prefix of `bytes` and returns its length, **without waiting long**:
    /// `Err(WouldBlock)` or `Err(TimedOut)` when nothing fits now. A short count means
    /// the rest did not fit.
    fn send(&self, bytes: &[u8]) -> io::Result<usize>;
    /// No more output will follow: end the stream once what was sent is delivered
    /// (TCP: `shutdown(Write)`, a FIN after the data).
    fn finish(&self);
    /// Close both directions now. For TCP this also wakes the connection thread blocked
    /// reading the socket, which is how the dispatcher ends a connection.
    fn close(&self);
}

/// The smallest write timeout the OS takes (std turns it into 1 µs, the kernel rounds
/// it up to one scheduler tick). Writes to clients are non-blocking (see
/// [`TcpConnection`]); this bounds the rare one that blocks after all, and the one
/// `BYE` written to a refused connection.
pub(crate) const SMALLEST_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_nanos(1);

/// A client's TCP socket, shared (through an `Arc`) by its connection thread, which
/// reads it, and the threads that write it.
///
/// # Why writes switch the socket to non-blocking mode
///
/// The connection thread blocks in `read` on this socket, and `O_NONBLOCK` belongs to
/// the one file description both share, so the socket must be blocking for the reader.
/// A blocking write to a full socket, though, waits: even with the smallest
/// `SO_SNDTIMEO` that is one kernel tick (4–12 ms here), and a few hundred clients that
/// stop reading at once would freeze the dispatcher for seconds. So writes happen in
/// non-blocking mode: a full socket answers `WouldBlock` at once (or takes what fits).
///
/// Linux looks at the flag when a call starts, so a read that is already blocked is not
/// disturbed by it. The socket is switched only when it is not in the wanted mode
/// already (`nonblocking` remembers which): a client that only listens, the common
/// case, costs no switch at all after its first write. A read that starts while the
/// socket is non-blocking returns `WouldBlock` at once; the connection thread then
/// calls [`TcpConnection::make_blocking`] and reads again.
///
/// The two threads can race: a write may find the flag set just as the reader turns
/// the socket back to blocking. That one write is then blocking, which costs at most
/// the one tick of `SO_SNDTIMEO` (set by the connection thread), and only if the
/// socket is full at that very moment; the next write switches again. Rare, and
/// bounded to one write per line the client sends.
#[derive(Debug)]
pub struct TcpConnection {
    stream: TcpStream,
    /// Whether the socket was last switched to non-blocking mode (by a write).
    nonblocking: AtomicBool,
}

impl TcpConnection {
    /// Wraps an accepted, blocking stream.
    pub fn new(stream: TcpStream) -> TcpConnection {
        TcpConnection {
            stream,
            nonblocking: AtomicBool::new(false),
        }
    }

    /// The socket itself, for reading.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Puts the socket back into blocking mode, for the reader: a read returned
    /// `WouldBlock` before its deadline, because a write left the socket non-blocking.
    pub fn make_blocking(&self) -> io::Result<()> {
        // The switch first, the flag second: a writer that looks at the flag in
        // between still believes the socket non-blocking and skips its switch, but
        // only for that one write; any later writer sees the flag clear and switches.
        // (The other order could leave the flag set on a blocking socket for good.)
        self.stream.set_nonblocking(false)?;
        self.nonblocking.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl Transport for TcpConnection {
    /// A write that never waits (see the type's documentation).
    ///
    /// A write to a peer that has gone returns an error (`EPIPE`, `ECONNRESET`) rather
    /// than killing the process with `SIGPIPE`, because the Rust runtime ignores that
    /// signal in every Rust program before `main` starts.
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        if !self.nonblocking.swap(true, Ordering::SeqCst) {
            self.stream.set_nonblocking(true)?;
        }
        let mut stream: &TcpStream = &self.stream;
        stream.write(bytes)
    }

    fn finish(&self) {
        // Errors mean the peer is already gone, which is what we wanted anyway.
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A [`Transport`] that hands every complete line to a crossbeam channel.
///
/// The channel is bounded: when the receiver stops taking lines, `send` reports
/// `WouldBlock`, exactly like a TCP client that stops reading. `finish` and `close`
/// disconnect the channel, so the receiver sees the end of the stream.
pub struct ChannelTransport {
    state: Mutex<ChannelState>,
}

struct ChannelState {
    lines: Option<Sender<String>>,
    /// The start of a line whose end has not been sent yet.
    partial: Vec<u8>,
}

impl ChannelTransport {
    /// A transport whose lines (without their LF) arrive on the returned receiver, which
    /// holds at most `capacity` lines before the transport reports it full.
    pub fn new(capacity: usize) -> (ChannelTransport, Receiver<String>) {
        let (lines, receiver) = crossbeam_channel::bounded(capacity);
        let transport = ChannelTransport {
            state: Mutex::new(ChannelState {
                lines: Some(lines),
                partial: Vec::new(),
            }),
        };
        (transport, receiver)
    }
}

impl Transport for ChannelTransport {
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        let ChannelState { lines, partial } = &mut *state;
        let Some(lines) = lines else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let mut accepted = 0;
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let Some(body) = chunk.strip_suffix(b"\n") else {
                // An unfinished line: keep it until its end arrives.
                partial.extend_from_slice(chunk);
                accepted += chunk.len();
                break;
            };
            partial.extend_from_slice(body);
            let line = String::from_utf8_lossy(partial).into_owned();
            match lines.try_send(line) {
                Ok(()) => {
                    partial.clear();
                    accepted += chunk.len();
                }
                Err(TrySendError::Full(_)) => {
                    partial.truncate(partial.len() - body.len());
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
        }
        if accepted == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    fn finish(&self) {
        self.state.lock().lines = None;
    }

    fn close(&self) {
        self.state.lock().lines = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_transport_splits_lines_and_reports_full() {
        let (transport, lines) = ChannelTransport::new(2);
        assert_eq!(transport.send(b"MSG a b c\nPON").unwrap(), 13);
        assert_eq!(transport.send(b"G 1\nBYE x\n").unwrap(), 4);
        assert_eq!(
            transport.send(b"BYE x\n").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(lines.recv().unwrap(), "MSG a b c");
        assert_eq!(lines.recv().unwrap(), "PONG 1");
        assert_eq!(transport.send(b"BYE x\n").unwrap(), 6);
        transport.finish();
        assert_eq!(lines.recv().unwrap(), "BYE x");
        assert!(lines.recv().is_err());
    }
}
