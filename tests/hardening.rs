//! Limits and bad input (issue 4): every limit gives the client a clear line, nothing
//! disturbs the other clients, and nothing panics.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{closed_by_server, eventually, start_server, test_config, Client, PATIENCE};
use underworld_line::rate::RateLimit;
use underworld_line::stats::Stats;
use underworld_line::text::is_forbidden_char;
use underworld_line::Config;

/// A line over `--max-line` gets ERR and is dropped; the connection goes on.
#[test]
fn a_long_line_is_refused_and_dropped() {
    let server = start_server(Config {
        max_line: 100,
        ..test_config()
    });
    let mut a = Client::named(server.local_addr(), "alice");
    let long = "x".repeat(101);
    a.send(&long);
    assert!(a.line().starts_with("ERR line-too-long "));
    let fits = "y".repeat(100);
    a.send(&fits);
    a.next_is(&format!("MSG lobby alice {fits}"));
    // CRLF does not count against the limit.
    a.send_raw(format!("{fits}\r\n").as_bytes());
    a.next_is(&format!("MSG lobby alice {fits}"));
}

/// 64 KiB without a newline: `BYE line too long`, and the room sees why.
#[test]
fn an_endless_line_disconnects() {
    let server = start_server(test_config());
    let mut watcher = Client::named(server.local_addr(), "watcher");
    let mut a = Client::named(server.local_addr(), "alice");
    watcher.sync();
    a.send_raw(&vec![b'z'; 64 * 1024 + 1]);
    assert!(a.line().starts_with("ERR line-too-long "));
    assert_eq!(a.expect_bye(), "line too long");
    watcher.expect("LEAVE lobby alice line too long");
}

/// Invalid UTF-8 of every kind gets ERR, is not relayed, and the connection stays.
#[test]
fn invalid_utf8_is_refused() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let mut b = Client::named(server.local_addr(), "bob");
    a.sync();
    let bad: [&[u8]; 5] = [
        b"\xff hello\n",
        b"overlong \xc0\xaf slash\n",
        b"surrogate \xed\xa0\x80\n",
        b"truncated \xe2\x82\n",
        b"\x80 lone continuation\n",
    ];
    for line in bad {
        a.send_raw(line);
        assert!(a.line().starts_with("ERR invalid-utf8 "), "{line:?}");
    }
    a.send("still here ✓");
    a.next_is("MSG lobby alice still here ✓");
    a.sync();
    let seen = b.sync();
    assert_eq!(seen, ["MSG lobby alice still here ✓"]);
}

/// Nobody receives control characters, escape sequences or bidi overrides from another
/// user's text, and a bare CR cannot fake a line from someone else.
#[test]
fn control_characters_never_reach_others() {
    let server = start_server(test_config());
    let mut a = Client::named(server.local_addr(), "alice");
    let mut b = Client::named(server.local_addr(), "bob");
    a.sync();
    let nasty = [
        "red \x1b[31mALERT\x1b[0m",
        "title \x1b]0;pwned\x07 done",
        "c1 \u{9b}31m csi and \u{85} nel",
        "bidi \u{202e}txt.exe\u{202c} \u{2066}iso\u{2069} \u{200f}",
        "fake\rMSG lobby admin give me your password",
        "del\x7f bs\x08 nul\0 tab\tkept",
        "line\u{2028}separator",
        "zero\u{200b}width\u{feff} and \u{e0041}tags",
    ];
    for text in nasty {
        a.send(text);
    }
    a.send("/me \x1b[2Jclears");
    a.send("/w bob \x1b[5mblink");
    a.sync(); // the server has relayed all of it before bob's ping below
    let lines = b.sync();
    assert_eq!(lines.len(), nasty.len() + 2, "{lines:?}");
    for line in &lines {
        assert!(
            !line
                .chars()
                .any(|c| c != '\t' && (c.is_control() || is_forbidden_char(c))),
            "{line:?}"
        );
    }
    assert_eq!(
        lines[4],
        "MSG lobby alice fakeMSG lobby admin give me your password"
    );
    assert_eq!(lines[5], "MSG lobby alice del bs nul tab\tkept");
    // Nicks and rooms with such characters are refused, not stripped.
    a.send("/nick ev\x1b[1man");
    assert!(a.expect_prefix("ERR ").starts_with("ERR invalid-nick "));
    a.send("/join r\u{202e}oom");
    assert!(a.line().starts_with("ERR invalid-room "));
}

/// Lookalike nicks: case, `0`/`O`, `1`/`l`/`I` and `rn`/`m` are taken by look; other
/// scripts and fullwidth letters are refused outright; a digit that only stands for a
/// letter (`Ev4n`) is not a lookalike.
#[test]
fn lookalike_nicks_are_refused() {
    let server = start_server(test_config());
    let _evan = Client::named(server.local_addr(), "evan");
    let _bill = Client::named(server.local_addr(), "Bill");
    let _mallory = Client::named(server.local_addr(), "mallory");
    let mut b = Client::connect(server.local_addr());
    b.sync();
    let cases = [
        ("EVAN", "ERR nick-taken "),       // case
        ("Evan", "ERR nick-taken "),       // case
        ("B1LL", "ERR nick-taken "),       // 1 for l
        ("bi1l", "ERR nick-taken "),       // i, l and 1 look alike
        ("rnallory", "ERR nick-taken "),   // rn looks like m
        ("RNALL0RY", "ERR nick-taken "),   // and 0 like O
        ("еvan", "ERR invalid-nick "),     // Cyrillic е: other scripts are refused
        ("ｅｖａｎ", "ERR invalid-nick "), // fullwidth letters
        ("3van-no", "ERR invalid-nick "),  // must start with a letter
        ("server", "ERR nick-reserved "),
        ("ADMIN", "ERR nick-reserved "),
        ("Serv3r", "NICK "), // 3 is not a lookalike of e: allowed
        ("Ev4n", "NICK "),   // nor is 4 of a: a reader sees the digit
    ];
    for (nick, expected) in cases {
        b.send(&format!("/nick {nick}"));
        let reply = b.line();
        assert!(reply.starts_with(expected), "{nick}: {reply}");
    }
}

/// A burst passes and the lines after it are dropped, with one `ERR rate-limited`
/// (at most one a second, however many lines were dropped); a human pasting a few
/// lines is not kicked. (The refill is made negligible so the counts are exact
/// whatever the machine's speed.)
#[test]
fn a_paste_is_limited_not_kicked() {
    let server = start_server(Config {
        rate_limit: Some(RateLimit {
            burst: 10,
            per_second: 0.001,
        }),
        ..test_config()
    });
    let mut paster = Client::connect(server.local_addr());
    for i in 0..12 {
        paster.send(&format!("pasted {i}"));
    }
    for i in 0..10 {
        paster.next_is(&format!("MSG lobby {} pasted {i}", paster.nick));
    }
    assert!(paster.line().starts_with("ERR rate-limited "));
    // Still welcome: `/quit` (never rate limited) is answered as a quit, not a kick,
    // and the second dropped line got no second `ERR`.
    paster.send("/quit");
    assert_eq!(paster.line(), "BYE quit");
}

/// With the shipped default (a burst of 10, then 2 lines/s), a client that keeps
/// flooding (a line every 10 ms) for 10 s is disconnected with `BYE flooding`.
#[test]
fn a_flood_is_disconnected_after_ten_seconds() {
    let server = start_server(Config {
        rate_limit: Some(RateLimit::default()),
        ..test_config()
    });
    let mut flooder = Client::connect(server.local_addr());
    let mut writer = flooder.stream().try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::clone(&stop);
    let sender = thread::spawn(move || {
        // Bounded: the server gives up after ~10 s; 60 s is only a backstop.
        let start = Instant::now();
        while !stop_writer.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            if writer.write_all(b"spam\n").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    });
    let reason = flooder.expect_bye_allowing_errors();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert_eq!(reason, "flooding");
}

/// Garbage counts against the flood limit too: unknown commands, invalid UTF-8 and
/// over-long lines are rate limited like chat (ten get their own `ERR`, the five over
/// the limit one `ERR rate-limited` between them), and `/quit` still works after.
#[test]
fn garbage_lines_are_rate_limited_too() {
    let server = start_server(Config {
        rate_limit: Some(RateLimit {
            burst: 10,
            per_second: 0.001,
        }),
        max_line: 16,
        ..test_config()
    });
    let mut a = Client::connect(server.local_addr());
    for _ in 0..5 {
        a.send_raw(b"/nonsense\n\xff\xfe\n");
        a.send_raw(&[b'x'; 40]);
        a.send_raw(b"\n");
    }
    let replies: Vec<String> = (0..11).map(|_| a.line()).collect();
    let limited = replies
        .iter()
        .filter(|l| l.starts_with("ERR rate-limited "))
        .count();
    assert_eq!(limited, 1, "{replies:?}");
    assert!(replies.iter().all(|l| l.starts_with("ERR ")), "{replies:?}");
    a.send("/quit");
    assert_eq!(a.line(), "BYE quit");
}

/// A client that never reads while others chat is disconnected once its pending output
/// passes `--max-pending`; the others receive everything, in order.
#[test]
fn a_slow_reader_is_dropped_by_pending_bytes() {
    slow_reader_is_dropped(Config {
        max_pending: 32 * 1024,
        send_timeout: Duration::from_secs(3600),
        ..test_config()
    });
}

/// Same, but caught by the other rule: its socket accepts nothing for `--send-timeout`.
#[test]
fn a_slow_reader_is_dropped_by_send_timeout() {
    slow_reader_is_dropped(Config {
        max_pending: 1 << 30,
        send_timeout: Duration::from_millis(200),
        ..test_config()
    });
}

/// A hundred clients that never read sit in the room while others chat, and their
/// buffers fill at about the same moment: every one of them is dropped (the room sees
/// `LEAVE … too slow` for each), and a reader in the room receives every line, in order.
/// (Their receive buffers are set small, so that they fill after kilobytes rather than
/// megabytes; what the server sees is the same: sockets that stop taking bytes.)
#[test]
fn a_hundred_slow_readers_filling_at_once_are_all_dropped() {
    slow_readers_are_dropped(
        Config {
            max_pending: 16 * 1024,
            send_timeout: Duration::from_millis(500),
            ..test_config()
        },
        100,
        Some(4096),
    );
}

fn slow_reader_is_dropped(config: Config) {
    slow_readers_are_dropped(config, 1, None);
}

/// `count` clients that never read (with a receive buffer of `rcvbuf` bytes, or the
/// system's default) are dropped while a talker sends 1 KB lines that a reader receives
/// completely and in order.
fn slow_readers_are_dropped(config: Config, count: usize, rcvbuf: Option<usize>) {
    const MOST_LINES: usize = 40_000; // 40 MB: far more than the kernel buffers hold
    const WINDOW: usize = 64; // lines the talker may be ahead of the reader
    let server = start_server(config);
    let slow: Vec<Client> = (0..count)
        .map(|i| {
            let mut client = Client::from_stream(connect_with_rcvbuf(server.local_addr(), rcvbuf));
            client.send(&format!("/nick slow{i}"));
            client.expect_prefix("NICK ");
            client.nick = format!("slow{i}");
            client
        })
        .collect();
    let mut reader = Client::named(server.local_addr(), "reader");
    let mut talker = Client::named(server.local_addr(), "talker");
    reader.sync();
    talker.sync();

    // The talker sends 1 KB lines, never more than WINDOW ahead of what the reader has
    // received (flow control, so the reading clients are never the slow ones however
    // busy the machine), until told to stop. Then it says how many it sent, and sends
    // an `end` line and a ping, so both readers know when they have seen everything.
    let (credit_tx, credits) = mpsc::channel::<()>();
    for _ in 0..WINDOW {
        credit_tx.send(()).unwrap();
    }
    let (count_tx, count_rx) = mpsc::channel::<usize>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sender = Arc::clone(&stop);
    let mut writer = talker.stream().try_clone().unwrap();
    let sender = thread::spawn(move || {
        let payload = "p".repeat(1000);
        let mut sent = 0;
        while sent < MOST_LINES && !stop_sender.load(Ordering::SeqCst) {
            if credits.recv_timeout(PATIENCE).is_err() {
                break; // the reader has stalled or gone; the asserts below say so
            }
            writer
                .write_all(format!("{sent} {payload}\n").as_bytes())
                .unwrap();
            sent += 1;
        }
        count_tx.send(sent).unwrap();
        writer.write_all(b"end\n/ping end\n").unwrap();
    });
    // The talker reads its own echo, so it is never the slow one either.
    let echo = thread::spawn(move || {
        let mut numbered = 0;
        loop {
            let line = talker.line();
            if line == "PONG end" {
                return numbered;
            }
            let text = line.strip_prefix("MSG lobby talker ").unwrap_or("");
            if text
                .split(' ')
                .next()
                .is_some_and(|n| n.parse::<usize>().is_ok())
            {
                numbered += 1;
            }
        }
    });

    // The reader checks every message arrives, in order, and sees the slow ones go.
    let mut next = 0;
    let mut dropped = std::collections::HashSet::new();
    loop {
        let line = reader.line();
        if let Some(nick) = line
            .strip_prefix("LEAVE lobby ")
            .and_then(|rest| rest.strip_suffix(" too slow"))
        {
            assert!(nick.starts_with("slow"), "{line}");
            assert!(dropped.insert(nick.to_string()), "dropped twice: {line}");
            if dropped.len() == count {
                stop.store(true, Ordering::SeqCst);
            }
        } else if line == "MSG lobby talker end" {
            break;
        } else if let Some(rest) = line.strip_prefix("MSG lobby talker ") {
            let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(n, next, "the reader lost or reordered a message");
            next += 1;
            let _ = credit_tx.send(());
        }
    }
    sender.join().unwrap();
    let sent = count_rx.recv().unwrap();
    assert_eq!(
        dropped.len(),
        count,
        "not every slow reader was dropped ({sent} lines sent)"
    );
    assert_eq!(next, sent, "the reader did not get every message");
    assert_eq!(
        echo.join().unwrap(),
        sent,
        "the talker's own echo was incomplete"
    );

    // The slow clients' connections are closed by the server, as the kernel shows
    // them (not by reading each to its end: see `closed_by_server` for why that can
    // take minutes; in CI it once took five).
    eventually("the server closed every slow reader's socket", || {
        slow.iter().all(|client| closed_by_server(client.stream()))
    });
    server.shutdown();
    server.join();
}

/// The connection cap: the client over it gets `BYE server full`; when someone
/// leaves, there is room again.
#[test]
fn the_connection_cap_refuses_cleanly() {
    let server = start_server(Config {
        max_clients: Some(3),
        ..test_config()
    });
    assert_eq!(server.cap().max_clients, 3);
    let first = Client::connect(server.local_addr());
    let _second = Client::connect(server.local_addr());
    let _third = Client::connect(server.local_addr());
    let mut fourth = Client::connect_raw(server.local_addr());
    assert_eq!(fourth.expect_bye(), "server full");
    drop(first);
    // The slot frees once the first connection's thread has ended; the acceptor
    // reaps it on the next accept.
    common::eventually("a slot to free up", || {
        let mut next = Client::connect_raw(server.local_addr());
        next.line().starts_with("HELLO ")
    });
    assert!(underworld_line::console::stats_text(&server).contains("connection cap: 3"));
}

/// A thread that cannot be created (here: a 256 TiB stack, more than the whole address
/// space, so it fails whatever the overcommit settings) never panics or
/// aborts the server: the client is refused with `BYE server full` like any other.
#[test]
fn a_failed_thread_spawn_is_a_clean_refusal() {
    let server = start_server(Config {
        thread_stack: 1 << 48,
        ..test_config()
    });
    for _ in 0..3 {
        let mut refused = Client::connect_raw(server.local_addr());
        assert_eq!(refused.expect_bye(), "server full");
    }
    assert!(underworld_line::console::stats_text(&server).contains("3 refused"));
    server.shutdown();
    server.join();
}

/// The per-IP cap: the connection over it from one address gets BYE.
#[test]
fn the_per_ip_cap_refuses_cleanly() {
    let server = start_server(Config {
        max_per_ip: 2,
        ..test_config()
    });
    let _a = Client::connect(server.local_addr());
    let _b = Client::connect(server.local_addr());
    let mut c = Client::connect_raw(server.local_addr());
    assert_eq!(c.expect_bye(), "too many connections from your address");

    // Another address is counted on its own: 127.0.0.2 is loopback too.
    let from_other = connect_from([127, 0, 0, 2], server.local_addr());
    let mut hello = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(from_other), &mut hello).unwrap();
    assert!(hello.starts_with("HELLO "), "{hello}");
}

/// A TCP connection whose receive buffer is `rcvbuf` bytes (or the system default).
fn connect_with_rcvbuf(to: std::net::SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    if let Some(bytes) = rcvbuf {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// A TCP connection from a chosen loopback source address (std cannot bind a client
/// socket before connecting; socket2 can).
fn connect_from(source: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source = std::net::SocketAddr::from((source, 0));
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// A client that completes no line for the idle timeout gets `BYE idle`, even while it
/// trickles bytes that never make a line (slowloris).
#[test]
fn idle_and_trickling_clients_are_closed() {
    let server = start_server(Config {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    });
    let mut idle = Client::connect(server.local_addr());
    assert_eq!(idle.expect_bye(), "idle");

    let mut trickler = Client::connect(server.local_addr());
    let mut writer = trickler.stream().try_clone().unwrap();
    let trickle = thread::spawn(move || {
        // One byte every 50 ms, never a newline, for at most 5 s.
        for _ in 0..100 {
            if writer.write_all(b"x").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(trickler.expect_bye_allowing_errors(), "idle");
    trickle.join().unwrap();
}

/// Abrupt ends: a reset in the middle of a line and a half-close after a partial line.
/// The partial line is never relayed and LEAVE goes out once.
#[test]
fn abrupt_ends_never_relay_partial_lines() {
    let server = start_server(test_config());
    let mut watcher = Client::named(server.local_addr(), "watcher");

    let mut half = Client::named(server.local_addr(), "half");
    half.send_raw(b"partial line with no end");
    half.shutdown_write();
    let seen = watcher.expect("LEAVE lobby half connection closed");
    assert!(seen.iter().all(|l| !l.contains("partial")), "{seen:?}");

    let mut reset = Client::named(server.local_addr(), "reset");
    // Half a line, then an abort (RST) instead of a clean close.
    reset.send_raw(b"another partial");
    reset.reset();
    let seen = watcher.expect("LEAVE lobby reset connection closed");
    assert!(seen.iter().all(|l| !l.contains("partial")), "{seen:?}");
    let after = watcher.sync();
    assert!(after.iter().all(|l| !l.starts_with("LEAVE")), "{after:?}");
}

/// 200 clients claim the same nick at the same moment: exactly one gets it.
#[test]
fn two_hundred_clients_race_for_one_nick() {
    const RACERS: usize = 200;
    let server = start_server(test_config());
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let addr = server.local_addr();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                client.sync();
                barrier.wait();
                client.send("/nick winner");
                // Others' NICK lines may arrive first: wait for the answer to *us*.
                let mine = format!("NICK {} winner", client.nick);
                let reply = client.expect_prefix_any(&[&mine, "ERR "]);
                let won = reply == mine;
                if !won {
                    assert!(reply.starts_with("ERR nick-taken "), "{reply}");
                }
                // Keep the connection open until every racer has its answer: a winner
                // that left early would free the nick for a latecomer.
                (won, client)
            })
        })
        .collect();
    let results: Vec<(bool, Client)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners = results.iter().filter(|(won, _)| *won).count();
    assert_eq!(winners, 1);
    server.shutdown();
    server.join();
}

/// Bad input of any kind does not take the server down: after a barrage of garbage
/// from several clients, a fresh client still chats.
#[test]
fn garbage_never_panics_the_server() {
    let server = start_server(Config {
        max_line: 64,
        ..test_config()
    });
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift64: a fixed, reproducible stream of "random" bytes.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = 0;
    for _ in 0..8 {
        let mut garbage = Client::connect_raw(server.local_addr());
        for _ in 0..64 {
            let len = next() % 200;
            let chunk: Vec<u8> = (0..len).map(|_| (next() >> 24) as u8).collect();
            sent += chunk.len();
            garbage.send_raw(&chunk);
        }
        // End whatever line is open, then wait until the server has handled it all
        // (unless the garbage itself got the connection closed, which is fine too).
        garbage.send_raw(b"\n/ping done\n");
        while let Some(line) = garbage.try_line_lossy() {
            if line == "PONG done" || line.starts_with("BYE ") {
                break;
            }
        }
    }
    assert!(sent > 30_000, "only {sent} bytes of garbage");
    let mut fresh = Client::named(server.local_addr(), "fresh");
    fresh.send("still alive");
    fresh.expect("MSG lobby fresh still alive");
}

/// A client floods `x` lines as fast as loopback allows, with the shipped flood limit:
/// in its first three seconds it receives at most four `ERR rate-limited` (one a
/// second, however many lines were dropped), and meanwhile another client's pings
/// are all answered.
#[test]
fn a_flood_gets_one_err_a_second_and_others_are_still_answered() {
    const FLOOD: Duration = Duration::from_secs(3);
    let server = start_server(Config {
        rate_limit: Some(RateLimit::default()),
        ..test_config()
    });
    let mut flooder = Client::connect(server.local_addr());
    let mut writer = flooder.stream().try_clone().unwrap();
    // A write timeout, so the writer notices the end of the flood even while the
    // server (rightly) is not reading and the socket is full.
    writer
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let flood = thread::spawn(move || {
        let chunk = b"x\n".repeat(4096);
        while start.elapsed() < FLOOD {
            let _ = writer.write(&chunk);
        }
    });
    // Meanwhile: a second client's pings, each answered (within its own burst of 10).
    let mut prober = Client::connect(server.local_addr());
    for i in 0..8 {
        prober.send(&format!("/ping {i}"));
        prober.expect(&format!("PONG {i}"));
    }
    // Count what the flooder was told during its flood.
    flooder
        .stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut limited = 0;
    while start.elapsed() < FLOOD {
        match flooder.try_line_or_timeout() {
            Some(line) if line.starts_with("ERR rate-limited ") => limited += 1,
            // Its first ten lines (the burst), and the prober arriving.
            Some(line) => assert!(
                line.starts_with("MSG lobby ") || line.starts_with("JOIN lobby "),
                "{line}"
            ),
            None => {}
        }
    }
    flood.join().unwrap();
    assert!(
        (1..=4).contains(&limited),
        "{limited} ERR rate-limited in 3 s"
    );
    assert_eq!(Stats::get(&server.stats().refused), 0);
}

/// A client that stops reading is noticed even while the kernel still takes bytes for
/// it: its send queue in the kernel (`/proc/net/tcp`) stays over `--max-pending` for
/// `--send-timeout`, and the send-queue watchdog has it dropped, long before the
/// kernel's own buffers would refuse a write (the server counts the drops its watchdog
/// made). The talker chats at about 200 lines of 1 KB a second (a busy room, not a
/// flood); without the watchdog the kernel takes about 4 MB (4,000 lines, 20 s) for
/// the silent client before refusing anything (measured on the development machine),
/// with it the client is gone after a few hundred lines.
#[test]
fn a_slow_reader_is_dropped_by_its_kernel_send_queue() {
    const MOST_LINES: usize = 4000;
    let server = start_server(Config {
        max_pending: 16 * 1024,
        send_timeout: Duration::from_secs(1),
        ..test_config()
    });
    let _slow = Client::named(server.local_addr(), "slow");
    let mut reader = Client::named(server.local_addr(), "reader");
    let mut talker = Client::named(server.local_addr(), "talker");
    reader.sync();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_talker = Arc::clone(&stop);
    let talk = thread::spawn(move || {
        let payload = "p".repeat(1000);
        let mut sent = 0;
        while sent < MOST_LINES && !stop_talker.load(Ordering::SeqCst) {
            talker.send(&payload);
            sent += 1;
            // The pace of the scenario, not a synchronisation: 200 lines a second.
            thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    let mut received = 0;
    loop {
        let line = reader.line();
        if line == "LEAVE lobby slow too slow" {
            break;
        }
        assert!(line.starts_with("MSG lobby talker "), "{line}");
        received += 1;
        assert!(received < MOST_LINES, "the slow reader was never dropped");
    }
    stop.store(true, Ordering::SeqCst);
    let sent = talk.join().unwrap();
    assert_eq!(
        Stats::get(&server.stats().send_queue_drops),
        1,
        "dropped after {sent} lines, but not by the send-queue watchdog"
    );
    server.shutdown();
    server.join();
}
