//! Who is online on every node: the register's lists merged with this node's own table.
//!
//! Two readers need the same merge: a chat user's `/users`, `/who`, `/rooms` (answered
//! by the dispatcher, `src/dispatcher/register.rs`) and the operator console's `/users`
//! and `/rooms` ([`Server::roster`](crate::Server::roster), on the console's own
//! thread). Both get every live node's users from the `cluster-reg` thread and merge
//! them here, so both lists always agree.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Entry;
use crate::table::{RoomInfo, Snapshot, UserInfo, LOBBY};
use crate::text::nick_key;

/// Each live node (by name) and its users, as the register holds them.
pub type Nodes = Vec<(String, Vec<Entry>)>;

/// Everyone online: the other nodes' users from `nodes`, this node's (`me`) from
/// `local`, sorted by nick.
///
/// This node's users come from its own table, which is the truth about them: the
/// register's copy may lag, or hold entries anyone with access to Redis wrote. For the
/// same reason a remote entry with a local user's nick (or a lookalike) is dropped:
/// that nick is ours, and the local user is listed.
pub fn merge(me: &str, nodes: Nodes, local: Vec<Entry>) -> Vec<Entry> {
    let ours: HashSet<String> = local.iter().map(|entry| nick_key(&entry.nick)).collect();
    let mut users: Vec<Entry> = nodes
        .into_iter()
        .filter(|(node, _)| node != me)
        .flat_map(|(_, users)| users)
        .filter(|entry| !ours.contains(&nick_key(&entry.nick)))
        .chain(local)
        .collect();
    users.sort_by(|a, b| a.nick.cmp(&b.nick));
    users
}

/// Every room of `users` and its size, by name; the lobby is always there, as on a
/// single node.
pub fn rooms(users: &[Entry]) -> BTreeMap<&str, usize> {
    let mut rooms: BTreeMap<&str, usize> = BTreeMap::from([(LOBBY, 0)]);
    for user in users {
        *rooms.entry(&user.room).or_default() += 1;
    }
    rooms
}

/// How many users each room has on the nodes other than `except`, by room: what a
/// node adds to its own members to count a room across the cluster (the
/// `--announce-max` rule, `src/dispatcher/announce.rs`).
pub fn room_sizes(except: &str, nodes: &Nodes) -> HashMap<String, usize> {
    let mut sizes = HashMap::new();
    for (_, users) in nodes.iter().filter(|(node, _)| node != except) {
        for user in users {
            *sizes.entry(user.room.clone()).or_default() += 1;
        }
    }
    sizes
}

/// The cluster-wide [`Snapshot`]: this node's `local` snapshot merged with the other
/// nodes' users in `nodes`.
pub fn snapshot(me: &str, nodes: Nodes, local: Snapshot) -> Snapshot {
    let local = local
        .users
        .into_iter()
        .map(|user| Entry {
            nick: user.nick,
            room: user.room,
        })
        .collect();
    let users = merge(me, nodes, local);
    let rooms = rooms(&users)
        .into_iter()
        .map(|(name, members)| RoomInfo {
            name: name.to_string(),
            members,
        })
        .collect();
    let users = users
        .into_iter()
        .map(|Entry { nick, room }| UserInfo { nick, room })
        .collect();
    Snapshot { users, rooms }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(nick: &str, room: &str) -> Entry {
        Entry {
            nick: nick.into(),
            room: room.into(),
        }
    }

    #[test]
    fn local_users_win_and_our_register_entries_are_ignored() {
        let nodes = vec![
            ("me".to_string(), vec![entry("ghost", "den")]),
            (
                "other".to_string(),
                vec![entry("bob", "den"), entry("ALICE", "den")],
            ),
        ];
        let users = merge("me", nodes, vec![entry("alice", "lobby")]);
        assert_eq!(users, [entry("alice", "lobby"), entry("bob", "den")]);
        let rooms = rooms(&users);
        assert_eq!(
            rooms.into_iter().collect::<Vec<_>>(),
            [("den", 1), ("lobby", 1)]
        );
    }

    #[test]
    fn room_sizes_leave_one_node_out() {
        let nodes = vec![
            ("a".to_string(), vec![entry("alice", "den")]),
            (
                "b".to_string(),
                vec![entry("bob", "den"), entry("carol", "hall")],
            ),
        ];
        let sizes = room_sizes("a", &nodes);
        assert_eq!(sizes.len(), 2);
        assert_eq!((sizes["den"], sizes["hall"]), (1, 1));
    }

    #[test]
    fn the_lobby_is_always_listed() {
        let local = Snapshot {
            users: Vec::new(),
            rooms: Vec::new(),
        };
        let snapshot = snapshot("me", vec![("b".into(), vec![entry("bob", "den")])], local);
        let names: Vec<&str> = snapshot.rooms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["den", "lobby"]);
        assert_eq!(snapshot.users.len(), 1);
    }
}
