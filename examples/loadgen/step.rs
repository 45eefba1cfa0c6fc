//! The `step` workload (the websocket-shootout method): add clients step by step and
//! time 100 broadcasts at each step until their p95 passes 500 ms.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::fleet::{first_failure, Fleet, Sink};
use crate::report::{jopt, json_array, ms, percentile, Obj};
use crate::round::parse_lg;
use crate::Options;

/// Step workload: broadcasts per step, how many in flight, per-broadcast timeout, and the
/// p95 above which the step fails.
pub(crate) const STEP_BROADCASTS: usize = 100;
pub(crate) const STEP_IN_FLIGHT: usize = 4;
pub(crate) const STEP_BROADCAST_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const STEP_P95_LIMIT_US: u64 = 500_000;

/// Step workload: which broadcasts are in flight and how many receivers each still lacks.
pub(crate) struct StepTracker {
    pub(crate) room: String,
    /// (broadcast id, send time in ns, receivers still missing)
    pub(crate) in_flight: Vec<(u64, u64, usize)>,
    /// Completed broadcast times, in microseconds.
    pub(crate) times_us: Vec<u64>,
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

pub(crate) struct StepResult {
    pub(crate) clients: usize,
    pub(crate) refused: u64,
    pub(crate) failed: u64,
    pub(crate) p50_us: u64,
    pub(crate) p95_us: u64,
    pub(crate) max_us: u64,
    pub(crate) timeouts: usize,
    pub(crate) pass: bool,
}

pub(crate) fn run_step(fleet: &mut Fleet, opts: &Options, fd_limit: u64) -> Result<String, String> {
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
            .str("addr", &fleet.addr_label())
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
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}
