//! Room history across the cluster: each room's last `--history` messages in a capped
//! Redis list, written and read **with** the room lines themselves, so that a joiner's
//! replay is exactly the lines said before their `JOIN`, in the room's one order.
//!
//! - A `MSG` or `ME` line is published together with `LPUSH` + `LTRIM` of its room's
//!   list, in one `MULTI`/`EXEC`: written once, by the node that said it, and the list's
//!   order is the channel's order.
//! - A `JOIN` is published together with the read of the list, in one Lua script
//!   ([`RECALL`], which Redis runs whole): what it returns is every message published
//!   before the `JOIN`, and nothing after it (those the joiner hears live). The script
//!   leaves out, on Redis's side, any entry longer than [`MAX_MESSAGE_BYTES`]: nothing
//!   this node would keep, and a huge entry (written there by anyone with access to
//!   Redis) never crosses the network.
//!
//! A list lives [`HISTORY_TTL`] after its last message (Redis keeps it in memory only,
//! as configured for the cluster). Entries are `<unix seconds> <MSG or ME line>`, and
//! are checked when read, like everything else that comes from Redis.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisResult};

use super::wire::{is_valid_nick, MAGIC, MAX_MESSAGE_BYTES};
use crate::text::sanitize_text;

/// How long a room's history outlives its last message.
pub const HISTORY_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a published room line does to its room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryOp {
    /// Nothing (`LEAVE`, `NICK`, or `--history 0`).
    None,
    /// A message: keep it, and only the last `keep`.
    Remember {
        /// Its room.
        room: String,
        /// The entry (see [`entry`]).
        entry: String,
        /// How many the room keeps.
        keep: usize,
    },
    /// A join: read the last `keep`, oldest first.
    Recall {
        /// The room joined.
        room: String,
        /// How many to read.
        keep: usize,
    },
}

/// Publishes a `JOIN` and reads its room's history, in one step. KEYS: the room's
/// list. ARGV: the channel, the message, how many entries, the longest entry returned
/// (bytes). Returns the entries, newest first, without the longer ones; none if the
/// key is not a list (written there by someone else: the join goes on).
pub const RECALL: &str = "
redis.call('PUBLISH', ARGV[1], ARGV[2])
local entries = redis.pcall('LRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
if type(entries) ~= 'table' or entries.err then
  return {}
end
local kept = {}
for _, entry in ipairs(entries) do
  if #entry <= tonumber(ARGV[4]) then
    kept[#kept + 1] = entry
  end
end
return kept
";

/// Publishes `payload` (a `JOIN` for `room`) on `channel` and reads the room's last
/// `keep` entries, in one step ([`RECALL`]); as bytes, so that one entry that is not
/// UTF-8 does not fail the rest.
pub(super) fn publish_and_recall(
    con: &mut Connection,
    channel: &str,
    payload: &str,
    room: &str,
    keep: usize,
) -> RedisResult<Vec<Vec<u8>>> {
    super::lua::call(RECALL, &[&key(room)])
        .arg(channel)
        .arg(payload)
        .arg(keep.max(1))
        .arg(MAX_MESSAGE_BYTES)
        .query(con)
}

/// The Redis list of a room's history.
pub fn key(room: &str) -> String {
    format!("underworld-line:history:{room}")
}

/// The entry for `line` (a `MSG` or `ME` line as clients see it), said at `time`.
pub fn entry(time: SystemTime, line: &str) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{secs} {line}")
}

/// An entry read back, if it is well-formed and about `room`: its time and its line,
/// with the nick checked and the text stripped as any remote line is.
pub fn parse_entry(entry: &str, room: &str) -> Option<(SystemTime, String)> {
    // Longer ones are left out by Redis already (`RECALL`); checked again all the same.
    if entry.len() > MAX_MESSAGE_BYTES || entry.starts_with(MAGIC) {
        return None;
    }
    let mut fields = entry.splitn(5, ' ');
    let secs: u64 = fields.next()?.parse().ok()?;
    let kind = fields.next()?;
    let (said_in, nick, text) = (fields.next()?, fields.next()?, fields.next()?);
    let text = sanitize_text(text);
    if !matches!(kind, "MSG" | "ME") || said_in != room || !is_valid_nick(nick) {
        return None;
    }
    if text.trim().is_empty() {
        return None;
    }
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some((time, format!("{kind} {room} {nick} {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_dropped() {
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let kept = entry(time, "MSG den alice hello there");
        assert_eq!(
            parse_entry(&kept, "den"),
            Some((time, "MSG den alice hello there".to_string()))
        );
        assert_eq!(parse_entry(&kept, "lobby"), None, "another room's");
        for garbage in [
            "",
            "x MSG den alice hi",
            "1 BYE den alice hi",
            "1 MSG den server hi",
            "1 MSG den alice \x1b\x07",
            "1 MSG den alice",
        ] {
            assert_eq!(parse_entry(garbage, "den"), None, "{garbage:?}");
        }
        assert_eq!(
            parse_entry("1 ME den bob \x1b[2Jwaves\r\nBYE", "den").map(|(_, line)| line),
            Some("ME den bob [2JwavesBYE".to_string())
        );
    }
}
