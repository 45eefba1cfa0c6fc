//! Behaviour tests of the example client (`examples/client.rs`).
//!
//! Each test runs the real client binary as a child process, with its stdin and stdout as
//! pipes, the way a script would, against either the real server started in-process or a
//! tiny fake server (a `TcpListener` in a thread) that sends exactly the bytes a test
//! needs, hostile ones included. Nothing waits by sleeping: every wait is for an expected
//! line (or for the end of the client's output), bounded by [`TIMEOUT`].

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use underworld_line::{Config, Server};

/// The longest any single wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Against the real server
// ---------------------------------------------------------------------------------------

/// A message another user sends is pushed to the client and shown at once, and a line
/// typed into the client reaches the other user; `/quit` then ends the client with 0.
#[test]
fn shows_pushed_messages_and_sends_typed_lines() {
    let server = start_server();
    let mut client = Client::start(server.local_addr());
    let client_nick = client.expect_nick();

    let mut other = RawUser::connect(server.local_addr());
    client.expect_line(&format!("--> {} joined lobby", other.nick));

    other.send("hello from the other side");
    client.expect_line(&format!(
        "[lobby] <{}> hello from the other side",
        other.nick
    ));

    client.type_line("hi from the client");
    other.expect_line(&format!("MSG lobby {client_nick} hi from the client"));

    client.type_line("/quit");
    client.expect_line("-- disconnected: quit");
    client.expect_line("-- session lasted ");
    assert_eq!(client.wait_for_exit().code(), Some(0));
    stop(server);
}

/// A message full of escape sequences, relayed by the real server, is shown without a
/// single control character (the server strips them too; see the fake-server test below
/// for the client's own stripping).
#[test]
fn shows_relayed_escape_sequences_as_plain_text() {
    let server = start_server();
    let mut client = Client::start(server.local_addr());
    client.expect_nick();
    let mut other = RawUser::connect(server.local_addr());

    other.send("\x1b[31mred\x1b]0;title\x07 text");
    let shown = client.expect_line(&format!("[lobby] <{}> ", other.nick));
    assert_no_controls(&shown);
    assert!(shown.ends_with("[31mred]0;title text"), "{shown:?}");
    stop(server);
}

/// Replayed history is shown with its time of day, and a list (`/who`) is shown one
/// member a line, then its count.
#[test]
fn shows_history_and_lists_readably() {
    let server = start_server();
    let mut other = RawUser::connect(server.local_addr());
    other.send("said before you came");
    other.expect_line(&format!("MSG lobby {} said before you came", other.nick));

    let mut client = Client::start(server.local_addr());
    let client_nick = client.expect_nick(); // HELLO comes first, then the replay
    let replayed = client.expect_line_matching("replaying the earlier message", |line| {
        line.ends_with(&format!(" [lobby] <{}> said before you came", other.nick))
    });
    let (time, _) = replayed.split_once(' ').expect("a time before the message");
    let is_time_of_day = time.len() == 5
        && time.as_bytes()[2] == b':'
        && time.chars().filter(char::is_ascii_digit).count() == 4;
    assert!(is_time_of_day, "not HH:MM: {replayed:?}");

    client.type_line("/who");
    client.expect_line(&format!("   {}", other.nick));
    client.expect_line("-- 2 in this room");
    client.type_line("/quit");
    assert_eq!(client.wait_for_exit().code(), Some(0));
    other.expect_line(&format!("LEAVE lobby {client_nick} quit"));
    stop(server);
}

/// When the server shuts down, the client says why (the `BYE` reason), how long the
/// session lasted, and exits with 1: the user did not ask to leave.
#[test]
fn exits_with_1_and_the_bye_reason_when_the_server_shuts_down() {
    let server = start_server();
    let mut client = Client::start(server.local_addr());
    client.expect_nick();

    server.shutdown();
    client.expect_line("-- disconnected: server shutting down");
    client.expect_line("-- session lasted ");
    assert_eq!(client.wait_for_exit().code(), Some(1));
    server.join();
}

/// The end of stdin (a script that ran out of lines) leaves politely: the client sends
/// `/quit`, waits for the `BYE`, and exits with 0.
#[test]
fn end_of_stdin_quits_politely() {
    let server = start_server();
    let mut client = Client::start(server.local_addr());
    let client_nick = client.expect_nick();
    let mut other = RawUser::connect(server.local_addr());
    client.expect_line(&format!("--> {} joined lobby", other.nick));

    client.close_stdin();
    other.expect_line(&format!("LEAVE lobby {client_nick} quit"));
    client.expect_line("-- disconnected: quit");
    assert_eq!(client.wait_for_exit().code(), Some(0));
    stop(server);
}

// ---------------------------------------------------------------------------------------
// Against a fake server that sends exactly what the test wants
// ---------------------------------------------------------------------------------------

/// The client strips every control character itself, whatever the server sends: ESC
/// (so no ANSI/OSC sequence survives), BEL, a bare CR, C1 controls, bidi overrides and
/// line separators, in the text and in the nick alike. It also drops a line longer than
/// its cap and goes on with the next one.
#[test]
fn strips_control_characters_from_a_hostile_server() {
    let hostile_text = "\x1b[31mred\x1b]0;title\x07 te\u{9b}2Jxt\u{202e}cba\u{2066}\u{2028}!\r";
    let over_long = "MSG lobby Mallory ".to_string() + &"x".repeat(100 * 1024);
    let script = format!(
        "HELLO Visitor welcome\n\
         MSG lobby Mal\x1blory {hostile_text}\n\
         {over_long}\n\
         NOTICE still \u{85}here\n\
         BYE kicked: enough\n"
    );
    let (addr, fake) = fake_server(script.into_bytes());
    let mut client = Client::start(addr);

    client.expect_line("-- you are Visitor: welcome");
    let shown = client.expect_line("[lobby] <Mallory> ");
    assert_eq!(shown, "[lobby] <Mallory> [31mred]0;title te2Jxtcba!");
    assert_no_controls(&shown);
    client.expect_line("-!- the server sent an over-long line; it was dropped");
    client.expect_line("-!- still here");
    client.expect_line("-- disconnected: kicked: enough");
    assert_eq!(client.wait_for_exit().code(), Some(1));
    fake.join().expect("fake server thread");
}

/// A server that closes without a `BYE` is reported as such, with exit code 1.
#[test]
fn reports_a_close_without_bye() {
    let (addr, fake) = fake_server(b"HELLO Visitor welcome\n".to_vec());
    let mut client = Client::start(addr);
    client.expect_line("-- you are Visitor: welcome");
    client.expect_line("-- disconnected: connection closed by server");
    client.expect_line("-- session lasted ");
    assert_eq!(client.wait_for_exit().code(), Some(1));
    fake.join().expect("fake server thread");
}

// ---------------------------------------------------------------------------------------
// Arguments and exit codes
// ---------------------------------------------------------------------------------------

/// A server that cannot be reached is exit code 1 (the same as a server that closed the
/// connection), not 2: that code is kept for usage errors.
#[test]
fn an_unreachable_server_is_exit_code_1() {
    // A port that was free a moment ago and that nobody listens on now: refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let output = run_client(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to 127.0.0.1:"), "{stderr}");
}

/// An unknown flag is a usage error (exit code 2) whose message names the flag, instead
/// of being taken for a server address; `--help` prints the usage and exits 0.
#[test]
fn an_unknown_flag_is_a_usage_error_and_help_is_not() {
    let output = run_client(&["--bogus"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown flag --bogus"), "{stderr}");
    assert!(stderr.contains("usage:"), "{stderr}");

    let output = run_client(&["--help"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("usage:"));
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The real server on a free port, without the flood limit (tests type fast).
fn start_server() -> Server {
    let config = Config {
        rate_limit: None,
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", config).expect("bind the server")
}

fn stop(server: Server) {
    server.shutdown();
    server.join();
}

/// Runs the client to its end with these arguments and nothing on stdin.
fn run_client(args: &[&str]) -> std::process::Output {
    Command::new(common::example_binary("client"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the example client")
}

/// A fake server for one connection: sends `script`, half-closes, then reads until the
/// client leaves. (Closing a socket that still has unread input makes the kernel send a
/// reset, which could destroy script bytes the client has not read yet.)
fn fake_server(script: Vec<u8>) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
    let addr = listener.local_addr().expect("fake server address");
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept the client");
        stream.write_all(&script).expect("send the script");
        // Half-close: the client sees EOF after the script, as after a real server's BYE.
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the write side");
        // Drain whatever the client sends until it closes, bounded by TIMEOUT.
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    (addr, handle)
}

/// The example client, running as a child process with piped stdin and stdout.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The client's stdout, line by line, from a reader thread; disconnected at its EOF.
    lines: Receiver<String>,
    /// Every line seen so far, for failure messages.
    seen: Vec<String>,
}

impl Client {
    fn start(addr: SocketAddr) -> Client {
        let mut child = Command::new(common::example_binary("client"))
            .arg(addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example client");
        let stdout = child.stdout.take().expect("client stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Client {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the `-- you are NICK: ...` line and returns NICK.
    fn expect_nick(&mut self) -> String {
        let line = self.expect_line("-- you are ");
        let rest = &line["-- you are ".len()..];
        rest.split(':').next().expect("a nick").to_string()
    }

    /// Waits for a line that starts with `prefix`, skipping the others; returns it.
    fn expect_line(&mut self, prefix: &str) -> String {
        self.expect_line_matching(&format!("starting {prefix:?}"), |line| {
            line.starts_with(prefix)
        })
    }

    /// Waits for a line for which `wanted` is true, skipping the others; returns it.
    fn expect_line_matching(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("waited {TIMEOUT:?} for a line {what}; saw {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the client ended before printing a line {what}; saw {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the client's stdin");
        stdin.flush().expect("flush the client's stdin");
    }

    fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits (bounded) for the end of the client's output, then for its exit status.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the client did not exit within {TIMEOUT:?}; saw {:#?}",
                        self.seen
                    )
                }
            }
        }
        // Its stdout is closed, so the process has ended (or is ending): wait is short.
        self.child.wait().expect("wait for the client")
    }
}

impl Drop for Client {
    /// A failed test must not leave a client process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user speaking the raw protocol over TCP, like `nc`.
struct RawUser {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    nick: String,
}

impl RawUser {
    fn connect(addr: SocketAddr) -> RawUser {
        let stream = TcpStream::connect(addr).expect("connect the raw user");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the raw socket"));
        let mut user = RawUser {
            stream,
            reader,
            nick: String::new(),
        };
        let hello = user.expect_line("HELLO ");
        user.nick = hello
            .split(' ')
            .nth(1)
            .expect("a nick in HELLO")
            .to_string();
        user
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send from the raw user");
    }

    /// Reads lines (each bounded by the socket's read timeout) until one starts with
    /// `prefix`.
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    let line = line.trim_end_matches(['\r', '\n']).to_string();
                    if line.starts_with(prefix) {
                        return line;
                    }
                    seen.push(line);
                }
                Err(err) => {
                    panic!("raw user read failed ({err}) waiting for {prefix:?}; saw {seen:#?}")
                }
            }
        }
        panic!("the raw user never got a line starting {prefix:?}; saw {seen:#?}");
    }
}

/// No character the client promises never to print from the network.
fn assert_no_controls(shown: &str) {
    let bad = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(
                c,
                '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
            )
            || matches!(c, '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
    };
    assert!(
        !shown.chars().any(bad),
        "control character printed: {shown:?}"
    );
}
