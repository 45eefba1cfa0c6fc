//! No leaks (issue 4, point 13): after clients come and go in every way a connection
//! can end, the server's thread count and open-file count return to where they
//! started. This file is its own test binary with a single test, because it reads
//! process-wide figures (`/proc/self/task`, `/proc/self/fd`) that parallel tests in the
//! same process would disturb.

mod common;

use std::time::Duration;

use common::{eventually, open_files, start_server, test_config, threads, Client};
use underworld_line::{Config, Server};

/// Clients that quit, vanish, reset, idle out, send endless lines, get kicked or read
/// too slowly: once they are all gone, the counts are back to the baseline; and after
/// shutdown, back to what they were before the servers started.
#[test]
fn threads_and_files_return_to_baseline() {
    let before_servers = (threads(), open_files());
    let server = start_server(Config {
        max_pending: 16 * 1024,
        send_timeout: Duration::from_millis(300),
        ..test_config()
    });
    // Idling out needs a short idle timeout, which would also hit every other client
    // of a busy test on a slow machine: so the idlers get a server of their own.
    let idle_server = start_server(Config {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    });
    let baseline = (threads(), open_files());

    for round in 0..3 {
        come_and_go(&server, &idle_server, round);
    }

    eventually("threads and files back to the idle servers'", || {
        (threads(), open_files()) == baseline
    });
    for server in [server, idle_server] {
        server.shutdown();
        server.join();
    }
    eventually("threads and files back to before the servers", || {
        (threads(), open_files()) == before_servers
    });
}

/// One round of every way a connection can end.
fn come_and_go(server: &Server, idle_server: &Server, round: usize) {
    // Clean quit.
    let mut quitter = Client::connect(server.local_addr());
    quitter.send("/quit");
    quitter.expect_bye();
    // Vanishes (FIN) and aborts (RST).
    drop(Client::connect(server.local_addr()));
    Client::connect(server.local_addr()).reset();
    // Idles out.
    let mut idler = Client::connect(idle_server.local_addr());
    assert_eq!(idler.expect_bye(), "idle");
    // Endless line.
    let mut endless = Client::connect(server.local_addr());
    endless.send_raw(&vec![b'x'; 70 * 1024]);
    endless.expect_bye_allowing_errors();
    // Kicked.
    let mut kicked = Client::named(server.local_addr(), &format!("kickme{round}"));
    server.kick(&kicked.nick, "test").unwrap();
    kicked.expect_bye();
    // Too slow: never reads while the watcher talks (bounded: 50,000 lines of 1 KB).
    let mut watcher = Client::named(server.local_addr(), &format!("watcher{round}"));
    let slow = Client::named(server.local_addr(), &format!("slow{round}"));
    let payload = "w".repeat(1000);
    let gone = format!("LEAVE lobby {} too slow", slow.nick);
    let mut sent = 0;
    while watcher.line() != gone {
        assert!(sent < 50_000, "the slow reader was never dropped");
        watcher.send(&payload);
        sent += 1;
    }
    drop(slow);
    drop(watcher);
}
