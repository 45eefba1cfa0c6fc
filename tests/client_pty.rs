//! The example client at a terminal, where it uses its line editor.
//!
//! Each test runs the real client binary in a pseudo-terminal (`openpty`, through `nix`)
//! against the real server started in-process, types into the terminal as a person
//! would, and reads the screen the way a terminal draws it: everything the client writes
//! is fed to a `vt100` terminal emulator, and the assertions are about its rows and its
//! cursor. Nothing waits by sleeping: every wait is for the screen (or another user) to
//! show something, bounded by [`PATIENCE`].

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use common::{start_server, test_config, Client, PATIENCE};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

const ROWS: u16 = 24;
const COLUMNS: u16 = 100;
const CTRL_C: &[u8] = b"\x03";
const CTRL_D: &[u8] = b"\x04";
const TAB: &[u8] = b"\t";

/// What you have typed stays on screen, with the cursor after it, while other users'
/// messages arrive: two messages pushed by another user are printed above the line
/// being edited, not through it. Then Ctrl-C clears the line, and Ctrl-D on the empty
/// line quits politely: the other user sees an ordinary `quit`, the client prints the
/// session time, and exits 0.
#[test]
fn typed_text_stays_on_screen_while_messages_arrive() {
    let server = start_server(test_config());
    let mut terminal = Terminal::start(server.local_addr());
    terminal.wait_for("the greeting", |screen| screen.contains("-- you are "));
    let mut other = Client::connect(server.local_addr());
    terminal.wait_for("the other user's arrival", |screen| {
        screen.contains(&format!("--> {} joined lobby", other.nick))
    });

    terminal.type_keys(b"hello half typ");
    terminal.wait_for("the typed text", |screen| {
        screen
            .prompt_row()
            .is_some_and(|row| row == "> hello half typ")
    });
    other.send("first push");
    other.send("second push");
    // The editor prints a message, then draws the edited line again: wait for both.
    let screen = terminal.wait_for("both pushed messages, then the edited line", |screen| {
        screen.contains(&format!("[lobby] <{}> second push", other.nick))
            && screen.prompt_row() == Some("> hello half typ")
    });

    let first = screen.row_index(&format!("<{}> first push", other.nick));
    let second = screen.row_index(&format!("<{}> second push", other.nick));
    let prompt = screen.row_index("> hello half typ");
    assert!(
        first < second && second < prompt,
        "messages not above the edited line:\n{}",
        screen.text
    );
    assert_eq!(
        screen.rows[prompt], "> hello half typ",
        "the edited line is not intact:\n{}",
        screen.text
    );
    assert_eq!(
        screen.cursor,
        (prompt, "> hello half typ".len()),
        "the cursor moved:\n{}",
        screen.text
    );

    terminal.type_keys(CTRL_C);
    terminal.wait_for("Ctrl-C to clear the line", |screen| {
        screen.prompt_row().is_some_and(|row| row == ">")
    });
    terminal.type_keys(CTRL_D);
    other.expect_prefix("LEAVE lobby ");
    terminal.wait_for("the session time", |screen| {
        screen.contains("-- disconnected: quit") && screen.contains("-- session lasted ")
    });
    assert_eq!(terminal.wait_for_exit().code(), Some(0));
    server.shutdown();
    server.join();
}

/// A line wider than the terminal wraps onto a second row; a message that arrives then
/// is printed above both rows, and no piece of the typed line is left among the
/// messages (the first row of a long line used to stay behind).
#[test]
fn a_line_wider_than_the_terminal_stays_whole() {
    let server = start_server(test_config());
    let mut terminal = Terminal::start(server.local_addr());
    terminal.wait_for("the greeting", |screen| screen.contains("-- you are "));
    let mut other = Client::connect(server.local_addr());
    terminal.wait_for("the other user's arrival", |screen| {
        screen.contains(&format!("--> {} joined lobby", other.nick))
    });

    let long: String = (0..130)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (first_row, second_row) = long.split_at(usize::from(COLUMNS) - "> ".len());
    terminal.type_keys(long.as_bytes());
    terminal.wait_for("the long line on two rows", |screen| {
        screen.prompt_row() == Some(second_row)
    });
    other.send("meanwhile");
    let screen = terminal.wait_for("the message, then the long line again", |screen| {
        screen.contains(&format!("<{}> meanwhile", other.nick))
            && screen.prompt_row() == Some(second_row)
    });
    let message = screen.row_index(&format!("<{}> meanwhile", other.nick));
    let typed_rows: Vec<usize> = (0..screen.rows.len())
        .filter(|&row| screen.rows[row].contains(&first_row[10..40]))
        .collect();
    assert_eq!(
        typed_rows,
        [message + 1],
        "the typed line's first row is not (only) right under the message:\n{}",
        screen.text
    );
    assert_eq!(screen.rows[message + 1], format!("> {first_row}"));
    server.shutdown();
    server.join();
}

/// Tab completes a nick the client has seen (`/w Qu<Tab>`) and a command name
/// (`/jo<Tab>`); Ctrl-C on an empty line quits with 0, like Ctrl-D.
#[test]
fn tab_completes_nicks_and_commands() {
    let server = start_server(test_config());
    let mut terminal = Terminal::start(server.local_addr());
    terminal.wait_for("the greeting", |screen| screen.contains("-- you are "));
    // Not an adjective-and-animal name: a random alias can never take it first (with
    // `QuietHeron` here, one run in about a thousand failed).
    let _other = Client::named(server.local_addr(), "Quentin");
    terminal.wait_for("the other user's new nick", |screen| {
        screen.contains("is now known as Quentin")
    });

    terminal.type_keys(b"/w Qu");
    terminal.type_keys(TAB);
    terminal.wait_for("the nick completed", |screen| {
        screen.prompt_row().is_some_and(|row| row == "> /w Quentin")
    });
    terminal.type_keys(b"\x15/jo"); // Ctrl-U erases the line first
    terminal.type_keys(TAB);
    terminal.wait_for("the command completed", |screen| {
        screen.prompt_row().is_some_and(|row| row == "> /join")
    });

    terminal.type_keys(b"\x15");
    terminal.wait_for("an empty line", |screen| {
        screen.prompt_row().is_some_and(|row| row == ">")
    });
    terminal.type_keys(CTRL_C);
    terminal.wait_for("the session time", |screen| {
        screen.contains("-- session lasted ")
    });
    assert_eq!(terminal.wait_for_exit().code(), Some(0));
    server.shutdown();
    server.join();
}

/// When the server ends the session while you are typing, the client says why, exits
/// with 1, and leaves the terminal as it found it (line editing and echo back on), so
/// the shell after it works.
#[test]
fn a_server_shutdown_mid_edit_restores_the_terminal() {
    let server = start_server(test_config());
    let mut terminal = Terminal::start(server.local_addr());
    terminal.wait_for("the greeting", |screen| screen.contains("-- you are "));
    terminal.type_keys(b"never sent");
    terminal.wait_for("the typed text", |screen| {
        screen.prompt_row().is_some_and(|row| row == "> never sent")
    });

    server.shutdown();
    terminal.wait_for("the reason and the session time", |screen| {
        screen.contains("-- disconnected: server shutting down")
            && screen.contains("-- session lasted ")
    });
    assert_eq!(terminal.wait_for_exit().code(), Some(1));
    let mode = tcgetattr(&terminal.master).expect("read the terminal's mode");
    assert!(
        mode.local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "the terminal was left in raw mode: {:?}",
        mode.local_flags
    );
    server.join();
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The example client running in a pseudo-terminal, and what its screen shows.
struct Terminal {
    child: Child,
    /// Our side of the pseudo-terminal: what we write is typed, what we read is drawn.
    master: OwnedFd,
    keyboard: File,
    /// The client's output, in chunks, from a reader thread; disconnected at its end.
    output: Receiver<Vec<u8>>,
    screen: vt100::Parser,
}

impl Terminal {
    fn start(addr: SocketAddr) -> Terminal {
        let size = Winsize {
            ws_row: ROWS,
            ws_col: COLUMNS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("open a pseudo-terminal");
        let slave = |what: &str| {
            let fd = pty
                .slave
                .try_clone()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            Stdio::from(fd)
        };
        let child = Command::new(common::example_binary("client"))
            .arg(addr.to_string())
            .env("TERM", "xterm-256color") // CI may have none, and rustyline needs one
            .env_remove("NO_COLOR")
            .stdin(slave("stdin"))
            .stdout(slave("stdout"))
            .stderr(slave("stderr"))
            .spawn()
            .expect("start the example client");
        // Only the child may keep the terminal's other side open: then reading ours ends
        // (with EIO) when the client has exited.
        drop(pty.slave);

        let mut reader = File::from(pty.master.try_clone().expect("clone the master"));
        let (chunks, output) = mpsc::channel();
        thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = reader.read(&mut buffer) {
                if chunks.send(buffer[..read].to_vec()).is_err() {
                    break;
                }
            }
        });
        let keyboard = File::from(pty.master.try_clone().expect("clone the master"));
        let rows = NonZeroU16::new(ROWS).expect("rows");
        let columns = NonZeroU16::new(COLUMNS).expect("columns");
        Terminal {
            child,
            master: pty.master,
            keyboard,
            output,
            screen: vt100::Parser::new(rows, columns, 0),
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.keyboard
            .write_all(keys)
            .expect("type into the terminal");
    }

    /// Reads the client's output until the screen satisfies `wanted`; returns it.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Screen) -> bool) -> Screen {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = Screen::of(self.screen.screen());
            if wanted(&screen) {
                return screen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.screen.process(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "waited {PATIENCE:?} for {what}; the screen:\n{}",
                        screen.text
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the client ended before showing {what}; the screen:\n{}",
                        screen.text
                    )
                }
            }
        }
    }

    /// Waits (bounded) for the end of the client's output, then for its exit status.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.screen.process(&chunk),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the client did not exit within {PATIENCE:?}; the screen:\n{}",
                    self.screen.screen().contents()
                ),
            }
        }
        // Its side of the terminal is closed, so the process has ended: wait is short.
        self.child.wait().expect("wait for the client")
    }
}

impl Drop for Terminal {
    /// A failed test must not leave a client process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the screen: its rows (trailing spaces trimmed) and the cursor.
struct Screen {
    rows: Vec<String>,
    text: String,
    /// (row, column), counted from 0.
    cursor: (usize, usize),
}

impl Screen {
    fn of(screen: &vt100::Screen) -> Screen {
        let rows: Vec<String> = screen
            .rows(0, COLUMNS)
            .map(|row| row.trim_end().to_string())
            .collect();
        let (row, column) = screen.cursor_position();
        Screen {
            text: rows.join("\n"),
            rows,
            cursor: (usize::from(row), usize::from(column)),
        }
    }

    fn contains(&self, text: &str) -> bool {
        self.rows.iter().any(|row| row.contains(text))
    }

    /// The row that holds the cursor (the editor's last row while you type).
    fn prompt_row(&self) -> Option<&str> {
        self.rows.get(self.cursor.0).map(String::as_str)
    }

    /// The index of the last row containing `text`; panics if there is none.
    fn row_index(&self, text: &str) -> usize {
        self.rows
            .iter()
            .rposition(|row| row.contains(text))
            .unwrap_or_else(|| panic!("no row contains {text:?}; the screen:\n{}", self.text))
    }
}
