//! The operator console: admin commands typed on the server's terminal.
//!
//! The point of a socket server is that it can push to clients whenever it wants; the
//! console shows it. [`execute`] is pure apart from the [`Server`] calls, so it is tested
//! without a terminal; the binary feeds it the lines of stdin.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::clock::{format_duration, format_utc};
use crate::server::Server;
use crate::stats::Stats;

/// The console's `/help`.
pub const CONSOLE_HELP: &str = "\
operator commands:
  /users                 who is online, and where
  /rooms                 the rooms and their sizes
  /w NAME TEXT           a private message from `server`
  /kick NAME [REASON]    disconnect a user
  /time                  the server's clock (UTC)
  /stats                 connections, rooms, messages, uptime, the connection cap
  /shutdown              say BYE to everyone and stop
  /help                  this list
  anything else          pushed to every user as NOTICE (//text sends /text)";

/// What the console should do after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleReply {
    /// Text to print for the operator (may be empty).
    pub output: String,
    /// The operator asked to stop the server.
    pub shutdown: bool,
}

impl ConsoleReply {
    fn say(output: impl Into<String>) -> ConsoleReply {
        ConsoleReply {
            output: output.into(),
            shutdown: false,
        }
    }
}

/// Carries out one console line.
pub fn execute(server: &Server, line: &str) -> ConsoleReply {
    let line = line.trim();
    if line.is_empty() {
        return ConsoleReply::say("");
    }
    let Some(rest) = line.strip_prefix('/').filter(|rest| !rest.starts_with('/')) else {
        let text = line.strip_prefix('/').unwrap_or(line);
        return match server.notice_all(text) {
            Ok(count) => ConsoleReply::say(format!("notice sent to {count} users")),
            Err(e) => ConsoleReply::say(format!("not sent: {e}")),
        };
    };
    let (command, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    match command.to_ascii_lowercase().as_str() {
        "users" => {
            let snapshot = server.snapshot();
            let mut out = format!("{} users online", snapshot.users.len());
            for user in &snapshot.users {
                let _ = write!(out, "\n  {:<16} {}", user.nick, user.room);
            }
            ConsoleReply::say(out)
        }
        "rooms" => {
            let snapshot = server.snapshot();
            let mut out = format!("{} rooms", snapshot.rooms.len());
            for room in &snapshot.rooms {
                let _ = write!(out, "\n  {:<24} {}", room.name, room.members);
            }
            ConsoleReply::say(out)
        }
        "w" | "msg" => match args.split_once(char::is_whitespace) {
            Some((nick, text)) => match server.whisper(nick, text.trim()) {
                Ok(()) => ConsoleReply::say(format!("whispered to {nick}")),
                Err(e) => ConsoleReply::say(format!("not sent: {e}")),
            },
            None => ConsoleReply::say("usage: /w NAME TEXT"),
        },
        "kick" => {
            let (nick, reason) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            if nick.is_empty() {
                return ConsoleReply::say("usage: /kick NAME [REASON]");
            }
            match server.kick(nick, reason.trim()) {
                Ok(()) => ConsoleReply::say(format!("kicked {nick}")),
                Err(e) => ConsoleReply::say(format!("not kicked: {e}")),
            }
        }
        "time" => ConsoleReply::say(format_utc(SystemTime::now())),
        "stats" => ConsoleReply::say(stats_text(server)),
        "shutdown" => ConsoleReply {
            output: "shutting down".to_string(),
            shutdown: true,
        },
        "help" => ConsoleReply::say(CONSOLE_HELP),
        _ => ConsoleReply::say(format!("unknown command /{command}; /help lists them")),
    }
}

/// The `/stats` text.
pub fn stats_text(server: &Server) -> String {
    let (users, rooms) = {
        let table = server.snapshot();
        (table.users.len(), table.rooms.len())
    };
    let stats = server.stats();
    format!(
        "connections: {users} online, {} accepted, {} refused, {} dropped as too slow\n\
         rooms: {rooms}\n\
         messages relayed: {} ({} deliveries)\n\
         uptime: {}\n\
         connection cap: {}",
        Stats::get(&stats.accepted),
        Stats::get(&stats.refused),
        Stats::get(&stats.too_slow),
        Stats::get(&stats.messages),
        Stats::get(&stats.deliveries),
        format_duration(server.uptime()),
        server.cap(),
    )
}
