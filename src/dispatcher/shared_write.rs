//! Big batches are written by two threads: the dispatcher and a helper, the
//! `writer` thread, which takes outboxes from the same list.
//!
//! Why: when one message goes to a room of 1,000, the dispatcher writes 1,000 sockets
//! one after another (about 5 µs each here, since each write wakes the reader on the
//! other side), and the last recipient waits for the 999 before it. A server with two
//! worker threads (tokio's, say) writes from both cores. So for a batch of at least
//! [`SHARE_FROM`] outboxes (and few lines each: see [`worth_sharing`]), the dispatcher
//! publishes the batch to the writer thread and
//! starts writing from the front; the writer joins as soon as it is awake, and each
//! takes the next unwritten outbox (one atomic counter), until none is left.
//!
//! Nothing waits for anything: if the writer is slow to wake, the dispatcher simply
//! writes more of the batch itself, and goes back to its events when the list is
//! exhausted, even if the writer is still finishing its last outbox. That is safe
//! because an outbox is written under its own lock, from the front of its one buffer:
//! two writes to the same client, from either thread, in either order of locking,
//! keep its bytes in order (see `outbox.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::outputs::write_or_hand_off;
use crate::event::ClientId;
use crate::outbox::Outbox;

/// Batches with fewer dirty outboxes than this are written by the dispatcher alone:
/// waking the writer (tens of microseconds) is worth it only for long batches.
const SHARE_FROM: usize = 64;

/// Batches carrying more lines per recipient than this on average are written by the
/// dispatcher alone: they come from a backlog, where each `write` already carries many
/// lines and throughput, not the wait of the last recipient, is what counts. A second
/// writing core then mostly takes processor time from everything else on the machine
/// (measured with the load generator on the same two cores: 3.6 M deliveries/s at
/// saturation with sharing, against 7 M without).
const SHARE_UP_TO_LINES_EACH: usize = 4;

/// Whether a batch of `recipients` outboxes holding `lines` lines in all is worth
/// sharing with the writer thread.
pub(super) fn worth_sharing(recipients: usize, lines: usize) -> bool {
    recipients >= SHARE_FROM && lines <= recipients * SHARE_UP_TO_LINES_EACH
}

/// The outboxes of one batch, taken one at a time by whichever thread is free.
pub(super) struct SharedBatch {
    outboxes: Vec<(ClientId, Arc<Outbox>)>,
    next: AtomicUsize,
    /// Where an outbox goes when its socket turns out to be full.
    flusher: Sender<Arc<Outbox>>,
}

impl SharedBatch {
    pub(super) fn new(
        outboxes: Vec<(ClientId, Arc<Outbox>)>,
        flusher: Sender<Arc<Outbox>>,
    ) -> SharedBatch {
        SharedBatch {
            outboxes,
            next: AtomicUsize::new(0),
            flusher,
        }
    }

    /// Writes outboxes of the batch until none is left unclaimed.
    pub(super) fn write_until_done(&self) {
        loop {
            // Relaxed is enough: the counter only hands out indexes; each outbox's
            // bytes are protected by its own lock.
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((id, outbox)) = self.outboxes.get(index) else {
                return;
            };
            write_or_hand_off(*id, outbox, &self.flusher);
        }
    }
}

/// Starts the writer thread. It ends when the dispatcher drops the sender.
pub(super) fn start_writer() -> std::io::Result<(Sender<Arc<SharedBatch>>, JoinHandle<()>)> {
    let (batches, inbox) = crossbeam_channel::unbounded();
    let thread = thread::Builder::new()
        .name("writer".into())
        .spawn(move || run_writer(&inbox))?;
    Ok((batches, thread))
}

fn run_writer(inbox: &Receiver<Arc<SharedBatch>>) {
    for batch in inbox {
        batch.write_until_done();
    }
}
