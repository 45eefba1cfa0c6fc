//! The message format between nodes, and its strict parser.
//!
//! One Redis pub/sub message is one room line, as a single line of UTF-8 text:
//!
//! ```text
//! UWL1 <node> <seq> MSG   <room> <nick> <text>
//! UWL1 <node> <seq> ME    <room> <nick> <text>
//! UWL1 <node> <seq> JOIN  <room> <nick>
//! UWL1 <node> <seq> LEAVE <room> <nick> <reason>
//! UWL1 <node> <seq> NICK  <room> <old> <new>
//! ```
//!
//! A `JOIN`, `LEAVE` or `NICK` that the room is not to hear (the `--announce-max` rule,
//! decided once, by the node that sends it, with the room's size across the cluster)
//! is sent as `QJOIN`, `QLEAVE` or `QNICK` ("quiet"): every node applies it (who is in
//! which room, under which nick) but tells only the one concerned, if that user is its
//! own. Every node obeys the sender's choice, so the members of a room on all nodes
//! hear the same lines, and a `LEAVE` or `NICK` reaches only those who heard of the nick.
//!
//! `UWL1` names the format and its version. `<node>` is the sending node's name and
//! `<seq>` its own running number: a node recognises its own lines coming back from the
//! broker by them. Fields are separated by one space; free text, if any, is last (the
//! same shape as the client protocol, so a reader knows it already).
//!
//! Anything can be published on a Redis channel, so [`parse`] trusts nothing: the
//! message must be short enough, valid UTF-8, and have exactly the fields of its kind;
//! names must pass the same rules as local nicks and rooms (`src/text.rs`), and text
//! gets the same stripping of control characters as a local message. What fails is
//! dropped with the reason ([`Garbage`]), never relayed.

use std::fmt;

use crate::reply::Reply;
use crate::text::{normalize_room, sanitize_text, validate_nick};

/// The first field of every message: the format and its version.
pub const MAGIC: &str = "UWL1";

/// Longest message accepted, in bytes. A chat line is at most `--max-line` bytes
/// (1024 by default), so 8 KiB leaves room for a node with a larger `--max-line` and
/// the header, while a flood of megabyte payloads costs the parser nothing: the length
/// is checked before anything else.
///
/// It bounds what a node keeps and parses, not what it reads: the redis crate has read
/// the whole message by then. Redis itself caps that (`proto-max-bulk-len`, 512 MB by
/// default, and it drops a subscriber whose unread output passes
/// `client-output-buffer-limit pubsub`, 32 MB by default).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// Most characters in a node name.
pub const NODE_MAX_CHARS: usize = 32;

/// One room line, with the names the server set (never a client's own words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomLine {
    /// `MSG <room> <nick> <text>`.
    Msg {
        /// Where.
        room: String,
        /// Who.
        nick: String,
        /// What (control characters stripped).
        text: String,
    },
    /// `ME <room> <nick> <text>`: an action.
    Me {
        /// Where.
        room: String,
        /// Who.
        nick: String,
        /// What (control characters stripped).
        text: String,
    },
    /// `JOIN <room> <nick>`.
    Join {
        /// The room entered.
        room: String,
        /// Who.
        nick: String,
    },
    /// `LEAVE <room> <nick> <reason>`.
    Leave {
        /// The room left.
        room: String,
        /// Who.
        nick: String,
        /// Why (control characters stripped).
        reason: String,
    },
    /// `NICK <old> <new>`, said in `room`.
    Nick {
        /// The renamed user's room: who hears the line.
        room: String,
        /// Before.
        old: String,
        /// After.
        new: String,
    },
}

impl RoomLine {
    /// The room whose members hear this line.
    pub fn room(&self) -> &str {
        match self {
            RoomLine::Msg { room, .. }
            | RoomLine::Me { room, .. }
            | RoomLine::Join { room, .. }
            | RoomLine::Leave { room, .. }
            | RoomLine::Nick { room, .. } => room,
        }
    }

    /// Every nick the line names (the ones that must not be a local user's when the line
    /// comes from another node).
    pub fn nicks(&self) -> impl Iterator<Item = &str> {
        let (first, second) = match self {
            RoomLine::Msg { nick, .. }
            | RoomLine::Me { nick, .. }
            | RoomLine::Join { nick, .. }
            | RoomLine::Leave { nick, .. } => (nick.as_str(), None),
            RoomLine::Nick { old, new, .. } => (old.as_str(), Some(new.as_str())),
        };
        std::iter::once(first).chain(second)
    }

    /// The line as clients see it.
    pub fn reply(&self) -> Reply<'_> {
        match self {
            RoomLine::Msg { room, nick, text } => Reply::Msg { room, nick, text },
            RoomLine::Me { room, nick, text } => Reply::Me { room, nick, text },
            RoomLine::Join { room, nick } => Reply::Join { room, nick },
            RoomLine::Leave { room, nick, reason } => Reply::Leave { room, nick, reason },
            RoomLine::Nick { old, new, .. } => Reply::Nick { old, new },
        }
    }

    /// The room line behind a client line, or `None` for a line that is not about a
    /// room (`NICK` needs `room`, since its client line does not name one).
    pub fn from_reply(room: &str, reply: &Reply<'_>) -> Option<RoomLine> {
        let own = |s: &str| s.to_string();
        Some(match *reply {
            Reply::Msg { room, nick, text } => RoomLine::Msg {
                room: own(room),
                nick: own(nick),
                text: own(text),
            },
            Reply::Me { room, nick, text } => RoomLine::Me {
                room: own(room),
                nick: own(nick),
                text: own(text),
            },
            Reply::Join { room, nick } => RoomLine::Join {
                room: own(room),
                nick: own(nick),
            },
            Reply::Leave { room, nick, reason } => RoomLine::Leave {
                room: own(room),
                nick: own(nick),
                reason: own(reason),
            },
            Reply::Nick { old, new } => RoomLine::Nick {
                room: own(room),
                old: own(old),
                new: own(new),
            },
            _ => return None,
        })
    }
}

/// One message on the cluster channel: a room line, who sent it, and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The node that said it.
    pub node: String,
    /// That node's running number for its lines.
    pub seq: u64,
    /// The line.
    pub line: RoomLine,
    /// A `JOIN`, `LEAVE` or `NICK` the room is not to hear (`QJOIN`, `QLEAVE`,
    /// `QNICK`); always false for `MSG` and `ME`.
    pub quiet: bool,
}

impl Record {
    /// The message as published (see the module documentation).
    pub fn encode(&self) -> String {
        encode_marked(&self.node, self.seq, &self.line, self.quiet)
    }
}

/// The message for `line`, said on `node` as its line number `seq`, for its whole room.
pub fn encode(node: &str, seq: u64, line: &RoomLine) -> String {
    encode_marked(node, seq, line, false)
}

/// [`encode`], marking a `JOIN`, `LEAVE` or `NICK` as one the room is not to hear
/// (`quiet`; ignored for `MSG` and `ME`, which every member hears).
pub fn encode_marked(node: &str, seq: u64, line: &RoomLine, quiet: bool) -> String {
    let head = format!("{MAGIC} {node} {seq}");
    let q = if quiet { "Q" } else { "" };
    match line {
        RoomLine::Msg { room, nick, text } => format!("{head} MSG {room} {nick} {text}"),
        RoomLine::Me { room, nick, text } => format!("{head} ME {room} {nick} {text}"),
        RoomLine::Join { room, nick } => format!("{head} {q}JOIN {room} {nick}"),
        RoomLine::Leave { room, nick, reason } => {
            format!("{head} {q}LEAVE {room} {nick} {reason}")
        }
        RoomLine::Nick { room, old, new } => format!("{head} {q}NICK {room} {old} {new}"),
    }
}

/// Why a message from the broker was dropped. Only the kind of problem, never the
/// message itself, goes to the log: it is untrusted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    /// Longer than [`MAX_MESSAGE_BYTES`].
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// Not `UWL1 …`, or missing fields.
    Format,
    /// A kind other than `MSG`, `ME`, `JOIN`, `LEAVE`, `NICK` (or, for [`parse_any`],
    /// the direct kinds `DM`, `NOTICE`, `KICK`).
    UnknownKind,
    /// A node name that breaks [`validate_node_name`].
    BadNode,
    /// A sequence number that is not a plain decimal `u64`.
    BadSeq,
    /// A room name that is not a valid, already normalised room.
    BadRoom,
    /// A nick that breaks the nick rules.
    BadNick,
    /// Text or reason empty once control characters are stripped.
    EmptyText,
}

impl fmt::Display for Garbage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Garbage::TooLong => "too long",
            Garbage::NotUtf8 => "not UTF-8",
            Garbage::Format => "not the UWL1 format",
            Garbage::UnknownKind => "unknown kind",
            Garbage::BadNode => "bad node name",
            Garbage::BadSeq => "bad sequence number",
            Garbage::BadRoom => "bad room name",
            Garbage::BadNick => "bad nick",
            Garbage::EmptyText => "empty text",
        })
    }
}

/// Checks a node name: 1 to [`NODE_MAX_CHARS`] ASCII letters, digits, `_` or `-`.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name.is_empty() || name.len() > NODE_MAX_CHARS || !ok_chars {
        return Err(format!(
            "a node name is 1 to {NODE_MAX_CHARS} ASCII letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

/// Parses one message from the broker, strictly (see the module documentation).
pub fn parse(payload: &[u8]) -> Result<Record, Garbage> {
    let Header {
        node,
        seq,
        kind,
        rest,
    } = header(payload)?;
    let (room, rest) = rest.split_once(' ').ok_or(Garbage::Format)?;
    let room = self::room(room)?;
    // `QJOIN`, `QLEAVE`, `QNICK`: the same lines, for the room not to hear.
    let (quiet, kind) = match kind.strip_prefix('Q') {
        Some(kind @ ("JOIN" | "LEAVE" | "NICK")) => (true, kind),
        _ => (false, kind),
    };
    let line = match kind {
        "MSG" | "ME" => {
            let (nick, text) = nick_and_text(rest)?;
            if kind == "MSG" {
                RoomLine::Msg { room, nick, text }
            } else {
                RoomLine::Me { room, nick, text }
            }
        }
        "JOIN" => RoomLine::Join {
            room,
            nick: nick(rest)?,
        },
        "LEAVE" => {
            let (nick, reason) = nick_and_text(rest)?;
            RoomLine::Leave { room, nick, reason }
        }
        "NICK" => {
            let (old, new) = rest.split_once(' ').ok_or(Garbage::Format)?;
            RoomLine::Nick {
                room,
                old: nick(old)?,
                new: nick(new)?,
            }
        }
        _ => return Err(Garbage::UnknownKind),
    };
    Ok(Record {
        node: node.to_string(),
        seq,
        line,
        quiet,
    })
}

/// Whether `nick` may appear on the wire (the nick rules, or a fallback alias).
pub fn is_valid_nick(nick: &str) -> bool {
    self::nick(nick).is_ok()
}

/// Whether `room` is a valid room, already normalised.
pub fn is_valid_room(name: &str) -> bool {
    room(name).is_ok()
}

/// A message: a room line, or a direct message (`src/cluster/direct.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `MSG`, `ME`, `JOIN`, `LEAVE`, `NICK`: for a room's members on every node.
    Room(Record),
    /// `DM`, `NOTICE`, `KICK`: for one node's users, or every node's.
    Direct(super::direct::Signed),
}

/// Parses any message from the broker, room line or direct, strictly.
pub fn parse_any(payload: &[u8]) -> Result<Message, Garbage> {
    let head = header(payload)?;
    match super::direct::parse(&head)? {
        Some(direct) => Ok(Message::Direct(direct)),
        None => parse(payload).map(Message::Room),
    }
}

/// The fields every message starts with, checked.
pub(super) struct Header<'a> {
    /// The sending node (a valid node name).
    pub(super) node: &'a str,
    /// Its number for the message.
    pub(super) seq: u64,
    /// `MSG`, `DM`, … (not checked yet).
    pub(super) kind: &'a str,
    /// Everything after the kind.
    pub(super) rest: &'a str,
}

/// Checks length, UTF-8, `UWL1`, the node name and the number; splits off the rest.
pub(super) fn header(payload: &[u8]) -> Result<Header<'_>, Garbage> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(Garbage::TooLong);
    }
    let message = std::str::from_utf8(payload).map_err(|_| Garbage::NotUtf8)?;
    let mut fields = message.splitn(5, ' ');
    let mut next = || fields.next().ok_or(Garbage::Format);
    if next()? != MAGIC {
        return Err(Garbage::Format);
    }
    let node = next()?;
    validate_node_name(node).map_err(|_| Garbage::BadNode)?;
    let seq = parse_seq(next()?)?;
    let kind = next()?;
    let rest = next()?;
    Ok(Header {
        node,
        seq,
        kind,
        rest,
    })
}

/// Plain decimal digits only (no sign, no spaces), within `u64`.
fn parse_seq(field: &str) -> Result<u64, Garbage> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Garbage::BadSeq);
    }
    field.parse().map_err(|_| Garbage::BadSeq)
}

/// A room exactly as a node writes it: valid and already normalised (no `#`, lower case).
fn room(field: &str) -> Result<String, Garbage> {
    match normalize_room(field) {
        Ok(room) if room == field => Ok(room),
        _ => Err(Garbage::BadRoom),
    }
}

/// A nick by the local rules, or a node's fallback alias (`anon` + digits, which the
/// rules reserve so that no user can pick one).
pub(super) fn nick(field: &str) -> Result<String, Garbage> {
    let fallback = field.strip_prefix("anon").is_some_and(|digits| {
        (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if validate_nick(field).is_ok() || fallback {
        Ok(field.to_string())
    } else {
        Err(Garbage::BadNick)
    }
}

/// `<nick> <text>`: the text stripped of control characters as local text is, and not
/// empty afterwards.
pub(super) fn nick_and_text(rest: &str) -> Result<(String, String), Garbage> {
    let (name, text) = rest.split_once(' ').ok_or(Garbage::Format)?;
    let text = sanitize_text(text);
    if text.trim().is_empty() {
        return Err(Garbage::EmptyText);
    }
    Ok((nick(name)?, text.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: RoomLine) -> Record {
        Record {
            node: "node-a".into(),
            seq: 7,
            line,
            quiet: false,
        }
    }

    #[test]
    fn quiet_lines_survive_the_round_trip_and_only_three_kinds_have_them() {
        let join = RoomLine::Join {
            room: "den".into(),
            nick: "bob".into(),
        };
        let quiet = Record {
            quiet: true,
            ..record(join.clone())
        };
        assert_eq!(quiet.encode(), "UWL1 node-a 7 QJOIN den bob");
        assert_eq!(parse(quiet.encode().as_bytes()), Ok(quiet));
        // A quiet message is every member's: no such kind.
        assert_eq!(
            parse(b"UWL1 node-a 7 QMSG den bob hi"),
            Err(Garbage::UnknownKind)
        );
        assert_eq!(
            parse(b"UWL1 node-a 7 QQJOIN den bob"),
            Err(Garbage::UnknownKind)
        );
    }

    #[test]
    fn every_kind_survives_the_round_trip() {
        let lines = [
            RoomLine::Msg {
                room: "lobby".into(),
                nick: "alice".into(),
                text: "hello  there ".into(),
            },
            RoomLine::Me {
                room: "den".into(),
                nick: "밤손님".into(),
                text: "waves".into(),
            },
            RoomLine::Join {
                room: "den".into(),
                nick: "anon42".into(),
            },
            RoomLine::Leave {
                room: "den".into(),
                nick: "bob".into(),
                reason: "quit: see you".into(),
            },
            RoomLine::Nick {
                room: "lobby".into(),
                old: "QuietOtter".into(),
                new: "bob".into(),
            },
        ];
        for line in lines {
            let record = record(line);
            assert_eq!(parse(record.encode().as_bytes()), Ok(record));
        }
    }

    #[test]
    fn garbage_is_named_not_relayed() {
        let cases: [(&[u8], Garbage); 16] = [
            (b"", Garbage::Format),
            (b"hello", Garbage::Format),
            (b"UWL2 a 1 MSG lobby bob hi", Garbage::Format),
            (b"UWL1 a 1 MSG lobby bob", Garbage::Format),
            (b"UWL1 a 1 KICK lobby bob hi", Garbage::UnknownKind),
            (b"UWL1 a:b 1 MSG lobby bob hi", Garbage::BadNode),
            (b"UWL1 a -1 MSG lobby bob hi", Garbage::BadSeq),
            (
                b"UWL1 a 99999999999999999999 MSG lobby bob hi",
                Garbage::BadSeq,
            ),
            (b"UWL1 a 1 MSG Lobby bob hi", Garbage::BadRoom),
            (b"UWL1 a 1 MSG #lobby bob hi", Garbage::BadRoom),
            (b"UWL1 a 1 MSG lobby server hi", Garbage::BadNick),
            (b"UWL1 a 1 MSG lobby b\x1bob hi", Garbage::BadNick),
            (b"UWL1 a 1 MSG lobby bob \x1b\x07\r\n", Garbage::EmptyText),
            (b"UWL1 a 1 JOIN lobby bob extra", Garbage::BadNick),
            (b"UWL1 a 1 NICK lobby bob carol dave", Garbage::BadNick),
            (b"UWL1 a 1 MSG lobby bob \xff\xfe", Garbage::NotUtf8),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                parse(payload),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(payload)
            );
        }
        let mut huge = b"UWL1 a 1 MSG lobby bob ".to_vec();
        huge.resize(MAX_MESSAGE_BYTES + 1, b'x');
        assert_eq!(parse(&huge), Err(Garbage::TooLong));
    }

    #[test]
    fn text_is_stripped_like_local_text() {
        let parsed = parse("UWL1 a 1 MSG lobby bob \x1b[31mred\x07\u{202e} and\nBYE x".as_bytes());
        let Ok(Record {
            line: RoomLine::Msg { text, .. },
            ..
        }) = parsed
        else {
            panic!("{parsed:?}")
        };
        assert_eq!(text, "[31mred andBYE x");
    }
}
