//! The operator console's commands, run against an in-process server (the binary feeds
//! the same `console::execute` from stdin; `tests/binary.rs` covers that wiring).

mod common;

use common::{alice_and_bob_in_den, start_server, test_config, Client};
use underworld_line::console::execute;

/// Every console command does what `/help` says, and answers the operator.
#[test]
fn console_commands() {
    let server = start_server(test_config());
    let (mut a, mut b) = alice_and_bob_in_den(server.local_addr());

    let users = execute(&server, "/users").output;
    assert!(users.starts_with("2 users online"), "{users}");
    assert!(users.contains("alice") && users.contains("den"), "{users}");
    let rooms = execute(&server, "/rooms").output;
    assert!(
        rooms.starts_with("2 rooms") && rooms.contains("lobby"),
        "{rooms}"
    );

    assert_eq!(
        execute(&server, "hello everyone").output,
        "notice sent to 2 users"
    );
    a.next_is("NOTICE hello everyone");
    b.next_is("NOTICE hello everyone");
    execute(&server, "//help is not a command here");
    a.next_is("NOTICE /help is not a command here");

    assert_eq!(execute(&server, "/w bob psst").output, "whispered to bob");
    b.expect("DM server bob psst");
    assert!(execute(&server, "/w nobody x")
        .output
        .starts_with("not sent"));
    assert!(execute(&server, "/w").output.starts_with("usage"));

    let time = execute(&server, "/time").output;
    assert!(time.ends_with('Z') && time.len() == 20, "{time}");
    let stats = execute(&server, "/stats").output;
    for part in [
        "connections: 2 online",
        "rooms: 2",
        "messages relayed",
        "uptime",
        "connection cap",
        "listen queue overflows since start: ",
    ] {
        assert!(stats.contains(part), "{part} missing from {stats}");
    }
    assert!(execute(&server, "/frob")
        .output
        .starts_with("unknown command"));
    assert!(execute(&server, "/help").output.contains("/shutdown"));
    assert_eq!(execute(&server, "   ").output, "");

    assert_eq!(execute(&server, "/kick bob enough").output, "kicked bob");
    assert_eq!(b.expect_bye(), "kicked: enough");
    assert!(execute(&server, "/kick bob")
        .output
        .starts_with("not kicked"));

    let reply = execute(&server, "/shutdown");
    assert!(reply.shutdown);
    server.shutdown();
    assert_eq!(a.expect_bye(), "server shutting down");
    server.join();
}

/// The console's sentences agree with their numbers: `1 user online`, `1 room`,
/// `notice sent to 1 user`, and a notice that reached nobody says so.
#[test]
fn console_wording_agrees_with_numbers() {
    let server = start_server(test_config());
    assert_eq!(
        execute(&server, "anyone there?").output,
        "notice sent to 0 users (nobody is online)"
    );
    let mut alone = Client::connect(server.local_addr());
    alone.sync();
    assert!(execute(&server, "/users")
        .output
        .starts_with("1 user online\n"));
    assert!(execute(&server, "/rooms").output.starts_with("1 room\n"));
    assert_eq!(
        execute(&server, "a stray line").output,
        "notice sent to 1 user"
    );
    alone.expect("NOTICE a stray line");
    server.shutdown();
    server.join();
}

/// `/users` keeps its room column aligned when a nick is in Hangul: a Hangul syllable
/// takes two columns on a terminal, so `밤손님` is padded as six columns, not three.
#[test]
fn users_columns_stay_aligned_with_hangul_nicks() {
    let server = start_server(test_config());
    let _latin = Client::named(server.local_addr(), "alice");
    let mut hangul = Client::named(server.local_addr(), "밤손님");
    hangul.sync();

    let users = execute(&server, "/users").output;
    let room_columns: Vec<usize> = users
        .lines()
        .skip(1)
        .map(|row| {
            let before_room = &row[..row.rfind("lobby").expect("a room on each row")];
            before_room
                .chars()
                .map(|c| {
                    if ('\u{AC00}'..='\u{D7A3}').contains(&c) {
                        2
                    } else {
                        1
                    }
                })
                .sum()
        })
        .collect();
    assert_eq!(room_columns.len(), 2, "{users}");
    assert_eq!(room_columns[0], room_columns[1], "misaligned:\n{users}");
    server.shutdown();
    server.join();
}

/// `/w` and `/kick` find a nick by its look (`BOB` is `bob`) and echo the nick they
/// actually reached, so the operator sees who got it.
#[test]
fn whisper_and_kick_echo_the_nick_that_matched() {
    let server = start_server(test_config());
    let (_alice, mut bob) = alice_and_bob_in_den(server.local_addr());

    assert_eq!(execute(&server, "/w BOB psst").output, "whispered to bob");
    bob.expect("DM server bob psst");
    assert_eq!(execute(&server, "/kick B0B enough").output, "kicked bob");
    assert_eq!(bob.expect_bye(), "kicked: enough");
    server.shutdown();
    server.join();
}

/// `/stats` names its counters plainly: messages relayed (each counted once), and lines
/// written to clients (every line, one per recipient), not "deliveries".
#[test]
fn stats_name_their_counters_plainly() {
    let server = start_server(test_config());
    let (mut alice, mut bob) = alice_and_bob_in_den(server.local_addr());
    bob.send("/join lobby");
    bob.expect("JOIN lobby bob");
    alice.send("hello");
    alice.expect("MSG lobby alice hello");
    bob.expect("MSG lobby alice hello");

    let stats = execute(&server, "/stats").output;
    assert!(stats.contains("messages relayed: 1\n"), "{stats}");
    let written: u64 = stats
        .lines()
        .find_map(|line| line.strip_prefix("lines written to clients: "))
        .unwrap_or_else(|| panic!("no lines-written counter in {stats}"))
        .parse()
        .expect("a number");
    assert!(written >= 2, "the message alone was written twice: {stats}");
    assert!(!stats.contains("deliveries"), "{stats}");
    server.shutdown();
    server.join();
}
