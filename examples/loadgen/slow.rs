//! The `slow` workload: a baseline fan-out round, then the same round with clients that
//! never read (joined before the sending starts, or with --slow-join-at all at once while
//! it runs): the readers' latency and longest gap without any delivery, which slow
//! clients the server dropped and how long after joining, and the peak of the kernel's
//! TCP memory (the socket buffers the slow clients pin).

use std::fmt::Write as _;

use crate::fleet::{open_clients, Fleet};
use crate::report::{jnum, ms, pages_to_mib, percentile, Obj};
use crate::round::{
    fanout_setup, round_json, round_row, run_round, RoundResult, RoundSpec, ROUND_HEADER,
    ROUND_LEGEND,
};
use crate::Options;

/// What became of a round's slow clients.
struct SlowSummary {
    total: usize,
    dropped: usize,
    /// Seconds from joining to being dropped, over those dropped: p50 and max.
    drop_p50_s: Option<f64>,
    drop_max_s: Option<f64>,
}

fn summarize(r: &RoundResult) -> SlowSummary {
    // Milliseconds, so the integer percentile helper serves.
    let mut after_ms: Vec<u64> = r
        .slow
        .iter()
        .filter_map(|s| s.dropped_after_join_s())
        .map(|s| (s * 1000.0).round() as u64)
        .collect();
    after_ms.sort_unstable();
    SlowSummary {
        total: r.slow.len(),
        dropped: r
            .slow
            .iter()
            .filter(|s| s.dropped_after_s.is_some())
            .count(),
        drop_p50_s: (!after_ms.is_empty()).then(|| percentile(&after_ms, 0.5) as f64 / 1000.0),
        drop_max_s: after_ms.last().map(|&v| v as f64 / 1000.0),
    }
}

pub(crate) fn run_slow(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let (clients, senders) = fanout_setup(fleet, opts, 100)?;
    let spec = RoundSpec {
        rate: opts.rate.unwrap_or(1000.0),
        // Why padded: a client that never reads first fills its own receive buffer and
        // the server's kernel send buffer (about 4 MB together here) before the server
        // has anything pending at all; ~1 KB lines get there within seconds.
        pad: opts.pad.unwrap_or(900),
        payload: opts.payload,
        duration: opts.duration.unwrap_or(8.0),
        warmup: opts.warmup.unwrap_or(1.0),
        slow_join_at: opts.slow_join_at,
    };
    let baseline = if opts.no_baseline {
        None
    } else {
        fleet.set_label("slow: baseline round");
        Some(run_round(fleet, &clients, &senders, &[], &spec)?)
    };
    fleet.set_label("slow: connecting slow clients");
    fleet.rcvbuf = opts.slow_rcvbuf;
    let slow = open_clients(fleet, opts.slow, opts.connect_rate);
    fleet.rcvbuf = None;
    let slow = slow?;
    fleet.set_label("slow: round with slow clients");
    let with_slow = run_round(fleet, &clients, &senders, &slow, &spec)?;
    let ratio = match &baseline {
        Some(b) if b.p99_us > 0 => Some(with_slow.p99_us as f64 / b.p99_us as f64),
        _ => None,
    };
    let sum = summarize(&with_slow);
    let peak_mib = with_slow.tcp_mem_peak.map(pages_to_mib);
    let start_mib = with_slow.tcp_mem_start.map(pages_to_mib);
    if opts.json {
        let mut obj = Obj::new()
            .str("workload", "slow")
            .str("addr", &fleet.addr_label());
        if let Some(b) = &baseline {
            obj = obj.raw("baseline", &round_json(b));
        }
        return Ok(obj
            .raw("with_slow", &round_json(&with_slow))
            .raw("p99_ratio", &jnum(ratio))
            .int("slow_total", sum.total as u64)
            .int("slow_dropped", sum.dropped as u64)
            .raw("drop_after_join_p50_s", &jnum(sum.drop_p50_s))
            .raw("drop_after_join_max_s", &jnum(sum.drop_max_s))
            .num("readers_p99_ms", ms(with_slow.p99_us))
            .num("readers_max_ms", ms(with_slow.max_us))
            .num("readers_max_gap_ms", ms(with_slow.max_gap_us))
            .raw("tcp_mem_peak_mib", &jnum(peak_mib))
            .end());
    }
    let mut out = String::new();
    let line = match spec.payload {
        Some(p) => format!("{p}-byte lines"),
        None => format!("+{} B filler", spec.pad),
    };
    let _ = writeln!(
        out,
        "slow: {} clients, {} senders, {:.0} msg/s ({line}) for {:.1} s; {} with {} clients that never read{}{}",
        with_slow.receivers,
        with_slow.senders,
        spec.rate,
        spec.duration,
        if baseline.is_some() { "then again" } else { "once" },
        slow.len(),
        match spec.slow_join_at {
            Some(t) => format!(", joining {t:.1} s after the sending starts"),
            None => ", joined before the sending starts".to_string(),
        },
        opts.slow_rcvbuf
            .map_or(String::new(), |b| format!(" (SO_RCVBUF {b})"))
    );
    let _ = writeln!(out, "{ROUND_HEADER}");
    if let Some(b) = &baseline {
        let _ = writeln!(out, "{}", round_row("baseline", b));
    }
    let _ = writeln!(out, "{}", round_row("with slow", &with_slow));
    let _ = writeln!(out, "{ROUND_LEGEND}");
    let _ = writeln!(
        out,
        "readers: p99 {:.2} ms, max {:.2} ms, longest gap without any delivery {:.1} ms (ended {:.2} s into the round){}",
        ms(with_slow.p99_us),
        ms(with_slow.max_us),
        ms(with_slow.max_gap_us),
        with_slow.max_gap_end_s,
        baseline.as_ref().map_or(String::new(), |b| format!(
            "; baseline longest gap {:.1} ms",
            ms(b.max_gap_us)
        ))
    );
    let _ = writeln!(
        out,
        "slow clients dropped by the server: {} of {}{}",
        sum.dropped,
        sum.total,
        match (sum.drop_p50_s, sum.drop_max_s) {
            (Some(p50), Some(max)) =>
                format!("; time from joining to the drop: p50 {p50:.2} s, max {max:.2} s"),
            _ => String::new(),
        }
    );
    if with_slow.slow.len() <= 10 {
        for (k, s) in with_slow.slow.iter().enumerate() {
            match (s.dropped_after_s, s.dropped_after_join_s()) {
                (Some(t), Some(after_join)) => {
                    let _ = writeln!(
                        out,
                        "  slow client {k}: dropped {t:.2} s after the start, {after_join:.2} s after joining ({})",
                        s.how
                    );
                }
                (Some(t), None) => {
                    let _ = writeln!(
                        out,
                        "  slow client {k}: dropped {t:.2} s after the start, before joining ({})",
                        s.how
                    );
                }
                (None, _) => {
                    let _ = writeln!(
                        out,
                        "  slow client {k}: NOT dropped by the end of the round"
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "kernel TCP memory (/proc/net/sockstat, system-wide): {} MiB at the start, peak {} MiB",
        start_mib.map_or("n/a".to_string(), |m| format!("{m:.1}")),
        peak_mib.map_or("n/a".to_string(), |m| format!("{m:.1}"))
    );
    if let Some(ratio) = ratio {
        let _ = writeln!(out, "p99 with slow clients / baseline p99: {ratio:.2}x");
    }
    Ok(out)
}
