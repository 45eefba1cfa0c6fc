//! The `storm` workload (issue 12): a burst of connections at a fixed rate, started by
//! the clock whatever the server does (no limit on how many are in their handshake), and
//! for each one the time from the start of its `connect()` to the server's `HELLO`.
//!
//! A client the server never greets is "stuck": with a full accept queue Linux answers
//! with SYN cookies and drops the client's final ACK, so the client believes it is
//! connected while the server knows nothing of it; since this protocol is
//! server-speaks-first, nothing ever revives such a connection. The kernel counts those
//! events in `TcpExt: ListenOverflows`, `ListenDrops` and `SyncookiesSent`
//! (/proc/net/netstat): we report their growth over the run. They are system-wide, so
//! anything else connecting on the machine at the same time counts too.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, NoSink, State};
use crate::report::{cpu_time, hist_ms, jnum, show_u, Obj};
use underworld_line::netstat;

/// The kernel counters of connections lost before `accept`, read before and after.
const COUNTERS: [&str; 3] = ["ListenOverflows", "ListenDrops", "SyncookiesSent"];
use crate::round::new_histogram;
use crate::Options;

/// At most this many connects are started in one go before the event loop runs again,
/// so that a loop that fell behind does not leave HELLOs unread (and late) for long.
const CONNECT_BATCH: usize = 64;
/// How often connections still in their handshake are checked against --stuck-after.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// After the last connect has had its --stuck-after, this much more at most.
const STORM_GRACE: Duration = Duration::from_secs(2);

pub(crate) fn run_storm(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let n = opts.clients.unwrap_or(1000);
    let rate = opts.connect_rate;
    let stuck_after = Duration::from_secs_f64(opts.stuck_after);
    let netstat_before = COUNTERS.map(netstat::tcp_ext);
    let cpu_before = cpu_time();
    fleet.set_label("storm: connecting");
    let first = fleet.conns.len();
    // Per connection of the storm: marked stuck (no HELLO within --stuck-after).
    let mut stuck = vec![false; n];
    let start = Instant::now();
    let mut started = 0usize;
    let mut all_started_after = None;
    // Every connection before `low` is resolved: greeted, closed or marked stuck.
    let mut low = 0usize;
    let mut last_sweep = start;
    let deadline = start + Duration::from_secs_f64(n as f64 / rate) + stuck_after + STORM_GRACE;
    loop {
        // Open loop: the k-th connect is due at start + k / rate.
        let mut batch = 0;
        while started < n
            && batch < CONNECT_BATCH
            && Instant::now() >= start + Duration::from_secs_f64(started as f64 / rate)
        {
            fleet.start_connect();
            started += 1;
            batch += 1;
        }
        if started == n && all_started_after.is_none() {
            all_started_after = Some(start.elapsed());
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= SWEEP_INTERVAL || started == n {
            last_sweep = now;
            for (k, is_stuck) in stuck.iter_mut().enumerate().take(started).skip(low) {
                let c = &fleet.conns[first + k];
                if !*is_stuck
                    && matches!(c.state, State::Connecting | State::AwaitHello)
                    && c.started.elapsed() > stuck_after
                {
                    *is_stuck = true;
                }
            }
            while low < started && {
                let c = &fleet.conns[first + low];
                stuck[low] || matches!(c.state, State::Open | State::Closed)
            } {
                low += 1;
            }
        }
        if (started == n && low == n) || now >= deadline {
            break;
        }
        let wait = if started < n {
            let due = start + Duration::from_secs_f64(started as f64 / rate);
            due.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10))
        } else {
            Duration::from_millis(20)
        };
        fleet.turn(wait, &mut NoSink);
    }
    let wall = start.elapsed();
    let netstat_after = COUNTERS.map(netstat::tcp_ext);
    let cpu_used = cpu_time().saturating_sub(cpu_before);

    // Classify each connection of the storm.
    let mut hist = new_histogram();
    let (mut greeted, mut late, mut refused, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let (mut stuck_connecting, mut stuck_connected) = (0u64, 0u64);
    let mut failure_example: Option<String> = None;
    for (k, &was_stuck) in stuck.iter().enumerate().take(started) {
        let c = &fleet.conns[first + k];
        let to_hello = c.hello_at.map(|t| t.saturating_duration_since(c.started));
        match to_hello {
            Some(t) if t <= stuck_after => {
                greeted += 1;
                hist.saturating_record(t.as_micros() as u64);
            }
            Some(_) => {
                // Greeted, but only after the window: it counts as stuck.
                late += 1;
                stuck_connected += 1;
            }
            None if c.state == State::Closed && c.bye.is_some() => refused += 1,
            None if c.state == State::Closed && !was_stuck => {
                failed += 1;
                if failure_example.is_none() {
                    failure_example = Some(c.how_closed.clone());
                }
            }
            None => {
                // Still in its handshake at the end of its window (or closed after it).
                if c.state == State::Connecting {
                    stuck_connecting += 1;
                } else {
                    stuck_connected += 1;
                }
            }
        }
    }
    // Connects the loop never got to start before its deadline count as failed.
    let not_started = (n - started) as u64;
    failed += not_started;
    let stuck_total = stuck_connecting + stuck_connected;
    let (p50, p99, max) = hist_ms(&hist);
    let achieved_rate = all_started_after
        .map(|d| (n.saturating_sub(1)) as f64 / d.as_secs_f64().max(1e-9))
        .filter(|_| n > 1);
    let growth = |i: usize| Some(netstat_after[i]?.saturating_sub(netstat_before[i]?));
    let (overflows, drops, cookies) = (growth(0), growth(1), growth(2));
    let lg_cpu = 100.0 * cpu_used.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let jopt = |x: Option<u64>| x.map_or("null".to_string(), |v| v.to_string());
    if opts.json {
        let mut obj = Obj::new()
            .str("workload", "storm")
            .str("addr", &fleet.addr_label())
            .int("clients", n as u64)
            .num("connect_rate", rate)
            .raw("achieved_connect_rate", &jnum(achieved_rate))
            .raw("src_ips", &jopt(opts.src_ips.map(|k| k as u64)))
            .num("stuck_after_s", opts.stuck_after)
            .int("greeted", greeted)
            .int("stuck", stuck_total)
            .int("stuck_connected", stuck_connected)
            .int("stuck_connecting", stuck_connecting)
            .int("greeted_late", late)
            .int("refused", refused)
            .int("failed", failed)
            .num("hello_p50_ms", p50)
            .num("hello_p99_ms", p99)
            .num("hello_max_ms", max)
            .raw("listen_overflows", &jopt(overflows))
            .raw("listen_drops", &jopt(drops))
            .raw("syncookies_sent", &jopt(cookies))
            .num("duration_s", wall.as_secs_f64())
            .num("loadgen_cpu_pct", lg_cpu);
        if let Some(e) = &failure_example {
            obj = obj.str("first_failure", e);
        }
        return Ok(obj.end());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "storm: {n} connections to {} at {rate:.0}/s (open loop){}",
        fleet.addr_label(),
        opts.src_ips
            .map_or(String::new(), |k| format!(", from 127.0.0.1..{k}"))
    );
    if let Some(r) = achieved_rate {
        let _ = writeln!(
            out,
            "  connects started    {started} at {r:.0}/s achieved{}",
            if r < 0.95 * rate {
                " (the load generator fell behind the schedule)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        out,
        "  greeted             {greeted} (HELLO within {:.1} s)",
        opts.stuck_after
    );
    let _ = writeln!(
        out,
        "  stuck               {stuck_total} (connected, no HELLO: {stuck_connected}, of them \
         greeted later: {late}; TCP handshake unfinished: {stuck_connecting})"
    );
    let _ = writeln!(out, "  refused (BYE)       {refused}");
    let _ = writeln!(
        out,
        "  failed              {failed}{}",
        failure_example.map_or(String::new(), |e| format!(" (first: {e})"))
    );
    let _ = writeln!(
        out,
        "  time to HELLO       p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (from the start of connect())"
    );
    let _ = writeln!(
        out,
        "  kernel (TcpExt, system-wide, growth over the run): ListenOverflows {}, ListenDrops {}, SyncookiesSent {}",
        show_u(overflows),
        show_u(drops),
        show_u(cookies)
    );
    let _ = writeln!(
        out,
        "  took {:.2} s; load generator CPU {lg_cpu:.0} %",
        wall.as_secs_f64()
    );
    Ok(out)
}
