//! Cluster mode (cargo feature `redis`): new users whose greeting waits for an alias.
//!
//! While the node is linked to Redis, a new user's alias comes from the pool that the
//! register thread reserved ahead (`src/cluster/registry.rs`): it is theirs across the
//! cluster before anyone sees it, so it never collides with a user of another node.
//! When a burst of arrivals empties the pool, an alias drawn here could be held by a
//! user of another node, and the newcomer would be renamed a moment after their `HELLO`.
//! So instead the newcomer's greeting (`HELLO`, their `JOIN`) is *held*: the register is
//! asked for more aliases ([`Request::Aliases`]), one round trip to Redis, and the held
//! users are greeted, in the order they arrived, when its answer comes
//! ([`ClusterEvent::Aliases`](crate::cluster::ClusterEvent::Aliases)). Newcomers who
//! arrive meanwhile wait behind them, so greetings keep their order.
//!
//! A held user's connection thread does not know it is held: the client may already
//! send lines. What it sends is kept here, in order, and handled right after the
//! greeting, exactly as if it had come then: nothing is lost or reordered.
//!
//! A hold is bounded twice, so that a slow or stuck register can never leave newcomers
//! without `HELLO`, nor fill memory with what they send: after [`HOLD_AT_MOST`] without
//! an answer, or once one held client has sent [`KEEP_AT_MOST`] events, every held user
//! is greeted with an alias drawn here (claimed after the fact, as during an outage),
//! and what they sent is handled then, in order.
//!
//! When the link goes down, the pool is *in doubt*: Redis may come back empty, and the
//! aliases in the pool would then be reserved no more. Until the register has checked
//! them (reserved them again on a live connection, which it does each time it
//! reconnects, before it asks for a resync, and for a request with `check`), no alias
//! is taken from the pool; newcomers are held meanwhile (while linked) or get aliases
//! drawn here (during the outage). (Left open: Redis restarted twice in a row, the
//! resync request of the first reconnection reaching the dispatcher after the link's
//! second fall; the register's next command finds the connection dead and checks again.)
//!
//! The register answers every request for aliases. If it could reserve none (Redis
//! unreachable or failing, the name space full), if it cannot be asked (its queue is
//! full), or if the link goes down meanwhile, the held users are greeted with aliases
//! drawn here and claimed after the fact, as during an outage: then, and only then, a
//! user of another node may hold the same alias, and the newcomer is renamed (`NICK`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::DispatcherState;
use crate::cluster::Request;
use crate::event::{ClientId, Event};
use crate::table::UserTable;

/// How long new users may wait for the register's aliases (usually one round trip).
pub(super) const HOLD_AT_MOST: Duration = Duration::from_secs(2);

/// How many events one held client's connection may send before the holds end.
pub(super) const KEEP_AT_MOST: usize = 256;

/// New users waiting for an alias, and what their connections sent meanwhile.
#[derive(Default)]
pub(super) struct Held {
    /// Who waits, in the order they arrived.
    order: VecDeque<ClientId>,
    /// What each one's connection sent meanwhile, in order.
    events: HashMap<ClientId, Vec<Event>>,
    /// A [`Request::Aliases`] is on its way (its answer comes before anything else is
    /// asked), and whether its answer ends the doubt (it asked for a check, and the link
    /// has not gone down since).
    asked: Option<bool>,
    /// The link went down since the register last checked the pool: take nothing from
    /// it until it has.
    pool_in_doubt: bool,
    /// When the first of those waiting now was held: they are all greeted
    /// [`HOLD_AT_MOST`] after it, answer or not.
    since: Option<Instant>,
}

impl Held {
    /// Whether nobody waits.
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether the pool may hold aliases that are no longer reserved.
    pub(super) fn pool_in_doubt(&self) -> bool {
        self.pool_in_doubt
    }
}

impl DispatcherState {
    /// The alias a new user is greeted with; `None` if their greeting is held until the
    /// register has reserved more (see the module's docs).
    pub(super) fn new_user_alias(&mut self, table: &mut UserTable, id: ClientId) -> Option<String> {
        if !self.cluster.as_ref().is_some_and(|link| link.up) {
            // No link (an outage): nothing can be coordinated. Drawn here, claimed after.
            return Some(self.fresh_alias(table, id));
        }
        // Those who came first are greeted first.
        self.greet_held(table);
        if self
            .cluster
            .as_ref()
            .is_some_and(|link| link.held.is_empty())
        {
            if let Some(alias) = self.reserved_alias(table, id) {
                return Some(alias);
            }
        }
        let link = self.cluster.as_mut()?;
        link.held.since.get_or_insert_with(Instant::now);
        link.held.order.push_back(id);
        link.held.events.insert(id, Vec::new());
        log::debug!("{id}: no alias reserved yet: greeting held");
        self.ask_for_aliases(table);
        None
    }

    /// Keeps `event` if it is from a held user's connection (`None`); otherwise gives it
    /// back to be handled now.
    pub(super) fn held_back(&mut self, table: &mut UserTable, event: Event) -> Option<Event> {
        let Some(link) = self.cluster.as_mut() else {
            return Some(event);
        };
        if link.held.is_empty() {
            return Some(event); // the usual case: one check
        }
        let id = match &event {
            Event::Command { id, .. }
            | Event::Rejected { id, .. }
            | Event::Fatal { id, .. }
            | Event::Closed { id } => *id,
            _ => return Some(event),
        };
        let Some(kept) = link.held.events.get_mut(&id) else {
            return Some(event);
        };
        kept.push(event);
        if kept.len() >= KEEP_AT_MOST {
            // Sending that much before its `HELLO`: stop holding rather than keep it all.
            log::debug!("{id}: {KEEP_AT_MOST} events while held: greeting everyone held");
            self.greet_all_held(table);
        }
        None
    }

    /// When the holds end whatever the register says (`None`: nobody is held).
    pub(super) fn holds_end_at(&self) -> Option<Instant> {
        let since = self.cluster.as_ref()?.held.since?;
        Some(since + HOLD_AT_MOST)
    }

    /// Greets everyone held if they have waited [`HOLD_AT_MOST`] (the register is slow,
    /// stuck, or gone): with aliases drawn here, as during an outage.
    pub(super) fn end_overdue_holds(&mut self, table: &mut UserTable) {
        if self.holds_end_at().is_some_and(|end| Instant::now() >= end) {
            log::warn!("cluster: no aliases from the register in {HOLD_AT_MOST:?}: greeting the held users with local ones");
            self.greet_all_held(table);
        }
    }

    /// The register's answer to [`Request::Aliases`]: `ready`, it has aliases now.
    pub(super) fn aliases_reserved(&mut self, table: &mut UserTable, ready: bool) {
        if let Some(link) = self.cluster.as_mut() {
            if link.held.asked == Some(true) {
                link.held.pool_in_doubt = false;
            }
            link.held.asked = None;
        }
        self.greet_held(table);
        if self
            .cluster
            .as_ref()
            .is_some_and(|link| link.held.is_empty())
        {
            return;
        }
        if ready {
            // More waited than the pool held: ask again.
            self.ask_for_aliases(table);
        } else {
            // None could be reserved: as during an outage.
            self.greet_all_held(table);
        }
    }

    /// The register reconnected (or was declared lost) and reserved the pool again
    /// before it asked for this resync: the pool is no longer in doubt.
    pub(super) fn pool_checked(&mut self) {
        if let Some(link) = self.cluster.as_mut() {
            link.held.pool_in_doubt = false;
        }
    }

    /// The link is down: the pool is in doubt, a check on its way no longer ends the
    /// doubt (Redis may have gone away after it), and the held users are greeted now,
    /// with aliases drawn here, as during any outage.
    pub(super) fn aliases_link_down(&mut self, table: &mut UserTable) {
        if let Some(link) = self.cluster.as_mut() {
            link.held.pool_in_doubt = true;
            if link.held.asked.is_some() {
                link.held.asked = Some(false);
            }
        }
        self.greet_all_held(table);
    }

    /// Greets every held user now, each with a reserved alias while the pool has one,
    /// then with aliases drawn here (claimed after the fact). While the node is
    /// stopping nobody is greeted: what their connections sent is handled as for any
    /// client told `BYE`.
    pub(super) fn greet_all_held(&mut self, table: &mut UserTable) {
        while self
            .cluster
            .as_ref()
            .is_some_and(|link| !link.held.is_empty())
        {
            self.greet_one_held(table, None);
        }
    }

    /// Asks the register for aliases, unless a request is already on its way. If it
    /// cannot be asked (its queue is full: Redis slow or stuck), the held users are
    /// greeted now with aliases drawn here.
    fn ask_for_aliases(&mut self, table: &mut UserTable) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        if link.held.asked.is_some() {
            return;
        }
        let check = link.held.pool_in_doubt;
        if link.bridge.ask(Request::Aliases { check }) {
            link.held.asked = Some(check);
        } else {
            self.greet_all_held(table);
        }
    }

    /// Greets held users, first come first, while the pool has aliases for them.
    fn greet_held(&mut self, table: &mut UserTable) {
        while let Some(id) = self
            .cluster
            .as_ref()
            .and_then(|link| link.held.order.front().copied())
        {
            let Some(alias) = self.reserved_alias(table, id) else {
                return;
            };
            self.greet_one_held(table, Some(alias));
        }
    }

    /// Greets the first held user (with `alias`, or one drawn here), then handles what
    /// their connection sent meanwhile, in order.
    fn greet_one_held(&mut self, table: &mut UserTable, alias: Option<String>) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let Some(id) = link.held.order.pop_front() else {
            return;
        };
        if link.held.order.is_empty() {
            link.held.since = None;
        }
        let kept = link.held.events.remove(&id).unwrap_or_default();
        // Still there and not told `BYE` (a shutdown closes held clients too).
        let open = self.out.clients.get(&id).is_some_and(|c| !c.closing);
        if open && !self.stopping {
            let nick = alias.unwrap_or_else(|| self.fresh_alias(table, id));
            self.greet(table, id, nick);
        }
        for event in kept {
            self.dispatch(table, event);
        }
    }
}
