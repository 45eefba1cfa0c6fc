//! Without the cargo feature `redis` there is no cluster. The dispatcher calls the same
//! hooks as in cluster mode (`cluster.rs`, `register.rs`, `remote.rs` have those), and
//! here each one says "not mine", so the caller does what a single node always does.
//! Each is inlined to nothing: the single node pays nothing for them.

use crossbeam_channel::Sender;

use super::{DispatcherState, ListKind};
use crate::event::ClientId;
use crate::table::UserTable;

/// The hooks, each doing nothing.
impl DispatcherState {
    /// A room line: the caller delivers it.
    #[inline(always)]
    pub(super) fn broker_takes(
        &mut self,
        _table: &mut UserTable,
        _id: ClientId,
        _room: &str,
        _line: &crate::reply::Reply<'_>,
        _to_room: bool,
    ) -> bool {
        false
    }

    /// No other node: a room's members are all here.
    #[inline(always)]
    pub(super) fn members_elsewhere(&self, _room: &str) -> usize {
        0
    }

    /// A list: the caller answers from the local table.
    #[inline(always)]
    pub(super) fn cluster_answers_list(
        &mut self,
        _id: ClientId,
        _user: &crate::table::User,
        _kind: ListKind,
    ) -> bool {
        false
    }

    /// No nick is on its way through a cluster claim.
    #[inline(always)]
    pub(super) fn nick_being_claimed(&self, _id: ClientId, _nick: &str) -> bool {
        false
    }

    /// A free nick: the caller renames at once.
    #[inline(always)]
    pub(super) fn cluster_decides_nick(
        &mut self,
        _id: ClientId,
        _user: &crate::table::User,
        _new: &str,
    ) -> bool {
        false
    }

    /// No aliases reserved ahead: the caller draws one.
    #[inline(always)]
    pub(super) fn reserved_alias(&self, _table: &UserTable, _id: ClientId) -> Option<String> {
        None
    }

    /// A new user's alias, drawn here at once (no greeting is ever held).
    #[inline(always)]
    pub(super) fn new_user_alias(&mut self, table: &mut UserTable, id: ClientId) -> Option<String> {
        Some(self.fresh_alias(table, id))
    }

    /// No greeting is held, so no event is kept for later.
    #[inline(always)]
    pub(super) fn held_back(
        &mut self,
        _table: &mut UserTable,
        event: crate::event::Event,
    ) -> Option<crate::event::Event> {
        Some(event)
    }

    /// No greeting is held: no deadline.
    #[inline(always)]
    pub(super) fn holds_end_at(&self) -> Option<std::time::Instant> {
        None
    }

    /// No greeting is held.
    #[inline(always)]
    pub(super) fn end_overdue_holds(&mut self, _table: &mut UserTable) {}

    /// No greeting is held.
    #[inline(always)]
    pub(super) fn greet_all_held(&mut self, _table: &mut UserTable) {}

    /// Aliases drawn here are plain ones first (`QuietOtter`).
    #[inline(always)]
    pub(super) fn draws_numbered(&self) -> bool {
        false
    }

    /// No register to tell about a new user, a move or a departure.
    #[inline(always)]
    pub(super) fn register_user(&mut self, _id: ClientId, _nick: &str, _room: &str) {}

    #[inline(always)]
    pub(super) fn register_move(&mut self, _nick: &str, _room: &str) {}

    /// Without a cluster there is no register: just says the line.
    #[inline(always)]
    pub(super) fn release_with_line(&mut self, _nick: &str, say: impl FnOnce(&mut Self)) {
        say(self);
    }

    /// A whisper to a nick nobody here has: the caller answers `no-such-user`.
    #[inline(always)]
    pub(super) fn cluster_whisper(
        &mut self,
        _id: ClientId,
        _user: &crate::table::User,
        _to: &str,
        _text: &str,
    ) -> bool {
        false
    }

    /// The operator's whisper or kick of a nick nobody here has: given back.
    #[inline(always)]
    pub(super) fn cluster_operator_whisper(
        &mut self,
        _to: &str,
        _text: &str,
        done: OperatorDone,
    ) -> Option<OperatorDone> {
        Some(done)
    }

    #[inline(always)]
    pub(super) fn cluster_operator_kick(
        &mut self,
        _nick: &str,
        _reason: &str,
        done: OperatorDone,
    ) -> Option<OperatorDone> {
        Some(done)
    }

    /// A notice reaches this node's users only.
    #[inline(always)]
    pub(super) fn cluster_notice(&mut self, _text: &str) {}
}

/// Where the answer to an operator's whisper or kick goes.
pub(super) type OperatorDone = Sender<Result<String, crate::event::OperatorError>>;
