//! The dispatcher's output side: each client's outbox, and which ones have lines
//! waiting to be written at the end of the current batch.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::event::ClientId;
use crate::outbox::{Flush, Outbox, Push};

/// A client as the dispatcher's output side knows it.
pub(super) struct Client {
    pub(super) outbox: Arc<Outbox>,
    /// Already in `Outputs::dirty`.
    pub(super) dirty: bool,
    /// Told `BYE` (or dropped as too slow); waiting for its reader to end.
    pub(super) closing: bool,
    /// Bytes queued for it since it connected.
    pub(super) received: u64,
}

/// The output side: each client's outbox, and which ones have something to write.
pub(super) struct Outputs {
    pub(super) clients: HashMap<ClientId, Client>,
    /// Clients with queued bytes, in the order they got them, written after the batch.
    pub(super) dirty: Vec<ClientId>,
    /// Clients whose outbox overflowed while handling the current event.
    pub(super) overflowed: Vec<ClientId>,
    pub(super) max_pending: usize,
    /// Lines queued since the last write.
    pub(super) queued: usize,
    /// Bytes queued since the last write for clients that have received at least
    /// `max_pending` in all (see [`Stats::watched_bytes`](crate::stats::Stats)).
    pub(super) watched_bytes: usize,
    /// Where outboxes go when their socket is full.
    pub(super) flusher: Sender<Arc<Outbox>>,
    /// The writer thread, which helps write long batches (see `shared_write.rs`).
    pub(super) writer: Sender<Arc<super::SharedBatch>>,
}

impl Outputs {
    /// Queues one line for one client (nothing happens if it is gone or closing).
    pub(super) fn send(&mut self, id: ClientId, line: &[u8]) {
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
            client.write(id, &self.flusher);
            pushed = client.outbox.push(line, self.max_pending);
        }
        match pushed {
            Push::Queued => {
                self.queued += 1;
                client.received += line.len() as u64;
                if client.received >= self.max_pending as u64 {
                    self.watched_bytes += line.len();
                }
                if !client.dirty {
                    client.dirty = true;
                    self.dirty.push(id);
                }
            }
            Push::Overflow => self.overflowed.push(id),
        }
    }

    pub(super) fn send_all(&mut self, ids: &[ClientId], line: &[u8]) {
        for id in ids {
            self.send(*id, line);
        }
    }

    pub(super) fn mark_dirty(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(&id) {
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(id);
            }
        }
    }
}

impl Client {
    /// Writes what is queued now (see [`write_or_hand_off`]).
    pub(super) fn write(&mut self, id: ClientId, flusher: &Sender<Arc<Outbox>>) {
        write_or_hand_off(id, &self.outbox, flusher);
    }
}

/// Writes what is queued for a client; if the socket turns out to be full, hands the
/// outbox to the flusher, which writes it from then on. Used by the dispatcher and by
/// the writer thread alike.
pub(super) fn write_or_hand_off(id: ClientId, outbox: &Arc<Outbox>, flusher: &Sender<Arc<Outbox>>) {
    if outbox.flush() == Flush::BackedUp {
        log::debug!("{id} backed up: its socket buffer is full");
        let _ = flusher.send(Arc::clone(outbox));
    }
}
