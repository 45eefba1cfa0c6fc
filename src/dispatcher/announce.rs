//! `--announce-max` across the cluster (cargo feature `redis`).
//!
//! On one node, a `JOIN`, `LEAVE` or `NICK` reaches the room only if the room is small
//! enough, and a `LEAVE` or `NICK` only for a user the room was told about (the
//! *announced* rule, [`Config::announce_max`](crate::Config::announce_max)). Across
//! nodes the same rule holds, with two changes:
//!
//! - **The room is counted across the cluster.** Its size is this node's members plus
//!   the other nodes' members as the register held them at the `cluster-reg` thread's
//!   last look (at most a second old: [`ClusterEvent::RoomSizes`]). The dispatcher never
//!   waits for Redis, so this count may lag a moment behind a room that is filling or
//!   emptying fast; that only moves the point where the room goes quiet.
//! - **The user's own node decides, once.** It applies the rule when its user joins,
//!   renames or leaves, and marks the line it publishes (`QJOIN`, `QLEAVE`, `QNICK`
//!   when the room is not to hear it: `src/cluster/wire.rs`). Every node obeys the
//!   mark, so the members of a room hear the same lines on every node, and a `LEAVE`
//!   or `NICK` reaches only members who heard of the nick (or found it there by
//!   `/who`).
//!
//! A lost node cannot decide for its users: the `cluster-reg` thread that cleans up
//! after it marks their `LEAVE … node lost` lines by the exact sizes of their rooms
//! (`src/cluster/announce.rs`), and each node also remembers which remote users it was
//! told about ([`Announced`]), so that such a line (number 0: not a node's own) reaches
//! its users only for a nick they heard join. A room of 1,000 split over two nodes
//! thus gets no `LEAVE` at all when one of them dies, nor the `JOIN`s when it returns.
//! A node that was not linked when a user joined does not know them: their
//! `LEAVE … node lost` is then not told to its users (silence is the safe side of the
//! rule; `/who` is always exact).
//!
//! [`ClusterEvent::RoomSizes`]: crate::cluster::ClusterEvent::RoomSizes

use std::collections::HashMap;

use super::DispatcherState;
use crate::cluster::{Record, RoomLine};
use crate::text::nick_key;

/// Most remote users remembered (a few MB): far more than the nodes of a cluster hold.
const MAX_HEARD: usize = 1 << 18;

/// What this node knows of the other nodes' users for the rule.
#[derive(Debug, Default)]
pub(super) struct Announced {
    /// Each room's members on the other nodes, as of the register's last look.
    elsewhere: HashMap<String, usize>,
    /// The other nodes' users this node heard of, by their nick's look: whether their
    /// rooms were told of them (their `JOIN` and each `NICK` since reached the room).
    heard: HashMap<String, bool>,
}

impl Announced {
    /// The other nodes' room sizes, from the register.
    pub(super) fn set_sizes(&mut self, sizes: HashMap<String, usize>) {
        self.elsewhere = sizes;
    }

    /// Whether a room line from another node reaches its room here (for a `JOIN` or
    /// `NICK`, the one concerned is not ours anyway), and what it teaches about its user.
    pub(super) fn heard(&mut self, record: &Record) -> bool {
        // Lines numbered 0 are the register's, for a node that could not decide itself
        // (lost, or gone): they may tell only of a user the room heard of.
        let heard_of = |heard: &HashMap<String, bool>, nick: &str| {
            record.seq != 0 || heard.get(&nick_key(nick)).copied() == Some(true)
        };
        match &record.line {
            RoomLine::Msg { .. } | RoomLine::Me { .. } => true,
            RoomLine::Join { nick, .. } => {
                if self.heard.len() >= MAX_HEARD {
                    // Users whose LEAVE never came (said while the link was down) would
                    // otherwise stay here for good. Forgetting errs on the safe side.
                    self.heard.clear();
                }
                self.heard.insert(nick_key(nick), !record.quiet);
                !record.quiet
            }
            RoomLine::Nick { old, new, .. } => {
                let to_room = !record.quiet && heard_of(&self.heard, old);
                self.heard.remove(&nick_key(old));
                self.heard.insert(nick_key(new), to_room);
                to_room
            }
            RoomLine::Leave { nick, .. } => {
                let to_room = !record.quiet && heard_of(&self.heard, nick);
                self.heard.remove(&nick_key(nick));
                to_room
            }
        }
    }
}

impl DispatcherState {
    /// How many members `room` has on the other nodes (as of the register's last look)
    /// who hear this node's lines: none while the link is down (lines stay here).
    pub(super) fn members_elsewhere(&self, room: &str) -> usize {
        let link = self.cluster.as_ref().filter(|link| link.up);
        link.map_or(0, |link| {
            link.announced.elsewhere.get(room).copied().unwrap_or(0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, quiet: bool, line: RoomLine) -> Record {
        Record {
            node: "b".into(),
            seq,
            line,
            quiet,
        }
    }

    fn join(nick: &str) -> RoomLine {
        RoomLine::Join {
            room: "hall".into(),
            nick: nick.into(),
        }
    }

    fn lost(nick: &str) -> RoomLine {
        RoomLine::Leave {
            room: "hall".into(),
            nick: nick.into(),
            reason: "node lost".into(),
        }
    }

    #[test]
    fn the_senders_mark_decides_and_a_lost_nodes_leave_needs_a_heard_join() {
        let mut announced = Announced::default();
        assert!(announced.heard(&record(1, false, join("bob"))));
        assert!(!announced.heard(&record(2, true, join("carol"))));
        // The register's lines (number 0): only for a nick the room heard join.
        assert!(announced.heard(&record(0, false, lost("bob"))));
        assert!(!announced.heard(&record(0, false, lost("carol"))));
        assert!(!announced.heard(&record(0, false, lost("dave"))));
        // A node's own LEAVE: its mark decides.
        assert!(announced.heard(&record(3, false, lost("erin"))));
        // A quiet rename ends the announced state.
        announced.heard(&record(4, false, join("fred")));
        let rename = RoomLine::Nick {
            room: "hall".into(),
            old: "fred".into(),
            new: "fritz".into(),
        };
        assert!(!announced.heard(&record(5, true, rename)));
        assert!(!announced.heard(&record(0, false, lost("fritz"))));
    }
}
