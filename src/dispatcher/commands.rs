//! What each client command means: one function per command, each turning a
//! [`Command`] into changes to the user table and lines for its recipients.

use super::{DispatcherState, ListKind, LIST_MAX};
use crate::command::{Command, HELP_LINES};
use crate::event::{ChatEvent, ClientId, CloseReason};
use crate::reply::{ErrorCode, Reply};
use crate::stats::Stats;
use crate::table::{User, UserTable};
use crate::text::{normalize_room, validate_nick, NickError};

impl DispatcherState {
    pub(super) fn command(&mut self, table: &mut UserTable, id: ClientId, command: Command) {
        // A copy (two short strings), because the handlers below change the table while
        // they still need the sender's nick and room as they were.
        let Some(user) = table.user(id).cloned() else {
            return; // closing, or never connected: ignore
        };
        match command {
            Command::Say(text) => self.speak(table, id, &user, text, false),
            Command::Me(text) => self.speak(table, id, &user, text, true),
            Command::Nick(new) => self.change_nick(table, id, &user, new),
            Command::Join(room) => self.join(table, id, &user, &room),
            Command::Rooms => {
                if !self.cluster_answers_list(id, &user, ListKind::Rooms) {
                    self.list_rooms(table, id);
                }
            }
            Command::Who => {
                if !self.cluster_answers_list(id, &user, ListKind::Who) {
                    self.list_who(table, id, &user.room);
                }
            }
            Command::Users => {
                if !self.cluster_answers_list(id, &user, ListKind::Users) {
                    self.list_users(table, id);
                }
            }
            Command::Whisper { to, text } => self.whisper(table, id, &user, &to, &text),
            Command::Ping(token) => self.reply(id, Reply::Pong { token: &token }),
            Command::Help => {
                for text in HELP_LINES {
                    self.reply(id, Reply::Help { text });
                }
                self.end_list(id, "help", HELP_LINES.len());
            }
            Command::Quit(reason) => self.begin_close(table, id, CloseReason::Quit(reason)),
        }
    }

    /// `/rooms`: this node's rooms and their sizes.
    pub(super) fn list_rooms(&mut self, table: &UserTable, id: ClientId) {
        let rooms: Vec<(String, usize)> = table
            .rooms()
            .map(|(name, members)| (name.to_string(), members))
            .collect();
        for (room, members) in rooms.iter().take(LIST_MAX) {
            self.reply(
                id,
                Reply::Room {
                    room,
                    members: *members,
                },
            );
        }
        self.end_list(id, "rooms", rooms.len());
    }

    /// `/who`: the members of `room` on this node.
    pub(super) fn list_who(&mut self, table: &UserTable, id: ClientId, room: &str) {
        let members = table.members(room);
        for member in members.iter().take(LIST_MAX) {
            if let Some(other) = table.user(*member) {
                let who = Reply::Who {
                    room,
                    nick: &other.nick,
                };
                self.out.send(id, who.to_line().as_bytes());
            }
        }
        self.end_list(id, "who", members.len());
    }

    /// `/users`: this node's users, by nick.
    pub(super) fn list_users(&mut self, table: &UserTable, id: ClientId) {
        let mut users: Vec<&User> = table.users().collect();
        let total = users.len();
        // Only the first LIST_MAX are shown: select them in O(n), then sort just
        // those, instead of sorting 16,000 users to show 200.
        if total > LIST_MAX {
            users.select_nth_unstable_by(LIST_MAX, |a, b| a.nick.cmp(&b.nick));
            users.truncate(LIST_MAX);
        }
        users.sort_by(|a, b| a.nick.cmp(&b.nick));
        for other in &users {
            let line = Reply::User {
                nick: &other.nick,
                room: &other.room,
            };
            self.out.send(id, line.to_line().as_bytes());
        }
        self.end_list(id, "users", total);
    }

    /// A message (`action`: a `/me`) to the sender's room, relayed and shown to observers.
    fn speak(
        &mut self,
        table: &mut UserTable,
        id: ClientId,
        user: &User,
        text: String,
        action: bool,
    ) {
        let (room, nick) = (&user.room, &user.nick);
        let line = if action {
            Reply::Me {
                room,
                nick,
                text: &text,
            }
        } else {
            Reply::Msg {
                room,
                nick,
                text: &text,
            }
        };
        if !self.broker_takes(table, id, room, &line, true) {
            self.relay(table, user, line.to_string());
        }
        self.notify(|| {
            let (room, nick) = (user.room.clone(), user.nick.clone());
            if action {
                ChatEvent::Action { room, nick, text }
            } else {
                ChatEvent::Message { room, nick, text }
            }
        });
    }

    /// A message to the sender's room: kept for history and sent to every member, the
    /// sender included, so that everyone sees the same order.
    pub(super) fn relay(&mut self, table: &mut UserTable, user: &User, line: String) {
        let bytes = format!("{line}\n");
        table.record(&user.room, line, self.config.history);
        self.out
            .send_all(table.members(&user.room), bytes.as_bytes());
        Stats::add(&self.stats.messages, 1);
    }

    pub(super) fn change_nick(
        &mut self,
        table: &mut UserTable,
        id: ClientId,
        user: &User,
        new: String,
    ) {
        if let Err(problem) = validate_nick(&new) {
            let code = match problem {
                NickError::Reserved => ErrorCode::NickReserved,
                _ => ErrorCode::InvalidNick,
            };
            return self.error(id, code, problem.message());
        }
        match table.nick_owner(&new) {
            Some(owner) if owner != id => return self.nick_taken(id, &new),
            Some(_) if user.nick == new => {
                return self.error(id, ErrorCode::NickTaken, "that is already your nick");
            }
            _ if self.nick_being_claimed(id, &new) => return self.nick_taken(id, &new),
            _ => {}
        }
        if !self.cluster_decides_nick(id, user, &new) {
            self.rename(table, id, user, new);
        }
    }

    pub(super) fn nick_taken(&mut self, id: ClientId, nick: &str) {
        let text = format!("{nick} is taken (or looks too much like a nick that is)");
        self.error(id, ErrorCode::NickTaken, &text);
    }

    /// Gives `user` the nick `new` (free, as checked) and tells their room.
    pub(super) fn rename(&mut self, table: &mut UserTable, id: ClientId, user: &User, new: String) {
        table.rename(id, new.clone());
        // Like the alias at connect (`conn-42 is QuietOtter`): debug only, since a nick
        // tied to a connection is personal data that `info` never writes.
        log::debug!("{id} is now {new} (was {})", user.nick);
        let nick = Reply::Nick {
            old: &user.nick,
            new: &new,
        };
        // The room may hear the rename only if it knew the old nick, and only while it
        // is small enough (counted on every node, in cluster mode). A rename the room
        // does not hear leaves it knowing a nick that no longer exists, so from now on it
        // hears nothing more of this user (their later NICK and LEAVE lines) until they
        // enter a room again.
        let members = table.members(&user.room).len() + self.members_elsewhere(&user.room);
        let to_room = user.announced && self.few_enough(members);
        table.set_announced(id, to_room);
        if !self.broker_takes(table, id, &user.room, &nick, to_room) {
            let line = nick.to_line();
            self.tell_room_or_one(table, &user.room, id, to_room, line.as_bytes());
        }
        self.notify(|| ChatEvent::NickChanged {
            old: user.nick.clone(),
            new,
            room: user.room.clone(),
        });
    }

    pub(super) fn join(&mut self, table: &mut UserTable, id: ClientId, user: &User, room: &str) {
        let room = match normalize_room(room) {
            Ok(room) => room,
            Err(problem) => return self.error(id, ErrorCode::InvalidRoom, problem.message()),
        };
        if room == user.room {
            let text = format!("you are already in {room}");
            return self.error(id, ErrorCode::AlreadyThere, &text);
        }
        table.move_to(id, &room);
        self.register_move(&user.nick, &room);
        self.left_room(table, id, user, "joined another room");
        self.enter_room(table, id, &user.nick, &room);
    }

    pub(super) fn whisper(
        &mut self,
        table: &UserTable,
        id: ClientId,
        user: &User,
        to: &str,
        text: &str,
    ) {
        let Some(target) = table.nick_owner(to) else {
            if self.cluster_whisper(id, user, to, text) {
                return; // the answer comes from the register
            }
            let text = format!("nobody is called {to}");
            return self.error(id, ErrorCode::NoSuchUser, &text);
        };
        if target == id {
            return self.error(id, ErrorCode::WhisperSelf, "you cannot whisper to yourself");
        }
        let Some(recipient) = table.user(target) else {
            return;
        };
        let line = Reply::Dm {
            from: &user.nick,
            to: &recipient.nick,
            text,
        }
        .to_line();
        self.out.send(id, line.as_bytes());
        self.out.send(target, line.as_bytes());
        Stats::add(&self.stats.messages, 1);
    }

    pub(super) fn reply(&mut self, id: ClientId, reply: Reply<'_>) {
        self.out.send(id, reply.to_line().as_bytes());
    }

    pub(super) fn error(&mut self, id: ClientId, code: ErrorCode, text: &str) {
        self.reply(id, Reply::Err { code, text });
    }

    pub(super) fn end_list(&mut self, id: ClientId, list: &str, count: usize) {
        let note = if count > LIST_MAX {
            format!("showing the first {LIST_MAX}")
        } else {
            String::new()
        };
        self.reply(
            id,
            Reply::End {
                list,
                count,
                note: &note,
            },
        );
    }
}
