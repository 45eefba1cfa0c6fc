//! What the operator (console) and host programs may ask, and the observers who
//! watch the chat through [`Server::subscribe`](crate::Server::subscribe).

use crossbeam_channel::TrySendError;

use super::DispatcherState;
use crate::event::{ChatEvent, ClientId, CloseReason, OperatorError, OperatorRequest};
use crate::reply::Reply;
use crate::stats::Stats;
use crate::table::UserTable;
use crate::text::{normalize_room, sanitize_text};

impl DispatcherState {
    pub(super) fn operator(&mut self, table: &mut UserTable, request: OperatorRequest) {
        match request {
            OperatorRequest::Notice { room, text, done } => {
                let _ = done.send(self.notice(table, room.as_deref(), &text));
            }
            OperatorRequest::Whisper { to, text, done } => {
                let text = sanitize_text(&text);
                let result = match table.nick_owner(&to) {
                    _ if text.trim().is_empty() => Err(OperatorError::EmptyText),
                    // Not here: in cluster mode, the register finds the node and answers.
                    None => match self.cluster_operator_whisper(&to, &text, done) {
                        None => return,
                        Some(done) => {
                            let _ = done.send(Err(OperatorError::NoSuchUser(to)));
                            return;
                        }
                    },
                    Some(target) => {
                        let nick = table.user(target).map_or("", |u| u.nick.as_str());
                        let line = Reply::Dm {
                            from: "server",
                            to: nick,
                            text: &text,
                        };
                        self.out.send(target, line.to_line().as_bytes());
                        Stats::add(&self.stats.messages, 1);
                        Ok(nick.to_string())
                    }
                };
                let _ = done.send(result);
            }
            OperatorRequest::Kick { nick, reason, done } => {
                let result = match table.nick_owner(&nick) {
                    None => {
                        let reason = sanitize_text(&reason).trim().to_string();
                        match self.cluster_operator_kick(&nick, &reason, done) {
                            None => return,
                            Some(done) => {
                                let _ = done.send(Err(OperatorError::NoSuchUser(nick)));
                                return;
                            }
                        }
                    }
                    Some(target) => {
                        // Read before the close, which takes the user out of the table.
                        let matched = table.user(target).map(|u| u.nick.clone());
                        let reason = sanitize_text(&reason).trim().to_string();
                        self.begin_close(table, target, CloseReason::Kicked(reason));
                        Ok(matched.unwrap_or(nick))
                    }
                };
                let _ = done.send(result);
            }
            OperatorRequest::Subscribe(observer) => self.observers.push(observer),
            #[cfg(feature = "redis")]
            OperatorRequest::Roster { done } => self.cluster_operator_roster(done),
        }
    }

    pub(super) fn notice(
        &mut self,
        table: &UserTable,
        room: Option<&str>,
        text: &str,
    ) -> Result<usize, OperatorError> {
        let text = sanitize_text(text);
        if text.trim().is_empty() {
            return Err(OperatorError::EmptyText);
        }
        let line = Reply::Notice { text: &text }.to_line();
        let recipients: Vec<ClientId> = match room {
            None => {
                self.cluster_notice(&text);
                table.ids().collect()
            }
            Some(name) => {
                let room = normalize_room(name).unwrap_or_default();
                if !table.has_room(&room) {
                    return Err(OperatorError::NoSuchRoom(name.to_string()));
                }
                table.members(&room).to_vec()
            }
        };
        self.out.send_all(&recipients, line.as_bytes());
        Ok(recipients.len())
    }

    /// Hands an event to every observer without ever waiting for one: a full observer
    /// misses it, a gone one is forgotten.
    pub(super) fn notify(&mut self, make: impl FnOnce() -> ChatEvent) {
        if self.observers.is_empty() {
            return;
        }
        let event = make();
        let stats = &self.stats;
        self.observers
            .retain(|observer| match observer.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    Stats::add(&stats.observer_drops, 1);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}
