//! Wire protocol v1 end to end: every command and every server line, over real sockets
//! to an in-process server on 127.0.0.1:0.

mod common;

use std::collections::HashSet;
use std::thread;

use common::{alice_and_bob_in_den, start_server, test_config, Client};
use underworld_line::Config;

/// Two clients get distinct aliases at once, each sees the other arrive, and a message
/// reaches both, the sender included.
#[test]
fn hello_join_and_message() {
    let server = start_server(test_config());
    let mut a = Client::connect(server.local_addr());
    let mut b = Client::connect(server.local_addr());
    assert_ne!(a.nick, b.nick);
    a.next_is(&format!("JOIN lobby {}", b.nick));

    a.send("hello there");
    let expected = format!("MSG lobby {} hello there", a.nick);
    a.next_is(&expected);
    b.next_is(&expected);
    server.shutdown();
    server.join();
}

/// The name on a relayed line is the server's, whatever the client writes.
#[test]
fn the_sender_name_comes_from_the_server() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let mut b = Client::named(server.local_addr(), "bob");
    a.sync();
    b.send("MSG lobby alice I am alice");
    a.expect("MSG lobby bob MSG lobby alice I am alice");
}

/// `//text` sends `/text`; empty lines are ignored; `/me` is an action.
#[test]
fn escapes_empty_lines_and_actions() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    a.send("");
    a.send("   ");
    a.send("//slash at the start");
    a.next_is("MSG lobby alice /slash at the start");
    a.send("/me waves");
    a.next_is("ME lobby alice waves");
    a.send("/me");
    a.next_is("ERR empty-message nothing to send");
}

/// Whispers reach sender and recipient only; a missing user, yourself and a missing
/// text are errors.
#[test]
fn whispers() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let mut b = Client::named(server.local_addr(), "bob");
    let mut c = Client::named(server.local_addr(), "carol");
    a.sync();
    b.sync();

    a.send("/w BOB psst, bob");
    a.expect("DM alice bob psst, bob");
    b.expect("DM alice bob psst, bob");
    a.send("/msg bob again");
    a.next_is("DM alice bob again");
    b.expect("DM alice bob again");

    a.send("/w nobody hello");
    a.next_is("ERR no-such-user nobody is called nobody");
    a.send("/w Alice talking to myself");
    a.next_is("ERR whisper-self you cannot whisper to yourself");
    // A name without text is an empty message, as the README's error table says, for
    // `/w`, `/msg` and `/me` alike; no name at all is a usage error.
    a.send("/w bob");
    a.next_is("ERR empty-message nothing to send");
    a.send("/msg bob   ");
    a.next_is("ERR empty-message nothing to send");
    a.send("/w");
    assert!(a.line().starts_with("ERR usage "));

    // Carol saw none of it.
    let seen = c.sync();
    assert!(seen.iter().all(|l| !l.starts_with("DM ")), "{seen:?}");
}

/// Nicks: the room sees the change; taken names are refused whatever their case or
/// lookalike digits; invalid and reserved names are refused; Hangul works.
#[test]
fn nick_changes_and_collisions() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "evan");
    let mut b = Client::named(server.local_addr(), "bill");
    a.sync();

    for taken in ["evan", "EVAN", "Evan", "ev4n-no"] {
        b.send(&format!("/nick {taken}"));
        let reply = b.line();
        if taken == "ev4n-no" {
            // not a lookalike of evan: accepted
            assert_eq!(reply, "NICK bill ev4n-no");
            b.send("/nick bill");
            b.next_is("NICK ev4n-no bill");
        } else {
            assert!(reply.starts_with("ERR nick-taken "), "{taken}: {reply}");
        }
    }
    a.sync(); // skip bob's renames
    a.send("/nick B1LL");
    assert!(a.line().starts_with("ERR nick-taken "));
    a.send("/nick evan");
    assert_eq!(a.line(), "ERR nick-taken that is already your nick");
    a.send("/nick x");
    assert!(a.line().starts_with("ERR invalid-nick "));
    a.send("/nick has.dot");
    assert!(a.line().starts_with("ERR invalid-nick "));
    a.send("/nick еvan"); // Cyrillic е
    assert!(a.line().starts_with("ERR invalid-nick "));
    a.send("/nick Admin");
    assert!(a.line().starts_with("ERR nick-reserved "));
    a.send("/nick anon42");
    assert!(a.line().starts_with("ERR nick-reserved "));

    a.send("/nick 밤손님");
    a.next_is("NICK evan 밤손님");
    b.expect("NICK evan 밤손님");
    // Changing only the case of your own nick is allowed.
    b.send("/nick BILL");
    b.next_is("NICK bill BILL");
}

/// Rooms: moving leaves LEAVE behind and brings JOIN; nothing leaks between rooms; an
/// empty room disappears; the lobby never does.
#[test]
fn rooms_are_isolated() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let mut b = Client::named(server.local_addr(), "bob");
    a.sync();

    a.send("/join #Games");
    a.next_is("JOIN games alice");
    b.expect("LEAVE lobby alice joined another room");
    a.send("/join games");
    a.next_is("ERR already-there you are already in games");
    a.send("/join bad.name");
    assert!(a.line().starts_with("ERR invalid-room "));

    a.send("in games");
    a.next_is("MSG games alice in games");
    b.send("in lobby");
    b.next_is("MSG lobby bob in lobby");
    // Neither saw the other's room.
    assert!(a.sync().is_empty());
    assert!(b.sync().is_empty());

    b.send("/rooms");
    b.next_is("ROOM games 1");
    b.next_is("ROOM lobby 1");
    b.next_is("END rooms 2");

    a.send("/join lobby");
    a.next_is("JOIN lobby alice");
    b.expect("JOIN lobby alice");
    b.send("/rooms");
    b.next_is("ROOM lobby 2");
    b.next_is("END rooms 1");
}

/// `/who`, `/users`, `/help` and `/ping` replies.
#[test]
fn lists_and_ping() {
    let server = start_server(test_config());
    let (mut a, _bob) = alice_and_bob_in_den(server.local_addr());

    a.send("/who");
    a.expect("WHO lobby alice");
    a.next_is("END who 1");
    a.send("/users");
    a.next_is("USER alice lobby");
    a.next_is("USER bob den");
    a.next_is("END users 2");
    a.send("/help");
    let first = a.line();
    assert!(first.starts_with("HELP "), "{first}");
    let end = a.expect_prefix("END help ");
    assert!(end.len() > "END help ".len());
    a.send("/ping 42 and more");
    a.next_is("PONG 42 and more");
    a.send("/PING");
    a.next_is("PONG");
    a.send("/frobnicate");
    assert!(a.line().starts_with("ERR unknown-command "));
    a.send("/who me");
    assert!(a.line().starts_with("ERR usage "));
}

/// Joining replays the room's last N messages, oldest first, each with a timestamp.
#[test]
fn history_is_replayed_on_join() {
    let config = Config {
        history: 3,
        ..test_config()
    };
    let server = start_server(config);
    let mut a = Client::named(server.local_addr(), "alice");
    for i in 1..=5 {
        a.send(&format!("message {i}"));
    }
    a.send("/me is done");
    a.sync();

    let mut b = Client::connect_raw(server.local_addr());
    let hello = b.line();
    assert!(hello.starts_with("HELLO "));
    let nick = hello.split(' ').nth(1).unwrap().to_string();
    b.next_is(&format!("JOIN lobby {nick}"));
    let mut replayed = Vec::new();
    for _ in 0..3 {
        let line = b.line();
        let mut parts = line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HIST"));
        let time = parts.next().unwrap();
        // 2026-11-25T20:06:13Z
        assert_eq!(time.len(), 20, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T');
        replayed.push(parts.next().unwrap().to_string());
    }
    assert_eq!(
        replayed,
        [
            "MSG lobby alice message 4",
            "MSG lobby alice message 5",
            "ME lobby alice is done"
        ]
    );
    assert!(b.sync().is_empty());

    // A fresh room has no history; going back to the lobby replays it again.
    b.send("/join quiet");
    b.next_is(&format!("JOIN quiet {nick}"));
    assert!(b.sync().is_empty());
    b.send("/join lobby");
    b.next_is(&format!("JOIN lobby {nick}"));
    assert!(b.line().starts_with("HIST "));
}

/// Several clients send at once: every receiver sees each sender's lines in the order
/// sent, and all receivers see the same overall order.
#[test]
fn per_sender_order_with_concurrent_senders() {
    const SENDERS: usize = 4;
    const EACH: usize = 200;
    let server = start_server(test_config());
    let mut watchers: Vec<Client> = (0..2)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    let mut senders: Vec<Client> = (0..SENDERS)
        .map(|i| Client::named(server.local_addr(), &format!("s{i}x")))
        .collect();
    for w in &mut watchers {
        w.sync();
    }
    for s in &mut senders {
        s.sync();
    }
    let threads: Vec<_> = senders
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                for n in 0..EACH {
                    s.send(&format!("{n}"));
                }
                s
            })
        })
        .collect();
    let _senders: Vec<Client> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut orders = Vec::new();
    for w in &mut watchers {
        let mut next = [0usize; SENDERS];
        let mut order = Vec::new();
        while order.len() < SENDERS * EACH {
            let line = w.line();
            let Some(rest) = line.strip_prefix("MSG lobby s") else {
                continue;
            };
            let (who, n) = rest.split_once("x ").unwrap();
            let (who, n): (usize, usize) = (who.parse().unwrap(), n.parse().unwrap());
            assert_eq!(n, next[who], "sender {who} out of order");
            next[who] += 1;
            order.push((who, n));
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "two members saw different orders");
}

/// `/quit` says BYE with the reason and the room sees LEAVE with it, exactly once.
#[test]
fn quit_says_bye_and_leave_once() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let mut b = Client::named(server.local_addr(), "bob");
    a.sync();
    b.send("/quit see you");
    assert_eq!(b.expect_bye(), "quit: see you");
    a.expect("LEAVE lobby bob quit: see you");
    let after = a.sync();
    assert!(after.iter().all(|l| !l.starts_with("LEAVE")), "{after:?}");
    // The nick is free again.
    a.send("/nick bob");
    a.next_is("NICK alice bob");
}

/// A scripted client that sends its last lines and half-closes at once (like
/// `printf '/ping 1\n/quit\n' | nc -N`) still gets every answer, `BYE` included.
#[test]
fn a_half_closed_client_still_gets_its_answers() {
    let server = start_server(test_config());
    let mut a = Client::connect(server.local_addr());
    a.send_raw(b"/ping 1\n/quit done\n");
    a.shutdown_write();
    a.next_is("PONG 1");
    assert_eq!(a.expect_bye(), "quit: done");
}

/// A client that just closes its socket (FIN), and one whose close resets the
/// connection (RST, because it left data unread): each LEAVE goes out exactly once.
#[test]
fn leave_exactly_once_on_clean_and_abrupt_close() {
    let server = start_server(test_config());
    let mut watcher = Client::named(server.local_addr(), "watcher");
    let clean = Client::named(server.local_addr(), "clean");
    let abrupt = Client::named(server.local_addr(), "abrupt");
    watcher.sync();

    clean.shutdown_write();
    drop(clean);
    watcher.expect("LEAVE lobby clean connection closed");

    abrupt.reset();
    let seen = watcher.expect("LEAVE lobby abrupt connection closed");
    assert!(seen.iter().all(|l| !l.starts_with("LEAVE")), "{seen:?}");
    let after = watcher.sync();
    assert!(after.iter().all(|l| !l.starts_with("LEAVE")), "{after:?}");
}

/// The predecessor's bug: two messages in one TCP write were one message to it.
#[test]
fn two_messages_in_one_write() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    a.send_raw(b"first\nsecond\r\n/ping both\n");
    a.next_is("MSG lobby alice first");
    a.next_is("MSG lobby alice second");
    a.next_is("PONG both");
}

/// One message split across many writes, including a multi-byte UTF-8 character
/// split between writes, arrives whole.
#[test]
fn one_message_across_many_writes() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let line = "안녕하세요 friends ✓\n".as_bytes();
    // No Nagle: every one-byte write leaves as its own segment, so the server's reads
    // usually see the line in pieces, "안" (3 bytes) cut between them; the kernel may
    // also merge some. Either way the line must arrive whole. (The framing property
    // tests cover every possible cut deterministically; this is the real socket path.)
    a.stream().set_nodelay(true).unwrap();
    for byte in line {
        a.send_raw(&[*byte]);
    }
    a.next_is("MSG lobby alice 안녕하세요 friends ✓");
}

/// Operator pushes from the host program: NOTICE to all and to a room, a whisper from
/// `server`, a kick with its reason.
#[test]
fn operator_notice_whisper_and_kick() {
    let server = start_server(test_config());
    let (mut a, mut b) = alice_and_bob_in_den(server.local_addr());

    assert_eq!(server.notice_all("maintenance at noon"), Ok(2));
    a.next_is("NOTICE maintenance at noon");
    b.next_is("NOTICE maintenance at noon");
    assert_eq!(server.notice_room("den", "den only"), Ok(1));
    b.next_is("NOTICE den only");
    assert!(a.sync().is_empty());
    assert!(server.notice_room("nowhere", "x").is_err());

    server.whisper("ALICE", "hi from the operator").unwrap();
    a.next_is("DM server alice hi from the operator");
    assert!(server.whisper("nobody", "x").is_err());

    server.kick("bob", "be nice").unwrap();
    assert_eq!(b.expect_bye(), "kicked: be nice");
    assert!(server.kick("bob", "again").is_err());
}

/// Shutdown: every client gets BYE and the stream ends; `join` returns.
#[test]
fn shutdown_says_bye_to_everyone() {
    let server = start_server(test_config());
    let mut clients: Vec<Client> = (0..5)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for c in &mut clients {
        c.sync();
    }
    server.shutdown();
    for c in &mut clients {
        assert_eq!(c.expect_bye(), "server shutting down");
    }
    server.join();
    // A second join (from anywhere) returns at once.
    server.clone().join();
    let names: HashSet<String> = clients.iter().map(|c| c.nick.clone()).collect();
    assert_eq!(names.len(), 5);
}

/// Dropping the last handle without `shutdown` still stops the server (a backstop):
/// clients get `BYE` instead of a server nobody can stop any more.
#[test]
fn dropping_the_server_shuts_it_down() {
    let server = start_server(test_config());
    let mut a = Client::connect(server.local_addr());
    a.sync();
    drop(server);
    assert_eq!(a.expect_bye(), "server shutting down");
}

/// A server whose rooms count as big from their third member on.
fn server_with_announce_max_2() -> underworld_line::Server {
    start_server(Config {
        announce_max: 2,
        ..test_config()
    })
}

/// In rooms bigger than `--announce-max`, a JOIN goes only to the joiner, so a crowd
/// arriving does not cost everyone a line per arrival; and someone whose JOIN the room
/// did not get leaves without a LEAVE.
#[test]
fn big_rooms_do_not_announce_joins() {
    let server = server_with_announce_max_2();
    let mut a = Client::named(server.local_addr(), "alice");
    let _b = Client::named(server.local_addr(), "bob");
    // Two members: bob's arrival and rename were announced.
    let seen = a.sync();
    assert!(
        seen.iter().any(|l| l.starts_with("JOIN lobby ")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l.ends_with(" bob")), "{seen:?}");
    let mut c = Client::connect(server.local_addr());
    // Three members: carol's JOIN went only to carol (she read it in `connect`).
    assert!(a.sync().is_empty());
    c.send("/quit");
    assert_eq!(c.expect_bye(), "quit");
    // The room is two again, but it was never told about carol.
    assert!(a.sync().is_empty());
}

/// The case from issue 11, with `--announce-max 2`: obs and alice are announced, bob
/// arrives third (his JOIN and his rename go only to him), and when he quits the room
/// is two again, yet neither of them gets a LEAVE for a bob they were never told about.
#[test]
fn no_leave_for_someone_whose_join_was_not_sent() {
    let server = server_with_announce_max_2();
    let mut obs = Client::named(server.local_addr(), "obs");
    let mut alice = Client::named(server.local_addr(), "alice");
    let seen = obs.sync();
    assert!(seen.iter().any(|l| l.ends_with(" alice")), "{seen:?}");
    let mut bob = Client::named(server.local_addr(), "bob");
    assert!(obs.sync().is_empty());
    assert!(alice.sync().is_empty());

    bob.send("/quit");
    assert_eq!(bob.expect_bye(), "quit");
    assert!(obs.sync().is_empty());
    assert!(alice.sync().is_empty());
}

/// With `--announce-max 2`, a room that shrinks back to two still says nothing about
/// the member who arrived while it was big: not their rename, not their leave. The
/// members who were announced still are: their LEAVE and NICK reach everyone, the
/// latecomer included (it found them in the room when it arrived).
#[test]
fn a_shrunken_room_stays_silent_about_those_who_came_while_it_was_big() {
    let server = server_with_announce_max_2();
    let mut obs = Client::named(server.local_addr(), "obs");
    let mut alice = Client::named(server.local_addr(), "alice");
    let mut bob = Client::named(server.local_addr(), "bob");
    obs.sync();

    alice.send("/quit");
    assert_eq!(alice.expect_bye(), "quit");
    obs.next_is("LEAVE lobby alice quit");
    bob.next_is("LEAVE lobby alice quit");

    // Two members now. Bob's rename reaches only bob: obs never heard of him.
    bob.send("/nick robert");
    bob.next_is("NICK bob robert");
    // Obs's rename reaches bob too; obs's very next line is its own NICK, not bob's.
    obs.send("/nick watcher");
    obs.next_is("NICK obs watcher");
    bob.next_is("NICK obs watcher");

    bob.send("/quit");
    assert_eq!(bob.expect_bye(), "quit");
    assert!(obs.sync().is_empty());
}

/// With `--announce-max 2`, a rename while the room is too big reaches only the one who
/// renamed; the room, which knows only the old nick, then hears nothing more of them
/// (neither NICK nor LEAVE), even once it is small again.
#[test]
fn a_rename_the_room_did_not_hear_silences_the_renamer() {
    let server = server_with_announce_max_2();
    let mut alice = Client::named(server.local_addr(), "alice");
    let mut bob = Client::named(server.local_addr(), "bob");
    alice.sync();
    let mut carol = Client::named(server.local_addr(), "carol");

    alice.send("/nick alicia");
    alice.next_is("NICK alice alicia");
    carol.send("/quit");
    assert_eq!(carol.expect_bye(), "quit");
    // Two members again, but bob knows her only as alice.
    alice.send("/nick ally");
    alice.next_is("NICK alicia ally");
    alice.send("/quit");
    assert_eq!(alice.expect_bye(), "quit");
    assert!(bob.sync().is_empty());
}

/// List replies stop at 200 entries; the `END` line keeps the true count.
#[test]
fn long_lists_are_cut_at_200() {
    let server = start_server(Config {
        announce_max: 0,
        ..test_config()
    });
    let clients: Vec<Client> = (0..201)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    let mut asker = Client::connect(server.local_addr());
    asker.send("/users");
    let mut users = 0;
    loop {
        let line = asker.line();
        if line.starts_with("USER ") {
            users += 1;
        } else if line.starts_with("END users ") {
            assert_eq!(line, "END users 202 showing the first 200");
            break;
        }
    }
    assert_eq!(users, 200);
    drop(clients);
}
