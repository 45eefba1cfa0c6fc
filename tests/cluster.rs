//! Cluster mode (issue 9, step 1) against a real `redis-server`, which each test starts
//! on a free port of 127.0.0.1 (no persistence) and stops at the end. Two nodes are two
//! in-process servers with the same Redis URL.
//!
//! Only with `cargo test --features redis`. Without a `redis-server` binary these tests
//! fail, with a message saying how to install it: they never pass without Redis.

#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use common::broker::{
    await_link, free_port, linked, linked_node, start_node, two_linked_nodes, url, NodeProcess,
    Redis,
};
use common::{Client, PATIENCE};
use underworld_line::cluster::CHANNEL;
use underworld_line::console::stats_text;
use underworld_line::text::nick_key;

/// Reads lines until `done` says the lines read so far are enough; returns them all.
fn read_until(client: &mut Client, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    while !done(&lines) {
        lines.push(client.line());
    }
    lines
}

fn is_message(line: &str) -> bool {
    line.starts_with("MSG ") || line.starts_with("ME ")
}

/// Users on two nodes in one room: `MSG`, `ME`, `JOIN`, `LEAVE` and `NICK` reach every
/// member on both nodes, and every member sees the room's lines in the same order, though
/// four of them on two nodes talk at once.
#[test]
fn rooms_span_nodes_in_one_order() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);

    let alice = Client::named(a.local_addr(), "alice");
    let carol = Client::named(a.local_addr(), "carol");
    let bob = Client::named(b.local_addr(), "bob");
    let dave = Client::named(b.local_addr(), "dave");
    let mut eve = Client::named(b.local_addr(), "eve");

    // One after the other into `den`: each JOIN reaches those already there, on both nodes.
    let mut members: Vec<Client> = Vec::new();
    for mut joiner in [alice, bob, carol, dave] {
        joiner.send("/join den");
        let join = format!("JOIN den {}", joiner.nick);
        joiner.expect(&join);
        for member in &mut members {
            member.expect(&join);
        }
        members.push(joiner);
    }

    // Everyone talks at once, from both nodes; meanwhile bob renames himself and eve (on
    // node B) comes in and leaves.
    const ROUNDS: usize = 20;
    for i in 0..ROUNDS {
        members[0].send(&format!("a{i}"));
        members[1].send(&format!("b{i}"));
        members[2].send(&format!("/me c{i}"));
        members[3].send(&format!("d{i}"));
        match i {
            5 => eve.send("/join den"),
            10 => members[1].send("/nick bobby"),
            12 => eve.send("/quit"),
            _ => {}
        }
    }
    assert_eq!(eve.expect_bye(), "quit");

    // alice says "end" once she has seen everything: it comes after all of it, in every
    // member's view.
    let everything = |lines: &[String]| {
        lines.iter().filter(|l| is_message(l)).count() == 4 * ROUNDS
            && lines.iter().any(|l| l == "LEAVE den eve quit")
            && lines.iter().any(|l| l == "NICK bob bobby")
    };
    let mut seen = vec![read_until(&mut members[0], everything)];
    members[0].send("end");
    seen[0].extend(read_until(&mut members[0], |l| {
        l.last().is_some_and(|l| l == "MSG den alice end")
    }));
    for member in &mut members[1..] {
        seen.push(read_until(member, |l| {
            l.last().is_some_and(|l| l == "MSG den alice end")
        }));
    }

    let reference = &seen[0];
    for (member, lines) in members.iter().zip(&seen) {
        assert_eq!(
            lines, reference,
            "{} saw another order than alice",
            member.nick
        );
    }
    for expected in [
        "JOIN den eve",
        "LEAVE den eve quit",
        "NICK bob bobby",
        "ME den carol c0",
        "MSG den dave d19",
    ] {
        assert!(reference.iter().any(|l| l == expected), "no {expected:?}");
    }
    // Each sender's lines in the order they were sent.
    for (prefix, tag) in [
        ("MSG den alice ", "a"),
        ("ME den carol ", "c"),
        ("MSG den dave ", "d"),
    ] {
        let said: Vec<&str> = reference
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter(|text| *text != "end")
            .collect();
        let sent: Vec<String> = (0..ROUNDS).map(|i| format!("{tag}{i}")).collect();
        assert_eq!(said, sent, "{prefix}");
    }
    drop(redis);
}

/// Anything can be published on the cluster channel. Garbage (wrong format, huge,
/// not UTF-8, bad names, empty text) is dropped; control characters are stripped as from
/// a local client; a line naming a local user's nick (or its lookalike), or signed with
/// this node's own name, never reaches anyone. The node keeps working, and stops cleanly.
#[test]
fn garbage_and_forgeries_from_redis_are_dropped() {
    let redis = Redis::start();
    let a = linked_node(&redis, "node-a");
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(a.local_addr(), "bob");
    assert!(alice.expect_prefix("NICK ").ends_with(" bob"));

    let mut raw = redis.connect().expect("a raw Redis client");
    let mut huge = b"UWL1 evil 1 MSG lobby mallory ".to_vec();
    huge.resize(1024 * 1024, b'x');
    let garbage: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        huge,
        b"UWL1 evil 2 MSG lobby mallory \xff\xfe".to_vec(),
        b"UWL1 evil 3 MSG lobby alice I am alice".to_vec(),
        b"UWL1 evil 4 MSG lobby ALICE I am alice too".to_vec(),
        b"UWL1 evil 5 NICK lobby mallory bob".to_vec(),
        b"UWL1 evil 6 LEAVE lobby alice kicked".to_vec(),
        b"UWL1 evil 7 MSG lobby server official notice".to_vec(),
        b"UWL1 evil 8 MSG Lobby mallory wrong room".to_vec(),
        b"UWL1 evil 9 JOIN lobby mallory extra".to_vec(),
        b"UWL1 evil 10 MSG lobby mallory \xe2\x80\xae\xe2\x80\x8b\x1b".to_vec(),
        b"UWL1 node-a 999 MSG lobby mallory signed as node-a".to_vec(),
        b"UWL1 evil 11 MSG lobby mallory \x1b[2J\x1b]0;pwned\x07 hi\r\nBYE fake".to_vec(),
        b"UWL1 evil 12 MSG lobby mallory still here".to_vec(),
    ];
    for payload in &garbage {
        redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(payload.as_slice())
            .query::<i64>(&mut raw)
            .expect("PUBLISH");
    }
    for client in [&mut alice, &mut bob] {
        let before = client.expect("MSG lobby mallory still here");
        assert_eq!(
            before,
            ["MSG lobby mallory [2J]0;pwned hiBYE fake"],
            "{} got more than the one cleaned line",
            client.nick
        );
    }

    // Still linked, still working, through the broker.
    assert!(linked(&a));
    alice.send("still fine");
    alice.next_is("MSG lobby alice still fine");
    bob.next_is("MSG lobby alice still fine");
    bob.sync();
    a.shutdown();
    a.join();
}

/// Redis absent at start: local chat works at once. Redis comes: the nodes link and rooms
/// span them. Redis dies: local chat goes on, and what is said then stays local. Redis
/// is back: the nodes link again by themselves (back-off), and rooms span them again.
#[test]
fn chat_stays_local_while_redis_is_unreachable() {
    let port = free_port();
    let a = start_node(&url(port), "node-a");
    let b = start_node(&url(port), "node-b");
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut carol = Client::named(a.local_addr(), "carol");
    let mut bob = Client::named(b.local_addr(), "bob");
    assert!(!linked(&a) && !linked(&b));
    alice.send("nobody there yet");
    alice.expect("MSG lobby alice nobody there yet");
    carol.expect("MSG lobby alice nobody there yet");

    let mut redis = Redis::start_on(port);
    await_link(&a, true);
    await_link(&b, true);
    alice.send("linked");
    alice.expect("MSG lobby alice linked");
    carol.expect("MSG lobby alice linked");
    let skipped = bob.expect("MSG lobby alice linked");
    assert!(skipped.is_empty(), "bob got {skipped:?}");
    bob.send("hello from b");
    alice.expect("MSG lobby bob hello from b");
    carol.expect("MSG lobby bob hello from b");

    let stats = stats_text(&a);
    let expected = format!("cluster: node node-a, linked to {}", url(port));
    assert!(stats.lines().any(|line| line == expected), "{stats}");

    redis.stop();
    await_link(&a, false);
    await_link(&b, false);
    assert!(stats_text(&b)
        .lines()
        .any(|line| line.ends_with("chat stays local")));
    alice.send("during the outage");
    alice.expect("MSG lobby alice during the outage");
    carol.expect("MSG lobby alice during the outage");
    bob.send("b alone");
    bob.expect("MSG lobby bob b alone");

    let _redis = Redis::start_on(port);
    await_link(&a, true);
    await_link(&b, true);
    alice.send("back");
    alice.expect("MSG lobby alice back");
    carol.expect("MSG lobby alice back");
    let skipped = bob.expect("MSG lobby alice back");
    assert!(skipped.is_empty(), "bob got {skipped:?}");
    bob.send("b back");
    let skipped = alice.expect("MSG lobby bob b back");
    assert!(skipped.is_empty(), "alice got {skipped:?}");
    carol.expect("MSG lobby bob b back");
}

/// The binary: `--redis URL --node NAME` make it a node (its `/stats` says so), its
/// users share a room with another node's, and `/shutdown` still ends it at once with
/// exit status 0 (the cluster threads stop too); the other node's rooms see its users
/// leave, and the other node goes on.
#[test]
fn the_binary_joins_a_cluster_with_redis_and_node() {
    let redis = Redis::start();
    // Started as a user would, and linked, as its `/stats` says.
    let mut node = NodeProcess::start(&redis, "bin-node");
    let addr = node.addr;

    let other = start_node(&redis.url(), "node-b");
    await_link(&other, true);
    let mut alice = Client::named(addr, "alice");
    let mut bob = Client::named(other.local_addr(), "bob");
    alice.send("hello from the binary");
    alice.expect("MSG lobby alice hello from the binary");
    bob.expect("MSG lobby alice hello from the binary");

    node.type_line("/shutdown");
    assert_eq!(alice.expect_bye(), "server shutting down");
    // This node only: the other node's rooms see its users leave.
    bob.expect("LEAVE lobby alice server shutting down");
    bob.send("still here");
    bob.expect("MSG lobby bob still here");
    let status = node.wait_exit();
    assert!(status.success(), "{status}");
}

/// A line signed with this node's name and a number it never used (forged by anyone
/// with access to Redis, or a second node started with the same `--node`) settles
/// nothing: the node's own lines still waiting for Redis are delivered in Redis's order,
/// after the lines Redis put ahead of them. Redis is paused for writes (`CLIENT PAUSE
/// WRITE`) so that the forged line, a line of another node and our own line reach it
/// in that order, for sure.
#[test]
fn a_forged_line_with_our_name_settles_nothing() {
    let redis = Redis::start();
    let (a, b) = two_linked_nodes(&redis);
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(a.local_addr(), "bob");
    let mut carol = Client::named(b.local_addr(), "carol");
    // Everyone hears everyone (and each node is linked both ways).
    carol.send("ready");
    bob.expect("MSG lobby carol ready");
    alice.send("set");
    carol.expect("MSG lobby alice set");

    let mut admin = redis.connect().expect("a raw Redis client");
    // How many clients wait on the pause with a publish (ours: `publish`; a node's:
    // `exec`, its publish and history in one MULTI).
    let waiting = |admin: &mut redis::Connection| {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
        list.lines()
            .filter(|l| {
                // `flags=b`, or `flags=xb` for a client in a MULTI.
                let flags = l.split(' ').find_map(|f| f.strip_prefix("flags="));
                flags.is_some_and(|f| f.contains('b'))
                    && (l.contains("cmd=publish") || l.contains("cmd=exec"))
            })
            .count()
    };
    let await_waiting = |admin: &mut redis::Connection, n: usize| {
        let start = Instant::now();
        while waiting(admin) < n {
            if start.elapsed() > PATIENCE {
                let list: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
                panic!("{n} publishers never waited: {list}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    let forger = {
        let mut raw = redis.connect().expect("a raw Redis client");
        std::thread::spawn(move || {
            let forged = format!("UWL1 node-a {} MSG lobby alice forged", u64::MAX);
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(forged)
                .query::<i64>(&mut raw)
        })
    };
    await_waiting(&mut admin, 1);
    carol.send("between");
    await_waiting(&mut admin, 2);
    alice.send("one");
    await_waiting(&mut admin, 3);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut admin)
        .unwrap();
    forger.join().unwrap().expect("the forged PUBLISH");

    let skipped = bob.expect("MSG lobby carol between");
    assert!(
        !skipped
            .iter()
            .any(|l| l.contains("one") || l.contains("forged")),
        "{skipped:?}"
    );
    bob.expect("MSG lobby alice one");
    bob.send("/ping done");
    let after = bob.expect("PONG done");
    assert!(!after.iter().any(|l| l.contains("forged")), "{after:?}");
}

/// A nick is freed in the register only after the line that gives it up (a rename's
/// `NICK`, a quitter's `LEAVE`) is out on Redis: no other node can take it first (it
/// would then drop that line, which names one of its own users). Checked in the order
/// Redis ran the commands (`MONITOR`).
#[test]
fn a_nick_is_freed_only_after_the_line_that_gives_it_up() {
    let redis = Redis::start();
    let a = linked_node(&redis, "node-a");
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(a.local_addr(), "bob");

    let mut monitor = redis.connect().expect("a raw Redis client");
    monitor.set_read_timeout(Some(PATIENCE)).unwrap();
    let ok: String = redis::cmd("MONITOR").query(&mut monitor).unwrap();
    assert_eq!(ok, "OK");
    alice.send("/nick alicia");
    bob.expect("NICK alice alicia");
    alice.send("/quit");
    alice.expect_bye();
    bob.expect_prefix("LEAVE lobby alicia ");

    // The release script, as MONITOR shows what it runs (scripts go by their SHA-1, so
    // their text is not shown): its `HDEL` of `nick` (its look) from node-a's users.
    let release_of = |l: &str, nick: &str| {
        l.contains("[0 lua]")
            && l.ends_with(&format!(
                "\"HDEL\" \"underworld-line:users:node-a\" \"{}\"",
                nick_key(nick)
            ))
    };
    let mut seen: Vec<String> = Vec::new();
    let start = Instant::now();
    while !seen.iter().any(|l| release_of(l, "alicia")) {
        assert!(
            start.elapsed() < PATIENCE,
            "alicia's release never ran: {seen:?}"
        );
        let line: redis::Value = monitor.recv_response().expect("a MONITOR line");
        if let redis::Value::SimpleString(line) = line {
            seen.push(line);
        }
    }
    let position = |what: &dyn Fn(&str) -> bool| seen.iter().position(|l| what(l));
    let renamed = position(&|l| l.contains("NICK lobby alice alicia")).expect("the NICK");
    let left = position(&|l| l.contains("LEAVE lobby alicia")).expect("the LEAVE");
    let freed_alice = position(&|l| release_of(l, "alice")).expect("alice's release");
    let freed_alicia = position(&|l| release_of(l, "alicia")).expect("alicia's release");
    assert!(
        renamed < freed_alice,
        "alice freed before her NICK line: {seen:?}"
    );
    assert!(
        left < freed_alicia,
        "alicia freed before her LEAVE line: {seen:?}"
    );
}

/// The line `/stats` prints about the link, when it says the node is linked.
fn linked_line(node: &str, redis: &Redis) -> String {
    format!("cluster: node {node}, linked to {}", redis.url())
}

/// While Redis takes no publish (paused for writes: the subscriber stays linked), a
/// line is delivered on its own node after the publish times out, and `/stats` says so
/// (it used to say "linked"); once Redis takes publishes again, it says linked again.
#[test]
fn stats_say_not_linked_while_publishing_fails() {
    let redis = Redis::start();
    let a = linked_node(&redis, "node-a");
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut raw = redis.connect().expect("a raw Redis client");
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("WRITE")
        .query::<()>(&mut raw)
        .expect("CLIENT PAUSE");
    alice.send("kept here");
    // Given back after the publish timed out, and delivered here.
    alice.expect("MSG lobby alice kept here");
    let stats = stats_text(&a);
    assert!(linked(&a), "the subscriber is still linked");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("cluster: node node-a, not linked: publishing to")),
        "{stats}"
    );
    common::eventually("linked again once Redis takes publishes", || {
        stats_text(&a)
            .lines()
            .any(|l| l == linked_line("node-a", &redis))
    });
    alice.send("through redis");
    alice.expect("MSG lobby alice through redis");
}

/// A publish whose answer is lost (Redis ran it, then the connection broke) is not
/// tried again: the line is delivered on its own node, and the other nodes get it once
/// (a retry used to publish it twice).
#[test]
fn a_line_is_published_at_most_once_when_its_answer_is_lost() {
    let redis = Redis::start();
    let cutter = common::cutter::Cutter::start(redis.port(), b"lost-answer");
    let a = start_node(&url(cutter.port), "node-a");
    await_link(&a, true);
    let b = linked_node(&redis, "node-b");
    let mut alice = Client::named(a.local_addr(), "alice");
    let mut bob = Client::named(b.local_addr(), "bob");
    cutter.arm();
    alice.send("lost-answer");
    alice.expect("MSG lobby alice lost-answer");
    bob.expect("MSG lobby alice lost-answer");
    // node-a notices the lost answer (it says `not linked` until a probe succeeds, at
    // least one back-off step: 100 ms or more), then publishes again. Both, in this
    // order: the line may have reached alice and bob before node-a noticed, and a line
    // said while it is not linked stays on node-a.
    let linked = |node: &underworld_line::Server| {
        stats_text(node)
            .lines()
            .any(|l| l == format!("cluster: node node-a, linked to {}", url(cutter.port)))
    };
    common::eventually("node-a notices the lost answer", || !linked(&a));
    common::eventually("node-a publishes again", || linked(&a));
    alice.send("after");
    let between = bob.expect("MSG lobby alice after");
    assert!(
        !between.iter().any(|l| l.contains("lost-answer")),
        "bob got the line twice: {between:?}"
    );
}
