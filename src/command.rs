//! Command parsing: one framed, UTF-8 line from a client → one [`Command`].
//!
//! Pure functions, no I/O: the connection thread calls [`parse_line`] and publishes the
//! result to the dispatcher. Control characters are stripped here, before anything
//! else looks at the text, so no later stage can relay them by accident.

use crate::reply::ErrorCode;
use crate::text::sanitize_text;

/// What a client asked for with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A message to the client's current room (`hello`, or `//text` for `/text`).
    Say(String),
    /// An action, `/me TEXT`.
    Me(String),
    /// `/nick NAME`: the requested nick, not yet validated (the dispatcher does that,
    /// because uniqueness needs the user table).
    Nick(String),
    /// `/join ROOM`: the requested room, not yet validated.
    Join(String),
    /// `/rooms`.
    Rooms,
    /// `/who`: the members of my room.
    Who,
    /// `/users`: everyone online.
    Users,
    /// `/w NAME TEXT` or `/msg NAME TEXT`.
    Whisper {
        /// The nick it is for, as typed.
        to: String,
        /// The message.
        text: String,
    },
    /// `/ping [TOKEN]`: answered with `PONG TOKEN`.
    Ping(String),
    /// `/help`.
    Help,
    /// `/quit [REASON]`.
    Quit(Option<String>),
}

/// Why a line could not be turned into a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The stable code sent in `ERR <code> <text>`.
    pub code: ErrorCode,
    /// The human-readable part.
    pub text: String,
}

impl ParseError {
    fn usage(usage: &str) -> Self {
        ParseError {
            code: ErrorCode::Usage,
            text: format!("usage: {usage}"),
        }
    }

    fn empty() -> Self {
        ParseError {
            code: ErrorCode::EmptyMessage,
            text: "nothing to send".to_string(),
        }
    }
}

/// One line of help per command: the text of `/help` (the README's command table says
/// the same in more words).
pub const HELP_LINES: &[&str] = &[
    "text            send text to your room (//text sends /text)",
    "/nick NAME      change your alias",
    "/join ROOM      move to ROOM (created on demand)",
    "/rooms          list the rooms",
    "/who            list the members of your room",
    "/users          list everyone online",
    "/w NAME TEXT    private message (also /msg)",
    "/me TEXT        an action",
    "/ping [TOKEN]   the server answers PONG TOKEN",
    "/help           this list",
    "/quit [REASON]  leave",
];

/// Parses one line (without its line end).
///
/// `Ok(None)` means "nothing to do" (an empty or blank line), `Err` carries the `ERR`
/// to send back. Never panics, whatever the input.
///
/// Free text (messages, actions, whispers, reasons, ping tokens) has its control
/// characters **stripped** here. Nick and room arguments are passed on **as typed**, so
/// that validation can **refuse** a name with a control character in it rather than
/// quietly accept a different name than the one the user typed.
pub fn parse_line(line: &str) -> Result<Option<Command>, ParseError> {
    if sanitize_text(line).trim().is_empty() {
        return Ok(None);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Some(Command::Say(sanitize_text(line).into_owned())));
    };
    if rest.starts_with('/') {
        // `//text` is the escape for a message that starts with a slash.
        return Ok(Some(Command::Say(sanitize_text(rest).into_owned())));
    }
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let command = match name.to_ascii_lowercase().as_str() {
        "nick" => Command::Nick(one_word(args, "/nick NAME")?),
        "join" => Command::Join(one_word(args, "/join ROOM")?),
        "rooms" => no_args(args, "/rooms", Command::Rooms)?,
        "who" => no_args(args, "/who", Command::Who)?,
        "users" => no_args(args, "/users", Command::Users)?,
        "help" => no_args(args, "/help", Command::Help)?,
        "me" => Command::Me(text(args)?),
        "ping" => Command::Ping(sanitize_text(args).trim().to_string()),
        "quit" => {
            let reason = sanitize_text(args).trim().to_string();
            Command::Quit((!reason.is_empty()).then_some(reason))
        }
        "w" | "msg" => {
            if args.is_empty() {
                return Err(ParseError::usage("/w NAME TEXT"));
            }
            // A name without text is an empty message, as for `/me` (the README's table).
            let (to, message) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            Command::Whisper {
                to: sanitize_text(to).into_owned(),
                text: text(message.trim_start())?,
            }
        }
        _ => {
            return Err(ParseError {
                code: ErrorCode::UnknownCommand,
                text: format!(
                    "unknown command /{}; /help lists the commands",
                    sanitize_text(name)
                ),
            })
        }
    };
    Ok(Some(command))
}

/// Exactly one word: a nick or a room name.
fn one_word(args: &str, usage: &str) -> Result<String, ParseError> {
    let mut words = args.split_whitespace();
    match (words.next(), words.next()) {
        (Some(word), None) => Ok(word.to_string()),
        _ => Err(ParseError::usage(usage)),
    }
}

fn no_args(args: &str, usage: &str, command: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::usage(usage))
    }
}

/// Free text, control characters stripped, that must not be blank.
fn text(args: &str) -> Result<String, ParseError> {
    let clean = sanitize_text(args);
    if clean.trim().is_empty() {
        Err(ParseError::empty())
    } else {
        Ok(clean.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_line(line).unwrap().unwrap()
    }

    fn err(line: &str) -> ErrorCode {
        parse_line(line).unwrap_err().code
    }

    #[test]
    fn plain_text_is_a_message_and_double_slash_escapes() {
        assert_eq!(ok("hello all"), Command::Say("hello all".into()));
        assert_eq!(
            ok("//nick is a command"),
            Command::Say("/nick is a command".into())
        );
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(parse_line("   \t "), Ok(None));
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(ok("/nick Evan"), Command::Nick("Evan".into()));
        assert_eq!(ok("/JOIN #games"), Command::Join("#games".into()));
        assert_eq!(ok("/rooms"), Command::Rooms);
        assert_eq!(ok("/who"), Command::Who);
        assert_eq!(ok("/users"), Command::Users);
        assert_eq!(ok("/help"), Command::Help);
        assert_eq!(ok("/me waves  twice"), Command::Me("waves  twice".into()));
        assert_eq!(ok("/ping"), Command::Ping(String::new()));
        assert_eq!(ok("/ping 42 x"), Command::Ping("42 x".into()));
        assert_eq!(ok("/quit"), Command::Quit(None));
        assert_eq!(ok("/quit see you"), Command::Quit(Some("see you".into())));
        let whisper = Command::Whisper {
            to: "bob".into(),
            text: "psst hi".into(),
        };
        assert_eq!(ok("/w bob psst hi"), whisper);
        assert_eq!(ok("/msg bob   psst hi"), whisper);
    }

    #[test]
    fn bad_usage_is_an_error_not_silence() {
        assert_eq!(err("/frobnicate"), ErrorCode::UnknownCommand);
        assert_eq!(err("/nick"), ErrorCode::Usage);
        assert_eq!(err("/nick two words"), ErrorCode::Usage);
        assert_eq!(err("/join"), ErrorCode::Usage);
        assert_eq!(err("/who extra"), ErrorCode::Usage);
        assert_eq!(err("/help me"), ErrorCode::Usage);
        assert_eq!(err("/w"), ErrorCode::Usage);
        assert_eq!(err("/w bob"), ErrorCode::EmptyMessage);
        assert_eq!(err("/msg bob   "), ErrorCode::EmptyMessage);
        assert_eq!(err("/me"), ErrorCode::EmptyMessage);
        assert_eq!(err("/"), ErrorCode::UnknownCommand);
    }

    #[test]
    fn names_keep_their_control_characters_so_validation_can_refuse_them() {
        assert_eq!(ok("/nick ev\x1ban"), Command::Nick("ev\x1ban".into()));
        assert_eq!(
            ok("/join r\u{202e}oom"),
            Command::Join("r\u{202e}oom".into())
        );
        assert_eq!(ok("/me \x1b[1mbold"), Command::Me("[1mbold".into()));
        assert_eq!(err("/me \x1b"), ErrorCode::EmptyMessage);
        let unknown = parse_line("/x\x1b[2J").unwrap_err();
        assert!(!unknown.text.contains('\x1b'));
    }

    #[test]
    fn control_characters_are_stripped_before_parsing() {
        assert_eq!(ok("hi\x1b[31m red"), Command::Say("hi[31m red".into()));
        assert_eq!(
            ok("a\rMSG lobby admin fake"),
            Command::Say("aMSG lobby admin fake".into())
        );
        assert_eq!(parse_line("\x07\x08"), Ok(None));
    }
}
