//! Who is online where, kept in Redis: the cluster's nick register and each node's
//! heartbeat. Only the `cluster-reg` thread calls these (`registry.rs`), and
//! `cluster-beat` calls [`beat`] (`heartbeat.rs`); each function is one round trip (or
//! one pipeline) on the caller's connection.
//!
//! The keys:
//!
//! | key | type | what |
//! |---|---|---|
//! | `underworld-line:nodes` | set | the nodes that registered (alive or not yet found lost) |
//! | `underworld-line:alive:<node>` | string with a TTL | the node's heartbeat: gone [`ALIVE_TTL`] after its last beat |
//! | `underworld-line:nicks` | hash | a nick's look ([`nick_key`]) → the node whose user holds it |
//! | `underworld-line:users:<node>` | hash | a nick's look → `<nick> <room>`, for each user of that node |
//! | `underworld-line:reserved:<node>` | hash | a nick's look → the alias the node reserved for its next users |
//! | `underworld-line:lost:<node>` | string with a TTL | the node was declared lost: if it comes back, it announces its users again |
//!
//! Claims, releases and clean-ups are Lua scripts (`EVAL`): Redis runs each one whole,
//! with nothing in between, so two nodes claiming one nick at once cannot both win, and a
//! nick is freed only by the node that holds it.

use std::time::Duration;

use redis::{Connection, RedisResult, Value};

use crate::text::nick_key;

/// How long a node counts as alive after its last heartbeat. Its users are declared
/// gone at most this long (plus one [`super::registry`] tick) after it dies.
pub const ALIVE_TTL: Duration = Duration::from_secs(5);

/// Every registered node.
const NODES: &str = "underworld-line:nodes";
/// The nick register: look → node.
const NICKS: &str = "underworld-line:nicks";

fn alive_key(node: &str) -> String {
    format!("underworld-line:alive:{node}")
}

fn users_key(node: &str) -> String {
    format!("underworld-line:users:{node}")
}

fn reserved_key(node: &str) -> String {
    format!("underworld-line:reserved:{node}")
}

fn lost_key(node: &str) -> String {
    format!("underworld-line:lost:{node}")
}

/// How long the note "this node was declared lost" waits for the node to come back.
const LOST_NOTE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A user of a node as the register keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The nick, as spelled.
    pub nick: String,
    /// Their room.
    pub room: String,
}

/// Claims `nick` for a user of `node` in `room`: wins unless a user of another node
/// holds it or a lookalike (an alias the node reserved is its own). KEYS: nicks,
/// users:node, reserved:node. ARGV: node, key, nick, room.
const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
";

/// Reserves, in one step, each candidate nobody holds (not even this node's users) for
/// a future user of `node`: aliases it can give at once. One script for a whole batch,
/// so that filling the pool costs one round trip, not one per alias (a claim waiting
/// behind the refill waits for one round trip at most). With `again` = 1, a candidate
/// this node has reserved already counts as won too (the pool checked again after a
/// reconnection). Returns the candidates won.
/// KEYS: nicks, reserved:node. ARGV: node, again (0 or 1), then key, nick for each
/// candidate.
const RESERVE_MANY: &str = r"
local won = {}
for i = 3, #ARGV, 2 do
  local ok = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1]) == 1
  if not ok and ARGV[2] == '1' then
    ok = redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1]
      and redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1
  end
  if ok then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    table.insert(won, ARGV[i + 1])
  end
end
return won
";

/// Frees a nick, if this node holds it. KEYS: nicks, users:node. ARGV: node, key.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
";

/// A user of this node is now in another room (only if this node holds their nick).
/// KEYS: nicks, users:node. ARGV: node, key, nick, room.
const MOVE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
end
return 1
";

/// Forgets everything a node registered or reserved, freeing the nicks it held.
/// KEYS: nicks, users:node, reserved:node. ARGV: node.
const FORGET: &str = r"
for k = 2, 3 do
  local fields = redis.call('HKEYS', KEYS[k])
  for i = 1, #fields do
    if redis.call('HGET', KEYS[1], fields[i]) == ARGV[1] then
      redis.call('HDEL', KEYS[1], fields[i])
    end
  end
  redis.call('DEL', KEYS[k])
end
return 1
";

/// Cleans up after a lost node, in one step: unless its heartbeat is back (it was only
/// slow) or another node cleaned up first (it is no longer registered), and only if its
/// users are still exactly those that were read a moment before, publishes their
/// `LEAVE` lines, notes that the node was declared lost, frees its nicks and forgets it.
/// Returns 1 if it did, 0 if there was nothing to do, -1 if the users changed (try again
/// at the next beat). One script, so that nothing can come in between: a node whose
/// heartbeat comes back a moment later finds itself forgotten ([`beat`] says so) and
/// registers again; it can never be half forgotten.
/// KEYS: alive:node, nodes, users:node, nicks, reserved:node, lost:node.
/// ARGV: node, lost note TTL (ms), channel, n, then n (field, value) pairs as read, then
/// the `LEAVE` lines.
const REAP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return 0 end
local n = tonumber(ARGV[4])
if redis.call('HLEN', KEYS[3]) ~= n then return -1 end
for i = 0, n - 1 do
  if redis.call('HGET', KEYS[3], ARGV[5 + 2 * i]) ~= ARGV[6 + 2 * i] then return -1 end
end
for i = 5 + 2 * n, #ARGV do
  redis.call('PUBLISH', ARGV[3], ARGV[i])
end
redis.call('SET', KEYS[6], 1, 'PX', ARGV[2])
for _, k in ipairs({KEYS[3], KEYS[5]}) do
  local fields = redis.call('HKEYS', k)
  for i = 1, #fields do
    if redis.call('HGET', KEYS[4], fields[i]) == ARGV[1] then
      redis.call('HDEL', KEYS[4], fields[i])
    end
  end
  redis.call('DEL', k)
end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
";

/// Gives back every alias reserved for `node`'s next users (nicks only it holds).
/// KEYS: nicks, reserved:node. ARGV: node. Returns how many there were.
const RELEASE_RESERVED: &str = r"
local fields = redis.call('HKEYS', KEYS[2])
for i = 1, #fields do
  if redis.call('HGET', KEYS[1], fields[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
redis.call('DEL', KEYS[2])
return #fields
";

/// Forgets a node's registered users (its reserved aliases stay reserved), then claims
/// every user it has now: returns what it had before, and the looks another node holds
/// (those users must change nick). KEYS: nicks, users:node. ARGV: node, then key, nick,
/// room for each user.
const RESYNC: &str = r"
local old = redis.call('HGETALL', KEYS[2])
for i = 1, #old, 2 do
  if redis.call('HGET', KEYS[1], old[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], old[i])
  end
end
redis.call('DEL', KEYS[2])
local lost = {}
for i = 2, #ARGV, 3 do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if owner and owner ~= ARGV[1] then
    table.insert(lost, ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1] .. ' ' .. ARGV[i + 2])
  end
end
return {old, lost}
";

/// A call of one of the scripts above, by its SHA-1 once Redis has it (`lua.rs`).
fn eval(script: &'static str, keys: &[&str]) -> super::lua::Call {
    super::lua::call(script, keys)
}

/// Claims `nick` for a user of `node`: true if it is theirs now.
pub fn claim(con: &mut Connection, node: &str, nick: &str, room: &str) -> RedisResult<bool> {
    let (users, reserved) = (users_key(node), reserved_key(node));
    eval(CLAIM, &[NICKS, &users, &reserved])
        .arg(node)
        .arg(nick_key(nick))
        .arg(nick)
        .arg(room)
        .query::<i64>(con)
        .map(|won| won == 1)
}

/// Reserves for future users of `node` each of `candidates` that nobody holds (`again`:
/// or that `node` reserved already), in one round trip: the ones it won, in their order.
pub fn reserve_many(
    con: &mut Connection,
    node: &str,
    candidates: &[String],
    again: bool,
) -> RedisResult<Vec<String>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let reserved = reserved_key(node);
    let mut cmd = eval(RESERVE_MANY, &[NICKS, &reserved]);
    cmd.arg(node).arg(u8::from(again));
    for nick in candidates {
        cmd.arg(nick_key(nick)).arg(nick);
    }
    let won: Vec<Bytes> = cmd.query(con)?;
    Ok(text(won))
}

/// Gives back every alias reserved for `node`'s next users: how many there were.
pub fn release_reserved(con: &mut Connection, node: &str) -> RedisResult<usize> {
    let reserved = reserved_key(node);
    eval(RELEASE_RESERVED, &[NICKS, &reserved])
        .arg(node)
        .query(con)
}

/// Frees `nick`, if `node` holds it.
pub fn release(con: &mut Connection, node: &str, nick: &str) -> RedisResult<()> {
    let users = users_key(node);
    eval(RELEASE, &[NICKS, &users])
        .arg(node)
        .arg(nick_key(nick))
        .query::<i64>(con)
        .map(drop)
}

/// Records that the user of `node` called `nick` is now in `room`.
pub fn moved(con: &mut Connection, node: &str, nick: &str, room: &str) -> RedisResult<()> {
    let users = users_key(node);
    eval(MOVE, &[NICKS, &users])
        .arg(node)
        .arg(nick_key(nick))
        .arg(nick)
        .arg(room)
        .query::<i64>(con)
        .map(drop)
}

/// What a resync found: the users the node had registered before, and the nicks of the
/// users it has now that another node holds.
#[derive(Debug, Default)]
pub struct Resynced {
    /// Registered before the resync (some may be gone since).
    pub before: Vec<Entry>,
    /// Nicks (as given) that another node holds.
    pub lost: Vec<String>,
}

/// Replaces everything `node` registered with `users` (nick, room), in one step.
pub fn resync(
    con: &mut Connection,
    node: &str,
    users: &[(String, String)],
) -> RedisResult<Resynced> {
    let users_hash = users_key(node);
    let mut cmd = eval(RESYNC, &[NICKS, &users_hash]);
    cmd.arg(node);
    for (nick, room) in users {
        cmd.arg(nick_key(nick)).arg(nick).arg(room);
    }
    let (before, lost_keys): (Vec<Bytes>, Vec<Bytes>) = cmd.query(con)?;
    let before = text(before);
    // A set: each user is checked against it (a scan would cost users x lost).
    let lost_keys: std::collections::HashSet<String> = text(lost_keys).into_iter().collect();
    let lost = users
        .iter()
        .filter(|(nick, _)| lost_keys.contains(&nick_key(nick)))
        .map(|(nick, _)| nick.clone())
        .collect();
    Ok(Resynced {
        before: entries(&before),
        lost,
    })
}

/// The heartbeat: `node` is alive for [`ALIVE_TTL`] more, and registered. True if it
/// was not registered: either its first beat, or another node declared it lost and
/// forgot it (its users are gone from the register, though the node never stopped):
/// then it must register its users again.
pub fn beat(con: &mut Connection, node: &str) -> RedisResult<bool> {
    let (added,): (i64,) = redis::pipe()
        .cmd("SET")
        .arg(alive_key(node))
        .arg(1)
        .arg("PX")
        .arg(ALIVE_TTL.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(NODES)
        .arg(node)
        .query(con)?;
    Ok(added == 1)
}

/// The registered nodes whose heartbeat has stopped (other than `me`).
pub fn lost_nodes(con: &mut Connection, me: &str) -> RedisResult<Vec<String>> {
    let others: Vec<String> = node_names(con)?.into_iter().filter(|n| n != me).collect();
    if others.is_empty() {
        return Ok(others);
    }
    let mut pipe = redis::pipe();
    for node in &others {
        pipe.cmd("EXISTS").arg(alive_key(node));
    }
    let alive: Vec<bool> = pipe.query(con)?;
    Ok(others
        .into_iter()
        .zip(alive)
        .filter_map(|(node, alive)| (!alive).then_some(node))
        .collect())
}

/// The registered nodes whose heartbeat is alive, `me` included, with their users.
pub fn live_nodes(con: &mut Connection) -> RedisResult<Vec<(String, Vec<Entry>)>> {
    let nodes = node_names(con)?;
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("EXISTS").arg(alive_key(node));
    }
    let alive: Vec<bool> = pipe.query(con)?;
    let live: Vec<String> = nodes
        .into_iter()
        .zip(alive)
        .filter_map(|(node, alive)| alive.then_some(node))
        .collect();
    let mut pipe = redis::pipe();
    for node in &live {
        pipe.cmd("HGETALL").arg(users_key(node));
    }
    // Each answer on its own: a node whose key is not a hash (written by someone else)
    // is skipped, not the whole list.
    let users = each_answer(con, &pipe, live.len())?;
    Ok(live
        .into_iter()
        .zip(users)
        .filter_map(|(node, users)| {
            let users: Vec<Bytes> = redis::from_redis_value(&users).ok()?;
            Some((node, entries(&text(users))))
        })
        .collect())
}

/// Sends the `count` commands of `pipe` and returns each answer as it came, an error
/// answer included (`pipe.query` would fail whole at the first one).
fn each_answer(
    con: &mut Connection,
    pipe: &redis::Pipeline,
    count: usize,
) -> RedisResult<Vec<Value>> {
    use redis::ConnectionLike;
    con.req_packed_commands(&pipe.get_packed_pipeline(), 0, count)
}

/// Every live node (heartbeat alive) and how many users it registered, by name.
pub fn census(con: &mut Connection) -> RedisResult<Vec<(String, usize)>> {
    let mut nodes = node_names(con)?;
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    nodes.sort();
    let mut pipe = redis::pipe();
    for node in &nodes {
        pipe.cmd("EXISTS").arg(alive_key(node));
        pipe.cmd("HLEN").arg(users_key(node));
    }
    // Each answer on its own: a node whose key has the wrong type (an error answer) is
    // skipped, not the whole census.
    let answers = each_answer(con, &pipe, 2 * nodes.len())?;
    Ok(nodes
        .into_iter()
        .zip(answers.chunks(2))
        .filter_map(|(node, pair)| match pair {
            [Value::Int(1), Value::Int(users)] => Some((node, usize::try_from(*users).ok()?)),
            _ => None,
        })
        .collect())
}

/// Which node holds `nick` (or a lookalike), and that user as registered; `None` if
/// nobody does, or only `me` (whose users the dispatcher knows itself).
pub fn locate(con: &mut Connection, me: &str, nick: &str) -> RedisResult<Option<(String, Entry)>> {
    let key = nick_key(nick);
    let owner: Option<Bytes> = redis::cmd("HGET").arg(NICKS).arg(&key).query(con)?;
    let owner = owner.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let Some(node) = owner.filter(|node| node != me) else {
        return Ok(None);
    };
    let value: Option<Bytes> = redis::cmd("HGET")
        .arg(users_key(&node))
        .arg(&key)
        .query(con)?;
    let value = value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let entry = value.and_then(|value| entries(&[key, value]).pop());
    Ok(entry.map(|entry| (node, entry)))
}

/// The users `node` registered.
pub fn users_of(con: &mut Connection, node: &str) -> RedisResult<Vec<Entry>> {
    let users: Vec<Bytes> = redis::cmd("HGETALL").arg(users_key(node)).query(con)?;
    Ok(entries(&text(users)))
}

/// Whether `node` was declared lost since it last asked (the note is taken away).
pub fn take_lost_note(con: &mut Connection, node: &str) -> RedisResult<bool> {
    redis::cmd("DEL")
        .arg(lost_key(node))
        .query::<i64>(con)
        .map(|deleted| deleted == 1)
}

/// What [`reap`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaped {
    /// The node was cleaned up: these users left (their `LEAVE` lines are out).
    Done(Vec<Entry>),
    /// Nothing to do: the node is alive again, or another node cleaned up first.
    Nothing,
    /// Its users changed between the read and the clean-up: try again later.
    Changed,
}

/// Cleans up after the lost node `node` in one step (the `REAP` script): `leaves` gives the
/// `LEAVE` lines to publish for its users, as read just before.
pub fn reap(
    con: &mut Connection,
    node: &str,
    leaves: impl FnOnce(&[Entry]) -> Vec<String>,
) -> RedisResult<Reaped> {
    let raw: Vec<Bytes> = redis::cmd("HGETALL").arg(users_key(node)).query(con)?;
    let users = entries(&text(raw.clone()));
    let keys = [
        alive_key(node),
        NODES.to_string(),
        users_key(node),
        NICKS.to_string(),
        reserved_key(node),
        lost_key(node),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut cmd = eval(REAP, &keys);
    cmd.arg(node)
        .arg(LOST_NOTE_TTL.as_millis() as u64)
        .arg(super::CHANNEL)
        .arg(raw.len() / 2);
    // The snapshot goes back byte for byte (even a value that is not UTF-8), so that
    // the script compares what it really holds.
    for value in &raw {
        cmd.arg(value.as_slice());
    }
    for line in leaves(&users) {
        cmd.arg(line);
    }
    Ok(match cmd.query::<i64>(con)? {
        1 => Reaped::Done(users),
        0 => Reaped::Nothing,
        _ => Reaped::Changed,
    })
}

/// Forgets `node` altogether: its nicks are free, it is no longer registered.
pub fn forget(con: &mut Connection, node: &str) -> RedisResult<()> {
    let (users, reserved) = (users_key(node), reserved_key(node));
    eval(FORGET, &[NICKS, &users, &reserved])
        .arg(node)
        .query::<i64>(con)?;
    redis::pipe()
        .cmd("SREM")
        .arg(NODES)
        .arg(node)
        .ignore()
        .cmd("DEL")
        .arg(alive_key(node))
        .ignore()
        .query::<()>(con)
}

/// What Redis hands back, before it is checked: anyone with access to Redis can write
/// any bytes there, so nothing is read as `String` directly (one bad value would make
/// the whole answer fail to convert, and the register unreadable).
type Bytes = Vec<u8>;

/// Bytes as text, invalid UTF-8 replaced (what is then checked drops it).
fn text(values: Vec<Bytes>) -> Vec<String> {
    values
        .into_iter()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

/// The registered nodes whose names are valid (anything else in the set is ignored).
fn node_names(con: &mut Connection) -> RedisResult<Vec<String>> {
    let names: Vec<Bytes> = redis::cmd("SMEMBERS").arg(NODES).query(con)?;
    Ok(text(names)
        .into_iter()
        .filter(|name| super::wire::validate_node_name(name).is_ok())
        .collect())
}

/// `field, "nick room", field, …` → entries. The register is only ever written by these
/// scripts, but anyone with access to Redis can write there too: a value whose nick or
/// room breaks the rules of the wire format is skipped, never shown to a user.
fn entries(flat: &[String]) -> Vec<Entry> {
    flat.chunks(2)
        .filter_map(|pair| {
            let (nick, room) = pair.get(1)?.split_once(' ')?;
            if !super::wire::is_valid_nick(nick) || !super::wire::is_valid_room(room) {
                return None;
            }
            Some(Entry {
                nick: nick.to_string(),
                room: room.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_skip_what_has_another_shape() {
        let flat = [
            "bob".to_string(),
            "Bob lobby".to_string(),
            "x".into(),
            "bad".into(),
            "y".into(),
            "se\x1brver lobby".into(),
        ];
        assert_eq!(
            entries(&flat),
            [Entry {
                nick: "Bob".into(),
                room: "lobby".into()
            }]
        );
        assert!(entries(&["odd".to_string()]).is_empty());
    }
}
