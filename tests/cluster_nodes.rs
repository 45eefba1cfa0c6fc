//! Cluster mode, issue 9 step 2: the nodes know each other through a register in Redis.
//! Heartbeats (a lost node's users leave), nicks unique across nodes, lists of every
//! node's users, and re-registration after Redis comes back.
//!
//! Each test starts its own `redis-server` on a free port (no persistence) and stops it
//! at the end. Only with `cargo test --features redis`; without a `redis-server` binary
//! these tests fail with a message saying how to install it.

#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::broker::{
    await_link, linked_node, start_node, start_node_with, start_node_with_pool, two_linked_nodes,
    NodeProcess, Redis,
};
use common::{Client, PATIENCE};
use underworld_line::cluster::registry::ALIAS_POOL;
use underworld_line::console::execute;
use underworld_line::Server;

/// A list's lines (`/users`, `/who`, `/rooms`), up to and with its `END` line.
fn list(client: &mut Client, command: &str) -> Vec<String> {
    client.send(command);
    let mut lines = Vec::new();
    loop {
        let line = client.line();
        let end = line.starts_with("END ");
        if end
            || ["USER ", "WHO ", "ROOM "]
                .iter()
                .any(|p| line.starts_with(p))
        {
            lines.push(line);
        }
        if end {
            return lines;
        }
    }
}

/// Asks `/users` until the answer is `expected` (the register is updated by another
/// thread, a moment after the chat).
fn await_users(client: &mut Client, expected: &[&str]) {
    let start = Instant::now();
    loop {
        let lines = list(client, "/users");
        if lines == expected {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "/users said {lines:?}, not {expected:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A node killed with SIGKILL says goodbye to nobody: the other nodes find that its
/// heartbeat stopped, its users leave their rooms everywhere (`LEAVE <room> <nick> node
/// lost`), their nicks are free again, and the lists no longer show them.
#[test]
fn a_killed_node_s_users_leave_and_their_nicks_are_free() {
    let redis = Redis::start();
    let mut doomed = NodeProcess::start(&redis, "doomed");
    let survivor = start_node(&redis.url(), "survivor");
    await_link(&survivor, true);

    let mut bob = Client::named(survivor.local_addr(), "bob");
    bob.send("/join den");
    bob.expect("JOIN den bob");
    let mut dave = Client::named(survivor.local_addr(), "dave");
    let mut alice = Client::named(doomed.addr, "alice");
    alice.send("/join den");
    alice.expect("JOIN den alice");
    bob.expect("JOIN den alice");
    let carol = Client::named(doomed.addr, "carol");
    await_users(
        &mut bob,
        &[
            "USER alice den",
            "USER bob den",
            "USER carol lobby",
            "USER dave lobby",
            "END users 4",
        ],
    );

    doomed.kill();
    drop((alice, carol));
    bob.expect("LEAVE den alice node lost");
    dave.expect("LEAVE lobby carol node lost");
    bob.send("/nick alice");
    bob.expect("NICK bob alice");
    await_users(
        &mut dave,
        &["USER alice den", "USER dave lobby", "END users 2"],
    );
}

/// A node declared lost while its Redis connection stays open (here: frozen with
/// SIGSTOP, as a starved or paused node would be) registers its users again as soon as
/// it beats: the other nodes list them again and their nicks are theirs once more (no
/// ghost, no nick held twice).
#[test]
fn a_node_declared_lost_while_connected_registers_again() {
    let redis = Redis::start();
    let sleepy = NodeProcess::start(&redis, "sleepy");
    let survivor = start_node(&redis.url(), "survivor");
    await_link(&survivor, true);

    let mut dave = Client::named(survivor.local_addr(), "dave");
    let mut carol = Client::named(sleepy.addr, "carol");
    await_users(
        &mut dave,
        &["USER carol lobby", "USER dave lobby", "END users 2"],
    );

    sleepy.signal("STOP");
    dave.expect("LEAVE lobby carol node lost");
    sleepy.signal("CONT");
    // Her node announces her again, and the register knows her again.
    dave.expect("JOIN lobby carol");
    await_users(
        &mut dave,
        &["USER carol lobby", "USER dave lobby", "END users 2"],
    );
    dave.send("/nick carol");
    dave.expect_prefix("ERR nick-taken");
    // Carol never noticed a thing.
    carol.send("/ping still here");
    carol.expect("PONG still here");
}

/// A node restarted under the same `--node` name after it was killed (no goodbye to
/// Redis) gives back the aliases its earlier run reserved before it reserves its own:
/// restarts do not eat the alias space.
#[test]
fn a_restarted_node_gives_back_the_aliases_it_reserved_before() {
    let redis = Redis::start();
    let mut raw = redis.connect().expect("a raw Redis client");
    let reserved = |raw: &mut redis::Connection| -> BTreeSet<String> {
        redis::cmd("HKEYS")
            .arg("underworld-line:reserved:fixed")
            .query(raw)
            .unwrap()
    };
    let full = ALIAS_POOL;
    let await_full_pool = |raw: &mut redis::Connection, old: &BTreeSet<String>| {
        let start = Instant::now();
        loop {
            let now = reserved(raw);
            if now.len() == full && now != *old {
                return now;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} aliases reserved (want {full} new ones)",
                now.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut first = NodeProcess::start(&redis, "fixed");
    let old = await_full_pool(&mut raw, &BTreeSet::new());
    first.kill();
    let _second = NodeProcess::start(&redis, "fixed");
    await_full_pool(&mut raw, &old);
    let held: usize = redis::cmd("HLEN")
        .arg("underworld-line:nicks")
        .query(&mut raw)
        .unwrap();
    assert_eq!(held, full, "the first run's aliases are still held");
}

/// Nicks are unique across nodes by the same rules as on one node (case, lookalikes,
/// reserved names). Two users on two nodes claiming one nick at the same moment:
/// exactly one gets it, the other `ERR nick-taken`; when the winner leaves, the nick is
/// free for the other.
#[test]
fn nicks_are_unique_across_nodes() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let _alice = Client::named(a.local_addr(), "alice");
    let mut other = Client::connect(b.local_addr());
    for (nick, code) in [
        ("alice", "nick-taken"),
        ("ALICE", "nick-taken"),
        ("a1ice", "nick-taken"),
        ("server", "nick-reserved"),
    ] {
        other.send(&format!("/nick {nick}"));
        let error = other.expect_prefix("ERR ");
        assert!(
            error.starts_with(&format!("ERR {code} ")),
            "{nick}: {error}"
        );
    }

    for round in 0..5 {
        let mut p = Client::connect(a.local_addr());
        let mut q = Client::connect(b.local_addr());
        let wanted = format!("Racer{round}");
        p.send(&format!("/nick {wanted}"));
        q.send(&format!("/nick {}", wanted.to_lowercase()));
        let taken = "ERR nick-taken ".to_string();
        let p_won = p_or_q_won(&mut p, &wanted, &taken);
        let q_won = p_or_q_won(&mut q, &wanted.to_lowercase(), &taken);
        assert!(
            p_won != q_won,
            "round {round}: p won {p_won}, q won {q_won}"
        );
        // The winner leaves: the nick is free for the loser.
        let (winner, mut loser, nick) = if p_won {
            (p, q, wanted.to_lowercase())
        } else {
            (q, p, wanted.clone())
        };
        drop(winner);
        let start = Instant::now();
        loop {
            loser.send(&format!("/nick {nick}"));
            let renamed = format!("NICK {} {nick}", loser.nick);
            if first_of_prefix(&mut loser, &renamed, &taken) {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "{nick} never became free");
        }
    }
}

/// Whether the client's `/nick nick` was answered by its `NICK` line (true) or by
/// `ERR nick-taken` (false). Sets `client.nick` when it won.
fn p_or_q_won(client: &mut Client, nick: &str, taken: &str) -> bool {
    let renamed = format!("NICK {} {nick}", client.nick);
    let won = first_of_prefix(client, &renamed, taken);
    if won {
        client.nick = nick.to_string();
    }
    won
}

/// Reads until a line is `exact` (true) or starts with `prefix` (false).
fn first_of_prefix(client: &mut Client, exact: &str, prefix: &str) -> bool {
    loop {
        let line = client.line();
        if line == exact {
            return true;
        }
        if line.starts_with(prefix) {
            return false;
        }
    }
}

/// `--announce-max` counts a room on every node: when a node dies, its users' `LEAVE …
/// node lost` lines reach a room only if the room, counted across the cluster, is small
/// enough, and only for users the room heard join. Here (`--announce-max 2`) the lobby
/// has 5 members over three nodes, only one of them on node-a: node-a's alice must not
/// hear the dead node's erin leave (node-a used to count its own members only, 1). The
/// den (watcher on node-a, fred on the dead node) is small: watcher hears fred leave.
#[test]
fn node_lost_leaves_follow_the_cluster_wide_announce_rule() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes_announcing(&redis, 2, ["node-a", "node-b"]);
    let mut doomed = NodeProcess::start_with(&redis, "doomed", &["--announce-max", "2"]);

    let mut alice = Client::named(a.local_addr(), "alice");
    let mut watcher = Client::named(a.local_addr(), "watcher");
    watcher.send("/join den");
    watcher.expect("JOIN den watcher");
    let _b_users: Vec<Client> = ["bob", "carol", "dave"]
        .iter()
        .map(|nick| Client::named(b.local_addr(), nick))
        .collect();
    let mut fred = Client::named(doomed.addr, "fred");
    fred.send("/join den");
    fred.expect("JOIN den fred");
    // Two in the den, counted on any node: fred's JOIN is announced to it.
    watcher.expect("JOIN den fred");
    let _erin = Client::named(doomed.addr, "erin");
    await_users(
        &mut alice,
        &[
            "USER alice lobby",
            "USER bob lobby",
            "USER carol lobby",
            "USER dave lobby",
            "USER erin lobby",
            "USER fred den",
            "USER watcher den",
            "END users 7",
        ],
    );

    doomed.kill();
    // The lost node's lines (fred's, erin's) are published together, by one script.
    watcher.expect("LEAVE den fred node lost");
    // Alice's own line, through Redis after both, closes the window: whatever erin's
    // line brought her came before it.
    alice.send("done");
    let seen = alice.expect("MSG lobby alice done");
    assert!(
        !seen.iter().any(|line| line.starts_with("LEAVE ")),
        "alice heard a leave in a lobby of 5 (announce-max 2): {seen:?}"
    );
}

/// `--announce-max` counts a room on every node when a user joins: with
/// `--announce-max 2`, a lobby of alice (node-a) and bob and carol (node-b) has 3
/// members once dave joins on node-a, so alice does not hear his `JOIN` (node-a used
/// to count its own 2). Bob's and carol's rooms are known to node-a once alice's
/// `/users` lists them (the register's answer refreshes node-a's count of every room).
#[test]
fn a_join_counts_the_room_on_every_node() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes_announcing(&redis, 2, ["node-a", "node-b"]);
    let mut alice = Client::named(a.local_addr(), "alice");
    let _bob = Client::named(b.local_addr(), "bob");
    let _carol = Client::named(b.local_addr(), "carol");
    await_users(
        &mut alice,
        &[
            "USER alice lobby",
            "USER bob lobby",
            "USER carol lobby",
            "END users 3",
        ],
    );
    let mut dave = Client::connect(a.local_addr());
    let alias = dave.nick.clone();
    // Dave learns of his own arrival (read by `connect`) and rename, as always.
    dave.send("/nick dave");
    dave.expect(&format!("NICK {alias} dave"));
    alice.send("done");
    let seen = alice.expect("MSG lobby alice done");
    assert!(
        !seen
            .iter()
            .any(|line| line.contains(&alias) || line.contains(" dave")),
        "alice heard of dave in a lobby of 4 (announce-max 2): {seen:?}"
    );
}

/// A node declared lost while frozen (SIGSTOP), then back (SIGCONT), in a room too big
/// to announce (`--announce-max 2`, a lobby of 4 over three nodes, one member on the
/// survivor): the survivor's user hears neither its user's `LEAVE … node lost` nor
/// their `JOIN` when it comes back (the survivor used to count its own member only).
#[test]
fn a_big_room_hears_no_leave_or_join_when_a_node_is_lost_and_back() {
    let redis = Redis::start();
    let (survivor, other) = two_linked_nodes_announcing(&redis, 2, ["survivor", "other"]);
    let sleepy = NodeProcess::start_with(&redis, "sleepy", &["--announce-max", "2"]);
    let mut dave = Client::named(survivor.local_addr(), "dave");
    let _bob = Client::named(other.local_addr(), "bob");
    let _erin = Client::named(other.local_addr(), "erin");
    let mut carol = Client::named(sleepy.addr, "carol");
    let everyone = [
        "USER bob lobby",
        "USER carol lobby",
        "USER dave lobby",
        "USER erin lobby",
        "END users 4",
    ];
    await_users(&mut dave, &everyone);

    sleepy.signal("STOP");
    // Reaped: the node is no longer registered (its users' LEAVE lines, if any, were
    // published in the same script). Its expired heartbeat alone would not do: woken
    // before the clean-up, it would simply beat again.
    let mut raw = redis.connect().expect("a raw Redis client");
    common::eventually("sleepy reaped", || {
        let registered: bool = redis::cmd("SISMEMBER")
            .arg("underworld-line:nodes")
            .arg("sleepy")
            .query(&mut raw)
            .expect("SISMEMBER");
        !registered
    });
    sleepy.signal("CONT");
    // Its register thread registers carol again (its first resync with a user), and
    // logs it once her JOIN is published.
    sleepy.await_log("1 users registered");
    dave.send("done");
    let seen = dave.expect("MSG lobby dave done");
    assert!(
        !seen.iter().any(|line| line.contains("carol")),
        "dave heard of carol in a lobby of 4 (announce-max 2): {seen:?}"
    );
    await_users(&mut dave, &everyone);
    carol.send("/ping still here");
    carol.expect("PONG still here");
}

/// `/users`, `/who` and `/rooms` list every node's users, with the usual `END` lines.
#[test]
fn lists_show_every_node() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let (mut alice, mut bob, _carol) = seat_three(&a, &b);
    assert_eq!(
        list(&mut bob, "/who"),
        ["WHO den alice", "WHO den bob", "END who 2"]
    );
    assert_eq!(
        list(&mut alice, "/rooms"),
        ["ROOM den 2", "ROOM lobby 1", "END rooms 2"]
    );
}

/// Redis stops: each node goes on alone, and a nick can be taken on both sides. Redis
/// comes back empty (no persistence): every node registers its users again; of two
/// users with one nick, the first registered keeps it and the other gets a fresh alias
/// (`NICK`); users who left during the outage are not listed, and the other nodes' rooms
/// see them leave (`node lost`). No ghost, no duplicate.
#[test]
fn after_an_outage_nodes_register_again_without_ghosts_or_duplicates() {
    let mut redis = Redis::start();
    let port_url = redis.url();
    let (a, b) = (
        start_node(&port_url, "node-a"),
        start_node(&port_url, "node-b"),
    );
    await_link(&a, true);
    await_link(&b, true);
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(b.local_addr(), "bob");
    let mut gone = Client::named(b.local_addr(), "gone");
    // Watches the lobby from node-a.
    let mut carol = Client::named(a.local_addr(), "carol");
    await_users(
        &mut alice,
        &[
            "USER alice lobby",
            "USER bob lobby",
            "USER carol lobby",
            "USER gone lobby",
            "END users 4",
        ],
    );

    let port = port_url.rsplit(':').next().unwrap().parse().unwrap();
    redis.stop();
    await_link(&a, false);
    await_link(&b, false);
    // Alone, each node lets its user take `zed`; and `gone` leaves.
    alice.send("/nick zed");
    alice.expect("NICK alice zed");
    alice.nick = "zed".into();
    bob.send("/nick ZED");
    bob.expect("NICK bob ZED");
    bob.nick = "ZED".into();
    gone.send("/quit");
    gone.expect_bye();

    let _redis = Redis::start_on(port);
    await_link(&a, true);
    await_link(&b, true);
    // Redis came back empty, yet node-a's rooms hear that `gone` left.
    carol.expect("LEAVE lobby gone node lost");
    // One of the two keeps the nick; the other is renamed.
    let start = Instant::now();
    let users = loop {
        // Asked by carol, never renamed: `list` skips every other line, and would
        // swallow the `NICK` of whichever of alice and bob is renamed.
        let lines = list(&mut carol, "/users");
        let nicks: BTreeSet<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("USER "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        let zeds = nicks
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("zed"))
            .count();
        if lines.last().map(String::as_str) == Some("END users 3") && zeds == 1 {
            break nicks;
        }
        assert!(start.elapsed() < PATIENCE, "/users said {lines:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (kept, renamed) = if users.contains("zed") {
        (alice, bob)
    } else {
        (bob, alice)
    };
    let mut renamed = renamed;
    let line = renamed.expect_prefix(&format!("NICK {} ", renamed.nick));
    let fresh = line.rsplit(' ').next().unwrap();
    assert!(users.contains(fresh), "{users:?} lacks {fresh}");
    assert!(users.contains(&kept.nick), "{users:?} lacks {}", kept.nick);
}

/// `/w` reaches a user of another node (nicks compared by their look, as on one node);
/// a nick nobody has on any node is `ERR no-such-user`. A whisper signed with a local
/// user's nick, published by anyone on Redis, is dropped.
#[test]
fn whispers_reach_any_node() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(b.local_addr(), "bob");
    // The register learns of bob a moment after his NICK line.
    await_users(
        &mut alice,
        &["USER alice lobby", "USER bob lobby", "END users 2"],
    );
    alice.send("/w BOB psst");
    alice.expect("DM alice bob psst");
    bob.expect("DM alice bob psst");
    alice.send("/w nobody hello");
    let error = alice.expect_prefix("ERR ");
    assert!(error.starts_with("ERR no-such-user "), "{error}");

    let mut raw = redis.connect().expect("a raw Redis client");
    for forged in [
        "UWL1 evil 0 DM node-b bob bob I am bob",
        "UWL1 evil 0 DM node-b BOB bob I am bob too",
        "UWL1 evil 0 DM node-b mallory bob marker",
    ] {
        redis::cmd("PUBLISH")
            .arg(underworld_line::cluster::CHANNEL)
            .arg(forged)
            .query::<i64>(&mut raw)
            .expect("PUBLISH");
    }
    // Node-b takes a DM from a nick it does not hold (anyone with Redis can send one:
    // keep it private), but never one "from bob" or a lookalike. The marker comes last
    // on the channel, so once bob has it, the forgeries were handled.
    let seen = bob.expect("DM mallory bob marker");
    assert!(
        seen.iter().all(|l| !l.contains("I am bob")),
        "bob got {seen:?}"
    );
}

/// The console of one node reaches every node: a notice reaches every user, `/w` and
/// `/kick` find a user of another node, and `/stats` counts the live nodes and their
/// users.
#[test]
fn the_console_reaches_every_node() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(b.local_addr(), "bob");
    await_users(
        &mut alice,
        &["USER alice lobby", "USER bob lobby", "END users 2"],
    );

    assert_eq!(a.notice_all("maintenance at ten"), Ok(1));
    alice.expect("NOTICE maintenance at ten");
    bob.expect("NOTICE maintenance at ten");
    assert_eq!(
        a.whisper("BOB", "hello from the operator"),
        Ok("bob".into())
    );
    bob.expect("DM server bob hello from the operator");

    common::eventually("/stats counts both nodes", || {
        underworld_line::console::stats_text(&a)
            .lines()
            .any(|l| l == "cluster nodes alive: 2 (users: node-a 1, node-b 1)")
    });

    assert_eq!(a.kick("bob", "enough"), Ok("bob".into()));
    assert_eq!(bob.expect_bye(), "kicked: enough");
    alice.expect("LEAVE lobby bob kicked: enough");
    // Gone from the register a moment after his BYE.
    common::eventually("bob unknown to /kick", || a.kick("bob", "again").is_err());
}

/// The console's `/users` and `/rooms` list every node's users (issue: they used to be
/// this node's only), capped like a user's lists, through the in-process console and
/// through the binary's stdin; while Redis is unreachable, this node's only.
#[test]
fn the_console_lists_every_node() {
    // The console's rows: the nick padded to 16 columns, the room name to 24.
    let user = |nick: &str, room: &str| format!("  {nick:<16} {room}");
    let room = |name: &str, members: usize| format!("  {name:<24} {members}");
    let mut redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    // The register is written by another thread a moment after the chat: once a
    // user's list shows everyone, the console must agree at once.
    let (_alice, _bob, _carol) = seat_three(&a, &b);
    assert_eq!(
        execute(&a, "/users").output,
        [
            "3 users online",
            &user("alice", "den"),
            &user("bob", "den"),
            &user("carol", "lobby")
        ]
        .join("\n")
    );
    assert_eq!(
        execute(&a, "/rooms").output,
        ["2 rooms", &room("den", 2), &room("lobby", 1)].join("\n")
    );
    // This node's own view stays this node's (documented on `Server::snapshot`).
    assert_eq!(a.snapshot().users.len(), 1);

    // The binary's console, on a third node, lists the other nodes' users too.
    let mut c = NodeProcess::start(&redis, "node-c");
    c.await_console_line("/users", &user("bob", "den"));

    // A live node with 250 users (written straight into the register): the console
    // shows the true count and the first 200, and says so, as a user's `END` line does.
    let mut raw = redis.connect().expect("a raw Redis client");
    let mut users = redis::cmd("HSET");
    users.arg("underworld-line:users:fake");
    for i in 0..250 {
        users
            .arg(format!("many{i:03}"))
            .arg(format!("many{i:03} hall"));
    }
    redis::pipe()
        .cmd("SADD")
        .arg("underworld-line:nodes")
        .arg("fake")
        .cmd("SET")
        .arg("underworld-line:alive:fake")
        .arg(1)
        .add_command(users)
        .query::<()>(&mut raw)
        .expect("a fake node");
    let listed = execute(&a, "/users").output;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "253 users online");
    assert_eq!(lines.len(), 1 + 200 + 1, "{listed}");
    assert_eq!(lines[1], user("alice", "den"));
    // alice, bob, carol, then many000…: the 200th listed is many196.
    assert_eq!(lines[200], user("many196", "hall"));
    assert_eq!(lines[201], "  (showing the first 200)");
    assert_eq!(
        execute(&a, "/rooms").output,
        [
            "3 rooms",
            &room("den", 2),
            &room("hall", 250),
            &room("lobby", 1)
        ]
        .join("\n")
    );

    // Redis gone: this node's users only, at once (no wait for a register that is down).
    drop(c);
    redis.stop();
    await_link(&a, false);
    assert_eq!(
        execute(&a, "/users").output,
        ["1 user online", &user("alice", "den")].join("\n")
    );
}

/// The load generator spreads its clients over the nodes of a cluster (`--addr`
/// repeated): a room split over two nodes gets every message once, in order, nothing
/// lost (a correctness check; the timings are the benchmark's job).
#[test]
fn the_load_generator_spreads_a_room_over_two_nodes() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let (a_addr, b_addr) = (a.local_addr().to_string(), b.local_addr().to_string());
    let run = std::process::Command::new(common::example_binary("loadgen"))
        .args(["fanout", "--clients", "6", "--senders", "2", "--rate", "40"])
        .args(["--duration", "0.3", "--warmup", "0.1", "--json"])
        .args(["--addr", &a_addr, "--addr", &b_addr])
        .output()
        .expect("run the load generator");
    let json = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        json.contains(&format!("\"addr\":\"{a_addr},{b_addr}\"")),
        "{json}"
    );
    for zero in ["lost", "duplicated", "reordered", "disconnected"] {
        assert!(json.contains(&format!("\"{zero}\":0")), "{zero}: {json}");
    }
    assert!(!json.contains("\"sent\":0"), "{json}");
    // Round robin: each node had half the clients.
    use underworld_line::stats::Stats;
    assert_eq!(Stats::get(&a.stats().accepted), 3);
    assert_eq!(Stats::get(&b.stats().accepted), 3);
}

/// History is cluster-wide: a joiner gets the room's last `--history` messages, said on
/// any node, even where their own node had nobody in the room. And it meets the live
/// lines exactly: a joiner arriving while the room talks gets each message once, as
/// `HIST` or live, with none missing in between.
#[test]
fn history_is_cluster_wide_and_meets_the_live_lines() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let mut alice = Client::named(a.local_addr(), "alice");
    alice.send("/join den");
    alice.expect("JOIN den alice");
    alice.send("one");
    alice.send("two");
    alice.expect("MSG den alice two");
    let mut bob = Client::named(b.local_addr(), "bob");
    bob.send("/join den");
    bob.next_is("JOIN den bob");
    let replayed: Vec<String> = (0..2).map(|_| bob.line()).collect();
    for (line, text) in replayed.iter().zip(["one", "two"]) {
        assert!(line.starts_with("HIST "), "{line}");
        assert!(line.ends_with(&format!(" MSG den alice {text}")), "{line}");
    }
    bob.send("/me three");
    bob.expect("ME den bob three");
    let mut carol = Client::named(a.local_addr(), "carol");
    carol.send("/join den");
    carol.next_is("JOIN den carol");
    for text in ["MSG den alice one", "MSG den alice two", "ME den bob three"] {
        let line = carol.line();
        assert!(line.starts_with("HIST ") && line.ends_with(text), "{line}");
    }

    // Dave joins from node B while alice talks on node A.
    const SAID: usize = 60;
    let mut dave = Client::named(b.local_addr(), "dave");
    for i in 0..SAID {
        alice.send(&format!("m{i}"));
        if i == SAID / 2 {
            dave.send("/join den");
        }
    }
    alice.send("end");
    let mut numbers = Vec::new();
    let mut live_started = false;
    loop {
        let line = dave.line();
        if line == "MSG den alice end" {
            break;
        }
        let (hist, rest) = match line.strip_prefix("HIST ") {
            Some(rest) => (true, rest.split_once(' ').unwrap().1.to_string()),
            None => (false, line.clone()),
        };
        let Some(n) = rest.strip_prefix("MSG den alice m") else {
            continue;
        };
        assert!(
            !(hist && live_started),
            "a HIST line after a live one: {line}"
        );
        live_started |= !hist;
        numbers.push(n.parse::<usize>().unwrap());
    }
    let first = numbers[0];
    let expected: Vec<usize> = (first..SAID).collect();
    assert_eq!(numbers, expected, "dave's m-lines, HIST then live");
}

/// Random aliases never collide across nodes, even in a burst: 200 users arrive at once
/// on each of two nodes, far more than a pool held between two refills before (32: the
/// rest drew their aliases themselves, claimed them after the fact, and were renamed
/// with a `NICK` line when a user or a reservation of the other node had the same one).
/// Every alias differs by its look across both nodes, every one is registered for its
/// own node as it was given in `HELLO`, and nobody sees a `NICK` for their own alias.
#[test]
fn random_aliases_never_collide_across_nodes() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let arrivals = burst(&[a.local_addr(), b.local_addr()], 200);
    assert_aliases_unique_and_kept(&redis, &["node-a", "node-b"], arrivals);
}

/// A burst larger than the pool: with 4 aliases reserved ahead per node, most of 100
/// users per node arrive to an empty pool. Their greeting waits until the register has
/// reserved more (nobody gets an alias drawn by the node itself), and the lines they
/// sent before their `HELLO` are answered after it, in order.
#[test]
fn a_burst_beyond_the_pool_waits_for_aliases_and_keeps_early_lines() {
    let redis = Redis::start();
    let a = start_node_with_pool(&redis.url(), "node-a", 4);
    let b = start_node_with_pool(&redis.url(), "node-b", 4);
    await_link(&a, true);
    await_link(&b, true);
    let arrivals = burst(&[a.local_addr(), b.local_addr()], 100);
    assert_aliases_unique_and_kept(&redis, &["node-a", "node-b"], arrivals);
}

/// Redis restarted empty (it keeps nothing on disk here): the aliases a node had
/// reserved ahead are no longer reserved, and another node could take them. So when the
/// node reconnects it reserves again the ones still in its pool, before it gives any,
/// instead of handing out aliases that are no longer its own.
#[test]
fn a_node_reserves_its_pool_again_after_redis_comes_back_empty() {
    let mut redis = Redis::start();
    let port = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let a = linked_node(&redis, "node-a");
    let reserved = |redis: &Redis| -> BTreeSet<String> {
        let mut raw = redis.connect().expect("a raw Redis client");
        redis::cmd("HKEYS")
            .arg("underworld-line:reserved:node-a")
            .query(&mut raw)
            .unwrap()
    };
    common::eventually("a full pool", || reserved(&redis).len() == ALIAS_POOL);
    let before = reserved(&redis);
    redis.stop();
    await_link(&a, false);
    let redis = Redis::start_on(port);
    await_link(&a, true);
    common::eventually("the same pool, reserved again", || {
        reserved(&redis) == before
    });
    let mut raw = redis.connect().expect("a raw Redis client");
    let owners: Vec<Option<String>> = before
        .iter()
        .map(|look| {
            redis::cmd("HGET")
                .arg("underworld-line:nicks")
                .arg(look)
                .query(&mut raw)
                .unwrap()
        })
        .collect();
    assert!(owners
        .iter()
        .all(|owner| owner.as_deref() == Some("node-a")));
}

/// The alias refill backs off: once a batch of reservations fails, the next one waits
/// for the next beat instead of following every request to the register (each one a
/// round trip spent for nothing, ahead of the claims waiting behind it). Here the node's
/// reservations key has the wrong type (anyone with access to Redis can do that), so
/// every batch fails. (The other cause of the same back-off, a batch that finds every
/// candidate taken, cannot be brought about by a test: it would take 23 million
/// names.) Counted by Redis itself, not timed: the reservation script is the only
/// command of the register that runs `HSETNX` (once per failed batch), and each beat
/// reads the set of nodes twice (`SMEMBERS`). While a user renames 50 times (three
/// requests to the register each), there is about one batch per beat, not one per
/// request.
#[test]
fn the_alias_refill_waits_a_beat_after_a_failed_batch() {
    let redis = Redis::start();
    let mut raw = redis.connect().expect("a raw Redis client");
    redis::cmd("SET")
        .arg("underworld-line:reserved:node-a")
        .arg("not a hash")
        .query::<()>(&mut raw)
        .unwrap();
    let a = linked_node(&redis, "node-a");
    // No alias can be reserved: greeted with one drawn by the node (after the register
    // said so), as during an outage.
    let mut user = Client::connect(a.local_addr());
    let before = command_calls(&mut raw);
    for n in 0..50 {
        let nick = format!("n{n}");
        user.send(&format!("/nick {nick}"));
        user.expect(&format!("NICK {} {nick}", user.nick));
        user.nick = nick;
    }
    let after = command_calls(&mut raw);
    let batches = after.0 - before.0;
    let beats = (after.1 - before.1) / 2;
    assert!(
        batches <= beats + 2,
        "{batches} reservation batches in {beats} beats"
    );
}

/// How many times Redis ran `HSETNX` and `SMEMBERS` so far (scripts' commands included).
fn command_calls(raw: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    let calls = |command: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    (calls("hsetnx"), calls("smembers"))
}

/// A user of a burst: which node (an index into the burst's addresses), and its client.
struct Arrival {
    node: usize,
    client: Client,
}

/// `per_node` clients connect to each of `addrs` at once (4 threads per node, started
/// together). Each sends `/ping early-1` and `/ping early-2` before reading anything;
/// its first line must be `HELLO`, then come its `JOIN lobby` and both `PONG`s in order:
/// lines sent before the greeting are neither lost nor answered before it, nor
/// reordered. (Its `JOIN` comes back through Redis, so a `PONG` may come before it, as
/// for any line a user of a node in a cluster sends before their `JOIN` is back.)
fn burst(addrs: &[std::net::SocketAddr], per_node: usize) -> Vec<Arrival> {
    const THREADS: usize = 4;
    let start = std::sync::Barrier::new(addrs.len() * THREADS);
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for (node, &addr) in addrs.iter().enumerate() {
            for _ in 0..THREADS {
                let start = &start;
                threads.push(scope.spawn(move || {
                    start.wait();
                    let mut clients: Vec<Client> = (0..per_node / THREADS)
                        .map(|_| {
                            let mut client = Client::connect_raw(addr);
                            client.send("/ping early-1");
                            client.send("/ping early-2");
                            client
                        })
                        .collect();
                    for client in &mut clients {
                        client.nick = common::nick_of_hello(&client.line());
                        let seen = greeting(client);
                        assert_not_renamed(client, &seen);
                    }
                    clients
                        .into_iter()
                        .map(|client| Arrival { node, client })
                        .collect::<Vec<_>>()
                }));
            }
        }
        threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a burst thread"))
            .collect()
    })
}

/// The lines after `HELLO` up to the client's own `JOIN lobby` and both `PONG`s;
/// `PONG early-1` must come before `PONG early-2`.
fn greeting(client: &mut Client) -> Vec<String> {
    let join = format!("JOIN lobby {}", client.nick);
    let (first, second) = ("PONG early-1", "PONG early-2");
    let mut seen: Vec<String> = Vec::new();
    // Bounded: every other user's `JOIN` and `NICK` at most, a few times over.
    for _ in 0..10_000 {
        if seen.contains(&join) && seen.iter().any(|line| line == second) {
            break;
        }
        seen.push(client.line());
    }
    let at = |wanted: &str| seen.iter().position(|line| line == wanted);
    assert!(at(&join).is_some(), "{}: no {join}: {seen:?}", client.nick);
    assert!(
        at(first).is_some() && at(first) < at(second),
        "{}: the early lines were lost or reordered: {seen:?}",
        client.nick
    );
    seen
}

fn assert_not_renamed(client: &Client, seen: &[String]) {
    let renamed = format!("NICK {} ", client.nick);
    assert!(
        !seen.iter().any(|line| line.starts_with(&renamed)),
        "{} was renamed: {seen:?}",
        client.nick
    );
}

/// Every alias of `arrivals` differs by its look; once the register holds all of them
/// (each claim answered), each is registered for its own node under the alias it was
/// greeted with (a user renamed after the fact would be registered under another), and
/// nobody has seen a `NICK` line for their own alias.
fn assert_aliases_unique_and_kept(redis: &Redis, nodes: &[&str], mut arrivals: Vec<Arrival>) {
    use underworld_line::text::nick_key;
    let looks: BTreeSet<String> = arrivals.iter().map(|a| nick_key(&a.client.nick)).collect();
    assert_eq!(looks.len(), arrivals.len(), "two users got one alias");
    let mut raw = redis.connect().expect("a raw Redis client");
    let registered = |raw: &mut redis::Connection| -> usize {
        nodes
            .iter()
            .map(|node| {
                redis::cmd("HLEN")
                    .arg(format!("underworld-line:users:{node}"))
                    .query::<usize>(raw)
                    .unwrap()
            })
            .sum()
    };
    common::eventually("every user registered", || {
        registered(&mut raw) == arrivals.len()
    });
    for arrival in &mut arrivals {
        let nick = arrival.client.nick.clone();
        let entry: Option<String> = redis::cmd("HGET")
            .arg(format!("underworld-line:users:{}", nodes[arrival.node]))
            .arg(nick_key(&nick))
            .query(&mut raw)
            .unwrap();
        assert_eq!(
            entry,
            Some(format!("{nick} lobby")),
            "{nick} is not registered"
        );
        let seen = arrival.client.sync();
        assert_not_renamed(&arrival.client, &seen);
    }
}

/// Anyone with access to Redis can write into the register and the history too.
/// Garbage there (bytes that are not UTF-8, names that break the rules, control
/// characters) is skipped or stripped, never shown raw, never a crash: the lists and the
/// history keep working around it.
#[test]
fn garbage_in_the_register_is_skipped() {
    let redis = Redis::start();
    let a = linked_node(&redis, "node-a");
    let mut alice = alice_said_hello_in_den(&a);

    let mut raw = redis.connect().expect("a raw Redis client");
    let mut run = |cmd: &mut redis::Cmd| cmd.query::<redis::Value>(&mut raw).expect("a command");
    run(redis::cmd("SADD")
        .arg("underworld-line:nodes")
        .arg(&b"\xff\xfe"[..])
        .arg("bad name")
        .arg("fake"));
    run(redis::cmd("SET").arg("underworld-line:alive:fake").arg(1));
    run(redis::cmd("HSET")
        .arg("underworld-line:users:fake")
        .arg("x")
        .arg("\x1b[2Jevil den")
        .arg("y")
        .arg("mallory \x07room")
        .arg("z")
        .arg(&b"\xff\xfe"[..])
        .arg("w")
        .arg("eve den")
        // A lookalike of a local user's nick: the local user is listed, once.
        .arg("v")
        .arg("ALICE den"));
    // A user of our own node that our node does not have: not listed (the node's own
    // table is the truth about its users).
    run(redis::cmd("HSET")
        .arg("underworld-line:users:node-a")
        .arg("ghost")
        .arg("ghost den"));
    run(redis::cmd("LPUSH")
        .arg("underworld-line:history:den")
        .arg(&b"\xff"[..])
        .arg("1 MSG den evil \x1b[31mred")
        .arg("garbage"));

    // Keys of the wrong type: an alive node whose users are a string, a dead one too.
    // Each makes one command fail; none may stop the lists or the clean-up of lost nodes.
    run(redis::cmd("SADD")
        .arg("underworld-line:nodes")
        .arg("wrongtype")
        .arg("deadwrong"));
    run(redis::cmd("SET")
        .arg("underworld-line:alive:wrongtype")
        .arg(1));
    run(redis::cmd("SET")
        .arg("underworld-line:users:wrongtype")
        .arg("x"));
    run(redis::cmd("SET")
        .arg("underworld-line:users:deadwrong")
        .arg("x"));

    await_users(
        &mut alice,
        &["USER alice den", "USER eve den", "END users 2"],
    );
    assert_eq!(
        list(&mut alice, "/who"),
        ["WHO den alice", "WHO den eve", "END who 2"]
    );
    // A node killed now is still found lost, and its users leave.
    let mut doomed = NodeProcess::start(&redis, "doomed");
    let carol = Client::named(doomed.addr, "carol");
    await_users(
        &mut alice,
        &[
            "USER alice den",
            "USER carol lobby",
            "USER eve den",
            "END users 3",
        ],
    );
    alice.send("/join lobby");
    alice.expect("JOIN lobby alice");
    doomed.kill();
    drop(carol);
    alice.expect("LEAVE lobby carol node lost");
    alice.send("/join den");
    alice.expect("JOIN den alice");

    let mut bob = Client::named(a.local_addr(), "bob");
    bob.send("/join den");
    bob.next_is("JOIN den bob");
    let first = bob.line();
    assert!(first.ends_with(" MSG den alice hello"), "{first}");
    let second = bob.line();
    assert!(second.ends_with(" MSG den evil [31mred"), "{second}");
    bob.send("/ping done");
    bob.next_is("PONG done");
}

/// One field of Redis's `INFO <section>` (`total_net_output_bytes`), or of a
/// `cmdstat_<command>` line there (`calls`).
fn info_field(raw: &mut redis::Connection, section: &str, line: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(raw).expect("INFO");
    info.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(line)?.strip_prefix(':')?;
            // `total_net_output_bytes:123`, or `cmdstat_evalsha:calls=3,usec=…`.
            rest.split(',').find_map(|pair| match pair.split_once('=') {
                Some((key, value)) if key == field => value.parse().ok(),
                None if field.is_empty() => pair.trim().parse().ok(),
                _ => None,
            })
        })
        .unwrap_or(0)
}

/// A history entry longer than any line a node keeps (here 1 MiB, written straight into
/// Redis) is left out by Redis itself when a joiner's history is read: it never crosses
/// the network (it used to be read whole, then dropped by the node).
#[test]
fn a_huge_history_entry_never_leaves_redis() {
    let redis = Redis::start();
    let a = linked_node(&redis, "node-a");
    let _alice = alice_said_hello_in_den(&a);
    let mut raw = redis.connect().expect("a raw Redis client");
    let huge = format!("1 MSG den mallory {}", "x".repeat(1 << 20));
    redis::cmd("LPUSH")
        .arg("underworld-line:history:den")
        .arg(huge)
        .query::<()>(&mut raw)
        .expect("LPUSH");
    let before = info_field(&mut raw, "stats", "total_net_output_bytes", "");

    let mut bob = Client::named(a.local_addr(), "bob");
    bob.send("/join den");
    bob.next_is("JOIN den bob");
    let hist = bob.line();
    assert!(hist.ends_with(" MSG den alice hello"), "{hist}");
    bob.send("/ping done");
    bob.next_is("PONG done");

    let sent = info_field(&mut raw, "stats", "total_net_output_bytes", "") - before;
    assert!(sent < 256 * 1024, "Redis sent {sent} bytes for one join");
}

/// The register's Lua scripts go by their SHA-1 (`EVALSHA`) once Redis has them, not
/// whole each time; and when Redis has lost them (`SCRIPT FLUSH`), a claim still works
/// (sent whole once more, with `EVAL`).
#[test]
fn scripts_are_sent_by_name_and_survive_a_flush() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let mut alice = Client::named(a.local_addr(), "alice");
    let _bob = Client::named(b.local_addr(), "bob");
    await_users(
        &mut alice,
        &["USER alice lobby", "USER bob lobby", "END users 2"],
    );
    let mut raw = redis.connect().expect("a raw Redis client");
    let by_name = info_field(&mut raw, "commandstats", "cmdstat_evalsha", "calls");
    let whole = info_field(&mut raw, "commandstats", "cmdstat_eval", "calls");
    assert!(by_name > 0, "no EVALSHA (EVAL: {whole})");
    assert!(whole < by_name, "EVAL {whole} times, EVALSHA {by_name}");

    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut raw)
        .expect("SCRIPT FLUSH");
    let _carol = Client::named(b.local_addr(), "carol");
    // Listed by node-a: node-b's claim of `carol` reached the register.
    await_users(
        &mut alice,
        &[
            "USER alice lobby",
            "USER bob lobby",
            "USER carol lobby",
            "END users 3",
        ],
    );
}

/// alice (node-a) and bob (node-b) in `den`, carol (node-b) in the lobby; returns once a
/// user's `/users` lists all three (the register is written a moment after the chat).
fn seat_three(a: &Server, b: &Server) -> (Client, Client, Client) {
    let mut alice = Client::named(a.local_addr(), "alice");
    alice.send("/join den");
    alice.expect("JOIN den alice");
    let mut bob = Client::named(b.local_addr(), "bob");
    bob.send("/join den");
    bob.expect("JOIN den bob");
    let carol = Client::named(b.local_addr(), "carol");
    await_users(
        &mut alice,
        &[
            "USER alice den",
            "USER bob den",
            "USER carol lobby",
            "END users 3",
        ],
    );
    (alice, bob, carol)
}

/// Two linked nodes named `names`, both with `--announce-max max`.
fn two_linked_nodes_announcing(redis: &Redis, max: usize, names: [&str; 2]) -> (Server, Server) {
    let mut config = common::test_config();
    config.announce_max = max;
    let nodes = names.map(|name| start_node_with(&redis.url(), name, config.clone()));
    for node in &nodes {
        await_link(node, true);
    }
    let [a, b] = nodes;
    (a, b)
}

/// alice on `node`, in `den`, where she said `hello`: the room has a history in Redis.
fn alice_said_hello_in_den(node: &Server) -> Client {
    let mut alice = Client::named(node.local_addr(), "alice");
    alice.send("/join den");
    alice.expect("JOIN den alice");
    alice.send("hello");
    alice.expect("MSG den alice hello");
    alice
}
