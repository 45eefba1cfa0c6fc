//! A friendlier terminal client for Underworld-Line, with a real line editor.
//!
//! Run it (the server first, in another terminal):
//!
//! ```sh
//! cargo run --release                              # the server, on 127.0.0.1:2022
//! cargo run --example client                       # connects to 127.0.0.1:2022
//! cargo run --example client -- 192.0.2.7:2022     # or to HOST:PORT
//! printf 'hi\n/quit\n' | cargo run --example client    # scripted: pipes work too
//! ```
//!
//! Type a line to send it to your room; every command of the server (`/nick`, `/join`,
//! `/w`, `/help`, ...) is typed as is. `/quit`, Ctrl-D, or Ctrl-C on an empty line leave.
//!
//! # Two threads
//!
//! - The **reader thread** reads the socket and shows every server line the moment it
//!   arrives: the server pushes, so the client never polls. It renders each protocol line
//!   for people (`MSG lobby Bob hi` becomes `[lobby] <Bob> hi`), after stripping every
//!   control character the network sent. When the connection ends (`BYE` or EOF) it is
//!   the reader thread that ends the process: see [`finish`].
//! - The **main thread** reads what you type and sends each line to the server. At
//!   `/quit`, Ctrl-D, Ctrl-C on an empty line, or the end of a pipe, it sends `/quit` and
//!   waits (at most [`QUIT_GRACE`]) for the reader thread to see the server's `BYE`.
//!
//! # The line editor
//!
//! At a terminal (stdin and stdout both terminals), the main thread reads with
//! [rustyline](https://docs.rs/rustyline), and the reader thread prints through its
//! `ExternalPrinter`: the editor clears the line being edited, prints the message above
//! it, and draws your half-typed line again with the cursor where it was. It also gives
//! history (Up/Down) and Tab completion of command names and of the nicks seen so far.
//! Without a terminal (a pipe, a file) there is no editor: lines are read and printed
//! plainly, so scripts see nothing but text.
//!
//! Why rustyline: it is the one well-kept Rust line editor whose printer from another
//! thread is immediate (it wakes the editor through a pipe) and that costs a handful of
//! small crates. reedline (nushell's) also has an external printer, but it polls for it
//! (100 ms by default) and brings crossterm, serde and chrono; linefeed had the right
//! design (a lock to write above the prompt) but has not been maintained since 2020;
//! a hand-made editor on crossterm would be hundreds of lines of cursor arithmetic.
//!
//! Exit codes: 0 when you quit, 1 when the server closed the connection on its own
//! (`BYE server shutting down`, a kick, ...) or could not be reached, 2 for a usage error.
//!
//! The pure functions (framing, stripping, rendering, completion) have unit tests at the
//! end of this file: `cargo test --example client`. The behaviour tests, which run this
//! client against a server, are in `tests/client.rs` (pipes) and `tests/client_pty.rs`
//! (a pseudo-terminal, for the line editor).

use std::collections::BTreeSet;
use std::env;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{
    Cmd, ConditionalEventHandler, Config, Context, Editor, Event, EventContext, EventHandler,
    ExternalPrinter, Helper, KeyEvent, Movement, RepeatCount,
};

/// Where `cargo run --example client` connects without an argument: the server's default.
const DEFAULT_ADDR: &str = "127.0.0.1:2022";

/// The longest line the client accepts, from the server or from you (the server's own
/// limit is far lower: 1024 bytes by default). Longer lines from the server are discarded
/// as they arrive, so a hostile server cannot make the client buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// How long to wait for the server's `BYE` after sending `/quit`.
const QUIT_GRACE: Duration = Duration::from_secs(1);

/// How long the reader thread lets the line editor draw the last lines before it puts
/// the terminal back and ends the process (see [`Screen::close`]).
const EDITOR_CATCH_UP: Duration = Duration::from_millis(100);

/// The prompt shown in front of the line being edited.
const PROMPT: &str = "> ";

/// The commands Tab completes, as typed (the server's `/help` lists the same).
const COMMANDS: [&str; 11] = [
    "/help", "/join", "/me", "/msg", "/nick", "/ping", "/quit", "/rooms", "/users", "/w", "/who",
];

const USAGE: &str = "\
usage: cargo run --example client [-- [HOST:PORT]]

  HOST:PORT    the server (default 127.0.0.1:2022)
  -h, --help   this text

At a terminal: Up/Down for history, Tab completes commands and nicks,
Ctrl-D or Ctrl-C on an empty line quits. Exit code: 0 after a quit,
1 when the server closed the connection or could not be reached, 2 for a usage error.";

fn main() -> ExitCode {
    let addr = match parse_args(env::args().skip(1)) {
        Ok(Args::Connect(addr)) => addr,
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("client: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stream = match TcpStream::connect(&addr) {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!("client: cannot connect to {addr}: {err}");
            return ExitCode::from(1);
        }
    };
    // One handle for each thread: the reader thread reads, the main thread writes.
    let read_half = match stream.try_clone() {
        Ok(read_half) => read_half,
        Err(err) => {
            eprintln!("client: cannot clone the socket: {err}");
            return ExitCode::from(1);
        }
    };

    let console = Console::detect();
    let session = Arc::new(Session::new(console.colours));
    if console.interactive {
        match LineEditor::new(&session) {
            Ok((editor, screen)) => {
                start_reader(read_half, screen, &session);
                editor.send_lines(stream, &session);
            }
            Err(err) => {
                eprintln!("client: cannot start the line editor: {err}");
                return ExitCode::from(1);
            }
        }
    } else {
        start_reader(read_half, Screen::Plain, &session);
        send_stdin(stream, &session);
    }
    give_up_waiting(&session)
}

// ---------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Args {
    Connect(String),
    Help,
}

/// `[HOST:PORT]`, or `-h`/`--help`. Anything else starting with `-` is an unknown flag.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut addr = None;
    for arg in args {
        if arg == "-h" || arg == "--help" {
            return Ok(Args::Help);
        }
        if arg.starts_with('-') {
            return Err(format!("unknown flag {arg}"));
        }
        if addr.is_some() {
            return Err(format!("unexpected argument {arg:?}"));
        }
        if !looks_like_host_port(&arg) {
            return Err(format!("expected HOST:PORT, got {arg:?}"));
        }
        addr = Some(arg);
    }
    Ok(Args::Connect(
        addr.unwrap_or_else(|| DEFAULT_ADDR.to_string()),
    ))
}

/// `host:2022`, `[::1]:2022`: something before a colon, a port number after it.
fn looks_like_host_port(arg: &str) -> bool {
    match arg.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

// ---------------------------------------------------------------------------------------
// What both threads share
// ---------------------------------------------------------------------------------------

struct Session {
    /// When the connection was made, for the "session lasted" line.
    started: Instant,
    /// Set by the main thread *before* it sends `/quit`, so that when the reader thread
    /// sees the connection end it knows the user asked for it (exit 0) rather than the
    /// server closing on its own (exit 1).
    user_quit: AtomicBool,
    /// Set by whichever thread prints the end of the session, so only one does.
    ending: AtomicBool,
    /// Our nick and the others', kept by the reader thread for colours and Tab.
    nicks: Mutex<Nicks>,
    /// Colour the output (stdout is a terminal and `NO_COLOR` is not set).
    colours: bool,
}

impl Session {
    fn new(colours: bool) -> Session {
        Session {
            started: Instant::now(),
            user_quit: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            nicks: Mutex::new(Nicks::default()),
            colours,
        }
    }

    /// True for the first caller only: that thread prints the last lines and exits.
    fn claim_ending(&self) -> bool {
        !self.ending.swap(true, Ordering::SeqCst)
    }

    fn nicks(&self) -> std::sync::MutexGuard<'_, Nicks> {
        // A panic elsewhere cannot leave a set of names inconsistent: keep using it.
        self.nicks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn summary(&self) -> String {
        let text = format!(
            "-- session lasted {}",
            format_duration(self.started.elapsed())
        );
        paint(&text, Paint::Server, self.colours)
    }
}

/// We only get here when the user quit (or the socket broke) and the reader thread has
/// not ended the process within [`QUIT_GRACE`]: the server never said `BYE`.
fn give_up_waiting(session: &Session) -> ExitCode {
    if !session.claim_ending() {
        // Except that it did, just now: the reader thread is finishing and will exit the
        // process. Printing here too would show the last lines twice.
        loop {
            thread::park();
        }
    }
    let colours = session.colours;
    println!(
        "{}",
        paint(
            "-- no answer from the server; leaving anyway",
            Paint::Server,
            colours
        )
    );
    println!("{}", session.summary());
    if session.user_quit.load(Ordering::SeqCst) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// ---------------------------------------------------------------------------------------
// The main thread without a terminal: stdin -> socket
// ---------------------------------------------------------------------------------------

/// Sends every stdin line to the server until the user quits, stdin ends or the socket
/// breaks, then waits for the reader thread to end the process.
fn send_stdin(mut socket: TcpStream, session: &Session) {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        match read_line_capped(&mut stdin, &mut line, MAX_LINE) {
            Ok(Frame::Line) => {}
            Ok(Frame::TooLong) => {
                println!("{}", too_long_notice(session.colours));
                continue;
            }
            // End of stdin (the end of a pipe), or stdin failing: leave politely.
            Ok(Frame::Eof) | Err(_) => {
                send_quit(&mut socket, session);
                break;
            }
        }
        if !send_typed_line(&mut socket, &line, session) {
            break;
        }
    }
    wait_for_bye();
}

/// Sends one line the user typed. False when the session is ending: the line was
/// `/quit`, or the socket is broken (the reader thread will see the connection end).
fn send_typed_line(socket: &mut TcpStream, line: &[u8], session: &Session) -> bool {
    let quitting = is_quit_command(line);
    if quitting {
        // Set before sending: the BYE may arrive before write_all even returns.
        session.user_quit.store(true, Ordering::SeqCst);
    }
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    let sent = socket.write_all(&bytes);
    !quitting && sent.is_ok()
}

/// Leaves politely: the others see an ordinary `quit`, not a dropped connection.
fn send_quit(socket: &mut TcpStream, session: &Session) {
    session.user_quit.store(true, Ordering::SeqCst);
    let _ = socket.write_all(b"/quit\n");
}

/// The reader thread ends the process as soon as the server's `BYE` (or EOF) arrives;
/// this sleep is only the upper bound for a server that never answers.
fn wait_for_bye() {
    thread::sleep(QUIT_GRACE);
}

/// True for `/quit` and `/quit REASON` (command names are case-insensitive).
fn is_quit_command(line: &[u8]) -> bool {
    let command = line.split(|&b| b == b' ').next().unwrap_or_default();
    command.eq_ignore_ascii_case(b"/quit")
}

fn too_long_notice(colours: bool) -> String {
    paint(
        "-!- that line is too long; it was not sent",
        Paint::Server,
        colours,
    )
}

// ---------------------------------------------------------------------------------------
// The main thread at a terminal: the line editor -> socket
// ---------------------------------------------------------------------------------------

/// rustyline's editor, set up for chatting.
struct LineEditor {
    editor: Editor<ChatHelper, DefaultHistory>,
}

impl LineEditor {
    /// The editor, and the [`Screen`] through which the reader thread prints above it.
    fn new(session: &Arc<Session>) -> rustyline::Result<(LineEditor, Screen)> {
        // Saved before the editor ever switches the terminal to raw mode, so that the
        // reader thread can put it back if the session ends in the middle of an edit.
        let saved_mode = termios::tcgetattr(io::stdin())?;
        let config = Config::builder()
            .auto_add_history(false) // we add only what was sent (not blank lines)
            .bracketed_paste(false) // nothing of ours left in the terminal if we exit mid-edit
            .build();
        let mut editor = Editor::with_config(config)?;
        editor.set_helper(Some(ChatHelper {
            session: Arc::clone(session),
        }));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(CtrlCClearsOrQuits)),
        );
        let printer = editor.create_external_printer()?;
        let screen = Screen::AboveEditor {
            printer: Box::new(printer),
            saved_mode,
        };
        Ok((LineEditor { editor }, screen))
    }

    /// Sends each line you enter until you quit or the socket breaks, then waits for the
    /// reader thread to end the process.
    fn send_lines(mut self, mut socket: TcpStream, session: &Session) {
        loop {
            match self.editor.readline(PROMPT) {
                Ok(line) => {
                    if line.len() > MAX_LINE {
                        println!("{}", too_long_notice(session.colours));
                        continue;
                    }
                    if !line.trim().is_empty() {
                        let _ = self.editor.add_history_entry(line.as_str());
                    }
                    if !send_typed_line(&mut socket, line.as_bytes(), session) {
                        break;
                    }
                }
                // Ctrl-C on an empty line (see CtrlCClearsOrQuits) or Ctrl-D: leave.
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => {
                    send_quit(&mut socket, session);
                    break;
                }
                Err(err) => {
                    eprintln!("client: the line editor failed: {err}");
                    send_quit(&mut socket, session);
                    break;
                }
            }
        }
        wait_for_bye();
    }
}

/// Ctrl-C on a line with text clears the line (as in a shell); on an empty line it does
/// what Ctrl-C does by default in rustyline: `readline` returns `Interrupted`, and we quit.
struct CtrlCClearsOrQuits;

impl ConditionalEventHandler for CtrlCClearsOrQuits {
    fn handle(
        &self,
        _event: &Event,
        _count: RepeatCount,
        _positive: bool,
        context: &EventContext,
    ) -> Option<Cmd> {
        if context.line().is_empty() {
            None // the default: Interrupt
        } else {
            Some(Cmd::Kill(Movement::WholeLine))
        }
    }
}

/// What the editor asks us for: only completion; no hints, colours or validation.
struct ChatHelper {
    session: Arc<Session>,
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _context: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let nicks = self.session.nicks();
        Ok(completions(line, pos, &nicks))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}
impl Highlighter for ChatHelper {}
impl Validator for ChatHelper {}
impl Helper for ChatHelper {}

/// What Tab offers for the word before the cursor: the command names when it is the
/// first word and starts with `/`, otherwise the nicks seen so far (not ours), both
/// matched without regard to case. Returns where the word starts and the candidates,
/// each with a space after it so you can go on typing.
fn completions(line: &str, pos: usize, nicks: &Nicks) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(' ').map_or(0, |space| space + 1);
    let word = &before[start..];
    let matches = |candidate: &str| {
        candidate.len() >= word.len()
            && candidate.is_char_boundary(word.len())
            && candidate[..word.len()].eq_ignore_ascii_case(word)
    };
    let candidates = if start == 0 && word.starts_with('/') {
        COMMANDS
            .iter()
            .filter(|command| matches(command))
            .map(|command| format!("{command} "))
            .collect()
    } else {
        nicks
            .others()
            .filter(|nick| matches(nick))
            .map(|nick| format!("{nick} "))
            .collect()
    };
    (start, candidates)
}

// ---------------------------------------------------------------------------------------
// The reader thread: socket -> screen
// ---------------------------------------------------------------------------------------

/// Where the reader thread's lines go.
enum Screen {
    /// Plain stdout (a pipe, a file, or a terminal we only write to): one line each.
    Plain,
    /// Above the line being edited: the line editor prints the line and redraws yours.
    AboveEditor {
        printer: Box<dyn ExternalPrinter + Send>,
        /// The terminal's mode before the editor changed it.
        saved_mode: Termios,
    },
}

impl Screen {
    /// Shows one line, at once (the other side of a pipe is waiting for it).
    fn show(&mut self, line: String) {
        // Errors are ignored: if the terminal is gone there is nobody left to tell.
        match self {
            Screen::Plain => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            // The newline matters when the editor is not reading (between two lines):
            // the printer then writes the text as it is, straight to the terminal.
            Screen::AboveEditor { printer, .. } => {
                let _ = printer.print(format!("{line}\n"));
            }
        }
    }

    /// Makes the terminal fit for the shell again before the process exits.
    ///
    /// When the server ends the session while you are typing, the editor is still in
    /// `readline`, with the terminal in raw mode, and rustyline offers no way to make
    /// `readline` return from another thread (its issue 780). So this thread puts the
    /// terminal back itself: it lets the editor draw the lines just printed (it does so
    /// in microseconds; [`EDITOR_CATCH_UP`] is a wide margin), restores the saved mode,
    /// and erases the prompt row with the unsent text. After a quit the editor is no
    /// longer reading and all of this is harmless.
    fn close(&mut self, editor_may_be_reading: bool) {
        if let Screen::AboveEditor { saved_mode, .. } = self {
            if editor_may_be_reading {
                thread::sleep(EDITOR_CATCH_UP);
            }
            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, saved_mode);
            let mut out = io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}

fn start_reader(socket: TcpStream, screen: Screen, session: &Arc<Session>) {
    let session = Arc::clone(session);
    let spawned = thread::Builder::new().name("reader".into()).spawn(move || {
        let mut screen = screen;
        let ending = read_server(BufReader::new(socket), &mut screen, &session);
        finish(ending, &mut screen, &session)
    });
    if let Err(err) = spawned {
        eprintln!("client: cannot start the reader thread: {err}");
        process::exit(1);
    }
}

/// How the connection ended, as the reader thread saw it.
enum Ending {
    /// The server said `BYE <reason>`: the last line of every session, by protocol. It
    /// has been shown (as `-- disconnected: <reason>`) like any other line.
    Bye,
    /// The connection closed or failed without a `BYE`.
    Closed,
}

/// Shows every line the server sends until the connection ends.
fn read_server(mut socket: impl BufRead, screen: &mut Screen, session: &Session) -> Ending {
    let colours = session.colours;
    let mut raw = Vec::new();
    loop {
        match read_line_capped(&mut socket, &mut raw, MAX_LINE) {
            Ok(Frame::Line) => {}
            Ok(Frame::TooLong) => {
                screen.show(paint(
                    "-!- the server sent an over-long line; it was dropped",
                    Paint::Server,
                    colours,
                ));
                continue;
            }
            Ok(Frame::Eof) | Err(_) => return Ending::Closed,
        }
        // Lossy: a stray invalid byte becomes U+FFFD instead of hiding the whole line.
        let line = strip_controls(&String::from_utf8_lossy(&raw));
        if line.is_empty() {
            continue;
        }
        let shown = {
            let mut nicks = session.nicks();
            nicks.observe(&line);
            render(&line, nicks.mine(), colours)
        };
        screen.show(shown);
        // Stop at BYE rather than wait for the close: a server that says BYE and then
        // keeps the socket open must not leave the client hanging.
        if split_word(&line).0 == "BYE" {
            return Ending::Bye;
        }
    }
}

/// The end of the session: says why (unless BYE said it) and how long it lasted, then
/// ends the process: 0 if the user asked to leave, 1 if the server closed on its own.
///
/// The reader thread exits the process itself because the main thread may be blocked
/// reading what you type, and std offers no way to interrupt a blocking read of stdin.
fn finish(ending: Ending, screen: &mut Screen, session: &Session) -> ! {
    if !session.claim_ending() {
        // The main thread gave up waiting for BYE a moment ago and is ending the process.
        loop {
            thread::park();
        }
    }
    let user_quit = session.user_quit.load(Ordering::SeqCst);
    if let Ending::Closed = ending {
        let text = if user_quit {
            "-- disconnected"
        } else {
            "-- disconnected: connection closed by server"
        };
        screen.show(paint(text, Paint::Server, session.colours));
    }
    screen.show(session.summary());
    screen.close(!user_quit);
    process::exit(if user_quit { 0 } else { 1 });
}

/// The nicks the client has seen: ours (to colour it apart) and the others' (for Tab).
#[derive(Default)]
struct Nicks {
    mine: Option<String>,
    seen: BTreeSet<String>,
}

impl Nicks {
    /// Learns from one server line: `HELLO` gives ours, `NICK` renames, and every line
    /// that names a user (`MSG`, `ME`, `DM`, `JOIN`, `LEAVE`, `WHO`, `USER`) adds them.
    fn observe(&mut self, line: &str) {
        let (keyword, rest) = split_word(line);
        match keyword {
            "HELLO" => {
                if let Some([nick]) = words(rest) {
                    self.mine = Some(nick.to_string());
                }
            }
            "NICK" => {
                if let Some([old, new]) = words(rest) {
                    if self.mine.as_deref() == Some(old) {
                        self.mine = Some(new.to_string());
                    }
                    self.seen.remove(old);
                    self.seen.insert(new.to_string());
                }
            }
            // The nick is the second word: `MSG <room> <nick> ...`, `JOIN <room> <nick>`.
            "MSG" | "ME" | "JOIN" | "LEAVE" | "WHO" => {
                if let Some([_, nick]) = words(rest) {
                    self.seen.insert(nick.to_string());
                }
            }
            // The first word: `USER <nick> <room>`; for `DM <from> <to>`, both.
            "USER" | "DM" => {
                if let Some([first, second]) = words(rest) {
                    self.seen.insert(first.to_string());
                    if keyword == "DM" {
                        self.seen.insert(second.to_string());
                    }
                }
            }
            _ => {}
        }
        // `server` is the operator's name in `DM server ...`: no one to whisper to.
        self.seen.remove("server");
    }

    fn mine(&self) -> Option<&str> {
        self.mine.as_deref()
    }

    /// Every nick seen but ours, in alphabetical order.
    fn others(&self) -> impl Iterator<Item = &str> {
        self.seen
            .iter()
            .map(String::as_str)
            .filter(move |nick| Some(*nick) != self.mine.as_deref())
    }
}

// ---------------------------------------------------------------------------------------
// Line framing
// ---------------------------------------------------------------------------------------

/// What [`read_line_capped`] found.
#[derive(Debug, PartialEq)]
enum Frame {
    /// A line is in the buffer, without its LF or CRLF. A last line that the peer did not
    /// end with LF before closing counts as a line too.
    Line,
    /// A line longer than the cap: it was read and thrown away up to its LF.
    TooLong,
    /// The peer closed and nothing is left.
    Eof,
}

/// Reads one LF-ended line into `line` (cleared first), keeping at most `max` bytes in
/// memory whatever the peer sends.
fn read_line_capped(input: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Frame> {
    line.clear();
    // `take` is what bounds the buffer: read_until alone would grow it until it met a LF.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let read = input.by_ref().take(limit).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(Frame::Eof);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > max {
        line.clear();
        skip_past_newline(input)?;
        return Ok(Frame::TooLong);
    }
    Ok(Frame::Line)
}

/// Throws input away up to and including the next LF (or to EOF), one buffer at a time.
fn skip_past_newline(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                input.consume(end + 1);
                return Ok(());
            }
            None => {
                let len = available.len();
                input.consume(len);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rendering: pure functions, no I/O
// ---------------------------------------------------------------------------------------

/// Removes every character that could move the cursor, change colours, retitle the
/// window or reorder text: C0 controls but TAB, DEL, C1 controls (U+0080-U+009F), bidi
/// controls and the Unicode line separators. Removing ESC (and the C1 CSI, U+009B)
/// defuses every ANSI/OSC sequence; what is left of one is plain, harmless text.
///
/// The server strips the same set, but the client does not trust it: a modified or
/// hostile server must not be able to take over the user's terminal.
fn strip_controls(text: &str) -> String {
    text.chars().filter(|&c| !is_unsafe_char(c)).collect()
}

/// The characters [`strip_controls`] removes.
fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}'      // C0 controls, TAB (U+0009) excepted
        | '\u{7f}'..='\u{9f}'                       // DEL and the C1 controls
        | '\u{61c}' | '\u{200e}' | '\u{200f}'       // bidi marks
        | '\u{202a}'..='\u{202e}'                   // bidi embeddings and overrides
        | '\u{2066}'..='\u{2069}'                   // bidi isolates
        | '\u{2028}' | '\u{2029}'                   // line and paragraph separators
    )
}

/// Turns one server line (already stripped of control characters) into the text shown
/// to people. `my_nick` is our own alias, if known, so it can be coloured apart.
/// Malformed or unknown lines are shown as they came.
fn render(line: &str, my_nick: Option<&str>, colours: bool) -> String {
    let (keyword, rest) = split_word(line);
    if keyword == "HIST" {
        // `HIST <time> <line>`: the replayed line, prefixed with its time of day.
        let (time, inner) = split_word(rest);
        let (inner_keyword, inner_rest) = split_word(inner);
        // Only one level: a HIST inside a HIST is shown raw, so no input can make the
        // client recurse deeply.
        if inner_keyword != "HIST" {
            if let Some(text) = render_event(inner_keyword, inner_rest, my_nick, colours) {
                return format!("{} {text}", time_of_day(time));
            }
        }
        return line.to_string();
    }
    render_event(keyword, rest, my_nick, colours).unwrap_or_else(|| line.to_string())
}

/// Renders one line given its keyword; `None` when the keyword is unknown or the fields
/// are missing.
fn render_event(keyword: &str, rest: &str, my_nick: Option<&str>, colours: bool) -> Option<String> {
    let nick = |name: &str| {
        let kind = if Some(name) == my_nick {
            Paint::Me
        } else {
            Paint::Other
        };
        paint(name, kind, colours)
    };
    let server = |text: String| paint(&text, Paint::Server, colours);
    let text = match keyword {
        "MSG" => {
            let [room, from] = words(rest)?;
            format!("[{room}] <{}> {}", nick(from), tail(rest, 2))
        }
        "ME" => {
            let [room, from] = words(rest)?;
            format!("[{room}] * {} {}", nick(from), tail(rest, 2))
        }
        "DM" => {
            let [from, to] = words(rest)?;
            format!(
                "[whisper] {} -> {}: {}",
                nick(from),
                nick(to),
                tail(rest, 2)
            )
        }
        "JOIN" => {
            let [room, who] = words(rest)?;
            server(format!("--> {who} joined {room}"))
        }
        "LEAVE" => {
            let [room, who] = words(rest)?;
            let reason = tail(rest, 2);
            if reason.is_empty() {
                server(format!("<-- {who} left {room}"))
            } else {
                server(format!("<-- {who} left {room} ({reason})"))
            }
        }
        "NICK" => {
            let [old, new] = words(rest)?;
            server(format!("-- {old} is now known as {new}"))
        }
        "HELLO" => {
            let [you] = words(rest)?;
            match tail(rest, 1) {
                "" => server(format!("-- you are {you}")),
                greeting => server(format!("-- you are {you}: {greeting}")),
            }
        }
        "NOTICE" => server(format!("-!- {rest}")),
        "ERR" => {
            let [code] = words(rest)?;
            server(format!("!! {} ({code})", tail(rest, 1)))
        }
        "BYE" => server(format!("-- disconnected: {rest}")),
        "PONG" if rest.is_empty() => "-- pong".to_string(),
        "PONG" => format!("-- pong {rest}"),
        // The lists: one line per entry, closed by END.
        "WHO" => {
            let [_room, who] = words(rest)?;
            format!("   {}", nick(who))
        }
        "USER" => {
            let [who, room] = words(rest)?;
            format!("   {} in {room}", nick(who))
        }
        "ROOM" => {
            let [room, members] = words(rest)?;
            let noun = if members == "1" { "member" } else { "members" };
            format!("   {room} ({members} {noun})")
        }
        "HELP" => format!("   {rest}"),
        "END" => {
            let [list, count] = words(rest)?;
            let summary = match list {
                "who" => format!("-- {count} in this room"),
                "users" => format!("-- {count} online"),
                "rooms" if count == "1" => "-- 1 room".to_string(),
                "rooms" => format!("-- {count} rooms"),
                "help" => "-- end of help".to_string(),
                _ => format!("-- end of {list} ({count})"),
            };
            let note = tail(rest, 2);
            if note.is_empty() {
                summary
            } else {
                format!("{summary}, {note}")
            }
        }
        _ => return None,
    };
    Some(text)
}

/// The first `N` space-separated words of `text`, or `None` if it has fewer.
fn words<const N: usize>(text: &str) -> Option<[&str; N]> {
    let mut words = [""; N];
    let mut rest = text;
    for word in &mut words {
        let (first, after) = split_word(rest);
        if first.is_empty() {
            return None;
        }
        *word = first;
        rest = after;
    }
    Some(words)
}

/// What follows the first `skip` words of `text`: the free-text field.
fn tail(text: &str, skip: usize) -> &str {
    let mut rest = text;
    for _ in 0..skip {
        rest = split_word(rest).1;
    }
    rest
}

/// Splits at the first space: `("MSG", "lobby Bob hi")`.
fn split_word(text: &str) -> (&str, &str) {
    text.split_once(' ').unwrap_or((text, ""))
}

/// `2026-11-25T20:06:13Z` -> `20:06`. The server sends UTC and the client shows UTC:
/// std has no time zone database, and a teaching client should not guess one. Anything
/// that is not in that form is shown as it came.
fn time_of_day(timestamp: &str) -> &str {
    let bytes = timestamp.as_bytes();
    let looks_right = bytes.len() >= 16
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && [11, 12, 14, 15].iter().all(|&i| bytes[i].is_ascii_digit());
    if looks_right {
        &timestamp[11..16] // ASCII checked above, so these are char boundaries
    } else {
        timestamp
    }
}

/// `65 s` -> `1m 05s`.
fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m {seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

// ---------------------------------------------------------------------------------------
// Colours and the terminal
// ---------------------------------------------------------------------------------------

/// The three colours: our nick, the others' nicks, and lines from the server itself.
#[derive(Clone, Copy)]
enum Paint {
    Me,
    Other,
    Server,
}

/// Wraps `text` in an ANSI SGR colour when `colours` is on. Only ever applied to text
/// that [`strip_controls`] has already cleaned, so the only escapes printed are ours.
fn paint(text: &str, kind: Paint, colours: bool) -> String {
    if !colours {
        return text.to_string();
    }
    let sgr = match kind {
        Paint::Me => "1;32",   // bold green
        Paint::Other => "36",  // cyan
        Paint::Server => "33", // yellow
    };
    format!("\x1b[{sgr}m{text}\x1b[0m")
}

/// How to print: decided once at start-up from what stdin and stdout are.
#[derive(Clone, Copy)]
struct Console {
    /// Colour only a terminal, and never when NO_COLOR is set to a non-empty value
    /// (no-color.org: "when present and not an empty string (regardless of its value)").
    colours: bool,
    /// A person is typing at a terminal: use the line editor. Needs stdout to be a
    /// terminal too, or the editor's escapes would end up in a file.
    interactive: bool,
}

impl Console {
    fn detect() -> Console {
        let stdout_is_terminal = io::stdout().is_terminal();
        let no_color = env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Console {
            colours: stdout_is_terminal && !no_color,
            interactive: stdout_is_terminal && io::stdin().is_terminal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_controls_but_keeps_tab_and_text() {
        let hostile = "\x1b[31mred\x1b]0;title\x07 te\txt\u{9b}2J\u{202e}ab\u{2028}\r\0";
        assert_eq!(strip_controls(hostile), "[31mred]0;title te\txt2Jab");
        assert_eq!(strip_controls("밤손님 héllo"), "밤손님 héllo");
    }

    #[test]
    fn renders_the_protocol() {
        let me = Some("QuietOtter");
        let cases = [
            ("MSG lobby Bob hi there", "[lobby] <Bob> hi there"),
            ("ME lobby QuietOtter waves", "[lobby] * QuietOtter waves"),
            ("DM a b psst", "[whisper] a -> b: psst"),
            ("JOIN lobby Bob", "--> Bob joined lobby"),
            (
                "LEAVE lobby Bob quit: bye",
                "<-- Bob left lobby (quit: bye)",
            ),
            ("NICK Bob Rob", "-- Bob is now known as Rob"),
            ("NOTICE hello all", "-!- hello all"),
            ("ERR usage /nick NAME", "!! /nick NAME (usage)"),
            ("HELLO QuietOtter welcome", "-- you are QuietOtter: welcome"),
            (
                "HIST 2026-11-25T20:06:13Z MSG lobby Bob hi",
                "20:06 [lobby] <Bob> hi",
            ),
            ("PONG t1", "-- pong t1"),
            (
                "BYE server shutting down",
                "-- disconnected: server shutting down",
            ),
            (
                "END users 15000 showing the first 200",
                "-- 15000 online, showing the first 200",
            ),
            ("ROOM lobby 1", "   lobby (1 member)"),
            ("END rooms 1", "-- 1 room"),
            ("END who 2", "-- 2 in this room"),
            ("WHATEVER x y", "WHATEVER x y"),
            ("MSG lobby", "MSG lobby"),
            ("HIST x HIST y MSG a b c", "HIST x HIST y MSG a b c"),
        ];
        for (line, shown) in cases {
            assert_eq!(render(line, me, false), shown, "rendering {line:?}");
        }
    }

    #[test]
    fn colours_our_nick_apart() {
        let ours = render("MSG lobby Me hi", Some("Me"), true);
        let theirs = render("MSG lobby Bob hi", Some("Me"), true);
        assert!(ours.contains("\x1b[1;32mMe\x1b[0m"), "{ours:?}");
        assert!(theirs.contains("\x1b[36mBob\x1b[0m"), "{theirs:?}");
    }

    #[test]
    fn keeps_track_of_the_nicks() {
        let mut nicks = Nicks::default();
        for line in [
            "HELLO Otter welcome",
            "NICK Someone Else",
            "MSG lobby Bob hi",
            "DM server Otter psst",
            "USER Carol den",
            "JOIN lobby Dave",
        ] {
            nicks.observe(line);
        }
        assert_eq!(nicks.mine(), Some("Otter"));
        nicks.observe("NICK Otter Heron");
        assert_eq!(nicks.mine(), Some("Heron"));
        let others: Vec<&str> = nicks.others().collect();
        assert_eq!(others, ["Bob", "Carol", "Dave", "Else"]);
    }

    #[test]
    fn tab_completes_commands_then_nicks() {
        let mut nicks = Nicks::default();
        nicks.observe("HELLO QuietMe hi");
        nicks.observe("JOIN lobby QuietOtter");
        nicks.observe("JOIN lobby Bob");
        let complete = |line: &str| completions(line, line.len(), &nicks);
        assert_eq!(complete("/jo"), (0, vec!["/join ".to_string()]));
        assert_eq!(
            complete("/W"),
            (0, vec!["/w ".to_string(), "/who ".to_string()])
        );
        assert_eq!(complete("/w qu"), (3, vec!["QuietOtter ".to_string()]));
        assert_eq!(complete("hi b"), (3, vec!["Bob ".to_string()]));
        assert_eq!(complete("say /jo"), (4, vec![]));
        // In the middle of a line, only what is before the cursor counts.
        assert_eq!(
            completions("/w Bo and", 5, &nicks),
            (3, vec!["Bob ".into()])
        );
    }

    #[test]
    fn parses_the_arguments() {
        let parse = |args: &[&str]| parse_args(args.iter().map(|arg| arg.to_string()));
        assert_eq!(parse(&[]), Ok(Args::Connect(DEFAULT_ADDR.into())));
        assert_eq!(
            parse(&["[::1]:2022"]),
            Ok(Args::Connect("[::1]:2022".into()))
        );
        assert_eq!(parse(&["--help"]), Ok(Args::Help));
        assert_eq!(parse(&["--bogus"]), Err("unknown flag --bogus".into()));
        assert!(parse(&["localhost"]).is_err());
        assert!(parse(&["a:1", "b:2"]).is_err());
    }

    #[test]
    fn frames_lines_with_a_cap() {
        let mut input = io::Cursor::new(b"one\r\ntwo\n0123456789abc\nthree".to_vec());
        let mut line = Vec::new();
        let mut next = |line: &mut Vec<u8>| read_line_capped(&mut input, line, 8).unwrap();
        assert_eq!(
            (next(&mut line), line.as_slice()),
            (Frame::Line, &b"one"[..])
        );
        assert_eq!(
            (next(&mut line), line.as_slice()),
            (Frame::Line, &b"two"[..])
        );
        assert_eq!(next(&mut line), Frame::TooLong);
        assert_eq!(
            (next(&mut line), line.as_slice()),
            (Frame::Line, &b"three"[..])
        );
        assert_eq!(next(&mut line), Frame::Eof);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h 02m 05s");
    }
}
