//! The operator console: admin commands typed on the server's terminal.
//!
//! The point of a socket server is that it can push to clients whenever it wants; the
//! console shows it. [`execute`] is pure apart from the [`Server`] calls, so it is tested
//! without a terminal; the binary feeds it the lines of stdin.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::clock::{format_duration, format_utc};
use crate::dispatcher::LIST_MAX;
use crate::server::Server;
use crate::stats::Stats;

/// The console's `/help`.
pub const CONSOLE_HELP: &str = "\
operator commands:
  /users                 who is online, and where (cluster: on every node;
                         the first 200, by nick)
  /rooms                 the rooms and their sizes (cluster: on every node;
                         the first 200, by name)
  /w NAME TEXT           a private message from `server` (cluster: on any node)
  /kick NAME [REASON]    disconnect a user (cluster: on any node)
  /time                  the server's clock (UTC)
  /stats                 connections, rooms, messages, uptime, the connection cap
                         (and, in cluster mode, the node, its link to Redis, and
                         the live nodes with their users)
  /shutdown              say BYE to everyone and stop
  /help                  this list
  anything else          pushed to every user as NOTICE (cluster: on every node;
                         //text sends /text)";

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
        // Said every time, so an operator sees what a stray line did.
        return match server.notice_all(text) {
            Ok(0) => ConsoleReply::say("notice sent to 0 users (nobody is online)"),
            Ok(reached) => ConsoleReply::say(format!(
                "notice sent to {}",
                count(reached, "user", "users")
            )),
            Err(e) => ConsoleReply::say(format!("not sent: {e}")),
        };
    };
    let (command, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    match command.to_ascii_lowercase().as_str() {
        "users" => {
            let roster = server.roster();
            let mut out = format!("{} online", count(roster.users.len(), "user", "users"));
            for user in roster.users.iter().take(LIST_MAX) {
                // `{:<16}` pads by chars, and a Hangul syllable is two columns wide.
                let _ = write!(out, "\n  {} {}", pad_to_columns(&user.nick, 16), user.room);
            }
            ConsoleReply::say(out + &capped_note(roster.users.len()))
        }
        "rooms" => {
            let roster = server.roster();
            let mut out = count(roster.rooms.len(), "room", "rooms");
            for room in roster.rooms.iter().take(LIST_MAX) {
                let _ = write!(
                    out,
                    "\n  {} {}",
                    pad_to_columns(&room.name, 24),
                    room.members
                );
            }
            ConsoleReply::say(out + &capped_note(roster.rooms.len()))
        }
        "w" | "msg" => match args.split_once(char::is_whitespace) {
            Some((nick, text)) => match server.whisper(nick, text.trim()) {
                // The nick that matched: `/w BOB` reaches `bob`, and says so.
                Ok(matched) => ConsoleReply::say(format!("whispered to {matched}")),
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
                Ok(matched) => ConsoleReply::say(format!("kicked {matched}")),
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
    #[allow(unused_mut)] // only cluster mode adds a line
    let mut text = format!(
        "connections: {users} online, {} accepted, {} refused, {} dropped as too slow\n\
         rooms: {rooms}\n\
         messages relayed: {}\n\
         lines written to clients: {}\n\
         uptime: {}\n\
         connection cap: {}\n\
         {}",
        Stats::get(&stats.accepted),
        Stats::get(&stats.refused),
        Stats::get(&stats.too_slow),
        Stats::get(&stats.messages),
        Stats::get(&stats.deliveries),
        format_duration(server.uptime()),
        server.cap(),
        listen_overflows_line(server),
    );
    #[cfg(feature = "redis")]
    if let Some(cluster) = server.cluster() {
        use std::sync::atomic::Ordering::Relaxed;
        // Linked means this node's lines go through Redis: subscribed, and publishing.
        let link = if !stats.cluster_linked.load(Relaxed) {
            format!(
                "not linked: {} unreachable, chat stays local",
                cluster.broker()
            )
        } else if stats.cluster_publish_failing.load(Relaxed) {
            format!(
                "not linked: publishing to {} fails or times out, chat stays local",
                cluster.broker()
            )
        } else {
            format!("linked to {}", cluster.broker())
        };
        text.push_str(&format!("\ncluster: node {}, {link}", cluster.node));
        let nodes = stats.cluster_nodes.lock().clone();
        if !nodes.is_empty() {
            let each: Vec<String> = nodes
                .iter()
                .map(|(node, users)| format!("{node} {users}"))
                .collect();
            text.push_str(&format!(
                "\ncluster nodes alive: {} (users: {})",
                nodes.len(),
                each.join(", ")
            ));
        }
    }
    text
}

/// What `/stats` says about connections lost before `accept`.
fn listen_overflows_line(server: &Server) -> String {
    match server.listen_overflows() {
        Some(0) => "listen queue overflows since start: 0".to_string(),
        Some(n) => format!(
            "listen queue overflows since start: {n} (the kernel dropped connections: \
             they arrived faster than they were accepted; system-wide counter)"
        ),
        None => "listen queue overflows since start: unknown on this system".to_string(),
    }
}

/// The last line of a list longer than [`LIST_MAX`], as a user's `END` line says it
/// (`showing the first 200`); nothing for a shorter one. The first line already gives
/// the true count. Capped like the users' lists because a cluster may hold far more
/// users than a terminal can usefully scroll through.
fn capped_note(total: usize) -> String {
    if total > LIST_MAX {
        format!("\n  (showing the first {LIST_MAX})")
    } else {
        String::new()
    }
}

/// `1 user`, `2 users`: the noun agrees with the number.
fn count(n: usize, singular: &str, plural: &str) -> String {
    let noun = if n == 1 { singular } else { plural };
    format!("{n} {noun}")
}

/// `text` followed by spaces up to `columns` terminal columns (none if it is wider).
fn pad_to_columns(text: &str, columns: usize) -> String {
    let padding = columns.saturating_sub(display_width(text));
    format!("{text}{}", " ".repeat(padding))
}

/// How many terminal columns `text` takes. Nicks and room names are ASCII and Hangul
/// syllables only (see `text.rs`), and a terminal draws a Hangul syllable two columns
/// wide, so this is all the Unicode width table the console needs (the server takes no
/// dependency for it).
fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| if is_hangul_syllable(c) { 2 } else { 1 })
        .sum()
}

fn is_hangul_syllable(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangul_takes_two_columns() {
        assert_eq!(display_width("alice"), 5);
        assert_eq!(display_width("밤손님"), 6);
        assert_eq!(pad_to_columns("밤손님", 8), "밤손님  ");
        assert_eq!(pad_to_columns("bob", 5), "bob  ");
        assert_eq!(pad_to_columns("toolongname", 4), "toolongname");
    }

    #[test]
    fn only_a_capped_list_says_so() {
        assert_eq!(capped_note(LIST_MAX), "");
        assert_eq!(capped_note(LIST_MAX + 1), "\n  (showing the first 200)");
    }

    #[test]
    fn nouns_agree_with_numbers() {
        assert_eq!(count(0, "room", "rooms"), "0 rooms");
        assert_eq!(count(1, "room", "rooms"), "1 room");
        assert_eq!(count(2, "user", "users"), "2 users");
    }
}
