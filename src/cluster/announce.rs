//! The `--announce-max` rule for the lines the `cluster-reg` thread publishes on behalf
//! of a node that cannot decide for itself: the `LEAVE … node lost` lines of a lost
//! node, the `LEAVE`s of users gone during an outage, the `LEAVE … server shutting
//! down` of a stopping node, and the `JOIN`s of a node that comes back.
//!
//! The rule is the one a user's own node applies to its lines (see
//! `src/dispatcher/announce.rs`): the room hears a `JOIN` or `LEAVE` only if it has at
//! most `--announce-max` members, counted across the cluster. Here the count is exact:
//! these lines are rare (a node lost, an outage), so the thread can afford to read every
//! live node's users from the register at that moment. A line for a bigger room goes
//! out quiet (`QJOIN`, `QLEAVE`): the nodes still learn who left, nobody is told. So a
//! lost node with 500 users of a room of 1,000 sends no one 500 `LEAVE` lines.
//!
//! Whether the user was ever announced (their `JOIN` heard) is known only to the nodes
//! that heard it; each of them checks that too before it tells its users of a `LEAVE`
//! that comes from here.

use std::collections::HashMap;

use redis::{Connection, RedisResult};

use super::presence::{self, Entry};
use super::roster;

/// Each room's members across the cluster once some users have left or come back.
pub(super) struct Audience {
    sizes: HashMap<String, usize>,
    max: usize,
}

impl Audience {
    /// Reads the register now: the users of every live node but `node`, and `node`'s
    /// users in `present` (those still there, or those coming back).
    pub(super) fn read(
        con: &mut Connection,
        node: &str,
        present: &[Entry],
        max: usize,
    ) -> RedisResult<Audience> {
        let nodes = presence::live_nodes(con)?;
        let mut sizes = roster::room_sizes(node, &nodes);
        for entry in present {
            *sizes.entry(entry.room.clone()).or_default() += 1;
        }
        Ok(Audience { sizes, max })
    }

    /// When the register cannot be read: every line quiet (telling no one is the safe
    /// side of the rule; `/who` stays exact).
    pub(super) fn unknown() -> Audience {
        Audience {
            sizes: HashMap::new(),
            max: 0,
        }
    }

    /// Whether a line about `room` must not be heard by the room: it is too big (or
    /// its size is unknown).
    pub(super) fn quiet(&self, room: &str) -> bool {
        self.max == 0 || self.sizes.get(room).copied().unwrap_or(0) > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_rooms_and_unknown_sizes_are_quiet() {
        let audience = Audience {
            sizes: HashMap::from([("hall".to_string(), 3), ("den".to_string(), 2)]),
            max: 2,
        };
        assert!(audience.quiet("hall"));
        assert!(!audience.quiet("den"));
        assert!(!audience.quiet("empty"));
        assert!(Audience::unknown().quiet("den"));
    }
}
