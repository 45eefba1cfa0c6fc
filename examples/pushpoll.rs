//! Socket or HTTP? The same chat over raw TCP push, WebSocket push, HTTP long polling
//! and HTTP short polling, measured side by side (issue 10).
//!
//! ```sh
//! cargo build --release --features web --bin underworld-line --example pushpoll
//! cargo run --release --features web --example pushpoll                  # the README's table
//! cargo run --release --features web --example pushpoll -- --users 10 --idle 20 --duration 2   # a quick look
//! ```
//!
//! For each transport it starts a fresh server (`target/release/underworld-line`, built
//! with `--features web`, as a child process so its CPU time is its own), then runs two
//! scenarios:
//!
//! - **active**: `--users` users in one room, `--rate` messages a second in all (each
//!   delivered to every member, the sender included), measured for `--duration` s;
//! - **idle**: `--idle` users who say nothing, measured for `--duration` s: what an idle
//!   user costs per minute.
//!
//! and reports delivery latency (send to receipt, one clock: the same process), requests
//! a second (HTTP requests; for push, the lines clients wrote), new TCP connections a
//! second (each one an `accept` at the server), bytes (what the users wrote and read:
//! HTTP heads and WebSocket framing included; in brackets the kernel's IP `OutOctets`,
//! which adds TCP/IP headers, handshakes and ACKs, but is system-wide: meaningful only on
//! a quiet machine) and the server's CPU time (`/proc/PID/stat`, 10 ms ticks).
//!
//! Run it on a quiet machine. A row with failed requests (each retried) measured an
//! overloaded machine rather than the transport. Each simulated user
//! is a thread of this program (blocking I/O, like the server), so this program's own
//! CPU competes with the server's on a small machine; the server's CPU is still its own
//! (from `/proc/PID/stat`). Traffic goes to 127.0.0.1 only, and every loop ends.

#[path = "common/proc_stats.rs"]
mod proc_stats;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use proc_stats::process_cpu;

const USAGE: &str = "\
pushpoll: the same chat over TCP push, WebSocket push, HTTP long and short polling

usage: pushpoll [--users N] [--rate R] [--idle N] [--duration SECS] [--only NAMES]
                [--server PATH]

  --users N        active users in one room                     [100]
  --rate R         messages a second in that room, all together  [10]
  --idle N         idle users (the second scenario; 0 skips it)  [1000]
  --duration SECS  measured time of each scenario (at least 25 for the
                   idle long pollers, who ask every 25 s)         [30]
  --only NAMES     comma-separated: tcp,ws,long,long-ka,short1s,short100ms,
                   short1s-ka,short100ms-ka                      [all]
  --server PATH    the server binary, built with --features web
                   [target/release/underworld-line]
";

/// How long a long poll waits for a line (`wait=`), in seconds: below the server's
/// 30 s cap. An idle long poller makes one request per this many seconds.
const LONG_POLL_WAIT: u64 = 25;

/// How a user talks to the server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Tcp,
    Ws,
    /// Long polling (`wait=25`); `keep`: HTTP keep-alive, else a connection per request.
    Long {
        keep: bool,
    },
    /// Short polling every `every_ms`.
    Short {
        every_ms: u64,
        keep: bool,
    },
}

const MODES: [(&str, Mode); 8] = [
    ("tcp", Mode::Tcp),
    ("ws", Mode::Ws),
    ("long", Mode::Long { keep: false }),
    ("long-ka", Mode::Long { keep: true }),
    (
        "short1s",
        Mode::Short {
            every_ms: 1000,
            keep: false,
        },
    ),
    (
        "short100ms",
        Mode::Short {
            every_ms: 100,
            keep: false,
        },
    ),
    (
        "short1s-ka",
        Mode::Short {
            every_ms: 1000,
            keep: true,
        },
    ),
    (
        "short100ms-ka",
        Mode::Short {
            every_ms: 100,
            keep: true,
        },
    ),
];

impl Mode {
    fn label(self) -> String {
        let conn = |keep: bool| {
            if keep {
                "keep-alive"
            } else {
                "new connection per request"
            }
        };
        match self {
            Mode::Tcp => "raw TCP push".into(),
            Mode::Ws => "WebSocket push".into(),
            Mode::Long { keep } => format!("HTTP long polling, {}", conn(keep)),
            Mode::Short { every_ms, keep } => {
                format!("HTTP short polling every {every_ms} ms, {}", conn(keep))
            }
        }
    }
}

/// What every user thread reports into.
struct Shared {
    epoch: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    deliveries: AtomicU64,
    /// HTTP requests, or lines written by push clients, while measuring.
    requests: AtomicU64,
    /// TCP connections our users opened (each one a server `accept`), while measuring.
    connections: AtomicU64,
    /// Bytes our users wrote and read (HTTP heads, WebSocket framing and all; not the
    /// TCP/IP headers), while measuring.
    bytes: AtomicU64,
    /// Connections opened in all (to pick each one's source address).
    opened: AtomicU64,
    /// Requests that failed while measuring (each retried): a result with errors
    /// measured an overloaded client or server, not the transport.
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn count_request(&self) {
        if self.measuring.load(Relaxed) {
            self.requests.fetch_add(1, Relaxed);
        }
    }

    fn count(&self, counter: &AtomicU64, n: u64) {
        if self.measuring.load(Relaxed) {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// A new connection to the server, counted.
    /// From 127.0.0.1 to 127.0.0.16 in turn: a connection per request at thousands a
    /// second would otherwise run out of one address's ephemeral ports (28,232, each
    /// held for a minute in TIME_WAIT).
    fn connect(self: &Arc<Self>, addr: SocketAddr) -> io::Result<Counted> {
        use socket2::{Domain, Socket, Type};
        let turn = self.opened.fetch_add(1, Relaxed);
        let source = SocketAddr::from(([127, 0, 0, 1 + (turn % 16) as u8], 0));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&source.into())?;
        socket.connect(&addr.into())?;
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true)?;
        self.count(&self.connections, 1);
        Ok(Counted {
            stream,
            shared: Arc::clone(self),
        })
    }

    /// A line a user received: a benchmark message (`MSG bench NICK lg SEQ SENT_NS`)
    /// counts as a delivery, with its latency.
    fn received(&self, line: &str) {
        let Some(rest) = line.strip_prefix("MSG bench ") else {
            return;
        };
        let Some((_, numbers)) = rest.split_once(" lg ") else {
            return;
        };
        // `lg WHO SEQ SENT_NS`: the third number is when it was sent.
        let Some(sent) = numbers
            .split(' ')
            .nth(2)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        if self.measuring.load(Relaxed) {
            let latency = self.now_ns().saturating_sub(sent) / 1000;
            self.deliveries.fetch_add(1, Relaxed);
            self.latencies_us.lock().unwrap().push(latency);
        }
    }
}

/// A user's socket, counting the bytes through it.
struct Counted {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl Counted {
    fn try_clone(&self) -> io::Result<Counted> {
        Ok(Counted {
            stream: self.stream.try_clone()?,
            shared: Arc::clone(&self.shared),
        })
    }
}

impl Read for Counted {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buffer)?;
        self.shared.count(&self.shared.bytes, n as u64);
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(bytes)?;
        self.shared.count(&self.shared.bytes, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The server under test, a child process, killed when dropped.
struct ServerProcess {
    child: Child,
    tcp: SocketAddr,
    web: SocketAddr,
}

impl ServerProcess {
    fn start(binary: &str) -> ServerProcess {
        let mut child = Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--web-addr", "127.0.0.1:0"])
            .args([
                "--rate-limit",
                "off",
                "--max-per-ip",
                "0",
                "--idle-timeout",
                "3600",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (cargo build --release --features web): {e}")
            });
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut tcp, mut web) = (None, None);
        let mut line = String::new();
        while tcp.is_none() || web.is_none() {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("{binary} ended at start-up: was it built with --features web?");
            }
            if let Some(rest) = line.trim().strip_prefix("Underworld-Line on ") {
                tcp = rest.split(' ').next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.trim().strip_prefix("The chat in a browser: http://") {
                web = rest.trim_end_matches('/').parse().ok();
            }
        }
        thread::spawn(move || io::copy(&mut stderr, &mut io::sink()));
        ServerProcess {
            child,
            tcp: tcp.unwrap(),
            web: web.unwrap(),
        }
    }

    fn cpu(&self) -> Duration {
        process_cpu(self.child.id()).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kernel counter from a /proc/net file in "Name: fields / Name: values" pairs.
fn kernel_counter(file: &str, group: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with(group));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == name) {
            return values
                .split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// The counters read before and after a measured window.
struct Sample {
    at: Instant,
    cpu: Duration,
    out_octets: u64,
}

impl Sample {
    fn take(server: &ServerProcess) -> Sample {
        Sample {
            at: Instant::now(),
            cpu: server.cpu(),
            out_octets: kernel_counter("/proc/net/netstat", "IpExt:", "OutOctets"),
        }
    }
}

/// A minimal HTTP/1.1 client for the polling endpoints (responses parsed by httparse).
struct Http {
    addr: SocketAddr,
    keep_alive: bool,
    kept: Option<Counted>,
    buffer: Vec<u8>,
}

impl Http {
    fn new(addr: SocketAddr, keep_alive: bool) -> Http {
        Http {
            addr,
            keep_alive,
            kept: None,
            buffer: Vec::new(),
        }
    }

    /// One request; returns the status, the `X-Next` header and the body.
    fn request(
        &mut self,
        shared: &Arc<Shared>,
        method: &str,
        path: &str,
        body: &str,
    ) -> io::Result<(u16, Option<u64>, String)> {
        shared.count_request();
        if self.kept.is_none() {
            let stream = shared.connect(self.addr)?;
            stream
                .stream
                .set_read_timeout(Some(Duration::from_secs(60)))?;
            self.kept = Some(stream);
            self.buffer.clear();
        }
        let connection = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let result = self.exchange(request.as_bytes());
        if result.is_err() || !self.keep_alive {
            self.kept = None;
        }
        result
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Option<u64>, String)> {
        let stream = self.kept.as_mut().unwrap();
        stream.write_all(request)?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response
                .parse(&self.buffer)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let httparse::Status::Complete(head) = parsed {
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let length = header("content-length").unwrap_or(0) as usize;
                let (status, next) = (response.code.unwrap_or(0), header("x-next"));
                while self.buffer.len() < head + length {
                    read_into(stream, &mut self.buffer)?;
                }
                let body = String::from_utf8_lossy(&self.buffer[head..head + length]).into_owned();
                self.buffer.drain(..head + length);
                return Ok((status, next, body));
            }
            read_into(stream, &mut self.buffer)?;
        }
    }
}

fn read_into(stream: &mut Counted, buffer: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// How the sender thread makes a user speak.
trait Speaker: Send {
    fn say(&mut self, shared: &Arc<Shared>, line: &str) -> io::Result<()>;
}

impl Speaker for Counted {
    fn say(&mut self, shared: &Arc<Shared>, line: &str) -> io::Result<()> {
        shared.count_request();
        self.write_all(format!("{line}\n").as_bytes())
    }
}

impl Speaker for WebSocket<Counted> {
    fn say(&mut self, shared: &Arc<Shared>, line: &str) -> io::Result<()> {
        shared.count_request();
        self.send(Message::text(line)).map_err(io::Error::other)
    }
}

/// A polling user's sending side: POSTs on its own connection.
struct Poster {
    http: Http,
    token: String,
}

impl Speaker for Poster {
    fn say(&mut self, shared: &Arc<Shared>, line: &str) -> io::Result<()> {
        let path = format!("/session/{}/send", self.token);
        self.http.request(shared, "POST", &path, line).map(|_| ())
    }
}

/// Connects one user in `mode`, puts it in `room`, and starts its receiving thread.
fn start_user(
    index: usize,
    mode: Mode,
    server: &ServerProcess,
    room: &str,
    shared: &Arc<Shared>,
) -> io::Result<(Box<dyn Speaker>, JoinHandle<()>)> {
    let spawn = |f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(f)
            .expect("a user thread")
    };
    match mode {
        Mode::Tcp => {
            let stream = shared.connect(server.tcp)?;
            let mut lines = BufReader::new(stream.try_clone()?);
            let mut writer = stream;
            let nick = first_nick(&mut || read_line(&mut lines))?;
            writer.write_all(format!("/join {room}\n").as_bytes())?;
            let joined = format!("JOIN {room} {nick}");
            while read_line(&mut lines)? != joined {}
            let shared = Arc::clone(shared);
            let reader = spawn(Box::new(move || {
                while let Ok(line) = read_line(&mut lines) {
                    shared.received(&line);
                }
            }));
            Ok((Box::new(writer), reader))
        }
        Mode::Ws => {
            let stream = shared.connect(server.web)?;
            let (mut socket, _) =
                tungstenite::client(format!("ws://{}/ws", server.web), stream.try_clone()?)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            let mut read = || match socket.read() {
                Ok(Message::Text(text)) => Ok(text.to_string()),
                Ok(_) => Ok(String::new()),
                Err(e) => Err(io::Error::other(e)),
            };
            let nick = first_nick(&mut read)?;
            // A second WebSocket object over the same socket writes: tungstenite's
            // reader and writer cannot be split, and a client only masks its frames.
            let mut writer = WebSocket::from_raw_socket(stream, Role::Client, None);
            writer
                .send(Message::text(format!("/join {room}")))
                .map_err(io::Error::other)?;
            let joined = format!("JOIN {room} {nick}");
            loop {
                match socket.read() {
                    Ok(Message::Text(text)) if text.as_str() == joined => break,
                    Ok(_) => {}
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            let shared = Arc::clone(shared);
            let reader = spawn(Box::new(move || {
                while let Ok(message) = socket.read() {
                    if let Message::Text(text) = message {
                        shared.received(&text);
                    }
                }
            }));
            Ok((Box::new(writer), reader))
        }
        Mode::Long { keep } | Mode::Short { keep, .. } => {
            let mut http = Http::new(server.web, keep);
            let (status, _, body) = http.request(shared, "POST", "/session", "")?;
            if status != 201 {
                return Err(io::Error::other(format!("POST /session: {status} {body}")));
            }
            let token = body.trim().to_string();
            let mut poster = Poster {
                http: Http::new(server.web, keep),
                token: token.clone(),
            };
            poster.say(shared, &format!("/join {room}"))?;
            // Poll until our own JOIN of the room has come.
            let mut since = 0;
            let mut nick = String::new();
            'joined: loop {
                let path = format!("/session/{token}/poll?since={since}&wait=10");
                let (_, next, body) = http.request(shared, "GET", &path, "")?;
                since = next.unwrap_or(since);
                for line in body.lines() {
                    if let Some(rest) = line.strip_prefix("HELLO ") {
                        nick = rest.split(' ').next().unwrap_or("").to_string();
                    }
                    if line == format!("JOIN {room} {nick}") {
                        break 'joined;
                    }
                }
            }
            let (wait, every) = match mode {
                Mode::Short { every_ms, .. } => (0, Duration::from_millis(every_ms)),
                _ => (LONG_POLL_WAIT, Duration::ZERO),
            };
            let shared = Arc::clone(shared);
            let reader = spawn(Box::new(move || {
                // Short pollers spread their polls over the interval, as real clients
                // started at random moments would, instead of all polling in step.
                let phase = (index as u32 * 7919) % 1000;
                let mut next_poll = Instant::now() + every * phase / 1000;
                while !shared.stop.load(Relaxed) {
                    // Short polling: each poll on the clock, whatever the last one took.
                    if let Some(pause) = next_poll.checked_duration_since(Instant::now()) {
                        thread::sleep(pause);
                    }
                    next_poll += every;
                    let path = format!("/session/{token}/poll?since={since}&wait={wait}");
                    let Ok((200, next, body)) = http.request(&shared, "GET", &path, "") else {
                        if shared.stop.load(Relaxed) {
                            break;
                        }
                        shared.count(&shared.errors, 1);
                        thread::sleep(Duration::from_millis(10)); // then try again
                        continue;
                    };
                    since = next.unwrap_or(since);
                    body.lines().for_each(|line| shared.received(line));
                }
            }));
            Ok((Box::new(poster), reader))
        }
    }
}

fn read_line(lines: &mut BufReader<Counted>) -> io::Result<String> {
    let mut line = String::new();
    if lines.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches('\n').to_string())
}

/// Reads until `HELLO <nick>`; returns the nick.
fn first_nick(read: &mut dyn FnMut() -> io::Result<String>) -> io::Result<String> {
    loop {
        let line = read()?;
        if let Some(rest) = line.strip_prefix("HELLO ") {
            return Ok(rest.split(' ').next().unwrap_or("").to_string());
        }
    }
}

/// One scenario's results.
struct Outcome {
    seconds: f64,
    deliveries: u64,
    requests: u64,
    latencies_us: Vec<u64>,
    cpu: Duration,
    /// New connections, counted by our users (each one an `accept` at the server).
    connections: u64,
    /// Bytes our users wrote and read.
    app_bytes: u64,
    /// IP bytes sent on this machine (the kernel's count, system-wide).
    octets: u64,
    /// Requests that failed (and were retried).
    errors: u64,
}

/// Runs one scenario: `users` users in `mode`; `rate` messages a second among them
/// (0: idle).
fn scenario(mode: Mode, binary: &str, users: usize, rate: f64, duration: Duration) -> Outcome {
    let server = ServerProcess::start(binary);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        deliveries: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        opened: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let room = if rate > 0.0 { "bench" } else { "quiet" };
    let mut speakers = Vec::with_capacity(users);
    let mut readers = Vec::with_capacity(users);
    for index in 0..users {
        let (speaker, reader) =
            start_user(index, mode, &server, room, &shared).expect("a user connects");
        speakers.push(speaker);
        readers.push(reader);
    }
    // Warm up for a second, then measure.
    let warmup = Duration::from_secs(1);
    let sender = {
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            if rate <= 0.0 {
                return speakers;
            }
            let start = Instant::now();
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut seq = 0u64;
            while start.elapsed() < warmup + duration {
                let who = seq as usize % speakers.len();
                let line = format!("lg {who} {seq} {}", shared.now_ns());
                if speakers[who].say(&shared, &line).is_err() {
                    shared.count(&shared.errors, 1);
                }
                seq += 1;
                let due = start + interval * seq as u32;
                if let Some(pause) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(pause);
                }
            }
            speakers
        })
    };
    thread::sleep(warmup);
    let before = Sample::take(&server);
    shared.measuring.store(true, Relaxed);
    thread::sleep(duration);
    shared.measuring.store(false, Relaxed);
    let after = Sample::take(&server);
    let speakers = sender.join().unwrap();
    shared.stop.store(true, Relaxed);
    drop(server); // closes every connection: the user threads end
    drop(speakers);
    for reader in readers {
        let _ = reader.join();
    }
    let mut latencies_us = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    latencies_us.sort_unstable();
    Outcome {
        seconds: after.at.duration_since(before.at).as_secs_f64(),
        deliveries: shared.deliveries.load(Relaxed),
        requests: shared.requests.load(Relaxed),
        latencies_us,
        cpu: after.cpu - before.cpu,
        connections: shared.connections.load(Relaxed),
        app_bytes: shared.bytes.load(Relaxed),
        errors: shared.errors.load(Relaxed),
        octets: after.out_octets - before.out_octets,
    }
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> String {
    if sorted_us.is_empty() {
        return "—".into();
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    format!("{:.1}", sorted_us[i] as f64 / 1000.0)
}

struct Options {
    users: usize,
    rate: f64,
    idle: usize,
    duration: Duration,
    only: Vec<String>,
    server: String,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        users: 100,
        rate: 10.0,
        idle: 1000,
        duration: Duration::from_secs(30),
        only: Vec::new(),
        server: "target/release/underworld-line".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--users" => options.users = value.parse().map_err(bad)?,
            "--rate" => options.rate = value.parse().map_err(|_| format!("{flag}: bad value"))?,
            "--idle" => options.idle = value.parse().map_err(bad)?,
            "--duration" => {
                let secs: f64 = value.parse().map_err(|_| format!("{flag}: bad value"))?;
                options.duration = Duration::from_secs_f64(secs.clamp(0.5, 600.0));
            }
            "--only" => options.only = value.split(',').map(str::to_string).collect(),
            "--server" => options.server = value,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if options.users < 2 || options.rate <= 0.0 || options.rate > 10_000.0 {
        return Err("--users must be at least 2 and --rate between 0 and 10000".into());
    }
    Ok(options)
}

fn main() {
    let options = options().unwrap_or_else(|e| {
        eprintln!("pushpoll: {e}");
        std::process::exit(2);
    });
    let modes: Vec<Mode> = MODES
        .iter()
        .filter(|(name, _)| options.only.is_empty() || options.only.iter().any(|o| o == name))
        .map(|&(_, mode)| mode)
        .collect();
    let mut active_rows = Vec::new();
    let mut idle_rows = Vec::new();
    for mode in modes {
        eprintln!("pushpoll: {} …", mode.label());
        let active = scenario(
            mode,
            &options.server,
            options.users,
            options.rate,
            options.duration,
        );
        let per_second = |n: u64| n as f64 / active.seconds;
        let delivered = active.deliveries.max(1) as f64;
        active_rows.push(format!(
            "| {} | {} / {} ms | {:.0} req/s, {:.1} new conn/s | {:.0} B ({:.0} B) | {:.1} ms | {} | {} |",
            mode.label(),
            percentile_ms(&active.latencies_us, 0.50),
            percentile_ms(&active.latencies_us, 0.99),
            per_second(active.requests),
            per_second(active.connections),
            active.app_bytes as f64 / delivered,
            active.octets as f64 / delivered,
            active.cpu.as_secs_f64() * 1000.0 / delivered * 1000.0,
            active.deliveries,
            active.errors,
        ));
        if options.idle > 0 {
            let idle = scenario(mode, &options.server, options.idle, 0.0, options.duration);
            let per_user_minute = |x: f64| x / options.idle as f64 / (idle.seconds / 60.0);
            idle_rows.push(format!(
                "| {} | {:.2} ms | {:.1} | {:.2} | {:.0} B ({:.0} B) | {} |",
                mode.label(),
                per_user_minute(idle.cpu.as_secs_f64() * 1000.0),
                per_user_minute(idle.requests as f64),
                per_user_minute(idle.connections as f64),
                per_user_minute(idle.app_bytes as f64),
                per_user_minute(idle.octets as f64),
                idle.errors,
            ));
        }
    }
    println!(
        "\n{} users in one room, {} messages/s, {:.0} s measured:\n",
        options.users,
        options.rate,
        options.duration.as_secs_f64()
    );
    println!("| transport | delivery latency p50 / p99 | requests/s (push: lines sent) and new TCP connections/s at the server | bytes per delivered line: TCP payload (IP, kernel count) | server CPU per 1,000 deliveries | deliveries | failed requests |");
    println!("|---|---|---|---|---|---|---|");
    active_rows.iter().for_each(|row| println!("{row}"));
    if !idle_rows.is_empty() {
        println!("\n{} idle users, per idle user per minute:\n", options.idle);
        println!("| transport | server CPU | requests | new TCP connections | bytes: TCP payload (IP, kernel count) | failed requests |");
        println!("|---|---|---|---|---|---|");
        idle_rows.iter().for_each(|row| println!("{row}"));
    }
}
