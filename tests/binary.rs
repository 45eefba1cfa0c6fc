//! The `underworld-line` binary itself: flags, the operator console on stdin, and
//! Ctrl-C (SIGINT) shutting it down with `BYE` to everyone and exit status 0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use common::process::{spawn_server, ServerProcess};
use common::{Client, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_underworld-line");

/// A running server process, its console (stdin), and its output lines.
type Running = ServerProcess;

fn spawn(args: &[&str]) -> Running {
    spawn_server(args, Stdio::piped())
}

impl Running {
    fn type_line(&mut self, line: &str) {
        let console = self.console.as_mut().expect("stdin is a pipe");
        writeln!(console, "{line}").unwrap();
        console.flush().unwrap();
    }

    /// Waits for a log line (stderr) containing `text`.
    fn expect_log(&self, text: &str) {
        self.expect_log_line(text);
    }

    /// Waits for a log line (stderr) containing `text`; returns it.
    fn expect_log_line(&self, text: &str) -> String {
        loop {
            let line = self.stderr.recv_timeout(PATIENCE).expect("log output");
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits for a stdout line containing `text`.
    fn expect_output(&self, text: &str) -> String {
        loop {
            let line = self.stdout.recv_timeout(PATIENCE).expect("console output");
            if line.contains(text) {
                return line;
            }
        }
    }

    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status code.
    fn wait(self) -> i32 {
        // `Child::wait` blocks with no timeout, so it runs on a thread of its own and the
        // test waits for its answer, at most PATIENCE.
        let (done_tx, done_rx) = mpsc::channel();
        let mut child = self.child;
        thread::spawn(move || {
            let status = child.wait();
            let _ = done_tx.send(status);
        });
        let status = done_rx
            .recv_timeout(PATIENCE)
            .expect("the server did not exit")
            .unwrap();
        status.code().expect("exited by itself, not by a signal")
    }
}

/// `--help` lists every flag with its default; a wrong flag is a usage error.
#[test]
fn help_and_bad_flags() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    let flags_and_defaults = [
        ("--addr", "[127.0.0.1:2022]"),
        ("--max-clients", "[auto"),
        ("--max-per-ip", "[16]"),
        ("--history", "[20]"),
        ("--max-line", "[1024]"),
        ("--max-unterminated", "[65536]"),
        ("--rate-limit", "[10/2]"),
        ("--max-pending", "[65536]"),
        ("--send-timeout", "[2]"),
        ("--idle-timeout", "[600]"),
        ("--announce-max", "[200]"),
    ];
    for (flag, default) in flags_and_defaults {
        let at = text
            .find(flag)
            .unwrap_or_else(|| panic!("--help lacks {flag}"));
        // The default follows the flag's description, before the next flag.
        let entry = &text[at..];
        let entry = &entry[..entry[2..].find("\n  --").map_or(entry.len(), |end| end + 2)];
        assert!(entry.contains(default), "{flag}: no {default} in {entry:?}");
    }
    let bad = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `--max-clients 0` would start a server that refuses everyone: it is refused at
/// start-up instead, with a message that says why (exit 2, like any usage error).
#[test]
fn max_clients_0_is_refused_at_start_up() {
    let output = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--max-clients", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--max-clients 0 would refuse every connection"),
        "{stderr}"
    );
}

/// With `RUST_LOG=debug` a nick change is logged with the connection id, as the alias
/// given at connect is, so an operator can follow one connection through the log.
#[test]
fn debug_log_follows_nick_changes() {
    let server = spawn(&[]);
    let mut a = Client::connect(server.addr);
    let old = a.nick.clone();
    server.expect_log(&format!(" is {old}"));
    a.send("/nick Renamed");
    a.expect(&format!("NICK {old} Renamed"));
    let line = server.expect_log_line(&format!("is now Renamed (was {old})"));
    assert!(line.contains("conn-"), "no connection id in {line:?}");
    server.interrupt();
    assert_eq!(server.wait(), 0);
}

/// A line typed on the console reaches everyone as NOTICE; console commands answer on
/// stdout; Ctrl-C says BYE to everyone and the process exits 0.
#[test]
fn console_pushes_and_ctrl_c_stops() {
    let mut server = spawn(&[]);
    let mut a = Client::connect(server.addr);
    let mut b = Client::connect(server.addr);
    a.expect(&format!("JOIN lobby {}", b.nick));

    server.type_line("the server says hi");
    a.expect("NOTICE the server says hi");
    b.expect("NOTICE the server says hi");
    server.type_line("/stats");
    server.expect_output("connection cap:");
    server.type_line(&format!("/w {} just for you", a.nick));
    a.expect(&format!("DM server {} just for you", a.nick));

    server.interrupt();
    assert_eq!(a.expect_bye(), "server shutting down");
    assert_eq!(b.expect_bye(), "server shutting down");
    assert_eq!(server.wait(), 0);
}

/// `/shutdown` on the console stops the server like Ctrl-C; EOF on stdin alone does
/// not (a server started with `</dev/null` keeps running).
#[test]
fn console_shutdown_and_eof() {
    let mut server = spawn(&[]);
    let mut a = Client::connect(server.addr);
    server.type_line("/help");
    server.expect_output("/kick NAME");
    server.type_line("/shutdown");
    assert_eq!(a.expect_bye(), "server shutting down");
    assert_eq!(server.wait(), 0);

    let quiet = spawn_server(&[], Stdio::null());
    quiet.expect_log("console: stdin closed");
    let mut c = Client::connect(quiet.addr);
    c.send("still serving");
    c.expect(&format!("MSG lobby {} still serving", c.nick));
    quiet.interrupt();
    assert_eq!(quiet.wait(), 0);
}

/// A stderr nobody reads (`2>&1 | less` left paused, a stuck log collector) does not
/// stop the chat: the log lines wait in the `log` thread's queue, or are dropped, and
/// no server thread waits for the pipe. 600 clients come and go with debug logging
/// (several lines each: far more than a pipe's 64 KiB), then two users still chat.
#[test]
fn a_stderr_nobody_reads_does_not_stop_the_chat() {
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args([
                "--addr",
                "127.0.0.1:0",
                "--rate-limit",
                "off",
                "--max-per-ip",
                "0",
            ])
            .env("RUST_LOG", "underworld_line=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary"),
    );
    // Read up to the banner, then never again (the pipe stays open, and fills).
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no banner");
        if let Some(rest) = line.strip_prefix("Underworld-Line on ") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    for _ in 0..600 {
        // Each waits for its HELLO: a server stuck on the pipe would never send it.
        drop(Client::connect(addr));
    }
    let mut alice = Client::named(addr, "alice");
    let mut bob = Client::named(addr, "bob");
    bob.send("/w alice still chatting");
    alice.expect("DM bob alice still chatting");
}

/// A child process killed when the test ends, even by a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Shutdown under load: SIGINT while 200 clients chat; every client gets BYE and the
/// process exits 0 (the time it took is printed; the benchmark notes report it).
#[test]
fn ctrl_c_under_load() {
    const CLIENTS: usize = 200;
    let server = spawn(&["--rate-limit", "off", "--max-per-ip", "0"]);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        c.sync();
    }
    // Every client chats from its own thread until the server says BYE.
    let chatters: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let mut writer = c.stream().try_clone().unwrap();
            thread::spawn(move || {
                let talker = thread::spawn(move || {
                    for i in 0..1000 {
                        if writer
                            .write_all(format!("chatter {i}\n").as_bytes())
                            .is_err()
                        {
                            break;
                        }
                        thread::sleep(std::time::Duration::from_millis(20));
                    }
                });
                let reason = c.expect_bye_allowing_errors();
                drop(c);
                let _ = talker.join();
                reason
            })
        })
        .collect();
    // Let the chat get going: wait until a fresh client sees others' messages.
    let mut observer = Client::connect(server.addr);
    observer.expect_prefix("MSG lobby ");

    let start = Instant::now();
    server.interrupt();
    for chatter in chatters {
        assert_eq!(chatter.join().unwrap(), "server shutting down");
    }
    assert_eq!(
        observer.expect_bye_allowing_errors(),
        "server shutting down"
    );
    assert_eq!(server.wait(), 0);
    eprintln!(
        "shutdown with {CLIENTS} chatting clients took {:?}",
        start.elapsed()
    );
}
