//! Cluster mode (cargo feature `redis`): a joiner's replay of the room's history, from
//! Redis, so that it holds the lines said on every node.
//!
//! The publisher reads the history in the same step as it publishes the `JOIN`
//! (`src/cluster/history.rs`), so it is exactly the messages said before the `JOIN` in
//! the room's one order. It reaches the dispatcher as [`ClusterEvent::Recalled`], on
//! another thread's channel than the `JOIN` coming back from the broker, so either may
//! come first:
//!
//! - the history first: it is kept until the `JOIN` is applied, then replayed at once;
//! - the `JOIN` first: the joiner *waits*; the room's lines for them are held (in
//!   order) until the history comes, then sent after their `HIST` lines.
//!
//! Either way the joiner sees `JOIN`, the `HIST` lines, then the room's live lines, as
//! on a single node. If the history cannot come (the publish failed, or the link went
//! down), this node's own history is replayed instead. The wait is bounded: the
//! publisher answers every line, within its 1 s timeout, one way or the other.
//!
//! [`ClusterEvent::Recalled`]: crate::cluster::ClusterEvent::Recalled

use std::collections::HashMap;

use super::cluster::Via;
use super::outputs::Outputs;
use super::DispatcherState;
use crate::clock::format_utc;
use crate::cluster::history;
use crate::event::ClientId;
use crate::reply::Reply;
use crate::table::UserTable;

/// Joiners and histories that have not met yet.
#[derive(Debug, Default)]
pub(super) struct Recall {
    /// Histories that came before their `JOIN` was applied: `JOIN` number → entries.
    early: HashMap<u64, Vec<String>>,
    /// Joiners whose `JOIN` was applied before its history came.
    waiting: HashMap<ClientId, Waiting>,
}

#[derive(Debug)]
struct Waiting {
    /// Their `JOIN`'s number.
    seq: u64,
    room: String,
    /// The room's lines for them meanwhile, in order.
    held: Vec<Vec<u8>>,
}

impl Recall {
    /// Sends `line` to each of `to`, or holds it for those waiting for their history.
    pub(super) fn deliver(&mut self, out: &mut Outputs, to: &[ClientId], line: &[u8]) {
        if self.waiting.is_empty() {
            return out.send_all(to, line);
        }
        for id in to {
            match self.waiting.get_mut(id) {
                Some(waiting) => waiting.held.push(line.to_vec()),
                None => out.send(*id, line),
            }
        }
    }

    /// `id` left the room (or the chat): nothing more to replay for them.
    pub(super) fn forget(&mut self, id: ClientId) {
        self.waiting.remove(&id);
    }

    /// Our line `seq` was applied without its history (lost on the way).
    pub(super) fn drop_early(&mut self, seq: u64) {
        self.early.remove(&seq);
    }
}

impl DispatcherState {
    /// A local user's `JOIN` was just applied: replay the room's history.
    pub(super) fn replay_on_join(&mut self, table: &UserTable, id: ClientId, room: &str, via: Via) {
        let (Via::Broker(seq), Some(link)) = (via, self.cluster.as_mut()) else {
            return self.replay_history(table, id, room);
        };
        match link.recall.early.remove(&seq) {
            Some(entries) => self.replay_entries(id, room, &entries),
            None => {
                let waiting = Waiting {
                    seq,
                    room: room.to_string(),
                    held: Vec::new(),
                };
                link.recall.waiting.insert(id, waiting);
            }
        }
    }

    /// The history read with our `JOIN` number `seq`.
    pub(super) fn recalled(&mut self, seq: u64, entries: &[String]) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let waiter = link
            .recall
            .waiting
            .iter()
            .find(|(_, waiting)| waiting.seq == seq)
            .map(|(id, _)| *id);
        match waiter.and_then(|id| Some((id, link.recall.waiting.remove(&id)?))) {
            Some((id, waiting)) => {
                self.replay_entries(id, &waiting.room, entries);
                self.release(id, waiting);
            }
            // The JOIN is still on its way back: keep the history for it.
            None if link.is_pending(seq) => {
                link.recall.early.insert(seq, entries.to_vec());
            }
            None => {}
        }
    }

    /// The history of our line `seq` (`None`: of every line) will not come: joiners
    /// waiting for it get this node's own.
    pub(super) fn recall_locally(&mut self, table: &UserTable, seq: Option<u64>) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let recall = &mut link.recall;
        match seq {
            Some(seq) => recall.drop_early(seq),
            None => recall.early.clear(),
        }
        let ids: Vec<ClientId> = recall
            .waiting
            .iter()
            .filter(|(_, waiting)| seq.map_or(true, |seq| waiting.seq == seq))
            .map(|(id, _)| *id)
            .collect();
        let released: Vec<(ClientId, Waiting)> = ids
            .into_iter()
            .filter_map(|id| Some((id, recall.waiting.remove(&id)?)))
            .collect();
        for (id, waiting) in released {
            self.replay_history(table, id, &waiting.room);
            self.release(id, waiting);
        }
    }

    /// Sends what was held for a joiner while they waited.
    fn release(&mut self, id: ClientId, waiting: Waiting) {
        for line in waiting.held {
            self.out.send(id, &line);
        }
    }

    /// `HIST` lines from Redis's entries (newest first there), oldest first.
    fn replay_entries(&mut self, id: ClientId, room: &str, entries: &[String]) {
        for entry in entries.iter().rev() {
            let Some((time, line)) = history::parse_entry(entry, room) else {
                continue; // not written by a node: dropped, never shown
            };
            let time = format_utc(time);
            let hist = Reply::Hist {
                time: &time,
                line: &line,
            };
            self.out.send(id, hist.to_line().as_bytes());
        }
    }
}
