//! A small, friendlier terminal client for Underworld-Line (std only, no crates).
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
//! `/w`, `/help`, ...) is typed as is. `/quit` leaves.
//!
//! # Two threads
//!
//! - The **reader thread** reads the socket and prints every server line the moment it
//!   arrives: the server pushes, so the client never polls. It renders each protocol line
//!   for people (`MSG lobby Bob hi` becomes `[lobby] <Bob> hi`), after stripping every
//!   control character the network sent. When the connection ends (`BYE` or EOF) it is
//!   the reader thread that ends the process: see [`finish`].
//! - The **main thread** reads stdin line by line and sends each line to the server. At
//!   `/quit`, or at the end of stdin, it sends `/quit` and waits (at most [`QUIT_GRACE`])
//!   for the reader thread to see the server's `BYE`.
//!
//! Exit codes: 0 when you quit (`/quit` or end of stdin), 1 when the server closed the
//! connection on its own (`BYE server shutting down`, a kick, ...), 2 when the client
//! could not start (bad arguments, cannot connect).
//!
//! The pure functions (framing, stripping, rendering) have unit tests at the end of this
//! file: `cargo test --example client`. The behaviour tests, which run this client against
//! a server, are in `tests/client.rs`.

use std::env;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Where `cargo run --example client` connects without an argument: the server's default.
const DEFAULT_ADDR: &str = "127.0.0.1:2022";

/// The longest line the client accepts, from the server or from stdin (the server's own
/// limit is far lower: 1024 bytes by default). Longer lines are discarded as they arrive,
/// so a hostile server cannot make the client buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// How long to wait for the server's `BYE` after sending `/quit`.
const QUIT_GRACE: Duration = Duration::from_secs(2);

/// The prompt shown in interactive mode.
const PROMPT: &str = "> ";

fn main() -> ExitCode {
    let addr = match parse_args(env::args().skip(1)) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            println!("{USAGE}   (default {DEFAULT_ADDR})");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}\n{USAGE}   (default {DEFAULT_ADDR})");
            return ExitCode::from(2);
        }
    };
    let stream = match TcpStream::connect(&addr) {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!("client: cannot connect to {addr}: {err}");
            return ExitCode::from(2);
        }
    };
    // One handle for each thread: the reader thread reads, the main thread writes.
    let read_half = match stream.try_clone() {
        Ok(read_half) => read_half,
        Err(err) => {
            eprintln!("client: cannot clone the socket: {err}");
            return ExitCode::from(2);
        }
    };

    let console = Console::detect();
    let session = Arc::new(Session {
        started: Instant::now(),
        user_quit: AtomicBool::new(false),
        ending: AtomicBool::new(false),
    });

    let reader_session = Arc::clone(&session);
    let spawned = thread::Builder::new().name("reader".into()).spawn(move || {
        let ending = read_server(BufReader::new(read_half), console);
        finish(ending, &reader_session, console)
    });
    if let Err(err) = spawned {
        eprintln!("client: cannot start the reader thread: {err}");
        return ExitCode::from(2);
    }

    send_stdin(stream, &session, console);

    // We only get here when the user quit (or the socket broke) and the reader thread has
    // not ended the process within QUIT_GRACE: the server never said BYE.
    if !session.claim_ending() {
        // Except that it did, just now: the reader thread is finishing and will exit the
        // process. Printing here too would show the last lines twice.
        loop {
            thread::park();
        }
    }
    console.show(&paint(
        "-- no answer from the server; leaving anyway",
        Paint::Server,
        console.colours,
    ));
    console.show(&paint(
        &session_summary(session.started.elapsed()),
        Paint::Server,
        console.colours,
    ));
    if session.user_quit.load(Ordering::SeqCst) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

const USAGE: &str = "usage: cargo run --example client [-- HOST:PORT]";

/// The one optional argument: the server's address. `Ok(None)` asks for the usage.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<String>, String> {
    let addr = args.next().unwrap_or_else(|| DEFAULT_ADDR.to_string());
    if addr == "-h" || addr == "--help" {
        return Ok(None);
    }
    if let Some(extra) = args.next() {
        return Err(format!("client: unexpected argument {extra:?}"));
    }
    Ok(Some(addr))
}

/// What both threads share.
struct Session {
    /// When the connection was made, for the "session lasted" line.
    started: Instant,
    /// Set by the main thread *before* it sends `/quit`, so that when the reader thread
    /// sees the connection end it knows the user asked for it (exit 0) rather than the
    /// server closing on its own (exit 1).
    user_quit: AtomicBool,
    /// Set by whichever thread prints the end of the session, so only one does.
    ending: AtomicBool,
}

impl Session {
    /// True for the first caller only: that thread prints the last lines and exits.
    fn claim_ending(&self) -> bool {
        !self.ending.swap(true, Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------
// The main thread: stdin -> socket
// ---------------------------------------------------------------------------------------

/// Sends every stdin line to the server until the user quits, stdin ends or the socket
/// breaks. Returns once it is time to wait for the reader thread to end the process.
fn send_stdin(mut socket: TcpStream, session: &Session, console: Console) {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    console.prompt();
    loop {
        match read_line_capped(&mut stdin, &mut line, MAX_LINE) {
            Ok(Frame::Line) => {}
            Ok(Frame::TooLong) => {
                console.show(&paint(
                    "-!- that line is too long; it was not sent",
                    Paint::Server,
                    console.colours,
                ));
                continue;
            }
            // End of stdin (Ctrl-D, or the end of a pipe), or stdin failing: leave politely.
            Ok(Frame::Eof) | Err(_) => {
                session.user_quit.store(true, Ordering::SeqCst);
                let _ = socket.write_all(b"/quit\n");
                break;
            }
        }
        let quitting = is_quit_command(&line);
        if quitting {
            // Set before sending: the BYE may arrive before write_all even returns.
            session.user_quit.store(true, Ordering::SeqCst);
        }
        line.push(b'\n');
        let sent = socket.write_all(&line);
        if quitting || sent.is_err() {
            // Either way the connection is ending, and the reader thread will see it end.
            break;
        }
        console.prompt();
    }
    // The reader thread ends the process as soon as the server's BYE (or EOF) arrives;
    // this sleep is only the upper bound for a server that never answers.
    thread::sleep(QUIT_GRACE);
}

/// True for `/quit` and `/quit REASON` (command names are case-insensitive).
fn is_quit_command(line: &[u8]) -> bool {
    let command = line.split(|&b| b == b' ').next().unwrap_or_default();
    command.eq_ignore_ascii_case(b"/quit")
}

// ---------------------------------------------------------------------------------------
// The reader thread: socket -> stdout
// ---------------------------------------------------------------------------------------

/// How the connection ended, as the reader thread saw it.
enum Ending {
    /// The server said `BYE <reason>`: the last line of every session, by protocol. It
    /// has been shown (as `-- disconnected: <reason>`) like any other line.
    Bye,
    /// The connection closed or failed without a `BYE`.
    Closed,
}

/// Prints every line the server sends until the connection ends.
fn read_server(mut socket: impl BufRead, console: Console) -> Ending {
    let mut my_nick: Option<String> = None;
    let mut raw = Vec::new();
    loop {
        match read_line_capped(&mut socket, &mut raw, MAX_LINE) {
            Ok(Frame::Line) => {}
            Ok(Frame::TooLong) => {
                console.show(&paint(
                    "-!- the server sent an over-long line; it was dropped",
                    Paint::Server,
                    console.colours,
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
        console.show(&render(&line, my_nick.as_deref(), console.colours));
        track_my_nick(&line, &mut my_nick);
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
/// reading stdin, and std offers no way to interrupt a blocking read of stdin.
fn finish(ending: Ending, session: &Session, console: Console) -> ! {
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
        console.show(&paint(text, Paint::Server, console.colours));
    }
    console.show(&paint(
        &session_summary(session.started.elapsed()),
        Paint::Server,
        console.colours,
    ));
    console.finish();
    process::exit(if user_quit { 0 } else { 1 });
}

/// Updates our own nick from `HELLO <nick> ...` and `NICK <old> <new>` when `old` is us.
fn track_my_nick(line: &str, my_nick: &mut Option<String>) {
    let (keyword, rest) = split_word(line);
    match keyword {
        "HELLO" => {
            let (nick, _) = split_word(rest);
            if !nick.is_empty() {
                *my_nick = Some(nick.to_string());
            }
        }
        "NICK" => {
            let (old, rest) = split_word(rest);
            let (new, _) = split_word(rest);
            if my_nick.as_deref() == Some(old) && !new.is_empty() {
                *my_nick = Some(new.to_string());
            }
        }
        _ => {}
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

fn session_summary(lasted: Duration) -> String {
    format!("-- session lasted {}", format_duration(lasted))
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
    /// A person is typing at a terminal: redraw the prompt around incoming lines. Needs
    /// stdout to be a terminal too, or the escapes would end up in a file.
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

    /// Prints one line, flushed at once (the other side of a pipe waits for it).
    ///
    /// In interactive mode a line can arrive while the user is half-way through typing.
    /// In the terminal's normal (cooked) mode the typed characters live in the kernel's
    /// line buffer, which std cannot read, so the minimum that keeps the screen readable
    /// is: go to the start of the row (`\r`), erase it (`ESC [2K`), print the line, then
    /// draw the prompt again. What the user typed so far is still in the buffer and is
    /// still sent by Enter; it just is no longer shown. Redrawing it would need raw mode,
    /// i.e. a terminal library.
    fn show(&self, line: &str) {
        let mut out = io::stdout().lock();
        // Errors are ignored: if stdout is gone there is nobody left to tell.
        let _ = if self.interactive {
            write!(out, "\r\x1b[2K{line}\n{PROMPT}")
        } else {
            writeln!(out, "{line}")
        };
        let _ = out.flush();
    }

    /// Draws a fresh prompt (interactive mode only).
    fn prompt(&self) {
        if self.interactive {
            let mut out = io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K{PROMPT}");
            let _ = out.flush();
        }
    }

    /// Leaves the cursor on a clean row before the process exits.
    fn finish(&self) {
        if self.interactive {
            let mut out = io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
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
    fn tracks_our_nick() {
        let mut nick = None;
        track_my_nick("HELLO Otter welcome", &mut nick);
        track_my_nick("NICK Someone Else", &mut nick);
        assert_eq!(nick.as_deref(), Some("Otter"));
        track_my_nick("NICK Otter Heron", &mut nick);
        assert_eq!(nick.as_deref(), Some("Heron"));
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
