//! A client's life as the dispatcher sees it: it arrives (an alias, the lobby, the
//! history), moves between rooms, and leaves (`BYE`, `LEAVE`, the close grace).

use std::sync::Arc;
use std::time::Instant;

use super::outputs::Client;
use super::DispatcherState;
use crate::alias::PLAIN_ATTEMPTS;
use crate::clock::format_utc;
use crate::event::{ChatEvent, ClientId, CloseReason};
use crate::outbox::Outbox;
use crate::reply::Reply;
use crate::stats::Stats;
use crate::table::{User, UserTable, LOBBY};
use crate::transport::Transport;

/// The greeting after `HELLO <nick>`.
const HELLO_TEXT: &str = "welcome to Underworld-Line: you are anonymous; /help lists the commands";

impl DispatcherState {
    pub(super) fn connect(
        &mut self,
        table: &mut UserTable,
        id: ClientId,
        transport: Arc<dyn Transport>,
    ) {
        let client = Client {
            outbox: Arc::new(Outbox::new(transport)),
            dirty: false,
            closing: false,
            received: 0,
        };
        self.out.clients.insert(id, client);
        if self.stopping {
            self.begin_close(table, id, CloseReason::ServerShutdown);
            return;
        }
        log::info!("{id} connected");
        let Some(nick) = self.new_user_alias(table, id) else {
            return; // held until the register has an alias for them (`held.rs`)
        };
        self.greet(table, id, nick);
    }

    /// Greets a new client as `nick`: `HELLO`, the lobby, its history.
    pub(super) fn greet(&mut self, table: &mut UserTable, id: ClientId, nick: String) {
        log::debug!("{id} is {nick}");
        table.add(id, nick.clone(), LOBBY);
        self.register_user(id, &nick, LOBBY);
        self.reply(
            id,
            Reply::Hello {
                nick: &nick,
                text: HELLO_TEXT,
            },
        );
        self.enter_room(table, id, &nick, LOBBY);
    }

    /// A random alias nobody has (by look): in cluster mode, one reserved across the
    /// cluster if there is one ready. After 64 tries (a nearly full name space)
    /// it falls back to `anon<id>`: `anon` + digits is reserved, so nobody else can hold
    /// it, and ids are unique.
    pub(super) fn fresh_alias(&mut self, table: &UserTable, id: ClientId) -> String {
        if let Some(alias) = self.reserved_alias(table, id) {
            return alias;
        }
        // In cluster mode, drawing here is the fallback (an outage): a numbered alias,
        // one of 23 million, so that its claim after the fact practically never finds it
        // taken (the other nodes' reservations alone hold hundreds of the 2,304 plain
        // ones). On a single node, plain ones first unless the server is crowded.
        let first = if self.draws_numbered() {
            PLAIN_ATTEMPTS
        } else {
            crate::alias::first_attempt(table.user_count())
        };
        for attempt in first..first + 64 {
            let candidate = self.aliases.candidate(attempt);
            if table.nick_owner(&candidate).is_none() && !self.nick_being_claimed(id, &candidate) {
                return candidate;
            }
        }
        format!("anon{}", id.0)
    }

    /// Tells the room (and the joiner) about a join, and replays the room's history.
    ///
    /// The joiner is already a member, so `JOIN` goes to the whole room only if the room,
    /// the joiner included, is small enough; that decides whether the joiner counts as
    /// announced (see [`Config::announce_max`](crate::Config::announce_max)). In cluster
    /// mode the room is counted on every node (`announce.rs`).
    pub(super) fn enter_room(
        &mut self,
        table: &mut UserTable,
        id: ClientId,
        nick: &str,
        room: &str,
    ) {
        let join = Reply::Join { room, nick };
        let announced = self.few_enough(table.members(room).len() + self.members_elsewhere(room));
        table.set_announced(id, announced);
        if !self.broker_takes(table, id, room, &join, announced) {
            self.tell_room_or_one(table, room, id, announced, join.to_line().as_bytes());
            self.replay_history(table, id, room);
        }
        self.notify(|| ChatEvent::Joined {
            nick: nick.to_string(),
            room: room.to_string(),
        });
    }

    /// The room's kept messages, as `HIST` lines to one who just entered it.
    pub(super) fn replay_history(&mut self, table: &UserTable, id: ClientId, room: &str) {
        for entry in table.history(room) {
            let time = format_utc(entry.time);
            let line = Reply::Hist {
                time: &time,
                line: &entry.line,
            }
            .to_line();
            self.out.send(id, line.as_bytes());
        }
    }

    /// Tells a room that someone left it (they are no longer a member, so the line goes
    /// to those who remain).
    ///
    /// Only if the room was told the leaver's nick (`user.announced`): members who never
    /// got their `JOIN` must not get their `LEAVE`. And only if the remaining room is
    /// small enough, for the cost (see [`Config::announce_max`](crate::Config::announce_max)).
    pub(super) fn left_room(
        &mut self,
        table: &mut UserTable,
        id: ClientId,
        user: &User,
        reason: &str,
    ) {
        let leave = Reply::Leave {
            room: &user.room,
            nick: &user.nick,
            reason,
        };
        let remaining = table.members(&user.room).len() + self.members_elsewhere(&user.room);
        let to_room = user.announced && self.few_enough(remaining);
        if !self.broker_takes(table, id, &user.room, &leave, to_room) && to_room {
            self.out
                .send_all(table.members(&user.room), leave.to_line().as_bytes());
        }
        self.notify_left(user, reason);
    }

    /// Tells the observers (not the room) that someone left.
    fn notify_left(&mut self, user: &User, reason: &str) {
        self.notify(|| ChatEvent::Left {
            nick: user.nick.clone(),
            room: user.room.clone(),
            reason: reason.to_string(),
        });
    }

    /// Whether a `JOIN`, `LEAVE` or `NICK` line that would reach this many members is
    /// cheap enough to send (see [`Config::announce_max`](crate::Config::announce_max)).
    pub(super) fn few_enough(&self, recipients: usize) -> bool {
        recipients <= self.config.announce_max
    }

    /// A `JOIN` or `NICK` line: to every member of the room, or only to the one it is
    /// about (who always learns their own join or rename).
    pub(super) fn tell_room_or_one(
        &mut self,
        table: &UserTable,
        room: &str,
        concerned: ClientId,
        to_room: bool,
        line: &[u8],
    ) {
        if to_room {
            self.out.send_all(table.members(room), line);
        } else {
            self.out.send(concerned, line);
        }
    }

    /// Says `BYE` and starts closing: the user leaves the table (their nick is free at
    /// once), the room is told, and the socket gets a FIN after the `BYE`. If the client
    /// has not closed after `close_grace`, [`Self::expire_closing`] closes it hard.
    pub(super) fn begin_close(&mut self, table: &mut UserTable, id: ClientId, reason: CloseReason) {
        match self.out.clients.get(&id) {
            Some(client) if !client.closing => {}
            _ => return,
        }
        let text = reason.to_string();
        if let Some(user) = table.remove(id) {
            if reason == CloseReason::ServerShutdown {
                // Everyone leaves at once: nobody needs LEAVE lines, but observers
                // still hear who left. (In cluster mode, the register thread tells the
                // other nodes' rooms when it takes this node out of the register.)
                self.notify_left(&user, &text);
            } else {
                self.release_with_line(&user.nick, |state| {
                    state.left_room(table, id, &user, &text);
                });
            }
        }
        log::info!("{id} closing: {}", reason.label());
        let Some(client) = self.out.clients.get_mut(&id) else {
            return;
        };
        client.closing = true;
        if reason == CloseReason::TooSlow {
            // Its buffer is full, so a BYE could not get through: close now.
            Stats::add(&self.stats.too_slow, 1);
            client.outbox.close(Some(reason));
        } else {
            let bye = Reply::Bye { reason: &text }.to_line();
            client.outbox.push_final(bye.as_bytes());
            self.out.mark_dirty(id);
        }
        let deadline = Instant::now() + self.config.close_grace;
        self.closing.push_back((deadline, id));
    }

    /// The connection's reader ended (the last event for this id).
    pub(super) fn closed(&mut self, table: &mut UserTable, id: ClientId) {
        let Some(client) = self.out.clients.remove(&id) else {
            return;
        };
        if !client.closing {
            let reason = client
                .outbox
                .close_reason()
                .unwrap_or(CloseReason::ConnectionClosed);
            if reason == CloseReason::TooSlow {
                Stats::add(&self.stats.too_slow, 1);
            }
            if let Some(user) = table.remove(id) {
                self.release_with_line(&user.nick, |state| {
                    state.left_room(table, id, &user, &reason.to_string());
                });
            }
            log::info!("{id} gone: {}", reason.label());
        } else {
            log::debug!("{id} closed");
        }
        // The reader saw the end of the input, but the peer may still be reading (a
        // half-close, like `nc -N`): write what this batch queued for it (its `BYE`,
        // say) before closing. The write does not wait: whatever the socket cannot take
        // now is dropped with the connection.
        client.outbox.flush();
        // Closing also tells the flusher to forget it.
        client.outbox.close(None);
    }
}
