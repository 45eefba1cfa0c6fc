//! Embedding Underworld-Line: a host program that runs the chat server in-process and
//! adds a bot to it, through the library's public API only.
//!
//! Run it, then talk to the bot from another terminal:
//!
//! ```sh
//! cargo run --example embed                          # the server and its bot, on 127.0.0.1:2022
//! cargo run --example embed -- --addr 127.0.0.1:4000 --announce-every 10
//! nc 127.0.0.1 2022                                  # then type: !roll   !roll 20   !time
//! ```
//!
//! What the bot does:
//!
//! - greets everyone who enters a room, in that room (`NOTICE welcome, QuietOtter! ...`);
//! - answers `!time` (the server's UTC time) and `!roll` / `!roll N` (a die roll from 1
//!   to N, 6 by default) with a `NOTICE` to the room where it was asked;
//! - pushes an announcement to everyone every `--announce-every SECS` (default 60;
//!   `0` turns it off).
//!
//! Options: `--addr HOST:PORT` (default `127.0.0.1:2022`), `--announce-every SECS`.
//! Ctrl-C (or SIGTERM) shuts the server down gracefully: every client gets `BYE`, then
//! the bot notices the server is gone and the program exits 0.
//!
//! # How it fits together
//!
//! - [`Server::bind`] starts the whole server on its own threads and returns a handle.
//! - [`Server::subscribe`] gives a crossbeam `Receiver<ChatEvent>`: joins, leaves, nick
//!   changes, messages and actions, never private messages.
//! - The **bot thread** waits on two things at once with `crossbeam_channel::select!`:
//!   that event stream and a `tick` timer for the announcements.
//! - The bot answers with [`Server::notice_room`] and [`Server::notice_all`]. Notices
//!   are not chat events, so the bot never hears (and never answers) itself.
//! - When the server has stopped, the dispatcher drops its end of the event channel; the
//!   bot's `recv` then reports "disconnected", and that is the bot's signal to end.
//!
//! The bot's decisions are pure functions ([`bot_reply`], [`parse_request`]) with unit
//! tests at the end of this file: `cargo test --example embed`. The behaviour tests,
//! which run this program and talk to it over TCP, are in `tests/embedding.rs`.

use std::collections::hash_map::RandomState;
use std::env;
use std::hash::BuildHasher;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{select, Receiver};
use underworld_line::clock::format_utc;
use underworld_line::{ChatEvent, Config, OperatorError, Server};

const USAGE: &str = "\
usage: embed [--addr HOST:PORT] [--announce-every SECS]

  --addr HOST:PORT        where to listen (default 127.0.0.1:2022; port 0 picks a free one)
  --announce-every SECS   seconds between announcements to everyone (default 60; 0 = never)
";

/// `!roll` without a number rolls an ordinary die.
const DEFAULT_SIDES: u64 = 6;

/// The largest die `!roll N` accepts: any bound would do; this one keeps replies short.
const MAX_SIDES: u64 = 1_000_000;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    addr: String,
    /// `None`: no announcements.
    announce_every: Option<Duration>,
}

fn main() -> ExitCode {
    // The host program, not the library, sets up logging (the library only logs).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let options = match parse_options(env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("embed: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let server = match Server::bind(&options.addr, Config::default()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("embed: cannot listen on {}: {e}", options.addr);
            return ExitCode::FAILURE;
        }
    };
    // Subscribe at once: events are only delivered from the moment of subscribing, so a
    // client who connects before this line would not be greeted.
    let events = server.subscribe();

    // The handler runs on ctrlc's own thread; it only starts the shutdown, and `main`
    // below waits for everything to finish. (One handler per process: that is why the
    // library leaves signals to the host.)
    let on_signal = server.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.shutdown()) {
        log::warn!("no Ctrl-C handler: {e}");
    }

    // `Server` is a cheap handle (an `Arc` inside): the bot gets its own clone.
    let bot_server = server.clone();
    let announce_every = options.announce_every;
    let bot = thread::Builder::new()
        .name("bot".into())
        .spawn(move || run_bot(&bot_server, &events, announce_every));
    let bot = match bot {
        Ok(bot) => bot,
        Err(e) => {
            eprintln!("embed: cannot start the bot thread: {e}");
            server.shutdown();
            server.join();
            return ExitCode::FAILURE;
        }
    };

    // On stdout, after the bot is listening: scripts and tests wait for this line (and
    // learn the real address from it when the port was 0).
    println!(
        "Underworld-Line with a bot on {} (Ctrl-C to stop)",
        server.local_addr()
    );

    server.join();
    // The server is gone, so the bot's event channel is disconnected: it ends soon.
    if bot.join().is_err() {
        eprintln!("embed: the bot thread panicked");
        return ExitCode::FAILURE;
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_options(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        addr: "127.0.0.1:2022".to_string(),
        announce_every: Some(Duration::from_secs(60)),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => {
                options.addr = args.next().ok_or("--addr needs HOST:PORT")?;
            }
            "--announce-every" => {
                let value = args.next().ok_or("--announce-every needs SECS")?;
                let secs: u64 = value
                    .parse()
                    .map_err(|_| format!("--announce-every: not a number of seconds: {value}"))?;
                options.announce_every = (secs > 0).then(|| Duration::from_secs(secs));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(options))
}

// ----- the bot thread -----

/// The bot's loop: answer chat events, and announce on every tick, until the server is
/// gone.
fn run_bot(server: &Server, events: &Receiver<ChatEvent>, announce_every: Option<Duration>) {
    let mut dice = Dice::new();
    // `never()` is a channel that never delivers: with announcements off, the same
    // `select!` below simply never picks that arm.
    let ticks = match announce_every {
        Some(period) => crossbeam_channel::tick(period),
        None => crossbeam_channel::never(),
    };
    loop {
        select! {
            recv(events) -> event => match event {
                Ok(event) => {
                    let reply = bot_reply(&event, SystemTime::now(), |sides| dice.roll(sides));
                    if let Some((room, text)) = reply {
                        send_notice(server, &room, &text);
                    }
                }
                // Disconnected: the dispatcher has stopped and dropped its sender. This
                // arm matters: without it, a disconnected channel is "ready" forever and
                // the loop would spin at 100% CPU.
                Err(_) => break,
            },
            recv(ticks) -> _ => announce(server),
        }
    }
    log::debug!("bot: the server is gone; stopping");
}

/// A notice to one room. Failing is normal here: the one who asked may have left, and
/// the room with them (`NoSuchRoom`), or the server may be stopping (`Stopped`).
fn send_notice(server: &Server, room: &str, text: &str) {
    if let Err(e) = server.notice_room(room, text) {
        log::debug!("bot: no notice to {room}: {e}");
    }
}

/// The periodic announcement to everyone online.
fn announce(server: &Server) {
    let snapshot = server.snapshot();
    if snapshot.users.is_empty() {
        return; // nobody to tell
    }
    let text = announcement(snapshot.users.len(), snapshot.rooms.len());
    match server.notice_all(&text) {
        Ok(_) | Err(OperatorError::Stopped) => {}
        Err(e) => log::warn!("bot: announcement failed: {e}"),
    }
}

// ----- the bot's decisions: pure functions -----

/// The text of the periodic announcement.
fn announcement(users: usize, rooms: usize) -> String {
    let people = if users == 1 { "person" } else { "people" };
    let places = if rooms == 1 { "room" } else { "rooms" };
    format!("bot: {users} {people} online in {rooms} {places}; say !time or !roll in any room")
}

/// A request to the bot, from a chat message.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `!time`.
    Time,
    /// `!roll` or `!roll N`.
    Roll { sides: u64 },
    /// `!roll` with something that is not a number from 1 to [`MAX_SIDES`].
    BadRoll,
}

/// The request in a message, if it is one: the message must *start* with the command
/// (so "who said !roll?" is just chat). Case is ignored, as for the server's commands.
fn parse_request(text: &str) -> Option<Request> {
    let mut words = text.split_whitespace();
    let command = words.next()?;
    if command.eq_ignore_ascii_case("!time") {
        return Some(Request::Time);
    }
    if !command.eq_ignore_ascii_case("!roll") {
        return None;
    }
    let request = match (words.next(), words.next()) {
        (None, _) => Request::Roll {
            sides: DEFAULT_SIDES,
        },
        (Some(n), None) => match n.parse::<u64>() {
            Ok(sides @ 1..=MAX_SIDES) => Request::Roll { sides },
            _ => Request::BadRoll,
        },
        (Some(_), Some(_)) => Request::BadRoll,
    };
    Some(request)
}

/// What the bot says about `event`: the room to answer in and the notice, or `None`.
///
/// Pure: the clock and the die are inputs (`now`, and `roll(sides)`, which returns a
/// number from 1 to `sides`), so a test can pin both down.
fn bot_reply(
    event: &ChatEvent,
    now: SystemTime,
    roll: impl FnOnce(u64) -> u64,
) -> Option<(String, String)> {
    match event {
        ChatEvent::Joined { nick, room } => {
            Some((room.clone(), format!("welcome, {nick}! say !time or !roll")))
        }
        ChatEvent::Message { room, nick, text } => {
            let answer = match parse_request(text)? {
                Request::Time => format!("{nick}: the server time is {}", format_utc(now)),
                Request::Roll { sides } => format!("{nick} rolls a d{sides}: {}", roll(sides)),
                Request::BadRoll => format!("{nick}: usage: !roll [N], N from 1 to {MAX_SIDES}"),
            };
            Some((room.clone(), answer))
        }
        // Actions, leaves and nick changes need no answer.
        _ => None,
    }
}

/// Die rolls from the standard library alone (no `rand` crate).
///
/// `RandomState::new()` holds two random 64-bit keys, drawn from the OS when the process
/// starts; hashing a counter with them (SipHash) gives numbers nobody can predict without
/// the keys. That is plenty for dice, though not for cryptography.
struct Dice {
    keys: RandomState,
    rolls: u64,
}

impl Dice {
    fn new() -> Dice {
        Dice {
            keys: RandomState::new(),
            rolls: 0,
        }
    }

    /// A number from 1 to `sides` (`sides` ≥ 1).
    fn roll(&mut self, sides: u64) -> u64 {
        self.rolls += 1;
        // The modulo favours small results by at most sides / 2^64: invisible for dice.
        1 + self.keys.hash_one(self.rolls) % sides
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn message(text: &str) -> ChatEvent {
        ChatEvent::Message {
            room: "cellar".into(),
            nick: "QuietOtter".into(),
            text: text.into(),
        }
    }

    /// The die must not be asked for when nothing is rolled.
    fn no_roll(_: u64) -> u64 {
        panic!("no roll expected")
    }

    #[test]
    fn greets_joiners_in_their_room() {
        let joined = ChatEvent::Joined {
            nick: "QuietOtter".into(),
            room: "cellar".into(),
        };
        assert_eq!(
            bot_reply(&joined, SystemTime::now(), no_roll),
            Some((
                "cellar".into(),
                "welcome, QuietOtter! say !time or !roll".into()
            ))
        );
    }

    #[test]
    fn answers_time_in_utc() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_637_173); // 2026-11-25T20:06:13Z
        assert_eq!(
            bot_reply(&message("!time"), now, no_roll),
            Some((
                "cellar".into(),
                "QuietOtter: the server time is 2026-11-25T20:06:13Z".into()
            ))
        );
    }

    #[test]
    fn rolls_the_asked_die() {
        let reply = |text: &str| bot_reply(&message(text), SystemTime::now(), |sides| sides);
        assert_eq!(reply("!roll").unwrap().1, "QuietOtter rolls a d6: 6");
        assert_eq!(reply("!ROLL 20").unwrap().1, "QuietOtter rolls a d20: 20");
        assert_eq!(
            reply("!roll 0").unwrap().1,
            "QuietOtter: usage: !roll [N], N from 1 to 1000000"
        );
        assert_eq!(parse_request("!roll 1000001"), Some(Request::BadRoll));
        assert_eq!(parse_request("!roll two"), Some(Request::BadRoll));
        assert_eq!(parse_request("!roll 2 3"), Some(Request::BadRoll));
    }

    #[test]
    fn ignores_chat_and_other_events() {
        assert_eq!(
            bot_reply(&message("who said !roll?"), SystemTime::now(), no_roll),
            None
        );
        assert_eq!(
            bot_reply(&message("!rolling"), SystemTime::now(), no_roll),
            None
        );
        let action = ChatEvent::Action {
            room: "cellar".into(),
            nick: "QuietOtter".into(),
            text: "!roll".into(),
        };
        assert_eq!(bot_reply(&action, SystemTime::now(), no_roll), None);
    }

    #[test]
    fn dice_stay_in_range_and_vary() {
        let mut dice = Dice::new();
        let rolls: Vec<u64> = (0..600).map(|_| dice.roll(6)).collect();
        assert!(rolls.iter().all(|n| (1..=6).contains(n)));
        for face in 1..=6 {
            assert!(rolls.contains(&face), "{face} never came up in 600 rolls");
        }
        assert_eq!(dice.roll(1), 1);
    }

    #[test]
    fn parses_options() {
        let parse = |args: &[&str]| parse_options(args.iter().map(|a| a.to_string()));
        assert_eq!(
            parse(&[]).unwrap(),
            Some(Options {
                addr: "127.0.0.1:2022".into(),
                announce_every: Some(Duration::from_secs(60)),
            })
        );
        assert_eq!(
            parse(&["--addr", "0.0.0.0:4000", "--announce-every", "0"]).unwrap(),
            Some(Options {
                addr: "0.0.0.0:4000".into(),
                announce_every: None,
            })
        );
        assert_eq!(parse(&["--help"]).unwrap(), None);
        assert!(parse(&["--announce-every", "soon"]).is_err());
        assert!(parse(&["--addr"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
    }
}
