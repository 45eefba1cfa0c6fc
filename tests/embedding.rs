//! The library as others embed it: the [`Server`] handle (bind, notices, whispers, kicks,
//! the event stream, snapshots, shutdown), the [`Dispatcher`] without sockets, and the
//! two example programs that show them (`examples/embed.rs`, `examples/headless.rs`).
//!
//! Every test talks to the server over real sockets on 127.0.0.1 (except the
//! socket-free one) and waits for reply lines, never for time to pass.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use underworld_line::clock::format_utc;
use underworld_line::command::parse_line;
use underworld_line::table::{RoomInfo, UserInfo};
use underworld_line::transport::ChannelTransport;
use underworld_line::{
    ChatEvent, ClientId, Command, Dispatcher, Event, OperatorError, Server, Snapshot,
};

use common::{eventually, start_server, test_config, Client, PATIENCE};

// ----- helpers -----

/// Shuts a server down and waits for it, failing (instead of hanging the test run) if
/// that takes longer than `PATIENCE`.
fn stop(server: &Server) {
    server.shutdown();
    let handle = server.clone();
    let (done, finished) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        handle.join();
        let _ = done.send(());
    });
    finished
        .recv_timeout(PATIENCE)
        .expect("the server did not stop in time");
}

/// The next event from a subscription, failing after `PATIENCE`.
fn next_event(events: &Receiver<ChatEvent>) -> ChatEvent {
    events
        .recv_timeout(PATIENCE)
        .expect("expected a chat event")
}

/// The next line on a simulated client's channel, failing after `PATIENCE`.
fn next_line(lines: &Receiver<String>) -> String {
    lines.recv_timeout(PATIENCE).expect("expected a line")
}

fn joined(nick: &str, room: &str) -> ChatEvent {
    ChatEvent::Joined {
        nick: nick.into(),
        room: room.into(),
    }
}

fn user(nick: &str, room: &str) -> UserInfo {
    UserInfo {
        nick: nick.into(),
        room: room.into(),
    }
}

fn room(name: &str, members: usize) -> RoomInfo {
    RoomInfo {
        name: name.into(),
        members,
    }
}

/// Moves a client to `room` and waits until the server has done it.
fn join_room(client: &mut Client, room: &str) {
    client.send(&format!("/join {room}"));
    client.expect(&format!("JOIN {room} {}", client.nick));
}

// ----- the server handle -----

/// The handle can be cloned and shared between threads: that is what lets a signal
/// handler, a bot thread and `main` all hold one (checked at compile time).
#[test]
fn the_server_handle_is_clone_send_sync() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Server>();
}

/// `Server::bind` serves on the address given, and `local_addr` tells which port the OS
/// picked for port 0; binding an address already in use is an ordinary `io::Error`.
#[test]
fn bind_serves_and_reports_the_bound_address() {
    let server = Server::bind("127.0.0.1:0", test_config()).expect("bind");
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0, "local_addr must give the real port");

    let mut client = Client::connect(addr);
    client.sync();

    let taken = Server::bind(addr, test_config());
    assert!(taken.is_err(), "a second bind of {addr} should fail");
    stop(&server);
}

/// `Server::from_listener` serves on a listener the host already bound (as systemd
/// socket activation or a test harness would hand over).
#[test]
fn from_listener_serves_an_existing_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = Server::from_listener(listener, test_config()).expect("serve");
    assert_eq!(server.local_addr(), addr);

    let mut client = Client::connect(addr);
    client.sync();
    stop(&server);
}

/// Any clone of the handle can shut the server down and wait for it from another
/// thread: clients get `BYE server shutting down`, later `join`s return at once, and
/// requests to a stopped server say so.
#[test]
fn shutdown_and_join_from_another_thread() {
    let server = start_server(test_config());
    let mut client = Client::connect(server.local_addr());
    assert!(!server.is_shutting_down());

    let handle = server.clone();
    let (done, finished) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        handle.shutdown();
        handle.join();
        let _ = done.send(());
    });

    assert_eq!(client.expect_bye(), "server shutting down");
    finished
        .recv_timeout(PATIENCE)
        .expect("join on the other thread did not return");
    assert!(server.is_shutting_down());
    server.join(); // already stopped: returns at once
    assert_eq!(server.notice_all("anyone?"), Err(OperatorError::Stopped));
}

/// `notice_all` pushes `NOTICE <text>` to everyone, whatever their room, and says how
/// many got it. Control characters are stripped from the text like from any message.
#[test]
fn notice_all_reaches_everyone() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    let mut alice = Client::named(addr, "Alice");
    let mut bob = Client::named(addr, "Bob");
    join_room(&mut bob, "cellar");

    assert_eq!(server.notice_all("maintenance at noon"), Ok(2));
    alice.expect("NOTICE maintenance at noon");
    bob.expect("NOTICE maintenance at noon");

    assert_eq!(server.notice_all("\u{1b}[31mred alert"), Ok(2));
    alice.expect("NOTICE [31mred alert");
    stop(&server);
}

/// `notice_room` reaches the members of one room only (the name is taken as `/join`
/// takes it: a leading `#` and upper case are fine); an unknown room is an error.
#[test]
fn notice_room_reaches_only_that_room() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    let mut alice = Client::named(addr, "Alice");
    let mut bob = Client::named(addr, "Bob");
    let mut carol = Client::named(addr, "Carol");
    join_room(&mut bob, "cellar");
    join_room(&mut carol, "cellar");

    assert_eq!(server.notice_room("#Cellar", "the cellar floods"), Ok(2));
    bob.expect("NOTICE the cellar floods");
    carol.expect("NOTICE the cellar floods");
    let seen = alice.sync();
    assert!(
        !seen.iter().any(|line| line.starts_with("NOTICE")),
        "a lobby member got the cellar's notice: {seen:?}"
    );

    assert_eq!(
        server.notice_room("attic", "hello?"),
        Err(OperatorError::NoSuchRoom("attic".into()))
    );
    stop(&server);
}

/// `whisper` sends `DM server <nick> <text>` to one user only; the nick is matched by
/// its look (`alice` finds `Alice`), and both the line and the result show the real one.
#[test]
fn whisper_reaches_one_user() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    let mut alice = Client::named(addr, "Alice");
    let mut bob = Client::named(addr, "Bob");

    assert_eq!(
        server.whisper("alice", "your table is ready"),
        Ok("Alice".to_string())
    );
    alice.expect("DM server Alice your table is ready");
    let seen = bob.sync();
    assert!(
        !seen.iter().any(|line| line.starts_with("DM")),
        "someone else got the whisper: {seen:?}"
    );
    stop(&server);
}

/// `kick` ends a user's connection with `BYE kicked: <reason>`, their room sees
/// `LEAVE` with the same reason, and their nick is free again.
#[test]
fn kick_disconnects_with_a_reason() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    let mut alice = Client::named(addr, "Alice");
    let mut bob = Client::named(addr, "Bob");

    assert_eq!(server.kick("Alice", "spamming"), Ok("Alice".to_string()));
    assert_eq!(alice.expect_bye(), "kicked: spamming");
    bob.expect("LEAVE lobby Alice kicked: spamming");
    let nicks: Vec<String> = server
        .snapshot()
        .users
        .into_iter()
        .map(|u| u.nick)
        .collect();
    assert_eq!(nicks, ["Bob"]);

    bob.send("/nick Alice");
    bob.expect("NICK Bob Alice");
    stop(&server);
}

/// Every request names what went wrong: an unknown user or room, nothing left to send
/// once control characters are stripped, or a server that has stopped. A failed
/// request sends nothing to anyone.
#[test]
fn operator_requests_report_errors() {
    let server = start_server(test_config());
    let mut alice = Client::named(server.local_addr(), "Alice");

    let nobody = || OperatorError::NoSuchUser("Nobody".into());
    assert_eq!(server.whisper("Nobody", "hi"), Err(nobody()));
    assert_eq!(server.kick("Nobody", "bye"), Err(nobody()));
    assert_eq!(
        server.notice_room("nowhere", "hi"),
        Err(OperatorError::NoSuchRoom("nowhere".into()))
    );
    assert_eq!(
        server.notice_all("\u{1b}\u{7}  "),
        Err(OperatorError::EmptyText)
    );
    assert_eq!(server.whisper("Alice", " "), Err(OperatorError::EmptyText));
    assert_eq!(
        alice.sync(),
        Vec::<String>::new(),
        "a failed request sent something"
    );

    stop(&server);
    assert_eq!(server.notice_all("hi"), Err(OperatorError::Stopped));
    assert_eq!(
        server.notice_room("lobby", "hi"),
        Err(OperatorError::Stopped)
    );
    assert_eq!(server.whisper("Alice", "hi"), Err(OperatorError::Stopped));
    assert_eq!(server.kick("Alice", "bye"), Err(OperatorError::Stopped));
    let late = server.subscribe();
    assert_eq!(
        late.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected),
        "a subscription to a stopped server should end at once"
    );
}

/// `subscribe` yields what raw clients do, in the order the server handled it: joins,
/// nick changes, messages, actions, room changes and leaves. Private messages are not
/// in it: they are nobody else's business.
#[test]
fn subscribe_yields_chat_events_in_order_without_private_messages() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    let events = server.subscribe();

    let mut alice = Client::connect(addr);
    let first_alias = alice.nick.clone();
    alice.send("/nick Alice");
    alice.expect(&format!("NICK {first_alias} Alice"));
    alice.nick = "Alice".into();
    let bob = Client::named(addr, "Bob");

    assert_eq!(next_event(&events), joined(&first_alias, "lobby"));
    assert_eq!(
        next_event(&events),
        ChatEvent::NickChanged {
            old: first_alias,
            new: "Alice".into(),
            room: "lobby".into(),
        }
    );
    assert!(matches!(next_event(&events), ChatEvent::Joined { .. }));
    assert!(
        matches!(next_event(&events), ChatEvent::NickChanged { new, .. } if new == "Bob"),
        "expected Bob's nick change"
    );

    alice.send("hello");
    alice.send("/me waves");
    alice.send(&format!("/w {} a secret", bob.nick));
    join_room(&mut alice, "cellar");
    alice.send("/quit bye");
    assert_eq!(alice.expect_bye(), "quit: bye");

    assert_eq!(
        next_event(&events),
        ChatEvent::Message {
            room: "lobby".into(),
            nick: "Alice".into(),
            text: "hello".into(),
        }
    );
    assert_eq!(
        next_event(&events),
        ChatEvent::Action {
            room: "lobby".into(),
            nick: "Alice".into(),
            text: "waves".into(),
        }
    );
    // Straight after the action comes the room change: no event for the whisper.
    assert_eq!(
        next_event(&events),
        ChatEvent::Left {
            nick: "Alice".into(),
            room: "lobby".into(),
            reason: "joined another room".into(),
        }
    );
    assert_eq!(next_event(&events), joined("Alice", "cellar"));
    assert_eq!(
        next_event(&events),
        ChatEvent::Left {
            nick: "Alice".into(),
            room: "cellar".into(),
            reason: "quit: bye".into(),
        }
    );
    // Bob's round trip comes after all of the above: nothing else is on its way.
    let mut bob = bob;
    bob.sync();
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    stop(&server);
}

/// `snapshot` shows who is online and where, users sorted by nick and rooms by name.
#[test]
fn snapshot_shows_who_is_where() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    let _alice = Client::named(addr, "Alice");
    let mut bob = Client::named(addr, "Bob");
    let mut carol = Client::named(addr, "Carol");
    join_room(&mut carol, "cellar");
    join_room(&mut bob, "cellar");

    assert_eq!(
        server.snapshot(),
        Snapshot {
            users: vec![
                user("Alice", "lobby"),
                user("Bob", "cellar"),
                user("Carol", "cellar"),
            ],
            rooms: vec![room("cellar", 2), room("lobby", 1)],
        }
    );
    stop(&server);
}

// ----- the dispatcher without sockets -----

/// The dispatcher runs with no network at all: the test plays the connection threads,
/// sending `Event`s, and reads each client's output from a `ChannelTransport`. Two
/// clients connect, a message reaches both, a nick change is announced to both, and a
/// shutdown says `BYE` and ends their streams.
#[test]
fn dispatcher_runs_without_sockets() {
    let dispatcher = Dispatcher::start(test_config()).expect("start");
    let events = dispatcher.sender();
    let connect = |id: u64| {
        let (transport, lines) = ChannelTransport::new(64);
        let transport = Arc::new(transport);
        let id = ClientId(id);
        events.send(Event::Connected { id, transport }).unwrap();
        (id, lines)
    };

    let (one, one_lines) = connect(1);
    let hello = next_line(&one_lines);
    let one_nick = hello.split(' ').nth(1).expect("HELLO <nick>").to_string();
    assert_eq!(next_line(&one_lines), format!("JOIN lobby {one_nick}"));
    let (two, two_lines) = connect(2);
    let hello = next_line(&two_lines);
    let two_nick = hello.split(' ').nth(1).expect("HELLO <nick>").to_string();
    assert_eq!(next_line(&two_lines), format!("JOIN lobby {two_nick}"));
    assert_eq!(next_line(&one_lines), format!("JOIN lobby {two_nick}"));

    let say = Command::Say("hi both".into());
    events
        .send(Event::Command {
            id: one,
            command: say,
        })
        .unwrap();
    let msg = format!("MSG lobby {one_nick} hi both");
    assert_eq!(next_line(&one_lines), msg);
    assert_eq!(next_line(&two_lines), msg);

    // The same parser the connection threads use.
    let command = parse_line("/nick Bob").unwrap().expect("a command");
    events.send(Event::Command { id: two, command }).unwrap();
    let nick = format!("NICK {two_nick} Bob");
    assert_eq!(next_line(&one_lines), nick);
    assert_eq!(next_line(&two_lines), nick);
    assert!(dispatcher.snapshot().users.contains(&user("Bob", "lobby")));

    dispatcher.shutdown();
    for (id, lines) in [(one, &one_lines), (two, &two_lines)] {
        assert_eq!(next_line(lines), "BYE server shutting down");
        assert_eq!(
            lines.recv_timeout(PATIENCE),
            Err(RecvTimeoutError::Disconnected),
            "the stream should end after BYE"
        );
        // What a connection thread sends once its socket is closed.
        events.send(Event::Closed { id }).unwrap();
    }
    let (done, finished) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        dispatcher.join();
        let _ = done.send(());
    });
    finished
        .recv_timeout(PATIENCE)
        .expect("the dispatcher did not stop once every client had closed");
}

// ----- the example programs -----

/// A child process that is killed when dropped, so that a failing test leaves no
/// server behind; its stdout arrives line by line on a channel, read by a thread, so
/// that every wait for output can have a timeout.
struct ChildProcess {
    child: Child,
    stdout: Receiver<String>,
}

impl ChildProcess {
    fn spawn(process: &mut Process) -> ChildProcess {
        let mut child = process
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the example");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (line_sender, lines) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            // Reads to the end, so the child never writes into a closed pipe.
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let _ = line_sender.send(line);
            }
        });
        ChildProcess {
            child,
            stdout: lines,
        }
    }

    /// The next line of its stdout, or `None` at the end; fails after `PATIENCE`.
    fn stdout_line(&self) -> Option<String> {
        match self.stdout.recv_timeout(PATIENCE) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the example printed nothing for {PATIENCE:?}")
            }
        }
    }

    /// Waits (at most `PATIENCE`) for the child to exit; true if it exited successfully.
    fn wait_for_exit(&mut self) -> bool {
        let mut status = None;
        eventually("the example exits", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        status.is_some_and(|s| s.success())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `embed --addr 127.0.0.1:0 <args>` and waits for its "... on ADDR" line.
///
/// Port 0 rather than "find a free port, close it, pass it on": the child binds the
/// port itself, so no other process can take it between the look and the bind, and the
/// line it prints once it is ready tells the real address.
fn start_embed(args: &[&str]) -> (ChildProcess, SocketAddr) {
    let process = ChildProcess::spawn(
        Process::new(common::example_binary("embed"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args),
    );
    let line = process
        .stdout_line()
        .expect("the embed example ended without saying where it listens");
    let addr = line
        .split_once(" on ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (process, addr)
}

/// Reads until a `NOTICE` line starting with `prefix` (the periodic announcements may
/// come in between); returns the rest of its text.
fn bot_notice(client: &mut Client, prefix: &str) -> String {
    let line = client.expect_prefix(&format!("NOTICE {prefix}"));
    line[format!("NOTICE {prefix}").len()..].to_string()
}

/// The embed example end to end, as a user sees it with `nc`: the bot greets joiners in
/// their room, answers `!roll`, `!roll N` and `!time` in the room where they were asked
/// (and only there), and announces to everyone on a timer.
#[test]
fn embed_example_bot_answers_over_tcp() {
    let (mut process, addr) = start_embed(&["--announce-every", "1"]);

    let mut alice = Client::connect(addr);
    let a = alice.nick.clone();
    let greeting = bot_notice(&mut alice, "welcome, ");
    assert_eq!(greeting, format!("{a}! say !time or !roll"));

    alice.send("!roll");
    let roll = bot_notice(&mut alice, &format!("{a} rolls a d6: "));
    let roll: u64 = roll.parse().expect("a number");
    assert!((1..=6).contains(&roll), "rolled {roll}");

    alice.send("!roll 20");
    let roll = bot_notice(&mut alice, &format!("{a} rolls a d20: "));
    let roll: u64 = roll.parse().expect("a number");
    assert!((1..=20).contains(&roll), "rolled {roll}");

    let before = format_utc(SystemTime::now());
    alice.send("!time");
    let time = bot_notice(&mut alice, &format!("{a}: the server time is "));
    let after = format_utc(SystemTime::now());
    // Fixed-width RFC 3339 timestamps sort as text.
    assert!(
        before <= time && time <= after,
        "{before} <= {time} <= {after}"
    );

    // A second user: greeted in the lobby, where Alice sees it too; then in the cellar,
    // where a roll is answered for the cellar only.
    let mut bob = Client::connect(addr);
    let b = bob.nick.clone();
    bot_notice(&mut bob, &format!("welcome, {b}!"));
    bot_notice(&mut alice, &format!("welcome, {b}!"));
    join_room(&mut bob, "cellar");
    bot_notice(&mut bob, &format!("welcome, {b}!"));
    bob.send("!roll 1");
    assert_eq!(bot_notice(&mut bob, &format!("{b} rolls a d1: ")), "1");
    let seen = alice.sync();
    assert!(
        !seen.iter().any(|line| line.contains(" rolls a d1")),
        "the lobby saw the cellar's roll: {seen:?}"
    );

    // The announcement, every second, to everyone.
    let announcement = "NOTICE bot: 2 people online in 2 rooms; say !time or !roll in any room";
    alice.expect(announcement);
    bob.expect(announcement);

    process.child.kill().expect("kill the embed example");
}

/// Ctrl-C (SIGINT) stops the embed example gracefully: its handler calls
/// `Server::shutdown`, clients get `BYE server shutting down`, the bot thread ends when
/// its event stream disconnects, and the program exits 0.
#[cfg(unix)]
#[test]
fn embed_example_stops_cleanly_on_ctrl_c() {
    let (mut process, addr) = start_embed(&["--announce-every", "0"]);
    let mut client = Client::connect(addr);
    bot_notice(&mut client, "welcome, ");

    let status = Process::new("kill")
        .args(["-INT", &process.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");

    assert_eq!(client.expect_bye(), "server shutting down");
    assert!(process.wait_for_exit(), "the embed example did not exit 0");
}

/// The headless example runs to completion by itself, exits 0, and its transcript shows
/// the script's steps (a message to both, a refused nick, a room change, the BYEs).
#[test]
fn headless_example_prints_a_transcript() {
    let mut process = ChildProcess::spawn(&mut Process::new(common::example_binary("headless")));
    let mut transcript = String::new();
    while let Some(line) = process.stdout_line() {
        transcript.push_str(&line);
        transcript.push('\n');
    }
    assert!(process.wait_for_exit(), "headless failed:\n{transcript}");
    for expected in [
        "alice <- MSG lobby Alice hello, anyone here?",
        "bob   <- MSG lobby Alice hello, anyone here?",
        "alice <- ERR nick-taken",
        "bob   <- LEAVE lobby Alice joined another room",
        "alice <- BYE server shutting down",
        "bob   <- BYE server shutting down",
        "== the dispatcher has stopped",
    ] {
        assert!(
            transcript.contains(expected),
            "{expected:?} missing from:\n{transcript}"
        );
    }
}

/// `headless --help` and `embed --help` print their usage and exit 0 instead of running;
/// an argument they do not know is a usage error (exit 2).
#[test]
fn the_examples_answer_help() {
    for example in ["headless", "embed"] {
        let help = Process::new(common::example_binary(example))
            .arg("--help")
            .stdin(Stdio::null())
            .output()
            .expect("run the example");
        assert_eq!(help.status.code(), Some(0), "{example} --help");
        let usage = String::from_utf8_lossy(&help.stdout);
        assert!(
            usage.starts_with(&format!("usage: {example}")),
            "{example} --help printed {usage:?}"
        );
        let bogus = Process::new(common::example_binary(example))
            .arg("--bogus")
            .stdin(Stdio::null())
            .output()
            .expect("run the example");
        assert_eq!(bogus.status.code(), Some(2), "{example} --bogus");
    }
}
