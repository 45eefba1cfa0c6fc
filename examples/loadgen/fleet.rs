//! The event loop and the clients: every connection of a run, driven by one mio `Poll`
//! (epoll) on one thread. Connecting (from 127.0.0.N source addresses), reading server
//! lines and handing the `MSG` ones to a [`Sink`], buffered writes, joining rooms and
//! waiting for `/ping` round trips, and closing politely at the end.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// One source address's ephemeral ports are 32768..60999 (28,232); rotating well before
/// that leaves room for sockets in TIME_WAIT from a previous run.
pub(crate) const CONNECTIONS_PER_SOURCE: usize = 20_000;
/// Connections in their handshake (connecting or waiting for HELLO) at any moment: more
/// would only overflow the server's listen backlog and turn into 1 s SYN retransmits.
pub(crate) const MAX_HANDSHAKING: usize = 256;
/// A connection that has not said HELLO by then counts as failed.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest server line we keep whole; longer ones are skipped (none are expected).
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;
/// Bytes we buffer for one connection the server is not reading; past that, further
/// messages for it are skipped (and reported) rather than growing memory without bound.
pub(crate) const MAX_OUT_BYTES: usize = 1024 * 1024;
/// Reads from one socket per wake-up before serving the others (fairness).
pub(crate) const READS_PER_TURN: usize = 64;
/// How long to wait for a room change or a /ping round trip before giving up.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// Non-blocking connect in progress.
    Connecting,
    /// TCP is up; waiting for the server's `HELLO`.
    AwaitHello,
    /// Said HELLO: a member of the chat.
    Open,
    Closed,
}

/// Receives the `MSG` lines, and (if it wants them) every other server line after the
/// fleet has handled it.
pub(crate) trait Sink {
    fn on_msg(&mut self, conn: usize, room: &str, text: &str, now_ns: u64);
    /// Any line but `MSG`, split into its keyword and the rest (`ERR`, `PONG`, `BYE`...).
    fn on_line(&mut self, _conn: usize, _keyword: &str, _rest: &str, _now_ns: u64) {}
}

/// Which source address (127.0.0.N) each new connection is bound to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// 127.0.0.1 for the first `CONNECTIONS_PER_SOURCE` connections, then .2, .3...
    Rotate,
    /// Round robin over 127.0.0.1 .. 127.0.0.K.
    Spread(usize),
    /// Always this address.
    Fixed(Ipv4Addr),
}

/// For phases that measure nothing (connecting, joining rooms).
pub(crate) struct NoSink;

impl Sink for NoSink {
    fn on_msg(&mut self, _: usize, _: &str, _: &str, _: u64) {}
}

pub(crate) struct Conn {
    /// `None` once closed: the fd is given back at once, so failures do not pile up fds.
    pub(crate) stream: Option<TcpStream>,
    pub(crate) state: State,
    /// False for a slow client: its socket is registered for readable events only so we
    /// hear about hang-ups, but its data is never read.
    pub(crate) reading: bool,
    pub(crate) nick: String,
    /// The room we last asked for, and whether the server confirmed it with our JOIN.
    pub(crate) room: String,
    pub(crate) joined: bool,
    /// Highest numeric `/ping` token answered.
    pub(crate) pong: u64,
    /// An incomplete line carried over to the next read.
    pub(crate) partial: Vec<u8>,
    /// Dropping the rest of an over-long line.
    pub(crate) discarding: bool,
    pub(crate) out: Vec<u8>,
    /// Already on the fleet's list of connections to flush.
    pub(crate) dirty: bool,
    pub(crate) started: Instant,
    /// When the server's `HELLO` arrived.
    pub(crate) hello_at: Option<Instant>,
    pub(crate) closed_ns: Option<u64>,
    /// How it ended ("eof", "reset", "read-closed", "connect: ...").
    pub(crate) how_closed: String,
    /// The reason of the server's `BYE`, if it sent one.
    pub(crate) bye: Option<String>,
}

#[derive(Clone, Copy, Default)]
pub(crate) struct EventFlags {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) error: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
}

/// Every connection of the run, driven by one mio `Poll`. A connection's index in `conns`
/// is its mio token.
pub(crate) struct Fleet {
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    /// Flags of the ready events, copied out of `events` so handlers may borrow `self`.
    pub(crate) ready: Vec<(usize, EventFlags)>,
    pub(crate) conns: Vec<Conn>,
    pub(crate) addr: SocketAddrV4,
    /// The one monotonic clock every send time is measured from.
    pub(crate) t0: Instant,
    pub(crate) scratch: Vec<u8>,
    pub(crate) to_flush: Vec<usize>,
    /// Sockets with data left after `READS_PER_TURN` reads: served on the next turn.
    pub(crate) read_backlog: Vec<usize>,
    pub(crate) connects_started: usize,
    pub(crate) handshaking: usize,
    pub(crate) accepted: u64,
    pub(crate) refused: u64,
    pub(crate) failed: u64,
    /// Open connections the server closed (or that broke) later.
    pub(crate) dropped: u64,
    pub(crate) chat_sent: u64,
    pub(crate) msg_lines: u64,
    /// Lines we buffered nothing for because the connection's buffer was full.
    pub(crate) send_skipped: u64,
    pub(crate) overlong_lines: u64,
    pub(crate) err_lines: u64,
    pub(crate) last_err: Option<String>,
    pub(crate) ping_token: u64,
    pub(crate) room_counter: u64,
    pub(crate) label: String,
    pub(crate) last_progress: Instant,
    /// Source address policy for new connections.
    pub(crate) source: Source,
    /// SO_RCVBUF for new connections (`None`: the kernel's default, which autotunes).
    pub(crate) rcvbuf: Option<usize>,
}

impl Fleet {
    pub(crate) fn new(addr: SocketAddrV4) -> io::Result<Fleet> {
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
            source: Source::Rotate,
            rcvbuf: None,
        })
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    pub(crate) fn is_open(&self, i: usize) -> bool {
        self.conns[i].state == State::Open
    }

    /// A room nobody else uses, so no history is replayed into a measurement and no
    /// earlier round's stragglers are counted (room names allow 24 characters).
    pub(crate) fn fresh_room(&mut self) -> String {
        self.room_counter += 1;
        format!("lg-{}-{}", std::process::id(), self.room_counter)
    }

    pub(crate) fn set_label(&mut self, label: &str) {
        self.label.clear();
        self.label.push_str(label);
    }

    pub(crate) fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.state == State::Open).count()
    }

    /// About once a second, one line of progress on stderr.
    pub(crate) fn maybe_progress(&mut self) {
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
    pub(crate) fn start_connect(&mut self) -> usize {
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
            hello_at: None,
            closed_ns: None,
            how_closed: String::new(),
            bye: None,
        };
        // Source address 127.0.0.1, then .2, .3 ...: each has its own 28,232 ports.
        let source = match self.source {
            Source::Rotate => {
                let index = self.connects_started / CONNECTIONS_PER_SOURCE;
                Ipv4Addr::new(127, 0, 0, (1 + index).min(254) as u8)
            }
            Source::Spread(k) => {
                let index = self.connects_started % k.clamp(1, 254);
                Ipv4Addr::new(127, 0, 0, (1 + index) as u8)
            }
            Source::Fixed(ip) => ip,
        };
        self.connects_started += 1;
        match connect_from(source, self.addr, self.rcvbuf) {
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
    pub(crate) fn close(&mut self, i: usize, how: &str) {
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
    pub(crate) fn send(&mut self, i: usize, line: std::fmt::Arguments<'_>) -> bool {
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
    pub(crate) fn flush(&mut self) {
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

    pub(crate) fn write_out(&mut self, i: usize) {
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
    pub(crate) fn turn(&mut self, timeout: Duration, sink: &mut dyn Sink) {
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

    pub(crate) fn handle_event(&mut self, i: usize, flags: EventFlags, sink: &mut dyn Sink) {
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
    pub(crate) fn check_connected(&mut self, i: usize) {
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
    pub(crate) fn read_some(&mut self, i: usize, sink: &mut dyn Sink) {
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
    pub(crate) fn take_bytes(&mut self, i: usize, bytes: &[u8], sink: &mut dyn Sink) {
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
    pub(crate) fn handle_line(&mut self, i: usize, line: &[u8], now_ns: u64, sink: &mut dyn Sink) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // The hot path first: `MSG` lines are nearly all of what arrives in a fan-out
        // (millions a second when saturating), so they are split as bytes, without
        // validating and searching the whole line as text first.
        if let Some(rest) = line.strip_prefix(b"MSG ") {
            self.msg_lines += 1;
            let mut parts = rest.splitn(3, |&b| b == b' ');
            if let (Some(room), Some(_nick), Some(text)) =
                (parts.next(), parts.next(), parts.next())
            {
                if let (Ok(room), Ok(text)) = (std::str::from_utf8(room), std::str::from_utf8(text))
                {
                    sink.on_msg(i, room, text, now_ns);
                }
            }
            return;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        match keyword {
            "HELLO" => {
                let conn = &mut self.conns[i];
                if conn.state == State::AwaitHello {
                    conn.nick = rest.split(' ').next().unwrap_or("").to_string();
                    conn.state = State::Open;
                    conn.hello_at = Some(Instant::now());
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
                // Reused, not reallocated: a flooder receives millions of these.
                let last = self.last_err.get_or_insert_with(String::new);
                last.clear();
                last.extend(rest.chars().take(120));
            }
            _ => {} // JOIN/LEAVE of others, HIST, NOTICE, NICK...: not needed here.
        }
        if keyword != "MSG" {
            sink.on_line(i, keyword, rest, now_ns);
        }
    }

    /// Opens `n` connections, `rate` per second, and waits for each one's HELLO (or its
    /// refusal or failure). Returns the indices of those that said HELLO.
    pub(crate) fn open(&mut self, n: usize, rate: f64) -> Vec<usize> {
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
    pub(crate) fn join_room(&mut self, members: &[usize], room: &str) -> usize {
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
    pub(crate) fn wait_synced(&mut self, members: &[usize], token: u64, need_join: bool) -> usize {
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
    pub(crate) fn stop_reading(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        conn.reading = false;
        if let Some(stream) = conn.stream.as_mut() {
            let _ = self
                .poll
                .registry()
                .reregister(stream, Token(i), Interest::READABLE);
        }
    }

    /// A slow client writes an empty line now and then, without reading anything. Why:
    /// when the server drops a client whose receive window is full, its FIN is queued
    /// behind the unsent data and never reaches us; but any data we send to a closed
    /// socket is answered with a reset, which epoll reports at once. So the drop is seen
    /// within one `POKE_INTERVAL`. An empty line costs the server nothing: it answers
    /// nothing and does not count it against the flood limit (a `/ping` would, and ten a
    /// second would end in `BYE flooding` under the default limit). It also keeps an
    /// --idle-timeout from dropping the client for the wrong reason.
    pub(crate) fn poke(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        match stream.write(b"\n") {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.close(i, "reset/error"),
        }
    }

    /// Ends the run politely: `/quit` everywhere, so the server closes first and the
    /// TIME_WAIT sockets are on its side, not eating our ephemeral ports for the next
    /// run. Bounded: whatever is left after a few seconds is simply closed.
    pub(crate) fn quit_all(&mut self) {
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

/// A non-blocking TCP connect from `source` (port chosen by the kernel) to `server`,
/// with `rcvbuf` as SO_RCVBUF if given (set before connecting, so the window scale fits).
pub(crate) fn connect_from(
    source: Ipv4Addr,
    server: SocketAddrV4,
    rcvbuf: Option<usize>,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(bytes) = rcvbuf {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    match socket.connect(&SocketAddr::V4(server).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Opens `n` clients or explains why not.
pub(crate) fn open_clients(fleet: &mut Fleet, n: usize, rate: f64) -> Result<Vec<usize>, String> {
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

pub(crate) fn first_failure(fleet: &Fleet) -> String {
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
