//! The outbound path: how a line reaches a client's socket without any client being able
//! to hold up the others.
//!
//! # Why this design
//!
//! Measured on the 2-core machines this was built on: thread wake-ups, not bytes, are
//! what costs (waking a thread on the other core: ~50 µs; a 64-byte write: ~1 µs). A
//! writer thread per connection adds a wake-up per delivery (p99 150 ms in a room of
//! 1,000), the dispatcher writing each socket itself was the fastest at moderate load,
//! and only batching many messages per `write` went past ~0.2 M deliveries/s. So:
//!
//! 1. The **dispatcher writes sockets itself**: no thread hop, no wake-up per delivery.
//! 2. It **coalesces**: while handling a batch of events it only appends lines to each
//!    recipient's `pending` buffer, then writes every dirty buffer once ([`Outbox::flush`]).
//!    With no backlog a batch is one event (lowest latency); under load it is many
//!    (one `write` carries many lines).
//! 3. A write never waits: it is made in non-blocking mode (see
//!    [`TcpConnection`](crate::transport::TcpConnection)). When a client's socket buffer
//!    is full, its outbox becomes **backed up** and is handed to the one
//!    [flusher](run_flusher) thread, which keeps retrying it; the dispatcher no longer
//!    writes it at all, it only appends (bounded by `max_pending`). So a client that
//!    stops reading costs the dispatcher one refused write, once: microseconds, even
//!    when hundreds fill at the same moment.
//! 4. Memory is bounded per client: `pending` may not pass `max_pending` bytes, and a
//!    backed-up socket that accepts nothing for `send_timeout` is closed as too slow.
//! 5. Long batches are written by two threads, the dispatcher and the `writer` (see
//!    `dispatcher/shared_write.rs`), each taking the next outbox of the batch.

use std::io;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use crate::event::CloseReason;
use crate::transport::Transport;

/// Above this capacity an emptied buffer is freed rather than kept: an idle connection
/// should cost a few bytes, not the size of the biggest burst it ever received.
const KEEP_CAPACITY: usize = 1024;

/// One client's outgoing bytes and the socket they go to.
pub(crate) struct Outbox {
    transport: Arc<dyn Transport>,
    /// A `parking_lot::Mutex` because several threads touch it: the dispatcher
    /// (appends, writes while not backed up), the writer thread (writes part of a long
    /// batch) and the flusher (writes while backed up). The dispatcher and the writer
    /// hold it across their write, which never blocks, so the lock is held for
    /// microseconds; and holding it is what keeps a client's bytes in order when both
    /// write the same outbox. The flusher takes the buffer out of the lock before
    /// writing, so the dispatcher can keep appending meanwhile.
    state: Mutex<OutboxState>,
}

struct OutboxState {
    /// Bytes queued and not yet given to the socket.
    pending: Vec<u8>,
    /// Bytes the flusher has taken out of `pending` and is writing right now.
    in_flight: usize,
    /// The socket refused bytes once: the flusher, not the dispatcher, writes it now.
    backed_up: bool,
    /// While backed up: when the socket last accepted a byte.
    last_progress: Instant,
    /// The `BYE` is queued: end the stream once everything is written.
    finish_when_flushed: bool,
    /// Nothing more will be written.
    closed: bool,
    /// Why the outbox side closed it (a slow reader), for the `LEAVE` line.
    close_reason: Option<CloseReason>,
}

/// What [`Outbox::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued (or silently dropped, if the outbox is closed).
    Queued,
    /// Queuing it would pass `max_pending`: this client reads too slowly.
    Overflow,
}

/// What [`Outbox::flush`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything was written, or there was nothing to do.
    Done,
    /// The socket is full: from now on the flusher must write this outbox.
    BackedUp,
}

/// What one flusher attempt ([`Outbox::flush_backlog`]) found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Backlog {
    /// All written: the dispatcher writes this outbox directly again.
    Drained,
    /// Still bytes left; `progressed` tells whether this attempt wrote any.
    Waiting { progressed: bool },
    /// Closed (by us for a stalled socket, by the dispatcher, or by an error).
    Closed,
}

impl Outbox {
    pub(crate) fn new(transport: Arc<dyn Transport>) -> Outbox {
        Outbox {
            transport,
            state: Mutex::new(OutboxState {
                pending: Vec::new(),
                in_flight: 0,
                backed_up: false,
                last_progress: Instant::now(),
                finish_when_flushed: false,
                closed: false,
                close_reason: None,
            }),
        }
    }

    /// Queues `bytes` unless that would pass `max_pending` queued bytes.
    pub(crate) fn push(&self, bytes: &[u8], max_pending: usize) -> Push {
        let mut state = self.state.lock();
        if state.closed {
            return Push::Queued;
        }
        if state.pending.len() + state.in_flight + bytes.len() > max_pending {
            return Push::Overflow;
        }
        state.pending.extend_from_slice(bytes);
        Push::Queued
    }

    /// Queues `bytes` whatever the limit: for the final `BYE`, a few bytes.
    pub(crate) fn push_final(&self, bytes: &[u8]) {
        let mut state = self.state.lock();
        if !state.closed {
            state.pending.extend_from_slice(bytes);
            state.finish_when_flushed = true;
        }
    }

    /// The dispatcher's write: sends what is pending, unless the flusher owns this
    /// outbox. Returns [`Flush::BackedUp`] exactly once per episode, when the socket
    /// first refuses bytes; the caller then hands the outbox to the flusher.
    pub(crate) fn flush(&self) -> Flush {
        let mut state = self.state.lock();
        if state.closed || state.backed_up {
            return Flush::Done;
        }
        while !state.pending.is_empty() {
            match self.transport.send(&state.pending) {
                Ok(written) if written == state.pending.len() => state.pending.clear(),
                Ok(written) if written > 0 => {
                    // A short write means the socket buffer is now full.
                    state.pending.drain(..written);
                    return state.back_up();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_full(&e) => return state.back_up(),
                // Ok(0) or a real error: the peer is gone, or the socket is broken.
                other => {
                    self.fail(&mut state, other);
                    return Flush::Done;
                }
            }
        }
        state.release_buffer();
        if state.finish_when_flushed {
            self.transport.finish();
        }
        Flush::Done
    }

    /// The flusher's write: one attempt for a backed-up outbox. The write happens with
    /// the buffer taken out of the lock, so the dispatcher can keep appending meanwhile.
    pub(crate) fn flush_backlog(&self, send_timeout: Duration) -> Backlog {
        let mut chunk = {
            let mut state = self.state.lock();
            if state.closed {
                return Backlog::Closed;
            }
            if state.pending.is_empty() {
                return self.drained(&mut state);
            }
            let chunk = mem::take(&mut state.pending);
            state.in_flight = chunk.len();
            chunk
        };
        let result = self.transport.send(&chunk);
        let mut state = self.state.lock();
        state.in_flight = 0;
        let written = match result {
            Ok(written) if written > 0 => written,
            Err(e) if is_full(&e) || e.kind() == io::ErrorKind::Interrupted => 0,
            other => {
                self.fail(&mut state, other);
                return Backlog::Closed;
            }
        };
        if state.closed {
            return Backlog::Closed;
        }
        chunk.drain(..written);
        if !chunk.is_empty() {
            // Put the unwritten rest back in front of what arrived meanwhile.
            chunk.extend_from_slice(&state.pending);
            state.pending = chunk;
        }
        let now = Instant::now();
        if written > 0 {
            state.last_progress = now;
        }
        if state.pending.is_empty() {
            return self.drained(&mut state);
        }
        if now.duration_since(state.last_progress) >= send_timeout {
            log::debug!("closing a socket that accepted nothing for {send_timeout:?}");
            self.close_locked(&mut state, CloseReason::TooSlow);
            return Backlog::Closed;
        }
        Backlog::Waiting {
            progressed: written > 0,
        }
    }

    /// A write failed for good. Closing the transport too (not only marking the
    /// outbox) makes sure the connection thread wakes up and reports `Closed`, so the
    /// client leaves the room instead of lingering with output nobody writes.
    fn fail(&self, state: &mut OutboxState, result: io::Result<usize>) {
        log::debug!("write failed ({result:?}); closing");
        state.close_quietly();
        self.transport.close();
    }

    fn drained(&self, state: &mut OutboxState) -> Backlog {
        state.backed_up = false;
        state.release_buffer();
        if state.finish_when_flushed {
            self.transport.finish();
        }
        Backlog::Drained
    }

    /// Closes the connection now, dropping whatever is pending. The reader thread wakes
    /// up, and the dispatcher hears `Closed` from it.
    pub(crate) fn close(&self, reason: Option<CloseReason>) {
        let mut state = self.state.lock();
        match reason {
            Some(reason) => self.close_locked(&mut state, reason),
            None => {
                state.close_quietly();
                self.transport.close();
            }
        }
    }

    fn close_locked(&self, state: &mut OutboxState, reason: CloseReason) {
        state.close_reason.get_or_insert(reason);
        state.close_quietly();
        self.transport.close();
    }

    /// Why the outbox side closed this connection, if it did.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.state.lock().close_reason.clone()
    }

    /// Bytes waiting to be written (pending plus in flight).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        let state = self.state.lock();
        state.pending.len() + state.in_flight
    }
}

impl OutboxState {
    fn back_up(&mut self) -> Flush {
        self.backed_up = true;
        self.last_progress = Instant::now();
        Flush::BackedUp
    }

    /// Marks it closed and frees the buffer; closing the socket is the caller's job.
    fn close_quietly(&mut self) {
        self.closed = true;
        self.pending = Vec::new();
    }

    fn release_buffer(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
    }
}

/// "The socket buffer is full": what a non-blocking write returns (or, in the rare race
/// described in `transport.rs`, a blocking one whose `SO_SNDTIMEO` ran out).
fn is_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The flusher thread: retries every backed-up outbox until it drains, stalls past
/// `send_timeout` (then it is closed as too slow), or is closed.
///
/// Why one thread and not one per slow client: it costs one thread whatever happens, so
/// the connection cap need not reserve room for surprise threads, and backed-up clients
/// are few. Why the back-off: writes never wait, so retrying a socket that is still
/// full costs little, but a client that has stopped reading would be retried in a busy
/// loop; so an outbox whose attempt made no progress is retried later and later (up to
/// [`MAX_BACKOFF`]), while one that progresses is retried at once.
///
/// It ends when the dispatcher drops its sender (the channel disconnects) and its
/// backlog is empty (the dispatcher closes every outbox before it stops).
pub(crate) fn run_flusher(jobs: Receiver<Arc<Outbox>>, send_timeout: Duration) {
    let mut backlog: Vec<Retry> = Vec::new();
    loop {
        if backlog.is_empty() {
            match jobs.recv() {
                Ok(outbox) => backlog.push(Retry::new(outbox)),
                Err(_) => return,
            }
        }
        backlog.extend(jobs.try_iter().map(Retry::new));
        let now = Instant::now();
        backlog.retain_mut(|retry| {
            if retry.not_before > now {
                return true;
            }
            match retry.outbox.flush_backlog(send_timeout) {
                Backlog::Drained | Backlog::Closed => false,
                Backlog::Waiting { progressed: true } => {
                    retry.backoff = MIN_BACKOFF;
                    true
                }
                Backlog::Waiting { progressed: false } => {
                    retry.not_before = Instant::now() + retry.backoff;
                    retry.backoff = (retry.backoff * 2).min(MAX_BACKOFF);
                    true
                }
            }
        });
        // Sleep until the next retry is due, waking early for new work.
        if let Some(next) = backlog.iter().map(|retry| retry.not_before).min() {
            if next > Instant::now() {
                match jobs.recv_deadline(next) {
                    Ok(outbox) => backlog.push(Retry::new(outbox)),
                    Err(RecvTimeoutError::Timeout) => {}
                    // The dispatcher is gone (it closes every outbox before it stops):
                    // no new work can wake us, so sleep instead of spinning.
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(next.saturating_duration_since(Instant::now()))
                    }
                }
            }
        }
    }
}

/// First wait before retrying an outbox whose socket took nothing.
const MIN_BACKOFF: Duration = Duration::from_millis(2);

/// Longest wait between retries: it bounds how late a stalled client is noticed after
/// `send_timeout` has passed.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// A backed-up outbox and when to try it next.
struct Retry {
    outbox: Arc<Outbox>,
    not_before: Instant,
    backoff: Duration,
}

impl Retry {
    fn new(outbox: Arc<Outbox>) -> Retry {
        Retry {
            outbox,
            not_before: Instant::now(),
            backoff: MIN_BACKOFF,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ChannelTransport;

    #[test]
    fn a_full_client_backs_up_and_drains_in_order() {
        let (transport, lines) = ChannelTransport::new(1);
        let outbox = Outbox::new(Arc::new(transport));
        assert_eq!(outbox.push(b"one\ntwo\n", 100), Push::Queued);
        assert_eq!(outbox.flush(), Flush::BackedUp);
        assert_eq!(outbox.push(b"three\n", 100), Push::Queued);
        // The dispatcher no longer writes it.
        assert_eq!(outbox.flush(), Flush::Done);
        assert_eq!(lines.recv().unwrap(), "one");
        let timeout = Duration::from_secs(60);
        assert_eq!(
            outbox.flush_backlog(timeout),
            Backlog::Waiting { progressed: true }
        );
        assert_eq!(lines.recv().unwrap(), "two");
        assert_eq!(outbox.flush_backlog(timeout), Backlog::Drained);
        assert_eq!(lines.recv().unwrap(), "three");
        assert_eq!(outbox.queued(), 0);
    }

    #[test]
    fn pending_is_bounded() {
        let (transport, _lines) = ChannelTransport::new(1);
        let outbox = Outbox::new(Arc::new(transport));
        assert_eq!(outbox.push(&[b'x'; 10], 16), Push::Queued);
        assert_eq!(outbox.push(&[b'x'; 7], 16), Push::Overflow);
        assert_eq!(outbox.queued(), 10);
    }

    #[test]
    fn a_stalled_socket_is_closed_as_too_slow() {
        let (transport, _lines) = ChannelTransport::new(1);
        let outbox = Outbox::new(Arc::new(transport));
        outbox.push(b"a\nb\n", 100);
        assert_eq!(outbox.flush(), Flush::BackedUp);
        assert_eq!(outbox.flush_backlog(Duration::ZERO), Backlog::Closed);
        assert_eq!(outbox.close_reason(), Some(CloseReason::TooSlow));
    }
}
