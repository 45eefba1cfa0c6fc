//! The dispatcher's side of the cluster's register (cargo feature `redis`): nicks are
//! unique across every node, and the lists show every node's users.
//!
//! The dispatcher never waits for Redis. A `/nick` that passes the local rules becomes
//! a claim handed to the `cluster-reg` thread (`src/cluster/registry.rs`); the nick is
//! held here meanwhile, so no local user can take it, and the rename happens when the
//! answer comes back as an event ([`ClusterEvent::Claimed`]). Two users on two nodes
//! claiming one nick at once: Redis runs the claims one after the other, so exactly one
//! wins; the other gets `ERR nick-taken`.
//!
//! A new user's random alias, while the node is linked, is one the register thread
//! reserved ahead: it is theirs across the cluster before they see it, so it never
//! collides (when none is ready, their greeting waits for one: `held.rs`). It is still
//! claimed once given, which records the user and their room. During an outage the
//! alias is drawn here and claimed after the fact, when Redis is back: in the rare case
//! that a user of another node drew the same alias, the newcomer is renamed to a fresh
//! one (`NICK`). The same happens, after an outage, to a user whose nick a user of
//! another node took while the nodes could not see each other: whoever registers first
//! keeps it.
//!
//! While the register cannot be reached, its answers say so (`None`), and the local
//! rules alone decide; every local user is registered again when it is back
//! ([`ClusterEvent::ResyncWanted`]).

use std::collections::HashMap;

use super::{DispatcherState, ListKind, LIST_MAX};
use crate::cluster::{roster, ClusterEvent, Entry, List, Request};
use crate::event::ClientId;
use crate::reply::Reply;
use crate::table::{User, UserTable};
use crate::text::nick_key;

/// Nicks being claimed for local users: look → (who, the nick as they spelled it).
pub(super) type Claims = HashMap<String, (ClientId, String)>;

impl DispatcherState {
    /// Whether a user other than `id` is claiming `nick` (or a lookalike) right now.
    pub(super) fn nick_being_claimed(&self, id: ClientId, nick: &str) -> bool {
        self.cluster.as_ref().is_some_and(|link| {
            link.claims
                .get(&nick_key(nick))
                .is_some_and(|(claimer, _)| *claimer != id)
        })
    }

    /// A `/nick` that passed the local rules: in cluster mode, a claim to the register,
    /// and the rename waits for its answer (true). Outside cluster mode, or when the
    /// claim cannot be queued, false: the caller renames at once.
    pub(super) fn cluster_decides_nick(&mut self, id: ClientId, user: &User, new: &str) -> bool {
        let Some(link) = self.cluster.as_mut() else {
            return false;
        };
        let claim = Request::Claim {
            id,
            nick: new.to_string(),
            room: user.room.clone(),
        };
        if !link.bridge.ask(claim) {
            return false;
        }
        link.claims.insert(nick_key(new), (id, new.to_string()));
        true
    }

    /// An alias the register reserved for this node, free here too (none while the
    /// pool is in doubt, after the link went down: `held.rs`).
    pub(super) fn reserved_alias(&self, table: &UserTable, id: ClientId) -> Option<String> {
        let link = self
            .cluster
            .as_ref()
            .filter(|link| !link.held.pool_in_doubt())?;
        // Bounded: the pool holds at most this many. One a local user took meanwhile by
        // `/nick` (the register let them: same node) is skipped, not released.
        for _ in 0..link.bridge.alias_pool() {
            let alias = link.bridge.reserved_alias()?;
            if table.nick_owner(&alias).is_none() && !self.nick_being_claimed(id, &alias) {
                return Some(alias);
            }
        }
        None
    }

    /// Whether an alias drawn here (not reserved: an outage) is a numbered one: yes in
    /// cluster mode (see `fresh_alias`).
    pub(super) fn draws_numbered(&self) -> bool {
        self.cluster.is_some()
    }

    /// A new local user (or one given a fresh alias): claimed in the register, which
    /// records them and their room (an alias reserved ahead is theirs already).
    pub(super) fn register_user(&mut self, id: ClientId, nick: &str, room: &str) {
        self.tell_register(|| Request::Claim {
            id,
            nick: nick.to_string(),
            room: room.to_string(),
        });
    }

    /// A local user moved to another room.
    pub(super) fn register_move(&mut self, nick: &str, room: &str) {
        self.tell_register(|| Request::Moved {
            nick: nick.to_string(),
            room: room.to_string(),
        });
    }

    /// A local user gave up their nick (renamed, or gone).
    pub(super) fn register_release(&mut self, nick: &str) {
        self.tell_register(|| Request::Release {
            nick: nick.to_string(),
        });
    }

    /// Queues a change for the register. If its queue is full (Redis slow or stuck), the
    /// change is lost: the register is then set right by a resync, owed until one can be
    /// queued (see [`Self::pay_resync`]).
    fn tell_register(&mut self, request: impl FnOnce() -> Request) {
        if let Some(link) = self.cluster.as_mut() {
            if !link.bridge.ask(request()) {
                link.resync_owed = true;
            }
        }
    }

    /// Sends the resync owed since a change could not be queued, if one is.
    pub(super) fn pay_resync(&mut self, table: &UserTable) {
        // Listing every user costs O(users): only when it can be queued.
        let owed = |link: &super::cluster::Link| link.resync_owed && link.bridge.has_room();
        if self.cluster.as_ref().is_some_and(owed) {
            self.resync(table);
        }
    }

    /// What the register thread answers.
    pub(super) fn on_register(&mut self, table: &mut UserTable, event: ClusterEvent) {
        match event {
            ClusterEvent::Claimed { id, nick, won } => self.claimed(table, id, nick, won),
            ClusterEvent::Aliases { ready } => self.aliases_reserved(table, ready),
            ClusterEvent::ResyncWanted => {
                self.pool_checked();
                self.resync(table);
            }
            ClusterEvent::Roster { id, list, nodes } => self.roster(table, id, list, nodes),
            _ => {}
        }
    }

    fn claimed(&mut self, table: &mut UserTable, id: ClientId, nick: String, won: Option<bool>) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        let key = nick_key(&nick);
        let asked_by_nick = link
            .claims
            .get(&key)
            .is_some_and(|(claimer, spelled)| *claimer == id && *spelled == nick);
        if asked_by_nick {
            link.claims.remove(&key);
        }
        let Some(user) = table.user(id).cloned() else {
            // Gone while the claim was on its way: give it back (unless the line that
            // says they left is still on its way: it gives it back once it is out).
            let later = self
                .cluster
                .as_ref()
                .is_some_and(|link| link.frees_later(&nick));
            if won == Some(true) && !later {
                self.register_release(&nick);
            }
            return;
        };
        if asked_by_nick {
            // `/nick`: unknown (no register) counts as won, by the local rules alone.
            let free_here = table.nick_owner(&nick).map_or(true, |owner| owner == id);
            if won == Some(false) || !free_here {
                return self.nick_taken(id, &nick);
            }
            let old = user.nick.clone();
            if nick_key(&old) != key {
                // The old nick is free once the `NICK` line is out.
                self.release_with_line(&old, |state| {
                    state.rename(table, id, &user, nick.clone());
                });
            } else {
                self.rename(table, id, &user, nick.clone());
            }
            // Claimed again, now that it is theirs: records their room (they may have
            // moved meanwhile), and if a resync wiped the claim on its way, either
            // takes it back or, should another node have taken it in that moment,
            // gives them a fresh alias (the answer to a claim that is not a `/nick`).
            self.register_user(id, &nick, &user.room);
        } else if won == Some(false) && user.nick == nick {
            // Their alias, or (after an outage) their nick, is a user's of another node.
            log::debug!("{id}: {nick} is held on another node; a fresh alias");
            let fresh = self.fresh_alias(table, id);
            self.rename(table, id, &user, fresh.clone());
            self.register_user(id, &fresh, &user.room);
        }
    }

    /// Registers every local user again. (Not the nicks being claimed: a claim that
    /// wins is claimed again once it is applied, see [`Self::claimed`].)
    pub(super) fn resync(&mut self, table: &UserTable) {
        let Some(link) = self.cluster.as_ref() else {
            return;
        };
        let users: Vec<(ClientId, String, String)> = table
            .ids()
            .filter_map(|id| {
                let user = table.user(id)?;
                Some((id, user.nick.clone(), user.room.clone()))
            })
            .collect();
        let sent = link.bridge.ask(Request::Resync(users));
        if let Some(link) = self.cluster.as_mut() {
            if sent {
                link.resync_owed = false;
            } else if !link.resync_owed {
                log::warn!("cluster: the register thread is behind: resync owed");
                link.resync_owed = true;
            }
        }
    }

    /// A list command: in cluster mode while linked, the register is asked for every
    /// node's users, and the answer comes back as [`ClusterEvent::Roster`].
    pub(super) fn cluster_answers_list(
        &mut self,
        id: ClientId,
        user: &User,
        kind: ListKind,
    ) -> bool {
        let Some(link) = self.cluster.as_ref() else {
            return false;
        };
        if !link.up {
            return false;
        }
        let list = match kind {
            ListKind::Rooms => List::Rooms,
            ListKind::Who => List::Who(user.room.clone()),
            ListKind::Users => List::Users,
        };
        link.bridge.ask(Request::Roster { id, list })
    }

    /// Answers a list command from every node's users; from the local table if the
    /// register could not be read.
    fn roster(
        &mut self,
        table: &UserTable,
        id: ClientId,
        list: List,
        nodes: Option<Vec<(String, Vec<Entry>)>>,
    ) {
        if table.user(id).is_none() {
            return;
        }
        let Some(nodes) = nodes else {
            return match list {
                List::Rooms => self.list_rooms(table, id),
                List::Who(room) => self.list_who(table, id, &room),
                List::Users => self.list_users(table, id),
            };
        };
        if let Some(link) = self.cluster.as_mut() {
            // A fresh count of every room, for `--announce-max` (`announce.rs`).
            let sizes = roster::room_sizes(&link.node, &nodes);
            link.announced.set_sizes(sizes);
        }
        let me = self.cluster.as_ref().map_or("", |link| link.node.as_str());
        let local = table
            .users()
            .map(|user| Entry {
                nick: user.nick.clone(),
                room: user.room.clone(),
            })
            .collect();
        // This node's users from its own table, the other nodes' from the register.
        let users = roster::merge(me, nodes, local);
        match list {
            List::Users => {
                for user in users.iter().take(LIST_MAX) {
                    let line = Reply::User {
                        nick: &user.nick,
                        room: &user.room,
                    };
                    self.out.send(id, line.to_line().as_bytes());
                }
                self.end_list(id, "users", users.len());
            }
            List::Who(room) => {
                let members: Vec<&Entry> = users.iter().filter(|u| u.room == room).collect();
                for member in members.iter().take(LIST_MAX) {
                    let who = Reply::Who {
                        room: &room,
                        nick: &member.nick,
                    };
                    self.out.send(id, who.to_line().as_bytes());
                }
                self.end_list(id, "who", members.len());
            }
            List::Rooms => {
                let rooms = roster::rooms(&users);
                for (room, members) in rooms.iter().take(LIST_MAX) {
                    let line = Reply::Room {
                        room,
                        members: *members,
                    };
                    self.out.send(id, line.to_line().as_bytes());
                }
                self.end_list(id, "rooms", rooms.len());
            }
        }
    }
}
