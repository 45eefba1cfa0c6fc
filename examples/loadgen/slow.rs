//! The `slow` workload: a baseline fan-out round, then the same round with clients that
//! never read, and when the server dropped each of them.

use std::fmt::Write as _;

use crate::fleet::{open_clients, Fleet};
use crate::report::Obj;
use crate::round::{
    fanout_setup, round_json, round_row, run_round, RoundSpec, ROUND_HEADER, ROUND_LEGEND,
};
use crate::Options;

pub(crate) fn run_slow(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
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
