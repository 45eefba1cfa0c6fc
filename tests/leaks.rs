//! No leaks (issue 4, point 13): after clients come and go in every way a connection
//! can end, the server's thread count and open-file count return to where they
//! started. This file is its own test binary with a single test, because it reads
//! process-wide figures (`/proc/self/task`, `/proc/self/fd`) that parallel tests in the
//! same process would disturb.

mod common;

use std::fs;
use std::time::Duration;

use common::{eventually, start_server, test_config, Client};
use underworld_line::Config;

fn threads() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

fn open_files() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Clients that quit, vanish, reset, idle out, send endless lines, get kicked or read
/// too slowly: once they are all gone, the counts are back to the baseline; and after
/// shutdown, back to what they were before the server started.
#[test]
fn threads_and_files_return_to_baseline() {
    let before_server = (threads(), open_files());
    let server = start_server(Config {
        idle_timeout: Duration::from_millis(300),
        max_pending: 16 * 1024,
        send_timeout: Duration::from_millis(300),
        ..test_config()
    });
    let idle_server = (threads(), open_files());

    for round in 0..3 {
        // Clean quit.
        let mut quitter = Client::connect(server.local_addr());
        quitter.send("/quit");
        quitter.expect_bye();
        // Vanishes (FIN) and resets (RST).
        let vanisher = Client::connect(server.local_addr());
        drop(vanisher);
        let mut resetter = Client::connect(server.local_addr());
        resetter.send("/help");
        resetter.sync();
        resetter.send("/help");
        drop(resetter);
        // Idles out.
        let mut idler = Client::connect(server.local_addr());
        assert_eq!(idler.expect_bye(), "idle");
        // Endless line.
        let mut endless = Client::connect(server.local_addr());
        endless.send_raw(&vec![b'x'; 70 * 1024]);
        endless.expect_bye_allowing_errors();
        // (Created only now: the idle timeout is short, and a watcher must talk.)
        let mut watcher = Client::named(server.local_addr(), &format!("watcher{round}"));
        // Kicked.
        let mut kicked = Client::named(server.local_addr(), &format!("kickme{round}"));
        server.kick(&kicked.nick, "test").unwrap();
        kicked.expect_bye();
        // Too slow: never reads while the watcher talks.
        let mut slow = Client::named(server.local_addr(), &format!("slow{round}"));
        let payload = "w".repeat(1000);
        let mut sent = 0;
        loop {
            watcher.send(&payload);
            sent += 1;
            if sent % 64 == 0 {
                // Writing (never reading) keeps it from being dropped as idle instead.
                slow.send("/ping");
            }
            let line = watcher.line();
            if line.starts_with(&format!("LEAVE lobby {} too slow", slow.nick)) {
                break;
            }
            assert!(sent < 50_000, "the slow reader was never dropped");
        }
        drop(slow);
        drop(watcher);
    }

    eventually("threads and files back to the idle server's", || {
        (threads(), open_files()) == idle_server
    });
    server.shutdown();
    server.join();
    eventually("threads and files back to before the server", || {
        (threads(), open_files()) == before_server
    });
}
