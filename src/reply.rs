//! Rendering: every line the server sends, as a type, and its one text form.
//!
//! Pure functions, no I/O. Each line is `KEYWORD field field… free text`, ended by LF.
//! Fields (nicks, rooms, codes) never contain spaces because the nick and room rules
//! forbid them; free text, when there is any, is always last.

use std::fmt::{self, Display, Write as _};

/// The stable codes of `ERR <code> <text>` (listed in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A `/word` that is not a command.
    UnknownCommand,
    /// A command with a missing or extra argument.
    Usage,
    /// A nick that breaks the nick rules.
    InvalidNick,
    /// A nick someone has, or one that looks like theirs.
    NickTaken,
    /// One of the server's own names.
    NickReserved,
    /// A room name that breaks the room rules.
    InvalidRoom,
    /// `/join` of the room the client is in.
    AlreadyThere,
    /// `/w` to a nick nobody has.
    NoSuchUser,
    /// `/w` to yourself.
    WhisperSelf,
    /// Nothing left to send once control characters are stripped.
    EmptyMessage,
    /// A line over `--max-line` bytes.
    LineTooLong,
    /// A line that is not valid UTF-8.
    InvalidUtf8,
    /// A line over the flood limit.
    RateLimited,
}

impl ErrorCode {
    /// The kebab-case code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownCommand => "unknown-command",
            ErrorCode::Usage => "usage",
            ErrorCode::InvalidNick => "invalid-nick",
            ErrorCode::NickTaken => "nick-taken",
            ErrorCode::NickReserved => "nick-reserved",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::AlreadyThere => "already-there",
            ErrorCode::NoSuchUser => "no-such-user",
            ErrorCode::WhisperSelf => "whisper-self",
            ErrorCode::EmptyMessage => "empty-message",
            ErrorCode::LineTooLong => "line-too-long",
            ErrorCode::InvalidUtf8 => "invalid-utf8",
            ErrorCode::RateLimited => "rate-limited",
        }
    }
}

impl Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `HELLO <nick> <text>`: the first line, with the client's alias.
    Hello {
        /// The alias the server gave this client.
        nick: &'a str,
        /// A greeting.
        text: &'a str,
    },
    /// `MSG <room> <nick> <text>`.
    Msg {
        /// Where it was said.
        room: &'a str,
        /// Who said it (set by the server, never by the client).
        nick: &'a str,
        /// What was said.
        text: &'a str,
    },
    /// `ME <room> <nick> <text>`: an action.
    Me {
        /// Where.
        room: &'a str,
        /// Who.
        nick: &'a str,
        /// The action.
        text: &'a str,
    },
    /// `DM <from> <to> <text>`: a private message.
    Dm {
        /// The sender (`server` for the operator).
        from: &'a str,
        /// The recipient.
        to: &'a str,
        /// The message.
        text: &'a str,
    },
    /// `JOIN <room> <nick>`.
    Join {
        /// The room joined.
        room: &'a str,
        /// Who joined.
        nick: &'a str,
    },
    /// `LEAVE <room> <nick> <reason>`.
    Leave {
        /// The room left.
        room: &'a str,
        /// Who left.
        nick: &'a str,
        /// Why (see the README's table of reasons).
        reason: &'a str,
    },
    /// `NICK <old> <new>`.
    Nick {
        /// The previous nick.
        old: &'a str,
        /// The new one.
        new: &'a str,
    },
    /// `NOTICE <text>`: a push from the server itself.
    Notice {
        /// The notice.
        text: &'a str,
    },
    /// `PONG <token>`.
    Pong {
        /// The token of the `/ping`, possibly empty.
        token: &'a str,
    },
    /// `HIST <time> <line>`: a replayed `MSG` or `ME` line with its server time.
    Hist {
        /// UTC, RFC 3339 to the second.
        time: &'a str,
        /// The original line, without its line end.
        line: &'a str,
    },
    /// `ERR <code> <text>`.
    Err {
        /// The stable code.
        code: ErrorCode,
        /// The explanation for people.
        text: &'a str,
    },
    /// `BYE <reason>`: the last line before the server closes the connection.
    Bye {
        /// Why.
        reason: &'a str,
    },
    /// `WHO <room> <nick>`: one member, in reply to `/who`.
    Who {
        /// The room.
        room: &'a str,
        /// A member.
        nick: &'a str,
    },
    /// `USER <nick> <room>`: one user, in reply to `/users`.
    User {
        /// The user.
        nick: &'a str,
        /// Their room.
        room: &'a str,
    },
    /// `ROOM <room> <members>`: one room, in reply to `/rooms`.
    Room {
        /// The room.
        room: &'a str,
        /// How many are in it.
        members: usize,
    },
    /// `HELP <text>`: one line of `/help`.
    Help {
        /// The help line.
        text: &'a str,
    },
    /// `END <list> <count> [<note>]`: closes a list.
    End {
        /// `who`, `users`, `rooms` or `help`.
        list: &'a str,
        /// The true total.
        count: usize,
        /// Free text, e.g. `showing the first 200` when the list was cut short.
        note: &'a str,
    },
}

impl Reply<'_> {
    /// The line with its LF, ready to be written.
    pub fn to_line(&self) -> String {
        let mut line = self.to_string();
        line.push('\n');
        line
    }
}

impl Display for Reply<'_> {
    /// The line without its LF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Hello { nick, text } => write!(f, "HELLO {nick} {text}"),
            Reply::Msg { room, nick, text } => write!(f, "MSG {room} {nick} {text}"),
            Reply::Me { room, nick, text } => write!(f, "ME {room} {nick} {text}"),
            Reply::Dm { from, to, text } => write!(f, "DM {from} {to} {text}"),
            Reply::Join { room, nick } => write!(f, "JOIN {room} {nick}"),
            Reply::Leave { room, nick, reason } => write!(f, "LEAVE {room} {nick} {reason}"),
            Reply::Nick { old, new } => write!(f, "NICK {old} {new}"),
            Reply::Notice { text } => write!(f, "NOTICE {text}"),
            Reply::Pong { token } => with_text(f, "PONG", token),
            Reply::Hist { time, line } => write!(f, "HIST {time} {line}"),
            Reply::Err { code, text } => write!(f, "ERR {code} {text}"),
            Reply::Bye { reason } => write!(f, "BYE {reason}"),
            Reply::Who { room, nick } => write!(f, "WHO {room} {nick}"),
            Reply::User { nick, room } => write!(f, "USER {nick} {room}"),
            Reply::Room { room, members } => write!(f, "ROOM {room} {members}"),
            Reply::Help { text } => write!(f, "HELP {text}"),
            Reply::End { list, count, note } => {
                write!(f, "END {list} {count}")?;
                if note.is_empty() {
                    Ok(())
                } else {
                    write!(f, " {note}")
                }
            }
        }
    }
}

/// `KEYWORD text`, or just `KEYWORD` when the text is empty (no trailing space).
fn with_text(f: &mut fmt::Formatter<'_>, keyword: &str, text: &str) -> fmt::Result {
    f.write_str(keyword)?;
    if !text.is_empty() {
        f.write_char(' ')?;
        f.write_str(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_as_documented() {
        let cases = [
            (
                Reply::Hello {
                    nick: "QuietOtter",
                    text: "hi",
                },
                "HELLO QuietOtter hi",
            ),
            (
                Reply::Msg {
                    room: "lobby",
                    nick: "a",
                    text: "x y",
                },
                "MSG lobby a x y",
            ),
            (
                Reply::Me {
                    room: "lobby",
                    nick: "a",
                    text: "waves",
                },
                "ME lobby a waves",
            ),
            (
                Reply::Dm {
                    from: "a",
                    to: "b",
                    text: "psst",
                },
                "DM a b psst",
            ),
            (
                Reply::Join {
                    room: "r",
                    nick: "a",
                },
                "JOIN r a",
            ),
            (
                Reply::Leave {
                    room: "r",
                    nick: "a",
                    reason: "quit",
                },
                "LEAVE r a quit",
            ),
            (Reply::Nick { old: "a", new: "b" }, "NICK a b"),
            (Reply::Notice { text: "hello all" }, "NOTICE hello all"),
            (Reply::Pong { token: "42" }, "PONG 42"),
            (Reply::Pong { token: "" }, "PONG"),
            (Reply::Bye { reason: "idle" }, "BYE idle"),
            (
                Reply::Room {
                    room: "lobby",
                    members: 3,
                },
                "ROOM lobby 3",
            ),
            (
                Reply::End {
                    list: "users",
                    count: 3,
                    note: "",
                },
                "END users 3",
            ),
        ];
        for (reply, expected) in cases {
            assert_eq!(reply.to_string(), expected);
            assert_eq!(reply.to_line(), format!("{expected}\n"));
        }
        let err = Reply::Err {
            code: ErrorCode::NickTaken,
            text: "taken",
        };
        assert_eq!(err.to_string(), "ERR nick-taken taken");
    }
}
