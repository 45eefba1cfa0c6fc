//! The `fanout` workload (one measured round) and `saturate` (rounds at doubling, then
//! bisected, rates until the server falls behind).

use std::fmt::Write as _;

use crate::fleet::Fleet;
use crate::report::{jf, json_array, ms, proc_json, proc_stats, show, Obj};
use crate::round::{
    fanout_setup, round_json, round_row, run_round, RoundResult, RoundSpec, ROUND_HEADER,
    ROUND_LEGEND,
};
use crate::Options;

pub(crate) fn run_fanout(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
    let (clients, senders) = fanout_setup(fleet, opts, 100)?;
    let spec = RoundSpec {
        rate: opts.rate.unwrap_or(1000.0),
        pad: opts.pad.unwrap_or(0),
        payload: opts.payload,
        slow_join_at: None,
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
            .str("addr", &fleet.addr_label())
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

pub(crate) fn run_saturate(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
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
            payload: opts.payload,
            slow_join_at: None,
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
            .str("addr", &fleet.addr_label())
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
