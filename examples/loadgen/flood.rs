//! The `flood` workload (issue 11): what one client, or a few from one address, can make
//! the server spend by writing `x\n` as fast as loopback takes it, and what everyone
//! else feels meanwhile.
//!
//! The flooders keep their socket's send buffer full (they write until the kernel says
//! `WouldBlock`, again at every turn of the event loop) and read everything the server
//! answers, counting `ERR rate-limited` lines and the `BYE` reason. Meanwhile probing
//! clients from another address (127.0.0.2, so the per-address cap the flooders may fill
//! does not refuse them) send `/ping` on a fixed clock and time each `PONG`. A `/ping`
//! counts against the server's flood limit like any line (default: a burst of 10, then
//! 2 lines/s), so by default the pings are spread over enough probers that each sends at
//! most 1.5 a second. With `--pid`, the server's CPU time over the run (utime + stime
//! from /proc/PID/stat), as a percentage of one core.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::fleet::{open_clients, Fleet, Sink, Source, State};
use crate::report::{cpu_time, hist_ms, jnum, process_cpu, Obj};
use crate::round::new_histogram;
use crate::Options;

/// Pings per second one prober sends at most by default: under the server's default
/// flood limit of 2 lines/s.
const PROBER_MAX_RATE: f64 = 1.5;
/// One write of a flooder: 32 Ki lines of `x\n`.
const FLOOD_CHUNK: usize = 64 * 1024;
/// Writes per flooder per turn of the event loop at most, so that reading (and the
/// probers) get their turn even if the server takes everything.
const WRITES_PER_TURN: usize = 16;
/// After the flood, how long the probers' last pings may take to come back.
const PING_DRAIN: Duration = Duration::from_secs(2);
/// With --reconnect, a closed flooder connects again after this pause (so that refused
/// reconnections do not spin).
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// Where the flooders and the probers connect from.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    None,
    /// Flooder slot k.
    Flooder(usize),
    Prober,
}

/// What one flooder slot did (over all its connections, with --reconnect).
#[derive(Default)]
struct Flooder {
    /// Its current connection.
    conn: usize,
    /// Bytes written; `x\n` is 2 bytes, so a write may end mid-line: the next one then
    /// starts at the LF.
    bytes: u64,
    rate_limited: u64,
    other_err: u64,
    /// Seconds from the start of the flood to its first `BYE`, and that BYE's reason.
    first_bye: Option<(f64, String)>,
    /// Seconds it was connected during the flood (for the per-second rates).
    connected_s: f64,
    connected_since: Option<Instant>,
    connections: u64,
    /// Its current connection's end has been booked.
    close_seen: bool,
    /// With --reconnect: not before this.
    reconnect_at: Option<Instant>,
    /// Reconnections the server refused (`BYE` before `HELLO`, e.g. `too many`).
    reconnects_refused: u64,
    how_closed: String,
}

struct FloodSink {
    role: Vec<Role>,
    flooders: Vec<Flooder>,
    bye_reasons: BTreeMap<String, u64>,
    start_ns: u64,
    /// Per ping token: when it was sent (ns), and whether it has been answered.
    ping_sent_ns: Vec<u64>,
    ping_answered: Vec<bool>,
    rtt_us: hdrhistogram::Histogram<u64>,
    prober_rate_limited: u64,
    prober_byes: Vec<String>,
}

impl FloodSink {
    fn role(&self, conn: usize) -> Role {
        self.role.get(conn).copied().unwrap_or(Role::None)
    }
    fn set_role(&mut self, conn: usize, role: Role) {
        if self.role.len() <= conn {
            self.role.resize(conn + 1, Role::None);
        }
        self.role[conn] = role;
    }
}

impl Sink for FloodSink {
    fn on_msg(&mut self, _: usize, _: &str, _: &str, _: u64) {}

    fn on_line(&mut self, conn: usize, keyword: &str, rest: &str, now_ns: u64) {
        match (keyword, self.role(conn)) {
            ("ERR", Role::Flooder(k)) => {
                if rest.starts_with("rate-limited") {
                    self.flooders[k].rate_limited += 1;
                } else {
                    self.flooders[k].other_err += 1;
                }
            }
            ("ERR", Role::Prober) if rest.starts_with("rate-limited") => {
                self.prober_rate_limited += 1;
            }
            ("BYE", Role::Flooder(k)) => {
                let reason = rest.split(' ').next().unwrap_or("").to_string();
                *self.bye_reasons.entry(reason.clone()).or_default() += 1;
                let f = &mut self.flooders[k];
                if f.first_bye.is_none() {
                    let after = now_ns.saturating_sub(self.start_ns) as f64 / 1e9;
                    f.first_bye = Some((after, reason));
                }
            }
            ("BYE", Role::Prober) => self.prober_byes.push(rest.chars().take(80).collect()),
            ("PONG", Role::Prober) => {
                let Ok(token) = rest.trim().parse::<usize>() else {
                    return;
                };
                if token < self.ping_sent_ns.len() && !self.ping_answered[token] {
                    self.ping_answered[token] = true;
                    let rtt_ns = now_ns.saturating_sub(self.ping_sent_ns[token]);
                    self.rtt_us.saturating_record(rtt_ns / 1000);
                }
            }
            _ => {}
        }
    }
}

/// Writes `x\n` lines to connection `i` until the kernel takes no more (or
/// `WRITES_PER_TURN`); returns the bytes written. `odd`: the last write ended after an
/// `x`, so this one starts with the LF.
fn flood_some(fleet: &mut Fleet, i: usize, chunk: &[u8], bytes_so_far: u64) -> u64 {
    let mut written = 0u64;
    let mut error = None;
    if let Some(stream) = fleet.conns[i].stream.as_mut() {
        for _ in 0..WRITES_PER_TURN {
            let from = ((bytes_so_far + written) % 2) as usize;
            match stream.write(&chunk[from..]) {
                Ok(0) => {
                    error = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("write: {e}"));
                    break;
                }
            }
        }
    }
    if let Some(how) = error {
        fleet.close(i, &how);
    }
    written
}

pub(crate) fn run_flood(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let f = opts.flooders;
    let duration = opts.duration.unwrap_or(12.0);
    let ping_rate = opts.ping_rate;
    let probers_n = opts
        .probers
        .unwrap_or(((ping_rate / PROBER_MAX_RATE).ceil() as usize).max(1));
    fleet.source = Source::Fixed(FLOOD_SOURCE);
    fleet.set_label("flood: connecting flooders");
    let flooder_conns = open_clients(fleet, f, opts.connect_rate)?;
    fleet.source = Source::Fixed(PROBE_SOURCE);
    fleet.set_label("flood: connecting probers");
    let probers = open_clients(fleet, probers_n, opts.connect_rate)?;
    fleet.source = Source::Fixed(FLOOD_SOURCE);

    let total_pings = (duration * ping_rate).floor() as usize;
    let mut sink = FloodSink {
        role: Vec::new(),
        flooders: Vec::new(),
        bye_reasons: BTreeMap::new(),
        start_ns: 0,
        ping_sent_ns: vec![0; total_pings],
        ping_answered: vec![false; total_pings],
        rtt_us: new_histogram(),
        prober_rate_limited: 0,
        prober_byes: Vec::new(),
    };
    for (k, &i) in flooder_conns.iter().enumerate() {
        sink.set_role(i, Role::Flooder(k));
        sink.flooders.push(Flooder {
            conn: i,
            connections: 1,
            ..Flooder::default()
        });
    }
    for &i in &probers {
        sink.set_role(i, Role::Prober);
    }
    let chunk: Vec<u8> = b"x\n".repeat(FLOOD_CHUNK / 2);
    let server_cpu_before = opts.pid.and_then(process_cpu);
    let cpu_before = cpu_time();
    let start = Instant::now();
    sink.start_ns = fleet.now_ns();
    for fl in &mut sink.flooders {
        fl.connected_since = Some(start);
    }
    let end = start + Duration::from_secs_f64(duration);
    let interval = 1.0 / ping_rate;
    let mut pings_sent = 0usize;
    let mut reconnects = 0u64;
    fleet.set_label(&format!("flood: {f} flooders"));
    while Instant::now() < end {
        for k in 0..sink.flooders.len() {
            let i = sink.flooders[k].conn;
            match fleet.conns[i].state {
                State::Open => {
                    let so_far = sink.flooders[k].bytes;
                    sink.flooders[k].bytes += flood_some(fleet, i, &chunk, so_far);
                }
                State::Closed => {
                    let fl = &mut sink.flooders[k];
                    if !fl.close_seen {
                        fl.close_seen = true;
                        if let Some(since) = fl.connected_since.take() {
                            fl.connected_s += since.elapsed().as_secs_f64();
                        }
                        fl.how_closed = fleet.conns[i].how_closed.clone();
                        if fleet.conns[i].hello_at.is_none() && fleet.conns[i].bye.is_some() {
                            fl.reconnects_refused += 1;
                        }
                        fl.reconnect_at = Some(Instant::now() + RECONNECT_PAUSE);
                    }
                    if opts.reconnect && fl.reconnect_at.is_some_and(|t| Instant::now() >= t) {
                        // A new connection takes over the slot; it floods once greeted.
                        let j = fleet.start_connect();
                        sink.set_role(j, Role::Flooder(k));
                        let fl = &mut sink.flooders[k];
                        fl.conn = j;
                        fl.connections += 1;
                        fl.close_seen = false;
                        fl.reconnect_at = None;
                        reconnects += 1;
                    }
                }
                State::Connecting | State::AwaitHello => {}
            }
            let fl = &mut sink.flooders[k];
            if fl.connected_since.is_none() && fleet.conns[fl.conn].state == State::Open {
                fl.connected_since = Some(Instant::now());
            }
        }
        // Every ping already due, each from the next prober in turn.
        let elapsed = start.elapsed().as_secs_f64();
        while pings_sent < total_pings && pings_sent as f64 * interval <= elapsed {
            let p = probers[pings_sent % probers.len()];
            if fleet.send(p, format_args!("/ping {pings_sent}")) {
                fleet.flush();
                sink.ping_sent_ns[pings_sent] = fleet.now_ns();
            }
            pings_sent += 1;
        }
        let next_ping = start + Duration::from_secs_f64(pings_sent as f64 * interval);
        let wait = next_ping
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(5));
        fleet.turn(wait, &mut sink);
    }
    let wall = start.elapsed();
    let server_cpu_after = opts.pid.and_then(process_cpu);
    let cpu_used = cpu_time().saturating_sub(cpu_before);
    for fl in &mut sink.flooders {
        if let Some(since) = fl.connected_since.take() {
            fl.connected_s += since.elapsed().as_secs_f64().min(wall.as_secs_f64());
        }
    }
    // The flood is over: close the flooders (their socket buffers are full of `x\n`, so a
    // polite /quit would wait behind them), then let the last pongs arrive.
    for k in 0..sink.flooders.len() {
        let i = sink.flooders[k].conn;
        if fleet.conns[i].state == State::Open {
            sink.flooders[k].how_closed = "still connected at the end".to_string();
        } else if !sink.flooders[k].close_seen {
            sink.flooders[k].how_closed = fleet.conns[i].how_closed.clone();
        }
        fleet.close(i, "closed by us at the end");
    }
    fleet.set_label("flood: waiting for the last pongs");
    let drain_until = Instant::now() + PING_DRAIN;
    while Instant::now() < drain_until
        && sink
            .ping_answered
            .iter()
            .take(pings_sent)
            .any(|&answered| !answered)
    {
        fleet.turn(Duration::from_millis(20), &mut sink);
    }

    let wall_s = wall.as_secs_f64().max(1e-9);
    let answered = sink.ping_answered.iter().filter(|&&a| a).count();
    let (p50, p99, max) = hist_ms(&sink.rtt_us);
    let lines_sent: u64 = sink.flooders.iter().map(|fl| fl.bytes / 2).sum();
    let rate_limited: u64 = sink.flooders.iter().map(|fl| fl.rate_limited).sum();
    let per_s = |fl: &Flooder| fl.rate_limited as f64 / fl.connected_s.max(1e-3);
    let rl_per_s_mean = if f > 0 {
        sink.flooders.iter().map(per_s).sum::<f64>() / f as f64
    } else {
        0.0
    };
    let rl_per_s_max = sink.flooders.iter().map(per_s).fold(0.0, f64::max);
    let server_cpu_s = match (server_cpu_before, server_cpu_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64()),
        _ => None,
    };
    let server_cpu_pct = server_cpu_s.map(|s| 100.0 * s / wall_s);
    let lg_cpu = 100.0 * cpu_used.as_secs_f64() / wall_s;
    if opts.json {
        let flooders: Vec<String> = sink
            .flooders
            .iter()
            .map(|fl| {
                let mut o = Obj::new()
                    .int("lines", fl.bytes / 2)
                    .int("err_rate_limited", fl.rate_limited)
                    .num("err_rate_limited_per_s", per_s(fl))
                    .int("other_err", fl.other_err)
                    .num("connected_s", fl.connected_s)
                    .int("connections", fl.connections)
                    .str("how_closed", &fl.how_closed);
                o = match &fl.first_bye {
                    Some((t, reason)) => o.num("first_bye_after_s", *t).str("bye", reason),
                    None => o.raw("first_bye_after_s", "null").raw("bye", "null"),
                };
                o.end()
            })
            .collect();
        let reasons = sink
            .bye_reasons
            .iter()
            .fold(Obj::new(), |o, (r, n)| o.int(r, *n))
            .end();
        return Ok(Obj::new()
            .str("workload", "flood")
            .str("addr", &fleet.addr_label())
            .int("flooders", f as u64)
            .num("duration_s", wall.as_secs_f64())
            .int("lines_sent", lines_sent)
            .num("lines_sent_per_s", lines_sent as f64 / wall_s)
            .int("rate_limited", rate_limited)
            .num("rate_limited_per_flooder_per_s", rl_per_s_mean)
            .num("rate_limited_per_flooder_per_s_max", rl_per_s_max)
            .raw("bye_reasons", &reasons)
            .int("reconnects", reconnects)
            .int(
                "reconnects_refused",
                sink.flooders.iter().map(|fl| fl.reconnects_refused).sum(),
            )
            .raw("flooder_detail", &format!("[{}]", flooders.join(",")))
            .int("probers", probers.len() as u64)
            .num("ping_rate", ping_rate)
            .int("pings_sent", pings_sent as u64)
            .int("pongs", answered as u64)
            .int("prober_rate_limited", sink.prober_rate_limited)
            .int("prober_byes", sink.prober_byes.len() as u64)
            .num("ping_p50_ms", p50)
            .num("ping_p99_ms", p99)
            .num("ping_max_ms", max)
            .raw("server_cpu_s", &jnum(server_cpu_s))
            .raw("server_cpu_pct_of_one_core", &jnum(server_cpu_pct))
            .num("loadgen_cpu_pct", lg_cpu)
            .end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flood: {f} flooder(s) from {FLOOD_SOURCE} writing `x\\n` for {:.1} s; {} prober(s) from {PROBE_SOURCE}, /ping at {ping_rate}/s in all",
        wall.as_secs_f64(),
        probers.len()
    );
    let _ = writeln!(
        out,
        "  lines sent          {lines_sent} ({:.0}/s, all flooders)",
        lines_sent as f64 / wall_s
    );
    let _ = writeln!(
        out,
        "  ERR rate-limited    {rate_limited} in all; per flooder per connected second: mean {rl_per_s_mean:.1}, max {rl_per_s_max:.1}"
    );
    let reasons: Vec<String> = sink
        .bye_reasons
        .iter()
        .map(|(r, n)| format!("{r} x{n}"))
        .collect();
    let _ = writeln!(
        out,
        "  BYE to flooders     {}{}",
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(", ")
        },
        if opts.reconnect {
            format!(" ({reconnects} reconnects)")
        } else {
            String::new()
        }
    );
    if f <= 16 {
        for (k, fl) in sink.flooders.iter().enumerate() {
            let _ = writeln!(
                out,
                "    flooder {k:>2}: {} lines, {} rate-limited ({:.1}/s), {}; {}",
                fl.bytes / 2,
                fl.rate_limited,
                per_s(fl),
                fl.first_bye
                    .as_ref()
                    .map_or("no BYE".to_string(), |(t, r)| format!(
                        "BYE {r} after {t:.2} s"
                    )),
                fl.how_closed
            );
        }
    }
    let _ = writeln!(
        out,
        "  /ping round trip    p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({answered} of {pings_sent} answered; prober ERR rate-limited {}, prober BYEs {})",
        sink.prober_rate_limited,
        sink.prober_byes.len()
    );
    match (server_cpu_s, server_cpu_pct) {
        (Some(s), Some(pct)) => {
            let _ = writeln!(
                out,
                "  server CPU          {s:.2} s in {:.1} s = {pct:.0} % of one core",
                wall.as_secs_f64()
            );
        }
        _ => {
            let _ = writeln!(out, "  server CPU          (give --pid to measure it)");
        }
    }
    let _ = writeln!(out, "  load generator CPU  {lg_cpu:.0} %");
    Ok(out)
}
