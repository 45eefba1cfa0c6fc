//! Cluster mode (cargo feature `redis`): what reaches a user of another node without
//! being a room line: a user's whisper, the operator's whisper, notice and kick, and
//! the operator's lists of every node's users.
//!
//! The nick is found in the register by the `cluster-reg` thread (the dispatcher does
//! not wait for it), which publishes a direct message (`src/cluster/direct.rs`) for the
//! node that holds it; the answer (the nick that matched, or nobody) comes back to the
//! dispatcher as an event, or straight to the operator's waiting thread.
//!
//! What other nodes send is checked here against the local table, as room lines are: a
//! whisper whose sender is a local user's nick is dropped (no node speaks for a local
//! user), and only messages for this node are acted upon.

use crossbeam_channel::Sender;

use super::DispatcherState;
use crate::cluster::direct::{self, Direct, Signed};
use crate::cluster::roster::Nodes;
use crate::cluster::{Answer, Request};
use crate::event::{ClientId, CloseReason, OperatorError};
use crate::reply::{ErrorCode, Reply};
use crate::stats::Stats;
use crate::table::{User, UserTable};

/// Where an operator's answer goes.
pub(super) type Done = Sender<Result<String, OperatorError>>;

impl DispatcherState {
    /// `/w` to a nick no local user has: in cluster mode while linked, the register
    /// looks for it on the other nodes (true). False: the caller answers `no-such-user`.
    pub(super) fn cluster_whisper(
        &mut self,
        id: ClientId,
        user: &User,
        to: &str,
        text: &str,
    ) -> bool {
        let Some(link) = self.cluster.as_ref().filter(|link| link.up) else {
            return false;
        };
        link.bridge.ask(Request::Whisper {
            from: user.nick.clone(),
            to: to.to_string(),
            text: text.to_string(),
            answer: Answer::User(id),
        })
    }

    /// The answer to a local user's whisper to another node: their copy of the `DM`,
    /// or `ERR no-such-user`.
    pub(super) fn whispered(
        &mut self,
        table: &UserTable,
        id: ClientId,
        to: &str,
        matched: Option<String>,
        text: &str,
    ) {
        let Some(user) = table.user(id) else {
            return;
        };
        match matched {
            Some(nick) => {
                let line = Reply::Dm {
                    from: &user.nick,
                    to: &nick,
                    text,
                }
                .to_line();
                self.out.send(id, line.as_bytes());
                Stats::add(&self.stats.messages, 1);
            }
            None => {
                let text = format!("nobody is called {to}");
                self.error(id, ErrorCode::NoSuchUser, &text);
            }
        }
    }

    /// The operator's whisper to a nick no local user has: handed to the register
    /// (`None`), or given back when there is no cluster to ask.
    pub(super) fn cluster_operator_whisper(
        &mut self,
        to: &str,
        text: &str,
        done: Done,
    ) -> Option<Done> {
        let Some(link) = self.cluster.as_ref().filter(|link| link.up) else {
            return Some(done);
        };
        let request = Request::Whisper {
            from: direct::OPERATOR.to_string(),
            to: to.to_string(),
            text: text.to_string(),
            answer: Answer::Operator(done),
        };
        match link.bridge.try_ask(request) {
            Ok(()) => None,
            Err(Request::Whisper {
                answer: Answer::Operator(done),
                ..
            }) => Some(done),
            Err(_) => None,
        }
    }

    /// The operator's kick of a nick no local user has, as for a whisper.
    pub(super) fn cluster_operator_kick(
        &mut self,
        nick: &str,
        reason: &str,
        done: Done,
    ) -> Option<Done> {
        let Some(link) = self.cluster.as_ref().filter(|link| link.up) else {
            return Some(done);
        };
        let request = Request::Kick {
            nick: nick.to_string(),
            reason: reason.to_string(),
            done,
        };
        match link.bridge.try_ask(request) {
            Ok(()) => None,
            Err(Request::Kick { done, .. }) => Some(done),
            Err(_) => None,
        }
    }

    /// The operator's `/users` or `/rooms` (or a host's [`Server::roster`]): handed to
    /// the register, which answers `done` itself, so the dispatcher never waits for
    /// Redis (the console's thread does). Answered `None` at once when the node is not
    /// linked or the register's queue is full: the caller lists this node only.
    ///
    /// [`Server::roster`]: crate::Server::roster
    pub(super) fn cluster_operator_roster(&mut self, done: Sender<Option<Nodes>>) {
        let Some(link) = self.cluster.as_ref().filter(|link| link.up) else {
            let _ = done.send(None);
            return;
        };
        if let Err(Request::OperatorRoster { done }) =
            link.bridge.try_ask(Request::OperatorRoster { done })
        {
            let _ = done.send(None);
        }
    }

    /// The operator's notice to everyone: the other nodes' users get it too.
    pub(super) fn cluster_notice(&mut self, text: &str) {
        let Some(link) = self.cluster.as_ref().filter(|link| link.up) else {
            return;
        };
        let notice = Direct::Notice {
            text: text.to_string(),
        };
        link.bridge
            .ask(Request::Publish(direct::encode(&link.node, &notice)));
    }

    /// A direct message heard from the broker.
    pub(super) fn on_direct(&mut self, table: &mut UserTable, signed: &Signed) {
        let Some(link) = self.cluster.as_ref() else {
            return;
        };
        if signed.sender == link.node {
            return; // ours: already done here
        }
        let me = link.node.clone();
        match &signed.direct {
            Direct::Notice { text } => {
                let line = Reply::Notice { text }.to_line();
                let everyone: Vec<ClientId> = table.ids().collect();
                self.out.send_all(&everyone, line.as_bytes());
            }
            Direct::Dm {
                node,
                from,
                to,
                text,
            } if *node == me => {
                // No other node may whisper as one of our users.
                if table.nick_owner(from).is_some() {
                    if let Some(held_back) = self.cluster.as_mut().and_then(|l| l.refused.allow()) {
                        log::warn!(
                            "cluster: dropped a whisper from node {} signed with a nick a \
                             local user holds ({held_back} more dropped since the last report)",
                            signed.sender
                        );
                    }
                    return;
                }
                let Some(target) = table.nick_owner(to) else {
                    return;
                };
                let Some(recipient) = table.user(target) else {
                    return;
                };
                let line = Reply::Dm {
                    from,
                    to: &recipient.nick,
                    text,
                }
                .to_line();
                self.out.send(target, line.as_bytes());
            }
            Direct::Kick { node, nick, reason } if *node == me => {
                if let Some(target) = table.nick_owner(nick) {
                    self.begin_close(table, target, CloseReason::Kicked(reason.clone()));
                }
            }
            _ => {}
        }
    }
}
