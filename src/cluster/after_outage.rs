//! The `LEAVE` lines of users who left during an outage, held until the other nodes
//! listen again.
//!
//! Why: Redis pub/sub delivers a message only to those subscribed at that moment. When
//! Redis comes back after an outage, every node reconnects on its own back-off clock.
//! The first node back registers its users again and tells the cluster who left
//! meanwhile; a node whose subscriber is still a second away from reconnecting would
//! never hear it, and its users would see a ghost in the room for good. So those lines
//! wait until the channel has as many subscribers as it had before the outage
//! (`PUBSUB NUMSUB`, asked by `cluster-reg`), or [`WAIT_AT_MOST`] has passed: a node
//! that does not come back within that time was lost anyway.
//!
//! This file is the bookkeeping only (no Redis), so its rules are tested on their own.

use std::time::{Duration, Instant};

/// How long the lines wait for the listeners at most.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(5);

/// How often `cluster-reg` asks how many listen, while lines wait.
pub const ASK_EVERY: Duration = Duration::from_millis(100);

/// The lines waiting, and how many listeners they wait for.
#[derive(Debug, Default)]
pub struct AfterOutage {
    /// The channel's subscribers at the last look while linked.
    listeners_now: usize,
    /// The count when the link was last lost: what the lines wait for.
    listeners_before: usize,
    /// Encoded messages for the channel, in order.
    lines: Vec<String>,
    /// When they go out whoever listens.
    deadline: Option<Instant>,
    /// When to ask again how many listen.
    next_ask: Option<Instant>,
}

impl AfterOutage {
    /// The channel's subscribers, as counted at a beat while linked.
    pub fn listeners(&mut self, count: usize) {
        self.listeners_now = count;
    }

    /// The link is lost: the lines of the next resync wait for as many listeners as
    /// there were until now.
    pub fn link_lost(&mut self) {
        if self.lines.is_empty() {
            self.listeners_before = self.listeners_now;
        }
    }

    /// Holds `lines` until enough listen (or [`WAIT_AT_MOST`] from `now`).
    pub fn hold(&mut self, lines: Vec<String>, now: Instant) {
        if lines.is_empty() {
            if self.lines.is_empty() {
                // A resync with nobody gone: this outage has nothing to wait for.
                self.listeners_before = 0;
            }
            return;
        }
        self.lines.extend(lines);
        self.deadline.get_or_insert(now + WAIT_AT_MOST);
    }

    /// Whether lines are waiting (then `cluster-reg` asks every [`ASK_EVERY`]).
    pub fn waiting(&self) -> bool {
        !self.lines.is_empty()
    }

    /// Whether to ask now how many listen: lines wait, and the last question is
    /// [`ASK_EVERY`] old (one round trip to Redis per question).
    pub fn ask_now(&mut self, now: Instant) -> bool {
        if !self.waiting() || self.next_ask.is_some_and(|next| now < next) {
            return false;
        }
        self.next_ask = Some(now + ASK_EVERY);
        true
    }

    /// The lines to publish now, given how many listen (`None` if none should go yet).
    pub fn due(&mut self, listeners: usize, now: Instant) -> Option<Vec<String>> {
        let expired = self.deadline.is_some_and(|deadline| now >= deadline);
        if self.lines.is_empty() || (listeners < self.listeners_before && !expired) {
            return None;
        }
        self.deadline = None;
        self.next_ask = None;
        self.listeners_now = listeners;
        Some(std::mem::take(&mut self.lines))
    }

    /// The lines [`Self::due`] gave are out: until the next outage, nothing to wait
    /// for. (Not before: if they could not be published, they are held again, and wait
    /// for the same listeners after the next reconnection.)
    pub fn published(&mut self) {
        self.listeners_before = 0;
    }

    /// Every line still held, at once (the node is stopping: better early than never).
    pub fn take_all(&mut self) -> Vec<String> {
        self.deadline = None;
        self.next_ask = None;
        std::mem::take(&mut self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_as_many_listeners_as_before_the_outage() {
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        held.listeners(3);
        held.link_lost();
        held.hold(vec!["a".into(), "b".into()], t0);
        assert!(held.waiting());
        assert_eq!(held.due(1, t0), None, "only this node listens again");
        assert_eq!(held.due(2, t0 + ASK_EVERY), None);
        assert_eq!(
            held.due(3, t0 + 2 * ASK_EVERY),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(!held.waiting());
        assert_eq!(held.due(3, t0), None, "nothing twice");
        held.published();
        // Later lines, with no outage since, wait for nobody.
        held.hold(vec!["c".into()], t0);
        assert_eq!(held.due(1, t0), Some(vec!["c".into()]));
    }

    #[test]
    fn lines_that_could_not_be_published_wait_again_for_the_same_listeners() {
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        held.listeners(2);
        held.link_lost();
        held.hold(vec!["a".into()], t0);
        let lines = held.due(2, t0).unwrap();
        // The publish failed (Redis went away again): held again, not published.
        held.link_lost();
        held.hold(lines, t0);
        assert_eq!(held.due(1, t0 + ASK_EVERY), None);
        assert_eq!(held.due(2, t0 + ASK_EVERY), Some(vec!["a".into()]));
    }

    #[test]
    fn an_outage_with_nobody_gone_leaves_nothing_to_wait_for() {
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        held.listeners(3);
        held.link_lost();
        held.hold(Vec::new(), t0); // the resync after it: nobody gone
        held.hold(vec!["a".into()], t0); // later, declared lost while linked
        assert_eq!(held.due(2, t0), Some(vec!["a".into()]));
    }

    #[test]
    fn the_listeners_are_asked_at_most_every_so_often() {
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        assert!(!held.ask_now(t0), "nothing waits");
        held.listeners(2);
        held.link_lost();
        held.hold(vec!["a".into()], t0);
        assert!(held.ask_now(t0));
        assert!(!held.ask_now(t0 + ASK_EVERY / 2));
        assert!(held.ask_now(t0 + ASK_EVERY));
    }

    #[test]
    fn a_node_that_never_comes_back_delays_the_lines_a_bounded_time() {
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        held.listeners(2);
        held.link_lost();
        held.hold(vec!["a".into()], t0);
        assert_eq!(held.due(1, t0 + WAIT_AT_MOST / 2), None);
        assert_eq!(held.due(1, t0 + WAIT_AT_MOST), Some(vec!["a".into()]));
    }

    #[test]
    fn without_an_outage_the_lines_go_at_once() {
        // Declared lost while still linked: nothing was lost on our side.
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        held.listeners(2);
        held.hold(vec!["a".into()], t0);
        assert_eq!(held.due(2, t0), Some(vec!["a".into()]));
    }

    #[test]
    fn a_second_outage_while_lines_wait_keeps_the_first_count() {
        let t0 = Instant::now();
        let mut held = AfterOutage::default();
        held.listeners(3);
        held.link_lost();
        held.hold(vec!["a".into()], t0);
        held.listeners(1); // a beat between the two outages, only us back
        held.link_lost();
        held.hold(vec!["b".into()], t0);
        assert_eq!(held.due(2, t0 + ASK_EVERY), None);
        assert_eq!(
            held.due(3, t0 + ASK_EVERY),
            Some(vec!["a".into(), "b".into()])
        );
    }
}
