//! The dispatcher's side of cluster mode (cargo feature `redis`): which room lines go
//! to the broker, and what to do with what comes back.
//!
//! The rule that gives every member of a room one order: a room line (`MSG`, `ME`,
//! `JOIN`, `LEAVE`, `NICK`) is not delivered when it is said but when the broker hands
//! it back, the node's own lines included. Each line is applied exactly once:
//!
//! - normally when it comes back from the broker;
//! - locally, at once, while the node is not subscribed (Redis unreachable: chat stays
//!   local to this node);
//! - locally, later, if the publisher could not hand it to Redis, if the subscription
//!   broke while it was on its way, or if a later line of ours came back first (it was
//!   lost). Applying a line locally applies every earlier waiting line first, so a
//!   node's own lines never overtake each other.
//!
//! Whether a `JOIN`, `LEAVE` or `NICK` reaches its room (`--announce-max`) is decided
//! once, by the user's own node, and travels with the line (`announce.rs`).
//!
//! Lines from other nodes were parsed strictly by the subscriber thread
//! (`src/cluster/wire.rs`); here they are checked against the local table: a line that
//! names a nick held by a local user is dropped, so no node can speak for a local user.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::announce::Announced;
use super::held::Held;
use super::listeners::Listeners;
use super::recall::Recall;
use super::register::Claims;
use super::DispatcherState;
use crate::cluster::history::{self, HistoryOp};
use crate::cluster::{
    wire, Bridge, ClusterEvent, LogLimiter, Outgoing, Record, RoomLine, PUBLISH_QUEUE,
};
use crate::event::ClientId;
use crate::reply::Reply;
use crate::stats::Stats;
use crate::table::UserTable;
use crate::text::nick_key;

/// Refused remote lines are reported at most this often.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Most of our lines waiting to come back. A broker that takes lines but never hands
/// them back (a stalled subscription) must not make the queue grow without end: past
/// this, the oldest is delivered here.
const MAX_WAITING: usize = PUBLISH_QUEUE;

/// The dispatcher's cluster state.
pub(super) struct Link {
    pub(super) bridge: Bridge,
    /// This node's name, as it signs its lines.
    pub(super) node: String,
    /// The number the next line of ours gets.
    next_seq: u64,
    /// Subscribed to the broker: lines go through it. Otherwise they stay local.
    pub(super) up: bool,
    /// Nicks being claimed in the register for local users (`register.rs`).
    pub(super) claims: Claims,
    /// A change could not be queued for the register: it needs a resync (`register.rs`).
    pub(super) resync_owed: bool,
    /// Joiners waiting for their room's history from Redis (`recall.rs`).
    pub(super) recall: Recall,
    /// New users whose greeting waits for a reserved alias (`held.rs`).
    pub(super) held: Held,
    /// Our lines handed to the publisher, oldest first, waiting to come back.
    pending: VecDeque<Pending>,
    listeners: Listeners,
    /// Limits the log of refused remote lines and whispers.
    pub(super) refused: LogLimiter,
    /// A nick to free with the next line handed to the publisher (see
    /// [`DispatcherState::release_with_line`]).
    pub(super) release_next: Option<String>,
    /// The other nodes' room sizes and users, for `--announce-max` (`announce.rs`).
    pub(super) announced: Announced,
}

/// How one of our room lines reached us: whether a `JOIN` replays the cluster's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Back from the broker, as our line number this: its history comes with it.
    Broker(u64),
    /// Applied here without the broker: this node's own history.
    Local,
}

/// What publishing `line` does to its room's history (`keep`: `--history`).
fn history_op(line: &RoomLine, keep: usize) -> HistoryOp {
    if keep == 0 {
        return HistoryOp::None;
    }
    match line {
        RoomLine::Msg { room, .. } | RoomLine::Me { room, .. } => HistoryOp::Remember {
            room: room.clone(),
            entry: history::entry(SystemTime::now(), &line.reply().to_string()),
            keep,
        },
        RoomLine::Join { room, .. } => HistoryOp::Recall {
            room: room.clone(),
            keep,
        },
        _ => HistoryOp::None,
    }
}

/// One of our lines on its way through the broker.
struct Pending {
    seq: u64,
    /// The local user it is about.
    id: ClientId,
    line: RoomLine,
    /// The nick this line gives up (a quitter's `LEAVE`, a rename's `NICK`): freed in
    /// the register only once the line is back from Redis, so that no other node can
    /// take the nick before the line that gives it up is out (its `LEAVE` would then
    /// name a user of theirs and be dropped there).
    release: Option<String>,
    /// Whether the room hears it (`--announce-max`, decided when it was said).
    to_room: bool,
}

impl Link {
    /// Whether one of our lines on its way frees `nick` when it is back (then nothing
    /// else may free it earlier).
    pub(super) fn frees_later(&self, nick: &str) -> bool {
        let key = nick_key(nick);
        self.pending
            .iter()
            .any(|p| p.release.as_deref().is_some_and(|n| nick_key(n) == key))
    }

    /// Whether our line `seq` is still on its way through the broker.
    pub(super) fn is_pending(&self, seq: u64) -> bool {
        self.pending.iter().any(|p| p.seq == seq)
    }

    pub(super) fn new(bridge: Bridge, node: String) -> Link {
        Link {
            bridge,
            node,
            next_seq: 1,
            up: false,
            claims: Claims::default(),
            recall: Recall::default(),
            held: Held::default(),
            resync_owed: false,
            pending: VecDeque::new(),
            listeners: Listeners::default(),
            refused: LogLimiter::new(REFUSED_LOG_EVERY),
            release_next: None,
            announced: Announced::default(),
        }
    }
}

impl DispatcherState {
    /// Runs `say` (which hands the room line that gives up `nick` to
    /// [`Self::broker_takes`]), and frees `nick` in the register once that line is back
    /// from Redis; at once if no line went to the publisher (outside a link, or none).
    pub(super) fn release_with_line(&mut self, nick: &str, say: impl FnOnce(&mut Self)) {
        if let Some(link) = self.cluster.as_mut() {
            link.release_next = Some(nick.to_string());
        }
        say(self);
        let unsent = self
            .cluster
            .as_mut()
            .and_then(|link| link.release_next.take());
        if unsent.is_some() {
            self.register_release(nick);
        }
    }

    /// Frees `nick` in the register, unless a local user holds it again or claims it
    /// (the release comes a round trip late: the nick may be someone's here by now).
    fn release_unless_retaken(&mut self, table: &UserTable, nick: &str) {
        let claimed = self
            .cluster
            .as_ref()
            .is_some_and(|link| link.claims.contains_key(&nick_key(nick)));
        if table.nick_owner(nick).is_none() && !claimed {
            self.register_release(nick);
        }
    }

    /// In cluster mode, takes a room line said by (or about) local user `id` and sees to
    /// its delivery: through the broker, or locally while there is none. Returns false
    /// outside cluster mode (one `Option` check), and the caller delivers it as always.
    /// `to_room`: whether a `JOIN`, `LEAVE` or `NICK` reaches the room (the caller
    /// decided, by `--announce-max`); every node obeys it (`announce.rs`).
    pub(super) fn broker_takes(
        &mut self,
        table: &mut UserTable,
        id: ClientId,
        room: &str,
        reply: &Reply<'_>,
        to_room: bool,
    ) -> bool {
        let Some(link) = self.cluster.as_mut() else {
            return false;
        };
        let Some(line) = RoomLine::from_reply(room, reply) else {
            return false;
        };
        if !link.up {
            self.apply(table, Some(id), &line, Via::Local, to_room);
            return true;
        }
        let seq = link.next_seq;
        link.next_seq += 1;
        let payload = wire::encode_marked(&link.node, seq, &line, !to_room);
        let history = history_op(&line, self.config.history);
        let release = link.release_next.take();
        link.pending.push_back(Pending {
            seq,
            id,
            line,
            release,
            to_room,
        });
        let outgoing = Outgoing {
            seq,
            payload,
            history,
        };
        if link.bridge.publish(outgoing).is_err() {
            // The publisher is far behind (or gone): deliver here rather than wait.
            self.settle_through(table, seq, false);
        } else if link.pending.len() > MAX_WAITING {
            let oldest = link.pending.front().map_or(seq, |p| p.seq);
            self.settle_through(table, oldest, false);
        }
        true
    }

    /// What the cluster threads report.
    pub(super) fn on_cluster(&mut self, table: &mut UserTable, event: ClusterEvent) {
        self.pay_resync(table);
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        match event {
            ClusterEvent::Up => {
                link.up = true;
                self.stats.cluster_linked.store(true, Ordering::Relaxed);
            }
            ClusterEvent::Down => {
                link.up = false;
                self.stats.cluster_linked.store(false, Ordering::Relaxed);
                // Whatever was on its way will not come back to us.
                self.settle_through(table, u64::MAX, false);
                self.recall_locally(table, None);
                // Nothing can be coordinated now: held users get aliases drawn here.
                self.aliases_link_down(table);
            }
            ClusterEvent::Unpublished(seq) => {
                self.settle_through(table, seq, false);
                self.recall_locally(table, Some(seq));
            }
            ClusterEvent::Recalled { seq, entries } => self.recalled(seq, &entries),
            ClusterEvent::Heard(record) if record.node == link.node => {
                if record.seq >= link.next_seq {
                    if let Some(held_back) = link.refused.allow() {
                        log::warn!(
                            "cluster: heard a line signed {} that this node never sent: \
                             do two nodes use that --node name? ({held_back} more)",
                            link.node
                        );
                    }
                    // Forged (or another node with our name): it must not settle our
                    // waiting lines, which would then be delivered before lines that
                    // Redis ordered ahead of them.
                    return;
                }
                // Our own line: apply what we kept, never what the wire says.
                self.settle_through(table, record.seq, true);
            }
            ClusterEvent::Heard(record) => self.heard_from_another_node(table, &record),
            ClusterEvent::RoomSizes(sizes) => link.announced.set_sizes(sizes),
            ClusterEvent::Direct(signed) => self.on_direct(table, &signed),
            ClusterEvent::Whispered {
                id,
                to,
                matched,
                text,
            } => self.whispered(table, id, &to, matched, &text),
            register @ (ClusterEvent::Claimed { .. }
            | ClusterEvent::Aliases { .. }
            | ClusterEvent::ResyncWanted
            | ClusterEvent::Roster { .. }) => self.on_register(table, register),
        }
    }

    /// A line from another node: delivered unless it names a local user's nick.
    fn heard_from_another_node(&mut self, table: &mut UserTable, record: &Record) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        if record
            .line
            .nicks()
            .any(|nick| table.nick_owner(nick).is_some())
        {
            if let Some(held_back) = link.refused.allow() {
                // Neither the nick nor the text: both are personal, and untrusted.
                log::warn!(
                    "cluster: dropped a line from node {} naming a nick a local user holds \
                     ({held_back} more dropped since the last report)",
                    record.node
                );
            }
            return;
        }
        let to_room = link.announced.heard(record);
        self.apply(table, None, &record.line, Via::Local, to_room);
    }

    /// Applies our waiting lines up to number `seq`, oldest first. `heard`: line `seq`
    /// itself came back from the broker (the earlier ones were lost on the way).
    fn settle_through(&mut self, table: &mut UserTable, seq: u64, heard: bool) {
        loop {
            let Some(link) = self.cluster.as_mut() else {
                return;
            };
            if link.pending.front().map_or(true, |next| next.seq > seq) {
                return;
            }
            let Some(Pending {
                id,
                line,
                seq: number,
                release,
                to_room,
            }) = link.pending.pop_front()
            else {
                return;
            };
            let via = if heard && number == seq {
                Via::Broker(number)
            } else {
                link.recall.drop_early(number);
                Via::Local
            };
            self.apply(table, Some(id), &line, via, to_room);
            if let Some(nick) = release {
                self.release_unless_retaken(table, &nick);
            }
        }
    }

    /// Delivers a room line to this node's listeners of its room. `local`: the local
    /// user the line is about, if any (their `JOIN` and `LEAVE` change what they hear).
    /// `to_room`: whether a `JOIN`, `LEAVE` or `NICK` reaches the room, as its sender
    /// decided for the whole cluster (`announce.rs`); otherwise only a local user it is
    /// about hears it.
    fn apply(
        &mut self,
        table: &mut UserTable,
        local: Option<ClientId>,
        line: &RoomLine,
        via: Via,
        to_room: bool,
    ) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let room = line.room();
        match (line, local) {
            (RoomLine::Join { .. }, Some(id)) => link.listeners.enter(id, room),
            (RoomLine::Leave { .. }, Some(id)) => {
                link.listeners.leave(id);
                link.recall.forget(id);
            }
            _ => {}
        }
        let Link {
            listeners, recall, ..
        } = link;
        let listeners = listeners.of(room);
        let reply = line.reply();
        let text = reply.to_line();
        let out = &mut self.out;
        match line {
            RoomLine::Msg { .. } | RoomLine::Me { .. } => {
                // Counted where it is said, and where someone hears it.
                if local.is_some() || !listeners.is_empty() {
                    Stats::add(&self.stats.messages, 1);
                }
                recall.deliver(out, listeners, text.as_bytes());
                table.record(room, reply.to_string(), self.config.history);
            }
            RoomLine::Join { .. } | RoomLine::Nick { .. } => match local {
                _ if to_room => recall.deliver(out, listeners, text.as_bytes()),
                // The one concerned always learns their own join or rename.
                Some(id) => recall.deliver(out, &[id], text.as_bytes()),
                None => {}
            },
            RoomLine::Leave { .. } => {
                if to_room {
                    recall.deliver(out, listeners, text.as_bytes());
                }
            }
        }
        if let (RoomLine::Join { .. }, Some(id)) = (line, local) {
            self.replay_on_join(table, id, room, via);
        }
    }
}
