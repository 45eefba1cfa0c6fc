//! Cluster mode: who hears which room, as the broker orders things.
//!
//! The user table moves a user at once (so `/who` and their next message are right),
//! but in cluster mode a room's lines arrive in the broker's order, which may lag a
//! little behind. A local user *hears* a room from the moment their own `JOIN` comes
//! back from the broker until their own `LEAVE` does: so they get exactly the lines
//! between the two, in the order every other member, on every node, gets them.

use std::collections::HashMap;

use crate::event::ClientId;

/// The local users who hear each room.
#[derive(Debug, Default)]
pub(super) struct Listeners {
    /// Room → its listeners, in order of arrival.
    rooms: HashMap<String, Vec<ClientId>>,
    /// Listener → the room it hears.
    room_of: HashMap<ClientId, String>,
}

impl Listeners {
    /// `id` hears `room` from now on (and no other room).
    pub(super) fn enter(&mut self, id: ClientId, room: &str) {
        self.leave(id);
        self.rooms.entry(room.to_string()).or_default().push(id);
        self.room_of.insert(id, room.to_string());
    }

    /// `id` hears no room any more.
    pub(super) fn leave(&mut self, id: ClientId) {
        let Some(room) = self.room_of.remove(&id) else {
            return;
        };
        if let Some(members) = self.rooms.get_mut(&room) {
            members.retain(|member| *member != id);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }

    /// Who hears `room`.
    pub(super) fn of(&self, room: &str) -> &[ClientId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_hears_one_room_at_a_time_and_empty_rooms_go() {
        let mut listeners = Listeners::default();
        listeners.enter(ClientId(1), "lobby");
        listeners.enter(ClientId(2), "lobby");
        listeners.enter(ClientId(1), "den");
        assert_eq!(listeners.of("lobby"), &[ClientId(2)]);
        assert_eq!(listeners.of("den"), &[ClientId(1)]);
        listeners.leave(ClientId(1));
        listeners.leave(ClientId(1));
        assert!(listeners.of("den").is_empty());
        assert!(!listeners.rooms.contains_key("den"));
        assert!(!listeners.room_of.contains_key(&ClientId(1)));
    }
}
