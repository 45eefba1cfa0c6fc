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

use std::net::{Ipv4Addr, SocketAddrV4};

use fleet::Fleet;
use report::raise_fd_limit;

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
  storm     --clients connections started at --connect-rate per second by the clock,
            however many are still in their handshake: time from connect() to HELLO
            p50/p99/max, greeted / stuck (no HELLO within --stuck-after) / refused /
            failed, and the kernel's ListenOverflows, ListenDrops and SyncookiesSent
            growth over the run (/proc/net/netstat, system-wide); then closes them all
  flood     --flooders clients from one address writing `x\\n` as fast as the socket
            takes it (and reading what comes back) for --duration s, while --probers
            clients from 127.0.0.2 send `/ping` at --ping-rate in total: lines sent,
            ERR rate-limited per flooder per second, BYE reasons, ping p50/p99/max and
            (with --pid) the server's CPU as % of one core

options:
  --addr IP:PORT       server address, in 127.0.0.0/8       [127.0.0.1:2022]
                       repeat it (or give a comma-separated list) to spread the
                       connections round robin over several nodes of one cluster
  --clients N          connections                           [idle 1000, fanout/slow 100,
                                                              saturate/storm 1000]
  --senders S          how many of the clients send          [min(10, clients)]
  --rate R             messages/s offered, all senders together
                                                             [fanout/slow 1000; saturate:
                                                              first round, 50000/clients]
  --duration SECS      measured time (idle: holding time; saturate: per round)
                                                             [idle 2, fanout 5, slow 8,
                                                              saturate 2, flood 12]
  --warmup SECS        sending before measuring starts       [fanout/slow 1, saturate 0.5]
  --connect-rate R     new connections per second (storm: the storm's rate)  [2000]
  --pid PID            the server's pid: report its RSS, threads and fds, or (flood)
                       its CPU time (from /proc); it must exist
  --slow K             clients that never read (slow)        [2]
  --slow-join-at SECS  slow: the non-readers join the room SECS after the senders
                       start (all at once); without it they join before
  --slow-rcvbuf BYTES  slow: SO_RCVBUF of the non-readers     [kernel default]
  --no-baseline        slow: skip the baseline round
  --payload BYTES      chat line length in bytes, numbers and filler together (fanout,
                       saturate, slow; 40..1000); overrides --pad
  --pad BYTES          filler appended to every chat line    [0; slow: 900, so that the
                                                              slow clients' kernel buffers
                                                              (~4 MB) fill within seconds]
  --rounds N           saturate: at most N rounds            [12]
  --step N             step: clients added per step          [1000]
  --max-clients N      step: stop adding there               [20000, capped by our fd limit]
  --src-ips K          spread connections round robin over 127.0.0.1 .. 127.0.0.K
                       [1 to 254; default: .1 for the first 20000, then .2 ...]
  --stuck-after SECS   storm: no HELLO within this of connect() counts as stuck [5]
  --flooders F         flood: flooding clients, all from 127.0.0.1   [1]
  --ping-rate R        flood: /ping round trips per second, all probers [20]
  --probers P          flood: probing clients from 127.0.0.2 [enough that each sends
                       <= 1.5 pings/s, under the server's default limit of 2 lines/s]
  --reconnect          flood: a flooder the server closed connects again at once
  --json               one JSON line on stdout instead of the human table
  --help               this text

Progress goes to stderr about once a second. Exit status 0 when the run completed
(whatever it measured), 1 when it could not run, 2 on a usage error.
";

mod fanout;
mod fleet;
mod flood;
mod idle;
#[path = "../common/proc_stats.rs"]
mod proc_stats;
mod report;
mod round;
mod slow;
mod step;
mod storm;

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Workload {
    Idle,
    Fanout,
    Saturate,
    Slow,
    Step,
    Storm,
    Flood,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::Fanout => "fanout",
            Workload::Saturate => "saturate",
            Workload::Slow => "slow",
            Workload::Step => "step",
            Workload::Storm => "storm",
            Workload::Flood => "flood",
        }
    }
}

/// Options as given; `None` means "the workload's default".
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) workload: Workload,
    /// Where to connect: one server, or the nodes of a cluster (round robin).
    pub(crate) addrs: Vec<SocketAddrV4>,
    pub(crate) clients: Option<usize>,
    pub(crate) senders: Option<usize>,
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Option<f64>,
    pub(crate) warmup: Option<f64>,
    pub(crate) connect_rate: f64,
    pub(crate) pid: Option<u32>,
    pub(crate) slow: usize,
    pub(crate) pad: Option<usize>,
    pub(crate) rounds: usize,
    pub(crate) step: usize,
    pub(crate) max_clients: usize,
    pub(crate) json: bool,
    pub(crate) src_ips: Option<usize>,
    pub(crate) stuck_after: f64,
    pub(crate) flooders: usize,
    pub(crate) ping_rate: f64,
    pub(crate) probers: Option<usize>,
    pub(crate) reconnect: bool,
    pub(crate) payload: Option<usize>,
    pub(crate) slow_join_at: Option<f64>,
    pub(crate) slow_rcvbuf: Option<usize>,
    pub(crate) no_baseline: bool,
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
        Some("storm") => Workload::Storm,
        Some("flood") => Workload::Flood,
        Some(other) => return Err(format!("unknown workload `{other}`")),
        None => return Err("missing workload".to_string()),
    };
    let mut opts = Options {
        workload,
        addrs: Vec::new(),
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
        src_ips: None,
        stuck_after: 5.0,
        flooders: 1,
        ping_rate: 20.0,
        probers: None,
        reconnect: false,
        payload: None,
        slow_join_at: None,
        slow_rcvbuf: None,
        no_baseline: false,
    };
    while let Some(flag) = iter.next() {
        match flag.as_str() {
            "--json" => {
                opts.json = true;
                continue;
            }
            "--reconnect" => {
                opts.reconnect = true;
                continue;
            }
            "--no-baseline" => {
                opts.no_baseline = true;
                continue;
            }
            _ => {}
        }
        let value = iter
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        match flag.as_str() {
            "--addr" => {
                for one in value.split(',') {
                    let addr: SocketAddrV4 = one
                        .parse()
                        .map_err(|_| format!("--addr: `{one}` is not IPv4:PORT"))?;
                    // The traffic rule: this tool never sends anything off the machine.
                    if !addr.ip().is_loopback() {
                        return Err(format!("--addr: {one} is not in 127.0.0.0/8"));
                    }
                    opts.addrs.push(addr);
                }
            }
            "--clients" => opts.clients = Some(parse_count(flag, value, 1)?),
            "--senders" => opts.senders = Some(parse_count(flag, value, 1)?),
            "--rate" => opts.rate = Some(parse_positive(flag, value)?),
            "--duration" => opts.duration = Some(parse_seconds(flag, value)?),
            "--warmup" => opts.warmup = Some(parse_seconds(flag, value)?),
            "--connect-rate" => opts.connect_rate = parse_positive(flag, value)?,
            "--pid" => {
                let pid: u32 = value
                    .parse()
                    .map_err(|_| format!("--pid: `{value}` is not a process id"))?;
                // A typo here would otherwise run the whole benchmark and report nothing.
                if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
                    return Err(format!("--pid: no process with pid {pid}"));
                }
                opts.pid = Some(pid);
            }
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
            "--src-ips" => {
                let k = parse_count(flag, value, 1)?;
                if k > 254 {
                    return Err(format!("--src-ips: {k} is over 254"));
                }
                opts.src_ips = Some(k);
            }
            "--stuck-after" => opts.stuck_after = parse_seconds(flag, value)?,
            "--flooders" => opts.flooders = parse_count(flag, value, 1)?,
            "--ping-rate" => {
                let rate = parse_positive(flag, value)?;
                if rate > 10_000.0 {
                    return Err(format!("--ping-rate: {rate} is over 10000"));
                }
                opts.ping_rate = rate;
            }
            "--probers" => opts.probers = Some(parse_count(flag, value, 1)?),
            "--payload" => {
                // The server's default --max-line is 1024 bytes.
                let payload = parse_count(flag, value, 40)?;
                if payload > 1000 {
                    return Err(format!("--payload: {payload} is over 1000"));
                }
                opts.payload = Some(payload);
            }
            "--slow-join-at" => opts.slow_join_at = Some(parse_seconds(flag, value)?),
            "--slow-rcvbuf" => opts.slow_rcvbuf = Some(parse_count(flag, value, 1)?),
            _ => return Err(format!("unknown option `{flag}`")),
        }
    }
    if opts.addrs.is_empty() {
        opts.addrs
            .push(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2022));
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
    let wanted = opts.clients.unwrap_or(0) + opts.slow + opts.flooders;
    if wanted as u64 + 64 > fd_limit {
        eprintln!("[loadgen] warning: {wanted} connections wanted but our fd limit is {fd_limit}");
    }
    let mut fleet = match Fleet::new(&opts.addrs) {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("loadgen: cannot create the poll: {e}");
            std::process::exit(1);
        }
    };
    if let Some(k) = opts.src_ips {
        fleet.source = fleet::Source::Spread(k);
    }
    let result = match opts.workload {
        Workload::Idle => idle::run_idle(&mut fleet, &opts),
        Workload::Fanout => fanout::run_fanout(&mut fleet, &opts),
        Workload::Saturate => fanout::run_saturate(&mut fleet, &opts),
        Workload::Slow => slow::run_slow(&mut fleet, &opts),
        Workload::Step => step::run_step(&mut fleet, &opts, fd_limit),
        Workload::Storm => storm::run_storm(&mut fleet, &opts),
        Workload::Flood => flood::run_flood(&mut fleet, &opts),
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
