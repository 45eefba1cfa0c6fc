//! Helpers shared by the integration tests: an in-process server on 127.0.0.1:0, and a
//! line-oriented test client that waits for replies instead of sleeping.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use underworld_line::{Config, Server};

#[cfg(feature = "redis")]
pub mod broker;
#[cfg(feature = "redis")]
pub mod cutter;
pub mod process;

/// How long any single wait may take before the test fails: generous, because CI
/// machines are busy; a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A config for tests: no flood limit and no per-IP cap (every test client comes from
/// 127.0.0.1), everything else as shipped.
pub fn test_config() -> Config {
    Config {
        rate_limit: None,
        max_per_ip: 0,
        ..Config::default()
    }
}

/// Starts a server on an ephemeral port of 127.0.0.1.
pub fn start_server(config: Config) -> Server {
    Server::bind("127.0.0.1:0", config).expect("bind 127.0.0.1:0")
}

/// Two clients, `alice` in the lobby and `bob` in `den`, with everything they were sent
/// so far read: the setup of the tests about rooms and operator pushes.
pub fn alice_and_bob_in_den(addr: SocketAddr) -> (Client, Client) {
    let mut alice = Client::named(addr, "alice");
    let mut bob = Client::named(addr, "bob");
    bob.send("/join den");
    bob.next_is("JOIN den bob");
    alice.sync();
    (alice, bob)
}

/// A raw TCP chat client that reads whole lines.
pub struct Client {
    pub nick: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    ping: u64,
    /// The start of a line whose end had not arrived when a read timed out.
    partial: Vec<u8>,
}

impl Client {
    /// Connects and reads `HELLO` and the `JOIN lobby` that follows it.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect_raw(addr);
        client.nick = nick_of_hello(&client.line());
        let join = client.line();
        assert_eq!(join, format!("JOIN lobby {}", client.nick));
        client
    }

    /// Connects without reading anything.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Wraps a connected stream, without reading anything.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            nick: String::new(),
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            ping: 0,
            partial: Vec::new(),
        }
    }

    /// Connects and renames itself, so tests can use readable nicks.
    pub fn named(addr: SocketAddr, nick: &str) -> Client {
        let mut client = Client::connect(addr);
        client.send(&format!("/nick {nick}"));
        let old = client.nick.clone();
        client.expect(&format!("NICK {old} {nick}"));
        client.nick = nick.to_string();
        client
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// The next line, without its LF. Panics on EOF or after `PATIENCE`.
    pub fn line(&mut self) -> String {
        self.try_line()
            .unwrap_or_else(|| panic!("{}: connection ended while a line was expected", self.nick))
    }

    /// The next line, or `None` if none is complete within the stream's read timeout
    /// (a part of a line read meanwhile is kept for the next call). Panics at EOF.
    pub fn try_line_or_timeout(&mut self) -> Option<String> {
        match self.reader.read_until(b'\n', &mut self.partial) {
            Ok(0) => panic!("{}: connection ended while a line was expected", self.nick),
            Ok(_) if self.partial.ends_with(b"\n") => {
                let mut bytes = std::mem::take(&mut self.partial);
                bytes.pop();
                Some(String::from_utf8(bytes).expect("server sent invalid UTF-8"))
            }
            Ok(_) => panic!("{}: connection ended inside a line", self.nick),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("{}: read failed: {e}", self.nick),
        }
    }

    /// The next line, or `None` at EOF (or a reset).
    pub fn try_line(&mut self) -> Option<String> {
        let mut bytes = Vec::new();
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) => None,
            Ok(_) => {
                assert!(bytes.ends_with(b"\n"), "unterminated line {bytes:?}");
                bytes.pop();
                Some(String::from_utf8(bytes).expect("server sent invalid UTF-8"))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("{}: read failed: {e}", self.nick),
        }
    }

    /// The next line with invalid UTF-8 replaced (for replies to garbage, which may
    /// echo nothing but must not panic the test either), or `None` at the end.
    pub fn try_line_lossy(&mut self) -> Option<String> {
        let mut bytes = Vec::new();
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                Some(String::from_utf8_lossy(line).into_owned())
            }
        }
    }

    /// Reads lines until one equals `expected`; returns the lines skipped before it.
    pub fn expect(&mut self, expected: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let line = self.line();
            if line == expected {
                return skipped;
            }
            skipped.push(line);
        }
    }

    /// Reads lines until one starts with `prefix`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// The very next line must be `expected`.
    pub fn next_is(&mut self, expected: &str) {
        assert_eq!(self.line(), expected, "{}", self.nick);
    }

    /// A `/ping` round trip: returns every line the server sent before the `PONG`, so
    /// a test knows the server has handled all that came before.
    pub fn sync(&mut self) -> Vec<String> {
        self.ping += 1;
        let token = format!("sync-{}", self.ping);
        self.send(&format!("/ping {token}"));
        self.expect(&format!("PONG {token}"))
    }

    /// Reads until EOF; returns everything read. Panics if the server keeps it open
    /// past `PATIENCE`.
    pub fn read_to_end(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.try_line() {
            lines.push(line);
        }
        lines
    }

    /// Reads lines until `BYE …`; returns its reason. Then the stream must end.
    pub fn expect_bye(&mut self) -> String {
        let bye = self.expect_prefix("BYE ");
        let rest = self.read_to_end();
        assert!(rest.is_empty(), "lines after BYE: {rest:?}");
        bye["BYE ".len()..].to_string()
    }

    /// Like `expect_bye`, for a client that may still be writing when the server
    /// closes: the end of the stream may then be a reset, and lines after a reset are
    /// not checked.
    pub fn expect_bye_allowing_errors(&mut self) -> String {
        loop {
            match self.try_line() {
                Some(line) if line.starts_with("BYE ") => return line["BYE ".len()..].to_string(),
                Some(_) => {}
                None => panic!("{}: stream ended without BYE", self.nick),
            }
        }
    }

    /// Reads lines until one starts with any of `prefixes`; returns it.
    pub fn expect_prefix_any(&mut self, prefixes: &[&str]) -> String {
        loop {
            let line = self.line();
            if prefixes.iter().any(|p| line.starts_with(p)) {
                return line;
            }
        }
    }

    /// Closes the connection with a reset (RST) instead of a FIN: a linger time of zero
    /// makes the kernel drop whatever is unsent and abort, like a crashed client or a
    /// broken network path would.
    pub fn reset(self) {
        let linger = socket2::SockRef::from(&self.writer);
        linger.set_linger(Some(Duration::ZERO)).unwrap();
        drop(self);
    }

    /// Closes our sending side (a clean end: FIN).
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// The raw stream, for tests that read bytes themselves.
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Reads raw bytes until EOF (bounded by `PATIENCE` per read).
    pub fn drain_bytes(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let _ = self.reader.read_to_end(&mut all);
        all
    }
}

/// The alias a `HELLO <nick> …` line gives; panics on any other line.
pub fn nick_of_hello(hello: &str) -> String {
    hello
        .strip_prefix("HELLO ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("expected HELLO, got {hello:?}"))
        .to_string()
}

/// Polls `condition` until it holds (for state that has no reply line to wait for, such
/// as a thread count); fails after `PATIENCE`.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// This process's threads, from `/proc/self/task`: a process-wide figure, so only for
/// tests that run alone (their own test binary, or serialised).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// This process's open file descriptors, from `/proc/self/fd` (process-wide too).
pub fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether the server has closed its side of `client`'s connection (IPv4), as the
/// kernel shows it in `/proc/net/tcp`: the server's socket is gone or past
/// `ESTABLISHED` on its way out (FIN-WAIT, CLOSING, LAST-ACK, TIME-WAIT, CLOSE).
/// `false` when the client's own socket is not in the reading: call it until `true`.
///
/// Why not read the client to its end: a server that drops a client which stopped
/// reading closes a socket with data queued, and its FIN waits behind that data, sent
/// only when a zero-window probe finds the window open again. Those probes back off to
/// minutes, so a test reading to the end can wait minutes for something already done.
pub fn closed_by_server(client: &TcpStream) -> bool {
    let (server, me) = (client.peer_addr().unwrap(), client.local_addr().unwrap());
    let hex = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => panic!("closed_by_server: IPv4 only"),
    };
    let (local, remote) = (hex(server), hex(me));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    // Fields: slot, local address, remote address, state (hexadecimal).
    let state_of = |local: &str, remote: &str| {
        table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 3 && fields[1] == local && fields[2] == remote)
                .then(|| fields[3].to_string())
        })
    };
    // The client's own socket is open (we hold it). If it is not in this reading (the
    // file is read in pieces while sockets come and go, and a line can slip between
    // two), nothing can be judged: `false`, ask again. So a wrong address format above
    // never passes for "closed": a caller waiting for `true` would wait in vain.
    if state_of(&remote, &local).is_none() {
        return false;
    }
    let state = state_of(&local, &remote);
    !matches!(state.as_deref(), Some("01") | Some("08"))
}

/// The path of an example's binary (`client`, `loadgen`, `embed`, `headless`), built
/// once per test binary.
///
/// Cargo sets `CARGO_BIN_EXE_<name>` for binaries only, not examples. A plain
/// `cargo test` does build the examples, into `<target>/<profile>/examples/`, next to
/// the `deps/` directory that holds this test binary; but `cargo test --test NAME` does
/// not, and a binary left from an earlier run may be stale. So the test asks cargo to
/// build it: a no-op taking a fraction of a second when it is already up to date.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    example_binary_with(name, &[])
}

/// [`example_binary`] for an example that needs cargo features (`required-features`).
pub fn example_binary_with(name: &str, features: &[&str]) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::{Mutex, OnceLock};

    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let test_exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = test_exe
        .parent() // deps/
        .and_then(|deps| deps.parent()) // <target>/<profile>/
        .expect("the test binary lives in <target>/<profile>/deps/");
    let target_dir = profile_dir.parent().expect("<target>/");
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("profile directory name");
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name, "--target-dir"])
        .arg(target_dir);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    // The "dev" and "test" profiles build into debug/; the others into their name.
    if profile != "debug" {
        build.args(["--profile", profile]);
    }
    let status = build.status().expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {name} failed");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "no {name} binary at {}", binary.display());
    built.insert(name.to_string(), binary.clone());
    binary
}
