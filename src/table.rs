//! The user table: who is online, under which nick, in which room, and each room's
//! recent history. Kept in memory only; nothing is ever written to disk.
//!
//! The dispatcher is its only writer. It lives behind a `parking_lot::Mutex` (see
//! [`SharedTable`]) only so that other threads, the operator console and an embedding
//! program, can take a short read-only look ([`UserTable::snapshot`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::event::ClientId;
use crate::text::nick_key;

/// The room everyone starts in, and the one room that never disappears.
pub const LOBBY: &str = "lobby";

/// The user table as shared between threads.
///
/// Why a lock at all when one thread writes: readers on other threads need a consistent
/// view (a user and their room together), and a mutex is the simplest correct way.
/// Why `parking_lot`: it is small and fast uncontended (which this lock nearly always
/// is), and it has no poisoning, so a panic while a reader holds it cannot make the table
/// unusable for the dispatcher and everyone else. The dispatcher holds it for one event
/// at a time while it updates memory; the only socket write that can happen under it is
/// the rare early write of a client whose batch outgrew `--max-pending`, which never
/// waits (writes are non-blocking).
pub type SharedTable = Arc<Mutex<UserTable>>;

/// One user online.
#[derive(Debug, Clone)]
pub struct User {
    /// Their current nick.
    pub nick: String,
    /// Their current room.
    pub room: String,
    /// Whether the whole room was told their current nick: their `JOIN` went to every
    /// member (the room was small enough) and so did every `NICK` since. Only then may
    /// the room hear their `NICK` and `LEAVE` lines: see "Announcements" in the
    /// dispatcher's `lifecycle` module and `Config::announce_max`.
    pub announced: bool,
}

/// A message kept for replay to joiners.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// When the server relayed it.
    pub time: SystemTime,
    /// The `MSG` or `ME` line, without its line end.
    pub line: String,
}

#[derive(Debug, Default)]
struct Room {
    /// In order of arrival; who comes first is who is told first.
    members: Vec<ClientId>,
    history: VecDeque<HistoryEntry>,
}

/// Everyone online and every room; see the module documentation.
#[derive(Debug, Default)]
pub struct UserTable {
    users: HashMap<ClientId, User>,
    /// `nick_key(nick)` → owner: nicks are unique by their look, not their spelling.
    nicks: HashMap<String, ClientId>,
    /// A `BTreeMap` so `/rooms` lists them in name order.
    rooms: BTreeMap<String, Room>,
}

/// A point-in-time copy of the table, for readers on other threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Everyone online, sorted by nick.
    pub users: Vec<UserInfo>,
    /// Every room, sorted by name.
    pub rooms: Vec<RoomInfo>,
}

/// One user in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// Their nick.
    pub nick: String,
    /// Their room.
    pub room: String,
}

/// One room in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Its name.
    pub name: String,
    /// How many are in it.
    pub members: usize,
}

impl UserTable {
    /// An empty table.
    pub fn new() -> UserTable {
        UserTable::default()
    }

    /// A copy of who is where, sorted. Costs O(users); meant for the console and
    /// host programs, not for every message.
    pub fn snapshot(&self) -> Snapshot {
        let mut users: Vec<UserInfo> = self
            .users
            .values()
            .map(|user| UserInfo {
                nick: user.nick.clone(),
                room: user.room.clone(),
            })
            .collect();
        users.sort_by(|a, b| a.nick.cmp(&b.nick));
        let rooms = self
            .rooms
            .iter()
            .map(|(name, room)| RoomInfo {
                name: name.clone(),
                members: room.members.len(),
            })
            .collect();
        Snapshot { users, rooms }
    }

    /// How many users are online.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The user with this id.
    pub fn user(&self, id: ClientId) -> Option<&User> {
        self.users.get(&id)
    }

    /// Who owns this nick, or one that looks the same.
    pub fn nick_owner(&self, nick: &str) -> Option<ClientId> {
        self.nicks.get(&nick_key(nick)).copied()
    }

    /// The members of a room, in order of arrival (empty if there is no such room).
    pub fn members(&self, room: &str) -> &[ClientId] {
        self.rooms.get(room).map_or(&[], |room| &room.members)
    }

    /// Whether the room exists.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// A room's kept messages, oldest first.
    pub fn history(&self, room: &str) -> impl Iterator<Item = &HistoryEntry> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.history.iter())
    }

    /// Every user id, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.users.keys().copied()
    }

    /// Every room with its member count, in name order.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rooms
            .iter()
            .map(|(name, room)| (name.as_str(), room.members.len()))
    }

    /// Every user, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Adds a user in `room`. The caller has checked that the nick is free.
    pub(crate) fn add(&mut self, id: ClientId, nick: String, room: &str) {
        self.nicks.insert(nick_key(&nick), id);
        self.rooms
            .entry(room.to_string())
            .or_default()
            .members
            .push(id);
        self.users.insert(
            id,
            User {
                nick,
                room: room.to_string(),
                announced: false,
            },
        );
    }

    /// Removes a user (and their room, if it empties and is not the lobby).
    pub(crate) fn remove(&mut self, id: ClientId) -> Option<User> {
        let user = self.users.remove(&id)?;
        self.nicks.remove(&nick_key(&user.nick));
        self.leave_room(id, &user.room);
        Some(user)
    }

    /// Gives a user a new nick; returns the old one. The caller has checked it is free.
    pub(crate) fn rename(&mut self, id: ClientId, new: String) -> Option<String> {
        let user = self.users.get_mut(&id)?;
        self.nicks.remove(&nick_key(&user.nick));
        self.nicks.insert(nick_key(&new), id);
        Some(std::mem::replace(&mut user.nick, new))
    }

    /// Records whether the user's room was told their current nick (see
    /// [`User::announced`]).
    pub(crate) fn set_announced(&mut self, id: ClientId, announced: bool) {
        if let Some(user) = self.users.get_mut(&id) {
            user.announced = announced;
        }
    }

    /// Moves a user to another room (created if needed); returns the old room. The new
    /// room has not been told about them yet.
    pub(crate) fn move_to(&mut self, id: ClientId, room: &str) -> Option<String> {
        let user = self.users.get_mut(&id)?;
        user.announced = false;
        let old = std::mem::replace(&mut user.room, room.to_string());
        self.rooms
            .entry(room.to_string())
            .or_default()
            .members
            .push(id);
        self.leave_room(id, &old);
        Some(old)
    }

    /// Keeps a message for replay, dropping the oldest beyond `keep`.
    pub(crate) fn record(&mut self, room: &str, line: String, keep: usize) {
        let Some(room) = self.rooms.get_mut(room) else {
            return;
        };
        if keep == 0 {
            return;
        }
        while room.history.len() >= keep {
            room.history.pop_front();
        }
        room.history.push_back(HistoryEntry {
            time: SystemTime::now(),
            line,
        });
    }

    fn leave_room(&mut self, id: ClientId, name: &str) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        // O(members), but only on a leave; `remove` (not `swap_remove`) keeps the order.
        if let Some(position) = room.members.iter().position(|member| *member == id) {
            room.members.remove(position);
        }
        if room.members.is_empty() && name != LOBBY {
            self.rooms.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_appear_and_disappear_but_the_lobby_stays() {
        let mut table = UserTable::new();
        table.add(ClientId(1), "evan".into(), LOBBY);
        assert_eq!(table.move_to(ClientId(1), "games"), Some(LOBBY.into()));
        assert_eq!(table.members("games"), &[ClientId(1)]);
        assert!(table.has_room(LOBBY));
        table.record("games", "MSG games evan hi".into(), 20);
        assert_eq!(table.history("games").count(), 1);
        table.remove(ClientId(1));
        assert!(!table.has_room("games"));
        assert!(table.has_room(LOBBY));
        assert_eq!(table.user_count(), 0);
    }

    #[test]
    fn nicks_are_found_by_their_look() {
        let mut table = UserTable::new();
        table.add(ClientId(1), "Bill".into(), LOBBY);
        assert_eq!(table.nick_owner("B1LL"), Some(ClientId(1)));
        assert_eq!(
            table.rename(ClientId(1), "evan".into()),
            Some("Bill".into())
        );
        assert_eq!(table.nick_owner("bill"), None);
        assert_eq!(table.nick_owner("EVAN"), Some(ClientId(1)));
    }

    #[test]
    fn history_keeps_the_last_n() {
        let mut table = UserTable::new();
        table.add(ClientId(1), "evan".into(), LOBBY);
        for i in 0..30 {
            table.record(LOBBY, format!("MSG lobby evan {i}"), 20);
        }
        let lines: Vec<_> = table.history(LOBBY).map(|e| e.line.clone()).collect();
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0], "MSG lobby evan 10");
    }
}
