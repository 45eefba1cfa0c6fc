//! Underworld-Line load generator: the benchmark's client side.
//!
//! ```text
//! cargo run --release -- --rate-limit off --max-per-ip 0          # the server, in one terminal
//! cargo run --release --example loadgen -- fanout --clients 100   # the load, in another
//! cargo run --release --example loadgen -- --help                 # every workload and option
//! ```
//!
//! One thread drives every connection with mio (epoll), non-blocking, so the load
//! generator stays cheap next to the server on a 2-core machine. Each chat line it sends
//! is `lg <sender> <seq> <send_ns>`: the receivers parse it back out of `MSG` lines to
//! measure delivery latency and to count lost, duplicated and reordered messages.
//!
//! Traffic rule: it only ever connects to 127.0.0.0/8, every loop is bounded in count and
//! in time, and the program always stops by itself.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

const USAGE: &str = "\
Underworld-Line load generator: drives a RUNNING server (loopback only).

usage: loadgen <workload> [options]

workloads:
  idle      open --clients connections at --connect-rate, hold them --duration s, then one
            client sends one message: reports accepted / refused / failed, whether everyone
            got it, and (with --pid) the server's RSS, threads and open files before/after
  fanout    --clients in one fresh room, --senders of them sending --rate messages/s in
            total for --duration s: deliveries/s offered and achieved, latency
            p50/p99/p99.9/max, lost, duplicated, reordered
  saturate  short fanout rounds at doubling offered rates until one fails, then bisects:
            the highest deliveries/s with no loss, achieved >= 95 % and p99 < 1 s
  slow      a baseline fanout round, then the same round with --slow extra clients that
            never read: when the server dropped each, and both rounds' latency
  step      adds --step clients at a time up to --max-clients (or until refused); at each
            step, 100 broadcasts (4 in flight) timed until every client has one; stops
            when their p95 passes 500 ms (the websocket-shootout method)

options:
  --addr IP:PORT       server address, in 127.0.0.0/8       [127.0.0.1:2022]
  --clients N          connections                           [idle 1000, fanout/slow 100,
                                                              saturate 1000]
  --senders S          how many of the clients send          [min(10, clients)]
  --rate R             messages/s offered, all senders together
                                                             [fanout/slow 1000; saturate:
                                                              first round, 50000/clients]
  --duration SECS      measured time (idle: holding time; saturate: per round)
                                                             [idle 2, fanout 5, slow 8,
                                                              saturate 2]
  --warmup SECS        sending before measuring starts       [fanout/slow 1, saturate 0.5]
  --connect-rate R     new connections per second            [2000]
  --pid PID            the server's pid: report its RSS, threads and fds (from /proc)
  --slow K             clients that never read (slow)        [2]
  --pad BYTES          filler appended to every chat line    [0; slow: 900, so that the
                                                              slow clients' kernel buffers
                                                              (~4 MB) fill within seconds]
  --rounds N           saturate: at most N rounds            [12]
  --step N             step: clients added per step          [1000]
  --max-clients N      step: stop adding there               [20000, capped by our fd limit]
  --json               one JSON line on stdout instead of the human table
  --help               this text

Progress goes to stderr about once a second. Exit status 0 when the run completed
(whatever it measured), 1 when it could not run, 2 on a usage error.
";

// ---------------------------------------------------------------------------------------
// Tunables. Each is a bound that keeps the program finite in time or memory.
// ---------------------------------------------------------------------------------------

/// One source address's ephemeral ports are 32768..60999 (28,232); rotating well before
/// that leaves room for sockets in TIME_WAIT from a previous run.
const CONNECTIONS_PER_SOURCE: usize = 20_000;
/// Connections in their handshake (connecting or waiting for HELLO) at any moment: more
/// would only overflow the server's listen backlog and turn into 1 s SYN retransmits.
const MAX_HANDSHAKING: usize = 256;
/// A connection that has not said HELLO by then counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest server line we keep whole; longer ones are skipped (none are expected).
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Bytes we buffer for one connection the server is not reading; past that, further
/// messages for it are skipped (and reported) rather than growing memory without bound.
const MAX_OUT_BYTES: usize = 1024 * 1024;
/// Reads from one socket per wake-up before serving the others (fairness).
const READS_PER_TURN: usize = 64;
/// Latency histogram range, in microseconds: 1 us .. 1 hour, 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;
/// How long to wait for a room change or a /ping round trip before giving up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last send, wait this long at most for the deliveries still in flight...
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// ...and give up sooner when nothing at all arrives for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Slow clients send `/ping` this often (see `Fleet::poke`).
const POKE_INTERVAL: Duration = Duration::from_millis(100);
/// After a slow round, how long at most to wait for the server to drop the slow clients
/// (as long as the round itself, within these bounds: a server drops a client whose
/// socket took nothing for its --send-timeout, 2 s by default).
const SLOW_DROP_WAIT_MIN: Duration = Duration::from_secs(2);
const SLOW_DROP_WAIT_MAX: Duration = Duration::from_secs(10);
/// Step workload: broadcasts per step, how many in flight, per-broadcast timeout, and the
/// p95 above which the step fails.
const STEP_BROADCASTS: usize = 100;
const STEP_IN_FLIGHT: usize = 4;
const STEP_BROADCAST_TIMEOUT: Duration = Duration::from_secs(5);
const STEP_P95_LIMIT_US: u64 = 500_000;
/// Receiver x sender counters cost 16 bytes each; refuse runs that would need more.
const MAX_PAIRS: usize = 16 * 1024 * 1024;
/// Filler for `--pad` (receivers ignore everything after the three numbers).
const PAD: &str = concat!(
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
    "................................................................................",
);

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Idle,
    Fanout,
    Saturate,
    Slow,
    Step,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::Fanout => "fanout",
            Workload::Saturate => "saturate",
            Workload::Slow => "slow",
            Workload::Step => "step",
        }
    }
}

/// Options as given; `None` means "the workload's default".
#[derive(Debug)]
struct Options {
    workload: Workload,
    addr: SocketAddrV4,
    clients: Option<usize>,
    senders: Option<usize>,
    rate: Option<f64>,
    duration: Option<f64>,
    warmup: Option<f64>,
    connect_rate: f64,
    pid: Option<u32>,
    slow: usize,
    pad: Option<usize>,
    rounds: usize,
    step: usize,
    max_clients: usize,
    json: bool,
}

enum Parsed {
    Run(Box<Options>),
    Help,
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Parsed::Help);
    }
    let mut iter = args.iter();
    let workload = match iter.next().map(String::as_str) {
        Some("idle") => Workload::Idle,
        Some("fanout") => Workload::Fanout,
        Some("saturate") => Workload::Saturate,
        Some("slow") => Workload::Slow,
        Some("step") => Workload::Step,
        Some(other) => return Err(format!("unknown workload `{other}`")),
        None => return Err("missing workload".to_string()),
    };
    let mut opts = Options {
        workload,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2022),
        clients: None,
        senders: None,
        rate: None,
        duration: None,
        warmup: None,
        connect_rate: 2000.0,
        pid: None,
        slow: 2,
        pad: None,
        rounds: 12,
        step: 1000,
        max_clients: 20_000,
        json: false,
    };
    while let Some(flag) = iter.next() {
        if flag == "--json" {
            opts.json = true;
            continue;
        }
        let value = iter
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        match flag.as_str() {
            "--addr" => {
                let addr: SocketAddrV4 = value
                    .parse()
                    .map_err(|_| format!("--addr: `{value}` is not IPv4:PORT"))?;
                // The traffic rule: this tool never sends anything off the machine.
                if !addr.ip().is_loopback() {
                    return Err(format!("--addr: {value} is not in 127.0.0.0/8"));
                }
                opts.addr = addr;
            }
            "--clients" => opts.clients = Some(parse_count(flag, value, 1)?),
            "--senders" => opts.senders = Some(parse_count(flag, value, 1)?),
            "--rate" => opts.rate = Some(parse_positive(flag, value)?),
            "--duration" => opts.duration = Some(parse_seconds(flag, value)?),
            "--warmup" => opts.warmup = Some(parse_seconds(flag, value)?),
            "--connect-rate" => opts.connect_rate = parse_positive(flag, value)?,
            "--pid" => opts.pid = Some(value.parse().map_err(|_| format!("--pid: `{value}`"))?),
            "--slow" => opts.slow = parse_count(flag, value, 0)?,
            "--pad" => {
                // The server's default --max-line is 1024; the rest of the line is < 60.
                let pad = parse_count(flag, value, 0)?;
                if pad > 900 {
                    return Err(format!("--pad: {pad} is over 900"));
                }
                opts.pad = Some(pad);
            }
            "--rounds" => opts.rounds = parse_count(flag, value, 1)?,
            "--step" => opts.step = parse_count(flag, value, 1)?,
            "--max-clients" => opts.max_clients = parse_count(flag, value, 1)?,
            _ => return Err(format!("unknown option `{flag}`")),
        }
    }
    Ok(Parsed::Run(Box::new(opts)))
}

fn parse_count(flag: &str, value: &str, min: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= min && n <= 10_000_000 => Ok(n),
        _ => Err(format!("{flag}: `{value}` is not a whole number >= {min}")),
    }
}

fn parse_positive(flag: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1e9 => Ok(x),
        _ => Err(format!("{flag}: `{value}` is not a positive number")),
    }
}

fn parse_seconds(flag: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        // A day is far more than any benchmark needs, and keeps every loop bounded.
        Ok(x) if x.is_finite() && (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "{flag}: `{value}` is not a number of seconds (0..86400)"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Non-blocking connect in progress.
    Connecting,
    /// TCP is up; waiting for the server's `HELLO`.
    AwaitHello,
    /// Said HELLO: a member of the chat.
    Open,
    Closed,
}

/// Receives the `MSG` lines; everything else the fleet handles (or ignores) itself.
trait Sink {
    fn on_msg(&mut self, conn: usize, room: &str, text: &str, now_ns: u64);
}

/// For phases that measure nothing (connecting, joining rooms).
struct NoSink;

impl Sink for NoSink {
    fn on_msg(&mut self, _: usize, _: &str, _: &str, _: u64) {}
}

struct Conn {
    /// `None` once closed: the fd is given back at once, so failures do not pile up fds.
    stream: Option<TcpStream>,
    state: State,
    /// False for a slow client: its socket is registered for readable events only so we
    /// hear about hang-ups, but its data is never read.
    reading: bool,
    nick: String,
    /// The room we last asked for, and whether the server confirmed it with our JOIN.
    room: String,
    joined: bool,
    /// Highest numeric `/ping` token answered.
    pong: u64,
    /// An incomplete line carried over to the next read.
    partial: Vec<u8>,
    /// Dropping the rest of an over-long line.
    discarding: bool,
    out: Vec<u8>,
    /// Already on the fleet's list of connections to flush.
    dirty: bool,
    started: Instant,
    closed_ns: Option<u64>,
    /// How it ended ("eof", "reset", "read-closed", "connect: ...").
    how_closed: String,
    /// The reason of the server's `BYE`, if it sent one.
    bye: Option<String>,
}

#[derive(Clone, Copy, Default)]
struct EventFlags {
    readable: bool,
    writable: bool,
    error: bool,
    read_closed: bool,
    write_closed: bool,
}

/// Every connection of the run, driven by one mio `Poll`. A connection's index in `conns`
/// is its mio token.
struct Fleet {
    poll: Poll,
    events: Events,
    /// Flags of the ready events, copied out of `events` so handlers may borrow `self`.
    ready: Vec<(usize, EventFlags)>,
    conns: Vec<Conn>,
    addr: SocketAddrV4,
    /// The one monotonic clock every send time is measured from.
    t0: Instant,
    scratch: Vec<u8>,
    to_flush: Vec<usize>,
    /// Sockets with data left after `READS_PER_TURN` reads: served on the next turn.
    read_backlog: Vec<usize>,
    connects_started: usize,
    handshaking: usize,
    accepted: u64,
    refused: u64,
    failed: u64,
    /// Open connections the server closed (or that broke) later.
    dropped: u64,
    chat_sent: u64,
    msg_lines: u64,
    /// Lines we buffered nothing for because the connection's buffer was full.
    send_skipped: u64,
    overlong_lines: u64,
    err_lines: u64,
    last_err: Option<String>,
    ping_token: u64,
    room_counter: u64,
    label: String,
    last_progress: Instant,
}

impl Fleet {
    fn new(addr: SocketAddrV4) -> io::Result<Fleet> {
        Ok(Fleet {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            conns: Vec::new(),
            addr,
            t0: Instant::now(),
            scratch: vec![0; 64 * 1024],
            to_flush: Vec::new(),
            read_backlog: Vec::new(),
            connects_started: 0,
            handshaking: 0,
            accepted: 0,
            refused: 0,
            failed: 0,
            dropped: 0,
            chat_sent: 0,
            msg_lines: 0,
            send_skipped: 0,
            overlong_lines: 0,
            err_lines: 0,
            last_err: None,
            ping_token: 0,
            room_counter: 0,
            label: String::new(),
            last_progress: Instant::now(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn is_open(&self, i: usize) -> bool {
        self.conns[i].state == State::Open
    }

    /// A room nobody else uses, so no history is replayed into a measurement and no
    /// earlier round's stragglers are counted (room names allow 24 characters).
    fn fresh_room(&mut self) -> String {
        self.room_counter += 1;
        format!("lg-{}-{}", std::process::id(), self.room_counter)
    }

    fn set_label(&mut self, label: &str) {
        self.label.clear();
        self.label.push_str(label);
    }

    fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.state == State::Open).count()
    }

    /// About once a second, one line of progress on stderr.
    fn maybe_progress(&mut self) {
        if self.last_progress.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_progress = Instant::now();
        eprintln!(
            "[loadgen {:7.1}s] {}: open {} (accepted {}, refused {}, failed {}, dropped {}), \
             sent {}, MSG lines received {}",
            self.t0.elapsed().as_secs_f64(),
            self.label,
            self.open_count(),
            self.accepted,
            self.refused,
            self.failed,
            self.dropped,
            self.chat_sent,
            self.msg_lines
        );
    }

    /// Starts one non-blocking connect; returns its index (closed at once if it failed).
    fn start_connect(&mut self) -> usize {
        let i = self.conns.len();
        let mut conn = Conn {
            stream: None,
            state: State::Connecting,
            reading: true,
            nick: String::new(),
            room: String::new(),
            joined: false,
            pong: 0,
            partial: Vec::new(),
            discarding: false,
            out: Vec::new(),
            dirty: false,
            started: Instant::now(),
            closed_ns: None,
            how_closed: String::new(),
            bye: None,
        };
        // Source address 127.0.0.1, then .2, .3 ...: each has its own 28,232 ports.
        let source_index = self.connects_started / CONNECTIONS_PER_SOURCE;
        self.connects_started += 1;
        let source = Ipv4Addr::new(127, 0, 0, (1 + source_index).min(254) as u8);
        match connect_from(source, self.addr) {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match self
                    .poll
                    .registry()
                    .register(&mut stream, Token(i), interest)
                {
                    Ok(()) => {
                        conn.stream = Some(stream);
                        self.handshaking += 1;
                    }
                    Err(e) => {
                        conn.state = State::Closed;
                        conn.how_closed = format!("register: {e}");
                        self.failed += 1;
                    }
                }
            }
            Err(e) => {
                conn.state = State::Closed;
                conn.how_closed = format!("connect: {e}");
                self.failed += 1;
            }
        }
        self.conns.push(conn);
        i
    }

    /// Closes connection `i` and books it as refused, failed or dropped.
    fn close(&mut self, i: usize, how: &str) {
        let now_ns = self.now_ns();
        let conn = &mut self.conns[i];
        match conn.state {
            State::Closed => return,
            State::Connecting | State::AwaitHello => {
                self.handshaking = self.handshaking.saturating_sub(1);
                let refused = conn.bye.as_deref().is_some_and(|reason| {
                    reason.starts_with("server full") || reason.starts_with("too many")
                });
                if refused {
                    self.refused += 1;
                } else {
                    self.failed += 1;
                }
            }
            State::Open => self.dropped += 1,
        }
        conn.state = State::Closed;
        conn.closed_ns = Some(now_ns);
        conn.how_closed = how.to_string();
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.out = Vec::new();
        conn.partial = Vec::new();
    }

    /// Queues one line (without its LF) for connection `i`; false if it is not open or
    /// its buffer is full.
    fn send(&mut self, i: usize, line: std::fmt::Arguments<'_>) -> bool {
        let conn = &mut self.conns[i];
        if conn.state != State::Open || !conn.reading {
            return false;
        }
        if conn.out.len() > MAX_OUT_BYTES {
            self.send_skipped += 1;
            return false;
        }
        let _ = conn.out.write_fmt(line);
        conn.out.push(b'\n');
        if !conn.dirty {
            conn.dirty = true;
            self.to_flush.push(i);
        }
        true
    }

    /// Writes every queued buffer as far as the sockets take it.
    fn flush(&mut self) {
        let list = std::mem::take(&mut self.to_flush);
        for &i in &list {
            self.conns[i].dirty = false;
            self.write_out(i);
        }
        let mut list = list;
        list.clear();
        // Keep the allocation; `write_out` never pushes onto `to_flush`.
        self.to_flush = list;
    }

    fn write_out(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        let mut error = None;
        while written < conn.out.len() {
            match stream.write(&conn.out[written..]) {
                Ok(0) => {
                    error = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => written += n,
                // The writable event will bring us back here.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        conn.out.drain(..written);
        if let Some(how) = error {
            self.close(i, &how);
        }
    }

    /// One round of the event loop: flush, wait up to `timeout` for events, handle them.
    fn turn(&mut self, timeout: Duration, sink: &mut dyn Sink) {
        self.flush();
        let timeout = if self.read_backlog.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("loadgen: poll: {e}");
                // Do not spin if polling keeps failing.
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        self.ready.clear();
        for event in self.events.iter() {
            let flags = EventFlags {
                readable: event.is_readable(),
                writable: event.is_writable(),
                error: event.is_error(),
                read_closed: event.is_read_closed(),
                write_closed: event.is_write_closed(),
            };
            self.ready.push((event.token().0, flags));
        }
        let ready = std::mem::take(&mut self.ready);
        for &(i, flags) in &ready {
            if i < self.conns.len() {
                self.handle_event(i, flags, sink);
            }
        }
        self.ready = ready;
        let backlog = std::mem::take(&mut self.read_backlog);
        for i in backlog {
            self.read_some(i, sink);
        }
        self.flush();
        self.maybe_progress();
    }

    fn handle_event(&mut self, i: usize, flags: EventFlags, sink: &mut dyn Sink) {
        if self.conns[i].state == State::Closed {
            return;
        }
        if self.conns[i].state == State::Connecting {
            self.check_connected(i);
            if self.conns[i].state != State::AwaitHello {
                return;
            }
        }
        if !self.conns[i].reading {
            // A slow client: only a hang-up or an error is of interest.
            if flags.error {
                self.close(i, "reset/error");
            } else if flags.read_closed || flags.write_closed {
                self.close(i, "read-closed");
            }
            return;
        }
        if flags.readable || flags.read_closed || flags.error {
            self.read_some(i, sink);
        }
        if flags.writable && !self.conns[i].out.is_empty() && !self.conns[i].dirty {
            self.conns[i].dirty = true;
            self.to_flush.push(i);
        }
    }

    /// A writable (or error) event on a connecting socket: did the connect succeed?
    fn check_connected(&mut self, i: usize) {
        let Some(stream) = self.conns[i].stream.as_ref() else {
            return;
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return self.close(i, &format!("connect: {e}")),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {
                let _ = stream.set_nodelay(true);
                self.conns[i].state = State::AwaitHello;
            }
            // Spurious wake-up: still connecting.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.close(i, &format!("connect: {e}")),
        }
    }

    /// Reads what connection `i` has (edge-triggered: until WouldBlock, or up to
    /// `READS_PER_TURN` reads, the rest on the next turn) and handles each full line.
    fn read_some(&mut self, i: usize, sink: &mut dyn Sink) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut drained = false;
        for _ in 0..READS_PER_TURN {
            if self.conns[i].state == State::Closed || !self.conns[i].reading {
                drained = true;
                break;
            }
            let Some(stream) = self.conns[i].stream.as_mut() else {
                drained = true;
                break;
            };
            match stream.read(&mut scratch) {
                Ok(0) => {
                    self.close(i, "eof");
                    drained = true;
                    break;
                }
                Ok(n) => self.take_bytes(i, &scratch[..n], sink),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let how = if e.kind() == io::ErrorKind::ConnectionReset {
                        "reset".to_string()
                    } else {
                        format!("read: {e}")
                    };
                    self.close(i, &how);
                    drained = true;
                    break;
                }
            }
        }
        self.scratch = scratch;
        // Edge-triggered: epoll will not wake us again for data already waiting, so a
        // socket that used up its reads without reaching WouldBlock goes on the backlog.
        if !drained && !self.read_backlog.contains(&i) {
            self.read_backlog.push(i);
        }
    }

    /// Splits bytes into lines, joining them to the partial line left by the last read.
    fn take_bytes(&mut self, i: usize, bytes: &[u8], sink: &mut dyn Sink) {
        let now_ns = self.now_ns();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            let conn = &mut self.conns[i];
            if conn.discarding {
                conn.discarding = false;
                continue;
            }
            if conn.partial.is_empty() {
                self.handle_line(i, head, now_ns, sink);
            } else {
                let mut line = std::mem::take(&mut conn.partial);
                line.extend_from_slice(head);
                self.handle_line(i, &line, now_ns, sink);
                line.clear();
                if self.conns[i].state != State::Closed {
                    self.conns[i].partial = line;
                }
            }
            if self.conns[i].state == State::Closed {
                return;
            }
        }
        let conn = &mut self.conns[i];
        if !rest.is_empty() && !conn.discarding {
            if conn.partial.len() + rest.len() > MAX_LINE_BYTES {
                conn.partial.clear();
                conn.discarding = true;
                self.overlong_lines += 1;
            } else {
                conn.partial.extend_from_slice(rest);
            }
        }
    }

    /// One server line. Unknown or malformed lines are ignored, never trusted.
    fn handle_line(&mut self, i: usize, line: &[u8], now_ns: u64, sink: &mut dyn Sink) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        match keyword {
            "MSG" => {
                self.msg_lines += 1;
                let mut parts = rest.splitn(3, ' ');
                if let (Some(room), Some(_nick), Some(text)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    sink.on_msg(i, room, text, now_ns);
                }
            }
            "HELLO" => {
                let conn = &mut self.conns[i];
                if conn.state == State::AwaitHello {
                    conn.nick = rest.split(' ').next().unwrap_or("").to_string();
                    conn.state = State::Open;
                    self.handshaking = self.handshaking.saturating_sub(1);
                    self.accepted += 1;
                }
            }
            "JOIN" => {
                let conn = &mut self.conns[i];
                let mut parts = rest.split(' ');
                if parts.next() == Some(conn.room.as_str())
                    && parts.next() == Some(conn.nick.as_str())
                {
                    conn.joined = true;
                }
            }
            "PONG" => {
                if let Ok(token) = rest.trim().parse::<u64>() {
                    let conn = &mut self.conns[i];
                    conn.pong = conn.pong.max(token);
                }
            }
            "BYE" => {
                // Kept short: it is only reported.
                self.conns[i].bye = Some(rest.chars().take(80).collect());
            }
            "ERR" => {
                self.err_lines += 1;
                self.last_err = Some(rest.chars().take(120).collect());
            }
            _ => {} // JOIN/LEAVE of others, HIST, NOTICE, NICK...: not needed here.
        }
    }

    /// Opens `n` connections, `rate` per second, and waits for each one's HELLO (or its
    /// refusal or failure). Returns the indices of those that said HELLO.
    fn open(&mut self, n: usize, rate: f64) -> Vec<usize> {
        let first = self.conns.len();
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(n as f64 / rate) + HANDSHAKE_TIMEOUT * 2;
        let mut started = 0usize;
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            // Open-loop pacing: the k-th connect is due at start + k / rate.
            while started < n
                && self.handshaking < MAX_HANDSHAKING
                && now >= start + Duration::from_secs_f64(started as f64 / rate)
            {
                self.start_connect();
                started += 1;
            }
            if started == n && self.handshaking == 0 {
                break;
            }
            if now >= deadline {
                break;
            }
            if now.duration_since(last_sweep) >= Duration::from_millis(500) {
                last_sweep = now;
                for i in first..self.conns.len() {
                    let c = &self.conns[i];
                    let waiting = matches!(c.state, State::Connecting | State::AwaitHello);
                    if waiting && c.started.elapsed() > HANDSHAKE_TIMEOUT {
                        self.close(i, "timeout: no HELLO");
                    }
                }
            }
            let next_due = if started < n && self.handshaking < MAX_HANDSHAKING {
                (start + Duration::from_secs_f64(started as f64 / rate))
                    .saturating_duration_since(now)
            } else {
                Duration::from_millis(50)
            };
            self.turn(next_due.min(Duration::from_millis(50)), &mut NoSink);
        }
        // Whatever is still in its handshake at the deadline has failed.
        for i in first..self.conns.len() {
            if matches!(self.conns[i].state, State::Connecting | State::AwaitHello) {
                self.close(i, "timeout: no HELLO");
            }
        }
        (first..self.conns.len())
            .filter(|&i| self.is_open(i))
            .collect()
    }

    /// Moves `members` into `room` and waits until the server has confirmed each move
    /// (our own JOIN line) and answered a `/ping` sent after it, so that nothing from
    /// before is still on its way. Returns how many did not make it.
    fn join_room(&mut self, members: &[usize], room: &str) -> usize {
        self.ping_token += 1;
        let token = self.ping_token;
        for &i in members {
            if !self.is_open(i) {
                continue;
            }
            self.conns[i].room = room.to_string();
            self.conns[i].joined = false;
            self.send(i, format_args!("/join {room}"));
            self.send(i, format_args!("/ping {token}"));
        }
        self.wait_synced(members, token, true)
    }

    /// Waits until every member has answered `/ping token` (and, with `need_join`, has
    /// seen its own JOIN), bounded by `SYNC_TIMEOUT`. Returns how many did not.
    fn wait_synced(&mut self, members: &[usize], token: u64, need_join: bool) -> usize {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        // Scanning all members on every turn would be quadratic; `next` only moves past
        // members that are done (or gone), which stay done.
        let mut next = 0;
        loop {
            while next < members.len() {
                let c = &self.conns[members[next]];
                let done = c.state == State::Closed
                    || !c.reading
                    || (c.pong >= token && (!need_join || c.joined));
                if !done {
                    break;
                }
                next += 1;
            }
            if next == members.len() || Instant::now() >= deadline {
                break;
            }
            self.turn(Duration::from_millis(50), &mut NoSink);
        }
        members
            .iter()
            .filter(|&&i| {
                let c = &self.conns[i];
                !(c.state == State::Open && c.pong >= token && (!need_join || c.joined))
            })
            .count()
    }

    /// Stops reading connection `i` for good: from now on it only hears hang-ups.
    fn stop_reading(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        conn.reading = false;
        if let Some(stream) = conn.stream.as_mut() {
            let _ = self
                .poll
                .registry()
                .reregister(stream, Token(i), Interest::READABLE);
        }
    }

    /// A slow client writes a tiny `/ping` now and then, without reading the answer. Why:
    /// when the server drops a client whose receive window is full, its FIN is queued
    /// behind the unsent data and never reaches us; but any data we send to a closed
    /// socket is answered with a reset, which epoll reports at once. So the drop is seen
    /// within one `POKE_INTERVAL`. (It also keeps an --idle-timeout from dropping it for
    /// the wrong reason.)
    fn poke(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        match stream.write(b"/ping slow\n") {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.close(i, "reset/error"),
        }
    }

    /// Ends the run politely: `/quit` everywhere, so the server closes first and the
    /// TIME_WAIT sockets are on its side, not eating our ephemeral ports for the next
    /// run. Bounded: whatever is left after a few seconds is simply closed.
    fn quit_all(&mut self) {
        self.set_label("closing");
        // Slow clients are left out: they never read, so they would never see their BYE.
        let open: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.is_open(i) && self.conns[i].reading)
            .collect();
        for &i in &open {
            self.send(i, format_args!("/quit"));
        }
        let deadline = Instant::now()
            + Duration::from_secs(3)
            + Duration::from_micros(200) * open.len() as u32;
        let mut next = 0;
        loop {
            while next < open.len() && !self.is_open(open[next]) {
                next += 1;
            }
            if next == open.len() || Instant::now() >= deadline {
                break;
            }
            self.turn(Duration::from_millis(50), &mut NoSink);
        }
        for i in 0..self.conns.len() {
            if let Some(mut stream) = self.conns[i].stream.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
        }
    }
}

/// A non-blocking TCP connect from `source` (port chosen by the kernel) to `server`.
fn connect_from(source: Ipv4Addr, server: SocketAddrV4) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    match socket.connect(&SocketAddr::V4(server).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

// ---------------------------------------------------------------------------------------
// Measuring fan-out rounds (fanout, saturate, slow)
// ---------------------------------------------------------------------------------------

/// What one receiver has seen of one sender's sequence numbers: enough to tell lost,
/// duplicated and reordered messages apart in 16 bytes.
#[derive(Clone, Copy, Default)]
struct PairState {
    /// One past the highest sequence number seen.
    next: u32,
    /// Distinct messages received.
    received: u32,
    /// Bit k set: sequence number `next - 1 - k` has been seen (k < 64). A message older
    /// than that window is counted as reordered (it cannot be told from a duplicate).
    window: u64,
}

/// `lg <sender> <seq> <send_ns>` -> its three numbers.
fn parse_lg(text: &str) -> Option<(usize, u64, u64)> {
    let mut words = text.strip_prefix("lg ")?.split(' ');
    let sender = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let send_ns = words.next()?.parse().ok()?;
    Some((sender, seq, send_ns))
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

struct FanoutTracker {
    room: String,
    senders: usize,
    /// Connection index -> receiver number (`u32::MAX`: not a receiver).
    receiver_of_conn: Vec<u32>,
    pairs: Vec<PairState>,
    /// Messages actually queued, per sender.
    queued: Vec<u64>,
    measure_from_ns: u64,
    latency_us: Histogram<u64>,
    /// Distinct deliveries, all and measured (sent after the warm-up).
    delivered: u64,
    measured: u64,
    last_measured_ns: u64,
    last_delivery: Instant,
    duplicated: u64,
    reordered: u64,
    /// Lines in the room that were not ours or did not parse.
    foreign: u64,
}

impl Sink for FanoutTracker {
    fn on_msg(&mut self, conn: usize, room: &str, text: &str, now_ns: u64) {
        if room != self.room {
            return;
        }
        let receiver = match self.receiver_of_conn.get(conn) {
            Some(&r) if r != u32::MAX => r as usize,
            _ => return,
        };
        let Some((sender, seq, send_ns)) = parse_lg(text) else {
            self.foreign += 1;
            return;
        };
        if sender >= self.senders || seq >= u64::from(u32::MAX) {
            self.foreign += 1;
            return;
        }
        let seq = seq as u32;
        let pair = &mut self.pairs[receiver * self.senders + sender];
        if seq >= pair.next {
            let shift = seq - pair.next + 1;
            pair.window = if shift >= 64 { 0 } else { pair.window << shift };
            pair.window |= 1;
            pair.next = seq + 1;
        } else {
            let age = pair.next - 1 - seq;
            if age < 64 {
                if pair.window & (1 << age) != 0 {
                    self.duplicated += 1;
                    return;
                }
                pair.window |= 1 << age;
            }
            self.reordered += 1;
        }
        pair.received += 1;
        self.delivered += 1;
        self.last_delivery = Instant::now();
        if send_ns >= self.measure_from_ns {
            self.measured += 1;
            self.last_measured_ns = now_ns;
            // Latency from the *scheduled* send time (see `run_round`).
            self.latency_us
                .saturating_record(now_ns.saturating_sub(send_ns) / 1000);
        }
    }
}

struct RoundSpec {
    /// Messages per second offered, all senders together.
    rate: f64,
    /// Filler bytes after `lg <sender> <seq> <send_ns> `.
    pad: usize,
    duration: f64,
    warmup: f64,
}

struct SlowDrop {
    /// Seconds from the start of the round's clock; `None`: not dropped.
    dropped_after_s: Option<f64>,
    how: String,
}

struct RoundResult {
    room: String,
    receivers: usize,
    senders: usize,
    rate: f64,
    pad: usize,
    duration: f64,
    sent: u64,
    expected: u64,
    delivered: u64,
    offered_per_s: f64,
    achieved_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    samples: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    foreign: u64,
    disconnected: usize,
    skipped: u64,
    loadgen_cpu_pct: f64,
    slow: Vec<SlowDrop>,
}

impl RoundResult {
    /// The saturate workload's criteria.
    fn passes(&self) -> bool {
        self.lost == 0
            && self.disconnected == 0
            && self.skipped == 0
            && self.achieved_per_s >= 0.95 * self.offered_per_s
            && self.p99_us < 1_000_000
    }
}

/// One fan-out round: `receivers` (senders among them) and `slow` join a fresh room;
/// then an open-loop schedule of messages for warm-up + duration; then a bounded drain.
fn run_round(
    fleet: &mut Fleet,
    receivers: &[usize],
    senders: &[usize],
    slow: &[usize],
    spec: &RoundSpec,
) -> Result<RoundResult, String> {
    if receivers.is_empty() || senders.is_empty() {
        return Err("no clients left to send or receive".to_string());
    }
    let room = fleet.fresh_room();
    let members: Vec<usize> = receivers.iter().chain(slow).copied().collect();
    let missing = fleet.join_room(&members, &room);
    if missing > 0 {
        return Err(format!(
            "{missing} of {} clients did not confirm joining room {room} (closed, or no \
             answer within {:?}){}",
            members.len(),
            SYNC_TIMEOUT,
            fleet
                .last_err
                .as_deref()
                .map(|e| format!(" (last ERR: {e})"))
                .unwrap_or_default()
        ));
    }
    let pair_count = receivers.len() * senders.len();
    if pair_count > MAX_PAIRS {
        return Err(format!(
            "clients x senders = {pair_count} is too many to track"
        ));
    }
    let mut receiver_of_conn = vec![u32::MAX; fleet.conns.len()];
    for (r, &i) in receivers.iter().enumerate() {
        receiver_of_conn[i] = r as u32;
    }
    let total = ((spec.warmup + spec.duration) * spec.rate).round() as u64;
    if total / senders.len() as u64 >= u64::from(u32::MAX) {
        return Err("too many messages per sender".to_string());
    }
    let interval_ns = 1e9 / spec.rate;
    // A little slack so that the first messages are not late before we even start.
    let start_ns = fleet.now_ns() + 5_000_000;
    let measure_from_ns = start_ns + (spec.warmup * 1e9) as u64;
    let mut tracker = FanoutTracker {
        room: room.clone(),
        senders: senders.len(),
        receiver_of_conn,
        pairs: vec![PairState::default(); pair_count],
        queued: vec![0; senders.len()],
        measure_from_ns,
        latency_us: new_histogram(),
        delivered: 0,
        measured: 0,
        last_measured_ns: 0,
        last_delivery: Instant::now(),
        duplicated: 0,
        reordered: 0,
        foreign: 0,
    };
    for &i in slow {
        fleet.stop_reading(i);
    }
    let cpu_before = cpu_time();
    let wall_before = Instant::now();
    let skipped_before = fleet.send_skipped;
    let mut last_poke = Instant::now();
    let send_deadline = Instant::now()
        + Duration::from_secs_f64(spec.warmup + spec.duration)
        + Duration::from_secs(5);
    // Open loop: message m is due at start + m / rate, whatever the server does. Sender
    // m % S sends it as its (m / S)-th message, so each sender runs at rate / S and the
    // senders' phases are spread evenly. The time written into the message is the time it
    // was *due*, not when we got round to it: if the server (or this loop) falls behind,
    // the backlog shows up as latency instead of silently lowering the load (coordinated
    // omission). When behind, everything already due is sent at once.
    let mut m = 0u64;
    while m < total && Instant::now() < send_deadline {
        let now_ns = fleet.now_ns();
        while m < total {
            let due_ns = start_ns + (m as f64 * interval_ns) as u64;
            if due_ns > now_ns {
                break;
            }
            let s = (m % senders.len() as u64) as usize;
            let seq = m / senders.len() as u64;
            let filler = &PAD[..spec.pad];
            if fleet.send(senders[s], format_args!("lg {s} {seq} {due_ns} {filler}")) {
                tracker.queued[s] += 1;
                fleet.chat_sent += 1;
            }
            m += 1;
        }
        if !slow.is_empty() && last_poke.elapsed() >= POKE_INTERVAL {
            last_poke = Instant::now();
            for &i in slow {
                fleet.poke(i);
            }
        }
        let next_due_ns = start_ns + (m as f64 * interval_ns) as u64;
        let wait = Duration::from_nanos(next_due_ns.saturating_sub(fleet.now_ns()));
        fleet.turn(wait.min(Duration::from_millis(20)), &mut tracker);
    }
    // Drain: until everything queued has arrived everywhere, or nothing arrives for a
    // while, or the hard limit.
    let expected = tracker.queued.iter().sum::<u64>() * receivers.len() as u64;
    let drain_deadline = Instant::now() + DRAIN_MAX;
    tracker.last_delivery = Instant::now();
    while tracker.delivered < expected
        && Instant::now() < drain_deadline
        && tracker.last_delivery.elapsed() < DRAIN_IDLE
    {
        if !slow.is_empty() && last_poke.elapsed() >= POKE_INTERVAL {
            last_poke = Instant::now();
            for &i in slow {
                fleet.poke(i);
            }
        }
        fleet.turn(Duration::from_millis(20), &mut tracker);
    }
    let cpu_used = cpu_time().saturating_sub(cpu_before);
    let wall_used = wall_before.elapsed();
    // Slow clients: give the server a bounded while to drop them.
    let slow_wait =
        Duration::from_secs_f64(spec.duration).clamp(SLOW_DROP_WAIT_MIN, SLOW_DROP_WAIT_MAX);
    let slow_deadline = Instant::now() + slow_wait;
    while slow.iter().any(|&i| fleet.conns[i].state != State::Closed)
        && Instant::now() < slow_deadline
    {
        if last_poke.elapsed() >= POKE_INTERVAL {
            last_poke = Instant::now();
            for &i in slow {
                fleet.poke(i);
            }
        }
        fleet.turn(Duration::from_millis(20), &mut tracker);
    }
    let slow_report = slow
        .iter()
        .map(|&i| {
            let c = &fleet.conns[i];
            SlowDrop {
                dropped_after_s: c
                    .closed_ns
                    .map(|ns| ns.saturating_sub(start_ns) as f64 / 1e9),
                how: if c.state == State::Closed {
                    c.how_closed.clone()
                } else {
                    "not dropped".to_string()
                },
            }
        })
        .collect();

    let mut lost = 0u64;
    for r in 0..receivers.len() {
        for s in 0..senders.len() {
            let got = u64::from(tracker.pairs[r * senders.len() + s].received);
            lost += tracker.queued[s].saturating_sub(got);
        }
    }
    let measured_window_s = ((tracker.last_measured_ns.saturating_sub(measure_from_ns)) as f64
        / 1e9)
        .max(spec.duration);
    let h = &tracker.latency_us;
    Ok(RoundResult {
        room,
        receivers: receivers.len(),
        senders: senders.len(),
        rate: spec.rate,
        pad: spec.pad,
        duration: spec.duration,
        sent: tracker.queued.iter().sum(),
        expected,
        delivered: tracker.delivered,
        offered_per_s: spec.rate * receivers.len() as f64,
        achieved_per_s: if measured_window_s > 0.0 {
            tracker.measured as f64 / measured_window_s
        } else {
            0.0
        },
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        samples: h.len(),
        lost,
        duplicated: tracker.duplicated,
        reordered: tracker.reordered,
        foreign: tracker.foreign,
        disconnected: receivers.iter().filter(|&&i| !fleet.is_open(i)).count(),
        skipped: fleet.send_skipped - skipped_before,
        loadgen_cpu_pct: 100.0 * cpu_used.as_secs_f64() / wall_used.as_secs_f64().max(1e-9),
        slow: slow_report,
    })
}

// ---------------------------------------------------------------------------------------
// Reporting helpers
// ---------------------------------------------------------------------------------------

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON number (JSON has no NaN or infinity).
fn jf(x: f64) -> String {
    if x.is_finite() {
        format!("{}", (x * 1000.0).round() / 1000.0)
    } else {
        "null".to_string()
    }
}

fn jopt(x: Option<u64>) -> String {
    x.map_or("null".to_string(), |v| v.to_string())
}

/// A JSON object built field by field (hand-written: no serde in this project).
struct Obj(String);

impl Obj {
    fn new() -> Obj {
        Obj(String::from("{"))
    }
    fn raw(mut self, key: &str, value: &str) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{}", js(key), value);
        self
    }
    fn str(self, key: &str, value: &str) -> Obj {
        self.raw(key, &js(value))
    }
    fn num(self, key: &str, value: f64) -> Obj {
        self.raw(key, &jf(value))
    }
    fn int(self, key: &str, value: u64) -> Obj {
        self.raw(key, &value.to_string())
    }
    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn json_array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

fn round_json(r: &RoundResult) -> String {
    let slow: Vec<String> = r
        .slow
        .iter()
        .map(|s| {
            Obj::new()
                .raw(
                    "dropped_after_s",
                    &s.dropped_after_s.map_or("null".to_string(), jf),
                )
                .str("how", &s.how)
                .end()
        })
        .collect();
    Obj::new()
        .str("room", &r.room)
        .int("clients", r.receivers as u64)
        .int("senders", r.senders as u64)
        .num("rate_msgs_per_s", r.rate)
        .int("pad_bytes", r.pad as u64)
        .num("duration_s", r.duration)
        .int("sent", r.sent)
        .int("expected_deliveries", r.expected)
        .int("delivered", r.delivered)
        .num("offered_deliveries_per_s", r.offered_per_s)
        .num("achieved_deliveries_per_s", r.achieved_per_s)
        .num("p50_ms", ms(r.p50_us))
        .num("p99_ms", ms(r.p99_us))
        .num("p999_ms", ms(r.p999_us))
        .num("max_ms", ms(r.max_us))
        .int("samples", r.samples)
        .int("lost", r.lost)
        .int("duplicated", r.duplicated)
        .int("reordered", r.reordered)
        .int("foreign", r.foreign)
        .int("disconnected", r.disconnected as u64)
        .int("send_skipped", r.skipped)
        .num("loadgen_cpu_pct", r.loadgen_cpu_pct)
        .raw("slow_clients", &json_array(&slow))
        .end()
}

const ROUND_HEADER: &str = "round          clients senders    msgs/s  offered deliv/s achieved deliv/s   p50 ms   p99 ms p99.9 ms   max ms   lost  dup reord disc lg-cpu";

const ROUND_LEGEND: &str =
    "(deliveries = messages x receivers, the sender included; latency from each \
message's scheduled send time; disc = receivers disconnected; lg-cpu = this load generator's \
CPU use: near 100 % it, not the server, is the limit)";

fn round_row(name: &str, r: &RoundResult) -> String {
    format!(
        "{:<14} {:>7} {:>7} {:>9.0} {:>16.0} {:>16.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>4} {:>5} {:>4} {:>5.0}%",
        name,
        r.receivers,
        r.senders,
        r.rate,
        r.offered_per_s,
        r.achieved_per_s,
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.p999_us),
        ms(r.max_us),
        r.lost,
        r.duplicated,
        r.reordered,
        r.disconnected,
        r.loadgen_cpu_pct
    )
}

/// The server's memory, threads and open files, read from /proc.
#[derive(Clone, Copy, Default)]
struct ProcStats {
    rss_kib: Option<u64>,
    threads: Option<u64>,
    fds: Option<u64>,
}

fn proc_stats(pid: u32) -> ProcStats {
    let mut stats = ProcStats::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let number = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if line.starts_with("VmRSS:") {
                stats.rss_kib = number();
            } else if line.starts_with("Threads:") {
                stats.threads = number();
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        stats.fds = Some(dir.count() as u64);
    }
    stats
}

fn proc_json(s: &ProcStats) -> String {
    Obj::new()
        .raw("rss_kib", &jopt(s.rss_kib))
        .raw("threads", &jopt(s.threads))
        .raw("fds", &jopt(s.fds))
        .end()
}

fn show(x: Option<u64>) -> String {
    x.map_or("-".to_string(), |v| v.to_string())
}

/// CPU time (user + system) this process has used: shows when the load generator, not
/// the server, is the bottleneck.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass, which is plain data.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

/// Raises our soft RLIMIT_NOFILE to the hard limit: every connection is one fd. Returns
/// the soft limit in force.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write one plain struct we own.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

// ---------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------

/// Opens `n` clients or explains why not.
fn open_clients(fleet: &mut Fleet, n: usize, rate: f64) -> Result<Vec<usize>, String> {
    let clients = fleet.open(n, rate);
    if clients.len() < n {
        return Err(format!(
            "only {} of {n} connections to {} said HELLO (refused {}, failed {}){}",
            clients.len(),
            fleet.addr,
            fleet.refused,
            fleet.failed,
            first_failure(fleet)
        ));
    }
    Ok(clients)
}

fn first_failure(fleet: &Fleet) -> String {
    fleet
        .conns
        .iter()
        .find(|c| c.state == State::Closed && !c.how_closed.is_empty())
        .map(|c| match &c.bye {
            Some(bye) => format!(": BYE {bye}"),
            None => format!(": {}", c.how_closed),
        })
        .unwrap_or_default()
}

fn run_idle(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let n = opts.clients.unwrap_or(1000);
    let hold = opts.duration.unwrap_or(2.0);
    let before = opts.pid.map(proc_stats);
    fleet.set_label("idle: connecting");
    let started = Instant::now();
    let clients = fleet.open(n, opts.connect_rate);
    let connect_s = started.elapsed().as_secs_f64();
    if clients.is_empty() && fleet.refused == 0 {
        return Err(format!(
            "no connection to {} succeeded{}",
            fleet.addr,
            first_failure(fleet)
        ));
    }
    fleet.set_label("idle: joining");
    let room = fleet.fresh_room();
    fleet.join_room(&clients, &room);
    fleet.set_label("idle: holding");
    let hold_until = Instant::now() + Duration::from_secs_f64(hold);
    while Instant::now() < hold_until {
        fleet.turn(Duration::from_millis(100), &mut NoSink);
    }
    let after = opts.pid.map(proc_stats);
    // One message from the first client still there; everyone in the room must get it.
    let members: Vec<usize> = clients
        .iter()
        .copied()
        .filter(|&i| fleet.is_open(i))
        .collect();
    let mut sink = IdleSink {
        room: room.clone(),
        got: vec![false; fleet.conns.len()],
        count: 0,
    };
    let mut broadcast_ms = None;
    if let Some(&sender) = members.first() {
        fleet.set_label("idle: one broadcast");
        let sent_ns = fleet.now_ns();
        fleet.send(sender, format_args!("lg 0 0 {sent_ns}"));
        fleet.chat_sent += 1;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while sink.count < members.len() && Instant::now() < deadline {
            fleet.turn(Duration::from_millis(20), &mut sink);
        }
        if sink.count == members.len() {
            broadcast_ms = Some((fleet.now_ns() - sent_ns) as f64 / 1e6);
        }
    }
    let all_received = clients.len() == n && sink.count == n;
    let rss_per_conn_kib = match (before, after) {
        (Some(b), Some(a)) if !clients.is_empty() => match (b.rss_kib, a.rss_kib) {
            (Some(b), Some(a)) => Some((a as f64 - b as f64) / clients.len() as f64),
            _ => None,
        },
        _ => None,
    };
    if opts.json {
        let mut obj = Obj::new()
            .str("workload", "idle")
            .str("addr", &fleet.addr.to_string())
            .int("clients", n as u64)
            .int("accepted", clients.len() as u64)
            .int("refused", fleet.refused)
            .int("failed", fleet.failed)
            .int("dropped", fleet.dropped)
            .num("connect_s", connect_s)
            .num("hold_s", hold)
            .int("receivers", members.len() as u64)
            .int("received", sink.count as u64)
            .raw("all_received", if all_received { "true" } else { "false" })
            .raw("broadcast_ms", &broadcast_ms.map_or("null".to_string(), jf));
        if let (Some(b), Some(a)) = (before, after) {
            obj = obj
                .raw("server_before", &proc_json(&b))
                .raw("server_after", &proc_json(&a))
                .raw(
                    "rss_per_conn_kib",
                    &rss_per_conn_kib.map_or("null".to_string(), jf),
                );
        }
        return Ok(obj.end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "idle: {n} connections to {} at {}/s",
        fleet.addr, opts.connect_rate
    );
    let _ = writeln!(out, "  accepted            {}", clients.len());
    let _ = writeln!(out, "  refused (BYE)       {}", fleet.refused);
    let _ = writeln!(out, "  failed              {}", fleet.failed);
    let _ = writeln!(out, "  dropped while held  {}", fleet.dropped);
    let _ = writeln!(
        out,
        "  connecting took     {connect_s:.2} s, then held {hold:.1} s"
    );
    let _ = writeln!(
        out,
        "  one broadcast       received by {} of {} ({}){}",
        sink.count,
        members.len(),
        if all_received {
            "all received"
        } else if sink.count == members.len() {
            "every accepted client received it"
        } else {
            "NOT all received"
        },
        broadcast_ms.map_or(String::new(), |t| format!(
            ", everyone had it after {t:.1} ms"
        ))
    );
    if let (Some(b), Some(a)) = (before, after) {
        let _ = writeln!(out, "  server              before      after");
        let _ = writeln!(
            out,
            "    RSS KiB     {:>12} {:>10}",
            show(b.rss_kib),
            show(a.rss_kib)
        );
        let _ = writeln!(
            out,
            "    threads     {:>12} {:>10}",
            show(b.threads),
            show(a.threads)
        );
        let _ = writeln!(
            out,
            "    open files  {:>12} {:>10}",
            show(b.fds),
            show(a.fds)
        );
        if let Some(per) = rss_per_conn_kib {
            let _ = writeln!(out, "    RSS per connection: {per:.1} KiB");
        }
    }
    Ok(out)
}

/// Idle workload: who got the one message.
struct IdleSink {
    room: String,
    got: Vec<bool>,
    count: usize,
}

impl Sink for IdleSink {
    fn on_msg(&mut self, conn: usize, room: &str, text: &str, _now_ns: u64) {
        if room == self.room && text.starts_with("lg ") {
            if let Some(seen) = self.got.get_mut(conn) {
                if !*seen {
                    *seen = true;
                    self.count += 1;
                }
            }
        }
    }
}

/// The clients and senders of a fan-out workload, with its round settings.
fn fanout_setup(
    fleet: &mut Fleet,
    opts: &Options,
    default_clients: usize,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let n = opts.clients.unwrap_or(default_clients);
    let s = opts.senders.unwrap_or(10).min(n);
    fleet.set_label(&format!("{}: connecting", opts.workload.name()));
    let clients = open_clients(fleet, n, opts.connect_rate)?;
    let senders = clients[..s].to_vec();
    Ok((clients, senders))
}

fn run_fanout(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let (clients, senders) = fanout_setup(fleet, opts, 100)?;
    let spec = RoundSpec {
        rate: opts.rate.unwrap_or(1000.0),
        pad: opts.pad.unwrap_or(0),
        duration: opts.duration.unwrap_or(5.0),
        warmup: opts.warmup.unwrap_or(1.0),
    };
    let before = opts.pid.map(proc_stats);
    fleet.set_label("fanout: running");
    let r = run_round(fleet, &clients, &senders, &[], &spec)?;
    let after = opts.pid.map(proc_stats);
    if opts.json {
        let mut obj = Obj::new()
            .str("workload", "fanout")
            .str("addr", &fleet.addr.to_string())
            .raw("round", &round_json(&r));
        if let (Some(b), Some(a)) = (before, after) {
            obj = obj
                .raw("server_before", &proc_json(&b))
                .raw("server_after", &proc_json(&a));
        }
        return Ok(obj.end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fanout: {} clients in room {}, {} senders, {:.0} msg/s (+{} B filler) for {:.1} s (+{:.1} s warm-up)",
        r.receivers, r.room, r.senders, r.rate, r.pad, r.duration, spec.warmup
    );
    let _ = writeln!(out, "{ROUND_HEADER}");
    let _ = writeln!(out, "{}", round_row("fanout", &r));
    let _ = writeln!(out, "{ROUND_LEGEND}");
    let _ = writeln!(
        out,
        "messages sent {}, deliveries {} of {} expected, latency samples {}",
        r.sent, r.delivered, r.expected, r.samples
    );
    if let (Some(b), Some(a)) = (before, after) {
        let _ = writeln!(
            out,
            "server: RSS {} -> {} KiB, threads {} -> {}, open files {} -> {}",
            show(b.rss_kib),
            show(a.rss_kib),
            show(b.threads),
            show(a.threads),
            show(b.fds),
            show(a.fds)
        );
    }
    Ok(out)
}

fn run_saturate(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let (mut clients, mut senders) = fanout_setup(fleet, opts, 1000)?;
    let n = clients.len();
    let sender_count = senders.len();
    let duration = opts.duration.unwrap_or(2.0);
    let warmup = opts.warmup.unwrap_or(0.5);
    let mut rate = opts.rate.unwrap_or(50_000.0 / n as f64);
    let mut rounds: Vec<(RoundResult, bool)> = Vec::new();
    // Doubling until the first failure, then bisecting between the best pass and the
    // lowest failure, for at most `--rounds` rounds in all.
    let mut best_pass: Option<f64> = None;
    let mut lowest_fail: Option<f64> = None;
    let mut bisections = 0;
    let mut stopped = None;
    while rounds.len() < opts.rounds {
        fleet.set_label(&format!(
            "saturate: round {} at {rate:.0} msg/s",
            rounds.len() + 1
        ));
        // A failed round may have cost us clients (dropped as too slow): replace them.
        clients.retain(|&i| fleet.is_open(i));
        senders.retain(|&i| fleet.is_open(i));
        if clients.len() < n {
            let more = fleet.open(n - clients.len(), opts.connect_rate);
            clients.extend(more);
        }
        for &i in &clients {
            if senders.len() >= sender_count {
                break;
            }
            if !senders.contains(&i) {
                senders.push(i);
            }
        }
        let spec = RoundSpec {
            rate,
            pad: opts.pad.unwrap_or(0),
            duration,
            warmup,
        };
        let r = match run_round(fleet, &clients, &senders, &[], &spec) {
            Ok(r) => r,
            Err(e) => {
                stopped = Some(e);
                break;
            }
        };
        let pass = r.passes();
        eprintln!(
            "[loadgen] saturate round {}: {:.0} deliveries/s offered, {:.0} achieved, p99 {:.1} ms, lost {}: {}",
            rounds.len() + 1,
            r.offered_per_s,
            r.achieved_per_s,
            ms(r.p99_us),
            r.lost,
            if pass { "pass" } else { "FAIL" }
        );
        rounds.push((r, pass));
        if pass {
            best_pass = Some(best_pass.map_or(rate, |b: f64| b.max(rate)));
        } else {
            lowest_fail = Some(lowest_fail.map_or(rate, |f: f64| f.min(rate)));
        }
        rate = match lowest_fail {
            None => rate * 2.0,
            Some(fail) => {
                if bisections >= 4 {
                    break;
                }
                bisections += 1;
                (best_pass.unwrap_or(0.0) + fail) / 2.0
            }
        };
        if rate < 0.5 {
            break;
        }
    }
    let best_deliveries = rounds
        .iter()
        .filter(|(_, pass)| *pass)
        .map(|(r, _)| r.offered_per_s)
        .fold(None, |best: Option<f64>, x| {
            Some(best.map_or(x, |b| b.max(x)))
        });
    if opts.json {
        let items: Vec<String> = rounds
            .iter()
            .map(|(r, pass)| {
                let mut j = round_json(r);
                j.pop();
                format!("{j},\"pass\":{pass}}}")
            })
            .collect();
        let mut obj = Obj::new()
            .str("workload", "saturate")
            .str("addr", &fleet.addr.to_string())
            .raw("rounds", &json_array(&items))
            .raw(
                "best_deliveries_per_s",
                &best_deliveries.map_or("null".to_string(), jf),
            );
        if let Some(e) = &stopped {
            obj = obj.str("stopped", e);
        }
        return Ok(obj.end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "saturate: {n} clients, {sender_count} senders, rounds of {duration:.1} s (+{warmup:.1} s warm-up); \
         pass = no loss, achieved >= 95 % of offered, p99 < 1 s"
    );
    let _ = writeln!(out, "{ROUND_HEADER} result");
    for (k, (r, pass)) in rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "{} {}",
            round_row(&format!("round {}", k + 1), r),
            if *pass { "pass" } else { "FAIL" }
        );
    }
    let _ = writeln!(out, "{ROUND_LEGEND}");
    match best_deliveries {
        Some(best) => {
            let _ = writeln!(out, "best passing rate: {best:.0} deliveries/s");
        }
        None => {
            let _ = writeln!(out, "best passing rate: none (no round passed)");
        }
    }
    if let Some(e) = stopped {
        let _ = writeln!(out, "stopped early: {e}");
    }
    Ok(out)
}

fn run_slow(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let (clients, senders) = fanout_setup(fleet, opts, 100)?;
    let spec = RoundSpec {
        rate: opts.rate.unwrap_or(1000.0),
        // Why padded: a client that never reads first fills its own receive buffer and
        // the server's kernel send buffer (about 4 MB together here) before the server
        // has anything pending at all; ~1 KB lines get there within seconds.
        pad: opts.pad.unwrap_or(900),
        duration: opts.duration.unwrap_or(8.0),
        warmup: opts.warmup.unwrap_or(1.0),
    };
    fleet.set_label("slow: baseline round");
    let baseline = run_round(fleet, &clients, &senders, &[], &spec)?;
    fleet.set_label("slow: connecting slow clients");
    let slow = open_clients(fleet, opts.slow, opts.connect_rate)?;
    fleet.set_label("slow: round with slow clients");
    let with_slow = run_round(fleet, &clients, &senders, &slow, &spec)?;
    let ratio = if baseline.p99_us > 0 {
        with_slow.p99_us as f64 / baseline.p99_us as f64
    } else {
        f64::NAN
    };
    if opts.json {
        return Ok(Obj::new()
            .str("workload", "slow")
            .str("addr", &fleet.addr.to_string())
            .raw("baseline", &round_json(&baseline))
            .raw("with_slow", &round_json(&with_slow))
            .num("p99_ratio", ratio)
            .end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "slow: {} clients, {} senders, {:.0} msg/s (+{} B filler) for {:.1} s; then again with {} clients that never read",
        baseline.receivers, baseline.senders, spec.rate, spec.pad, spec.duration, slow.len()
    );
    let _ = writeln!(out, "{ROUND_HEADER}");
    let _ = writeln!(out, "{}", round_row("baseline", &baseline));
    let _ = writeln!(out, "{}", round_row("with slow", &with_slow));
    let _ = writeln!(out, "{ROUND_LEGEND}");
    for (k, s) in with_slow.slow.iter().enumerate() {
        match s.dropped_after_s {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "slow client {k}: dropped {t:.2} s after the start ({})",
                    s.how
                );
            }
            None => {
                let _ = writeln!(out, "slow client {k}: NOT dropped by the end of the round");
            }
        }
    }
    let _ = writeln!(out, "p99 with slow clients / baseline p99: {ratio:.2}x");
    Ok(out)
}

/// Step workload: which broadcasts are in flight and how many receivers each still lacks.
struct StepTracker {
    room: String,
    /// (broadcast id, send time in ns, receivers still missing)
    in_flight: Vec<(u64, u64, usize)>,
    /// Completed broadcast times, in microseconds.
    times_us: Vec<u64>,
}

impl Sink for StepTracker {
    fn on_msg(&mut self, _conn: usize, room: &str, text: &str, now_ns: u64) {
        if room != self.room {
            return;
        }
        let Some((_, id, _)) = parse_lg(text) else {
            return;
        };
        if let Some(k) = self.in_flight.iter().position(|f| f.0 == id) {
            let flight = &mut self.in_flight[k];
            flight.2 = flight.2.saturating_sub(1);
            if flight.2 == 0 {
                self.times_us.push(now_ns.saturating_sub(flight.1) / 1000);
                self.in_flight.swap_remove(k);
            }
        }
    }
}

struct StepResult {
    clients: usize,
    refused: u64,
    failed: u64,
    p50_us: u64,
    p95_us: u64,
    max_us: u64,
    timeouts: usize,
    pass: bool,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn run_step(fleet: &mut Fleet, opts: &Options, fd_limit: u64) -> Result<String, String> {
    // Every connection is one of our fds; keep a few for the poll and stdio.
    let fd_cap = fd_limit.saturating_sub(64) as usize;
    let max_clients = opts.max_clients.min(fd_cap);
    if max_clients < opts.max_clients {
        eprintln!("[loadgen] --max-clients lowered to {max_clients}: our fd limit is {fd_limit}");
    }
    let room = fleet.fresh_room();
    let mut members: Vec<usize> = Vec::new();
    let mut steps: Vec<StepResult> = Vec::new();
    let mut rng = Rng::new();
    let mut next_id = 0u64;
    let mut stop_reason = String::from("reached --max-clients");
    while members.len() < max_clients {
        let add = opts.step.min(max_clients - members.len());
        fleet.set_label(&format!("step: adding {add} clients to {}", members.len()));
        let (refused_before, failed_before) = (fleet.refused, fleet.failed);
        let added = fleet.open(add, opts.connect_rate);
        fleet.join_room(&added, &room);
        members.extend(added);
        // Only clients confirmed in the room: a broadcast waits for every member.
        members.retain(|&i| fleet.is_open(i) && fleet.conns[i].joined);
        let refused = fleet.refused - refused_before;
        let failed = fleet.failed - failed_before;
        if members.is_empty() {
            stop_reason = format!("no client could connect{}", first_failure(fleet));
            break;
        }
        fleet.set_label(&format!("step: {} clients, broadcasting", members.len()));
        let mut tracker = StepTracker {
            room: room.clone(),
            in_flight: Vec::new(),
            times_us: Vec::new(),
        };
        let mut started = 0;
        let mut timeouts = 0;
        let step_deadline = Instant::now() + STEP_BROADCAST_TIMEOUT * (STEP_BROADCASTS as u32);
        while (started < STEP_BROADCASTS || !tracker.in_flight.is_empty())
            && Instant::now() < step_deadline
        {
            while started < STEP_BROADCASTS && tracker.in_flight.len() < STEP_IN_FLIGHT {
                let open: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|&i| fleet.is_open(i))
                    .collect();
                if open.is_empty() {
                    break;
                }
                let sender = open[rng.below(open.len())];
                let now_ns = fleet.now_ns();
                next_id += 1;
                if fleet.send(sender, format_args!("lg {sender} {next_id} {now_ns}")) {
                    fleet.chat_sent += 1;
                    tracker.in_flight.push((next_id, now_ns, open.len()));
                }
                started += 1;
            }
            fleet.turn(Duration::from_millis(10), &mut tracker);
            // A broadcast that some receiver never gets (it was dropped, say) must not
            // hang the step: after the timeout it counts as that slow.
            let now_ns = fleet.now_ns();
            let limit_ns = STEP_BROADCAST_TIMEOUT.as_nanos() as u64;
            let before = tracker.in_flight.len();
            tracker
                .in_flight
                .retain(|f| now_ns.saturating_sub(f.1) < limit_ns);
            for _ in tracker.in_flight.len()..before {
                tracker.times_us.push(limit_ns / 1000);
                timeouts += 1;
            }
        }
        let mut times = tracker.times_us;
        times.sort_unstable();
        let p95 = percentile(&times, 0.95);
        let result = StepResult {
            clients: members.len(),
            refused,
            failed,
            p50_us: percentile(&times, 0.50),
            p95_us: p95,
            max_us: times.last().copied().unwrap_or(0),
            timeouts,
            pass: timeouts == 0 && times.len() >= STEP_BROADCASTS && p95 <= STEP_P95_LIMIT_US,
        };
        eprintln!(
            "[loadgen] step: {} clients, broadcast p95 {:.1} ms: {}",
            result.clients,
            ms(result.p95_us),
            if result.pass { "pass" } else { "FAIL" }
        );
        let pass = result.pass;
        steps.push(result);
        if refused > 0 || failed > 0 {
            stop_reason = format!("connections refused ({refused}) or failed ({failed})");
            break;
        }
        if !pass {
            stop_reason = "broadcast p95 over 500 ms".to_string();
            break;
        }
    }
    let last_passing = steps.iter().filter(|s| s.pass).map(|s| s.clients).max();
    if opts.json {
        let items: Vec<String> = steps
            .iter()
            .map(|s| {
                Obj::new()
                    .int("clients", s.clients as u64)
                    .int("refused", s.refused)
                    .int("failed", s.failed)
                    .num("p50_ms", ms(s.p50_us))
                    .num("p95_ms", ms(s.p95_us))
                    .num("max_ms", ms(s.max_us))
                    .int("timeouts", s.timeouts as u64)
                    .raw("pass", if s.pass { "true" } else { "false" })
                    .end()
            })
            .collect();
        return Ok(Obj::new()
            .str("workload", "step")
            .str("addr", &fleet.addr.to_string())
            .raw("steps", &json_array(&items))
            .raw(
                "last_passing_clients",
                &jopt(last_passing.map(|c| c as u64)),
            )
            .str("stopped", &stop_reason)
            .end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "step: +{} clients per step, {STEP_BROADCASTS} broadcasts per step ({STEP_IN_FLIGHT} in flight), pass = p95 <= 500 ms",
        opts.step
    );
    let _ = writeln!(
        out,
        "clients  refused  failed   p50 ms   p95 ms   max ms  timeouts  result"
    );
    for s in &steps {
        let _ = writeln!(
            out,
            "{:>7} {:>8} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>9}  {}",
            s.clients,
            s.refused,
            s.failed,
            ms(s.p50_us),
            ms(s.p95_us),
            ms(s.max_us),
            s.timeouts,
            if s.pass { "pass" } else { "FAIL" }
        );
    }
    let _ = writeln!(
        out,
        "last passing client count: {}",
        last_passing.map_or("none".to_string(), |c| c.to_string())
    );
    let _ = writeln!(out, "stopped: {stop_reason}");
    Ok(out)
}

/// xorshift64*: enough randomness to pick broadcast senders, no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return;
        }
        Ok(Parsed::Run(opts)) => opts,
        Err(e) => {
            eprintln!("loadgen: {e} (loadgen --help lists the options)");
            std::process::exit(2);
        }
    };
    let fd_limit = raise_fd_limit();
    let wanted = opts.clients.unwrap_or(0) + opts.slow;
    if wanted as u64 + 64 > fd_limit {
        eprintln!("[loadgen] warning: {wanted} connections wanted but our fd limit is {fd_limit}");
    }
    let mut fleet = match Fleet::new(opts.addr) {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("loadgen: cannot create the poll: {e}");
            std::process::exit(1);
        }
    };
    let result = match opts.workload {
        Workload::Idle => run_idle(&mut fleet, &opts),
        Workload::Fanout => run_fanout(&mut fleet, &opts),
        Workload::Saturate => run_saturate(&mut fleet, &opts),
        Workload::Slow => run_slow(&mut fleet, &opts),
        Workload::Step => run_step(&mut fleet, &opts, fd_limit),
    };
    fleet.quit_all();
    match result {
        Ok(report) => {
            if opts.json {
                println!("{}", report.trim_end());
            } else {
                print!("{report}");
            }
        }
        Err(e) => {
            eprintln!("loadgen: {}: {e}", opts.workload.name());
            std::process::exit(1);
        }
    }
}
