//! Messages between nodes that are not room lines: a whisper to a user of another node,
//! and the operator's notice and kick. Same channel, same header as room lines
//! (`wire.rs`), number 0 (they are not part of any room's order):
//!
//! ```text
//! UWL1 <node> 0 DM     <to-node> <from> <to> <text>
//! UWL1 <node> 0 NOTICE *         <text>
//! UWL1 <node> 0 KICK   <to-node> <nick> [<reason>]
//! ```
//!
//! `<node>` is the sender; `<to-node>` the node whose user it is for (`*`: every node).
//! Parsed as strictly as room lines: names by the nick and node rules (the sender of a
//! `DM` may also be `server`, the operator), text stripped of control characters.

use super::wire::{nick, nick_and_text, validate_node_name, Garbage, Header, MAGIC};
use crate::text::sanitize_text;

/// The sender of the operator's whispers.
pub const OPERATOR: &str = "server";

/// A direct message, as the sending node wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    /// A whisper to `to`, a user of `node`.
    Dm {
        /// The node of the recipient.
        node: String,
        /// Who whispers (a nick, or `server`).
        from: String,
        /// To whom.
        to: String,
        /// What (control characters stripped, not empty).
        text: String,
    },
    /// The operator's notice, for every user of every node.
    Notice {
        /// What (control characters stripped, not empty).
        text: String,
    },
    /// The operator kicks `nick`, a user of `node`.
    Kick {
        /// The node of the user.
        node: String,
        /// Who.
        nick: String,
        /// Why (may be empty).
        reason: String,
    },
}

/// A direct message and the node that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The sending node.
    pub sender: String,
    /// The message.
    pub direct: Direct,
}

/// The message `direct`, sent by `sender`.
pub fn encode(sender: &str, direct: &Direct) -> String {
    let head = format!("{MAGIC} {sender} 0");
    match direct {
        Direct::Dm {
            node,
            from,
            to,
            text,
        } => format!("{head} DM {node} {from} {to} {text}"),
        Direct::Notice { text } => format!("{head} NOTICE * {text}"),
        Direct::Kick { node, nick, reason } => format!("{head} KICK {node} {nick} {reason}"),
    }
}

/// A direct message, or `None` if the kind is not one (a room line, maybe).
pub(super) fn parse(head: &Header<'_>) -> Result<Option<Signed>, Garbage> {
    let (target, rest) = match head.kind {
        "DM" | "NOTICE" | "KICK" => head.rest.split_once(' ').ok_or(Garbage::Format)?,
        _ => return Ok(None),
    };
    let direct = match head.kind {
        "NOTICE" => {
            if target != "*" {
                return Err(Garbage::BadNode);
            }
            let text = sanitize_text(rest);
            if text.trim().is_empty() {
                return Err(Garbage::EmptyText);
            }
            Direct::Notice {
                text: text.into_owned(),
            }
        }
        "DM" => {
            let (from, rest) = rest.split_once(' ').ok_or(Garbage::Format)?;
            let from = if from == OPERATOR {
                from.to_string()
            } else {
                nick(from)?
            };
            let (to, text) = nick_and_text(rest)?;
            Direct::Dm {
                node: node(target)?,
                from,
                to,
                text,
            }
        }
        _ => {
            let (who, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            Direct::Kick {
                node: node(target)?,
                nick: nick(who)?,
                reason: sanitize_text(reason).trim().to_string(),
            }
        }
    };
    Ok(Some(Signed {
        sender: head.node.to_string(),
        direct,
    }))
}

fn node(field: &str) -> Result<String, Garbage> {
    validate_node_name(field).map_err(|_| Garbage::BadNode)?;
    Ok(field.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::wire::{parse_any, Message};
    use super::*;

    #[test]
    fn every_kind_survives_the_round_trip() {
        let directs = [
            Direct::Dm {
                node: "west".into(),
                from: "alice".into(),
                to: "bob".into(),
                text: "psst  there".into(),
            },
            Direct::Dm {
                node: "west".into(),
                from: OPERATOR.into(),
                to: "bob".into(),
                text: "from the operator".into(),
            },
            Direct::Notice {
                text: "maintenance at 10".into(),
            },
            Direct::Kick {
                node: "west".into(),
                nick: "bob".into(),
                reason: "spam".into(),
            },
            Direct::Kick {
                node: "west".into(),
                nick: "bob".into(),
                reason: String::new(),
            },
        ];
        for direct in directs {
            let signed = Signed {
                sender: "east".into(),
                direct,
            };
            assert_eq!(
                parse_any(encode("east", &signed.direct).as_bytes()),
                Ok(Message::Direct(signed))
            );
        }
    }

    #[test]
    fn garbage_is_named_not_relayed() {
        let cases: [(&[u8], Garbage); 7] = [
            (b"UWL1 a 0 DM west alice", Garbage::Format),
            (b"UWL1 a 0 DM we:st alice bob hi", Garbage::BadNode),
            (b"UWL1 a 0 DM west admin bob hi", Garbage::BadNick),
            (b"UWL1 a 0 DM west alice bob \x1b\x07", Garbage::EmptyText),
            (b"UWL1 a 0 NOTICE west hi", Garbage::BadNode),
            (b"UWL1 a 0 NOTICE * \xe2\x80\xae", Garbage::EmptyText),
            (b"UWL1 a 0 KICK west b\x1bob", Garbage::BadNick),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                parse_any(payload),
                Err(expected),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        let Ok(Message::Direct(Signed {
            direct: Direct::Notice { text },
            ..
        })) = parse_any(b"UWL1 a 0 NOTICE * \x1b[2Jhello\r\nBYE x")
        else {
            panic!("not a notice");
        };
        assert_eq!(text, "[2JhelloBYE x");
    }
}
