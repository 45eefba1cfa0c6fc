//! The operator console's commands, run against an in-process server (the binary feeds
//! the same `console::execute` from stdin; `tests/binary.rs` covers that wiring).

mod common;

use common::{alice_and_bob_in_den, start_server, test_config};
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
