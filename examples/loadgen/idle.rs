//! The `idle` workload: open many connections, hold them, then one broadcast that every
//! one of them must receive; with `--pid`, the server's memory per connection.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::fleet::{first_failure, Fleet, NoSink, Sink, SYNC_TIMEOUT};
use crate::report::{jf, proc_json, proc_stats, show, Obj};
use crate::Options;

pub(crate) fn run_idle(fleet: &mut Fleet, opts: &Options) -> Result<String, String> {
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
            fleet.addr_label(),
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
            .str("addr", &fleet.addr_label())
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
        fleet.addr_label(),
        opts.connect_rate
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
pub(crate) struct IdleSink {
    pub(crate) room: String,
    pub(crate) got: Vec<bool>,
    pub(crate) count: usize,
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
