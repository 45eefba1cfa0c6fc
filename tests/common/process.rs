//! The server binary as a child process: where it listens (read from its banner), its
//! console on a pipe, and its output lines, for the tests that need the real binary
//! (flags, the console, signals, a node a test can kill).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use super::PATIENCE;

/// A running server process.
pub struct ServerProcess {
    pub child: Child,
    /// Its stdin (the operator console), unless it was given another stdin.
    pub console: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout lines (the console's answers), as they come.
    pub stdout: mpsc::Receiver<String>,
    /// Its stderr lines (the banner and the log), as they come.
    pub stderr: mpsc::Receiver<String>,
}

/// Starts `underworld-line --addr 127.0.0.1:0 ARGS` with debug logging, and waits for
/// its banner ("Underworld-Line on ADDR …") to learn where it listens.
pub fn spawn_server(args: &[&str], stdin: Stdio) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_underworld-line"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "underworld_line=debug")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server binary");
    let (addr_tx, addr_rx) = mpsc::channel();
    let stderr = lines_of(child.stderr.take().unwrap(), move |line| {
        if let Some(rest) = line.strip_prefix("Underworld-Line on ") {
            let _ = addr_tx.send(rest.split(' ').next().unwrap().to_string());
        }
    });
    let stdout = lines_of(child.stdout.take().unwrap(), |_| {});
    let addr = addr_rx
        .recv_timeout(PATIENCE)
        .expect("the banner")
        .parse()
        .unwrap();
    let console = child.stdin.take();
    ServerProcess {
        child,
        console,
        addr,
        stdout,
        stderr,
    }
}

/// Reads `from` line by line on a thread of its own (so a test never blocks on a pipe
/// the server has not written yet), showing each line to `look` before queueing it.
fn lines_of(
    from: impl Read + Send + 'static,
    mut look: impl FnMut(&str) + Send + 'static,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            look(&line);
            let _ = tx.send(line);
        }
    });
    rx
}
