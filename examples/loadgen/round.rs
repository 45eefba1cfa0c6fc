//! Measuring fan-out rounds (the fanout, saturate and slow workloads): a room of
//! receivers, an open-loop send schedule, and per receiver x sender sequence tracking for
//! latency, loss, duplicates and reordering.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::fleet::{open_clients, Fleet, Sink, State, SYNC_TIMEOUT};
use crate::report::{cpu_time, jf, jnum, json_array, ms, pages_to_mib, tcp_mem_pages, Obj};
use crate::Options;

/// Latency histogram range, in microseconds: 1 us .. 1 hour, 3 significant digits.
pub(crate) const HIST_MAX_US: u64 = 3_600_000_000;

/// After the last send, wait this long at most for the deliveries still in flight...
pub(crate) const DRAIN_MAX: Duration = Duration::from_secs(10);
/// ...and give up sooner when nothing at all arrives for this long.
pub(crate) const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Slow clients send an empty line this often (see `Fleet::poke`).
pub(crate) const POKE_INTERVAL: Duration = Duration::from_millis(100);
/// After a slow round, how long at most to wait for the server to drop the slow clients
/// (as long as the round itself, within these bounds: a server drops a client whose
/// socket took nothing for its --send-timeout, 2 s by default).
pub(crate) const SLOW_DROP_WAIT_MIN: Duration = Duration::from_secs(2);
pub(crate) const SLOW_DROP_WAIT_MAX: Duration = Duration::from_secs(10);

/// Receiver x sender counters cost 16 bytes each; refuse runs that would need more.
pub(crate) const MAX_PAIRS: usize = 16 * 1024 * 1024;
/// Filler for `--pad` (receivers ignore everything after the three numbers).
pub(crate) const PAD: &str = concat!(
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
    "................................................................................",
);
/// How often the kernel's TCP memory (/proc/net/sockstat) is sampled during a round
/// with slow clients.
pub(crate) const TCP_MEM_SAMPLE: Duration = Duration::from_millis(200);

/// What one receiver has seen of one sender's sequence numbers: enough to tell lost,
/// duplicated and reordered messages apart in 16 bytes.
#[derive(Clone, Copy, Default)]
pub(crate) struct PairState {
    /// One past the highest sequence number seen.
    pub(crate) next: u32,
    /// Distinct messages received.
    pub(crate) received: u32,
    /// Bit k set: sequence number `next - 1 - k` has been seen (k < 64). A message older
    /// than that window is counted as reordered (it cannot be told from a duplicate).
    pub(crate) window: u64,
}

/// `lg <sender> <seq> <send_ns>` -> its three numbers.
pub(crate) fn parse_lg(text: &str) -> Option<(usize, u64, u64)> {
    let mut words = text.strip_prefix("lg ")?.split(' ');
    let sender = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let send_ns = words.next()?.parse().ok()?;
    Some((sender, seq, send_ns))
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

pub(crate) struct FanoutTracker {
    pub(crate) room: String,
    pub(crate) senders: usize,
    /// Connection index -> receiver number (`u32::MAX`: not a receiver).
    pub(crate) receiver_of_conn: Vec<u32>,
    pub(crate) pairs: Vec<PairState>,
    /// Messages actually queued, per sender.
    pub(crate) queued: Vec<u64>,
    pub(crate) measure_from_ns: u64,
    pub(crate) latency_us: Histogram<u64>,
    /// Distinct deliveries, all and measured (sent after the warm-up).
    pub(crate) delivered: u64,
    pub(crate) measured: u64,
    pub(crate) last_measured_ns: u64,
    pub(crate) duplicated: u64,
    pub(crate) reordered: u64,
    /// Lines in the room that were not ours or did not parse.
    pub(crate) foreign: u64,
    /// The last distinct delivery to any receiver (ns on the fleet clock; the round's
    /// start before the first), and the longest time between two of them.
    pub(crate) last_delivery_ns: u64,
    pub(crate) max_gap_ns: u64,
    /// When that longest gap ended.
    pub(crate) max_gap_end_ns: u64,
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
        let gap = now_ns.saturating_sub(self.last_delivery_ns);
        if gap > self.max_gap_ns {
            self.max_gap_ns = gap;
            self.max_gap_end_ns = now_ns;
        }
        self.last_delivery_ns = self.last_delivery_ns.max(now_ns);
        if send_ns >= self.measure_from_ns {
            self.measured += 1;
            self.last_measured_ns = now_ns;
            // Latency from the *scheduled* send time (see `run_round`).
            self.latency_us
                .saturating_record(now_ns.saturating_sub(send_ns) / 1000);
        }
    }
}

pub(crate) struct RoundSpec {
    /// Messages per second offered, all senders together.
    pub(crate) rate: f64,
    /// Filler bytes after `lg <sender> <seq> <send_ns> `.
    pub(crate) pad: usize,
    /// If set: the whole chat line's length, the filler made to fit (overrides `pad`).
    pub(crate) payload: Option<usize>,
    /// If set: the slow clients join the room this many seconds after the sending
    /// starts (all at once), instead of before it.
    pub(crate) slow_join_at: Option<f64>,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
}

pub(crate) struct SlowDrop {
    /// Seconds from the start of the round's clock; `None`: not dropped.
    pub(crate) dropped_after_s: Option<f64>,
    /// Seconds from the start of the round's clock to its joining the room (when its own
    /// JOIN came back); `None`: it never joined.
    pub(crate) joined_after_s: Option<f64>,
    pub(crate) how: String,
}

impl SlowDrop {
    /// Seconds from joining the room to being dropped.
    pub(crate) fn dropped_after_join_s(&self) -> Option<f64> {
        Some((self.dropped_after_s? - self.joined_after_s?).max(0.0))
    }
}

/// A round's slow clients: keeps them poked (see `Fleet::poke`), joins them to the room
/// mid-round if asked, and samples the kernel's TCP memory.
struct SlowSide<'a> {
    slow: &'a [usize],
    room: String,
    join_at_ns: Option<u64>,
    /// The `/ping` token the mid-round joiners wait for, once they have been sent.
    join_token: Option<u64>,
    /// Per slow client: when its JOIN came back (ns); reading until then.
    joined_ns: Vec<Option<u64>>,
    last_poke: Instant,
    last_sample: Instant,
    tcp_mem_start: Option<u64>,
    tcp_mem_peak: Option<u64>,
}

impl SlowSide<'_> {
    fn tick(&mut self, fleet: &mut Fleet) {
        if self.slow.is_empty() {
            return;
        }
        let now_ns = fleet.now_ns();
        if let (Some(at), None) = (self.join_at_ns, self.join_token) {
            if now_ns >= at {
                fleet.ping_token += 1;
                let token = fleet.ping_token;
                self.join_token = Some(token);
                for &i in self.slow {
                    if fleet.is_open(i) {
                        fleet.conns[i].room = self.room.clone();
                        fleet.conns[i].joined = false;
                        fleet.send(i, format_args!("/join {}", self.room));
                        fleet.send(i, format_args!("/ping {token}"));
                    }
                }
                fleet.flush();
            }
        }
        if let Some(token) = self.join_token {
            // A joiner reads until its own JOIN and the PONG after it, then never again.
            for (k, &i) in self.slow.iter().enumerate() {
                let c = &fleet.conns[i];
                if self.joined_ns[k].is_none() && c.reading && c.joined && c.pong >= token {
                    self.joined_ns[k] = Some(now_ns);
                    fleet.stop_reading(i);
                }
            }
        }
        if self.last_poke.elapsed() >= POKE_INTERVAL {
            self.last_poke = Instant::now();
            for &i in self.slow {
                fleet.poke(i);
            }
        }
        if self.last_sample.elapsed() >= TCP_MEM_SAMPLE {
            self.sample();
        }
    }

    fn sample(&mut self) {
        self.last_sample = Instant::now();
        if let Some(pages) = tcp_mem_pages() {
            self.tcp_mem_peak = Some(self.tcp_mem_peak.map_or(pages, |p| p.max(pages)));
        }
    }
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

pub(crate) struct RoundResult {
    pub(crate) room: String,
    pub(crate) receivers: usize,
    pub(crate) senders: usize,
    pub(crate) rate: f64,
    pub(crate) pad: usize,
    pub(crate) duration: f64,
    pub(crate) sent: u64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) offered_per_s: f64,
    pub(crate) achieved_per_s: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    pub(crate) samples: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) reordered: u64,
    pub(crate) foreign: u64,
    pub(crate) disconnected: usize,
    pub(crate) skipped: u64,
    pub(crate) loadgen_cpu_pct: f64,
    pub(crate) slow: Vec<SlowDrop>,
    pub(crate) payload: Option<usize>,
    /// The longest time without a delivery to any receiver, and when it ended (seconds
    /// from the round's start).
    pub(crate) max_gap_us: u64,
    pub(crate) max_gap_end_s: f64,
    /// Kernel TCP memory (pages, system-wide) when the round started and at its peak;
    /// sampled only in rounds with slow clients.
    pub(crate) tcp_mem_start: Option<u64>,
    pub(crate) tcp_mem_peak: Option<u64>,
}

impl RoundResult {
    /// The saturate workload's criteria.
    pub(crate) fn passes(&self) -> bool {
        self.lost == 0
            && self.disconnected == 0
            && self.skipped == 0
            && self.achieved_per_s >= 0.95 * self.offered_per_s
            && self.p99_us < 1_000_000
    }
}

/// One fan-out round: `receivers` (senders among them) and `slow` join a fresh room;
/// then an open-loop schedule of messages for warm-up + duration; then a bounded drain.
pub(crate) fn run_round(
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
    let join_late = spec.slow_join_at.is_some();
    let members: Vec<usize> = receivers
        .iter()
        .chain(if join_late { &[][..] } else { slow })
        .copied()
        .collect();
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
        duplicated: 0,
        reordered: 0,
        foreign: 0,
        last_delivery_ns: start_ns,
        max_gap_ns: 0,
        max_gap_end_ns: 0,
    };
    let mut side = SlowSide {
        slow,
        room: room.clone(),
        join_at_ns: spec.slow_join_at.map(|t| start_ns + (t * 1e9) as u64),
        join_token: None,
        joined_ns: vec![None; slow.len()],
        last_poke: Instant::now(),
        last_sample: Instant::now(),
        tcp_mem_start: None,
        tcp_mem_peak: None,
    };
    if !slow.is_empty() {
        side.sample();
        side.tcp_mem_start = side.tcp_mem_peak;
    }
    if !join_late {
        let now_ns = fleet.now_ns();
        for (k, &i) in slow.iter().enumerate() {
            fleet.stop_reading(i);
            side.joined_ns[k] = Some(now_ns);
        }
    }
    let cpu_before = cpu_time();
    let wall_before = Instant::now();
    let skipped_before = fleet.send_skipped;
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
            let pad = match spec.payload {
                // `lg S SEQ NS ` and then the filler.
                Some(len) => {
                    let prefix = 6 + digits(s as u64) + digits(seq) + digits(due_ns);
                    len.saturating_sub(prefix)
                }
                None => spec.pad,
            };
            let filler = &PAD[..pad.min(PAD.len())];
            if fleet.send(senders[s], format_args!("lg {s} {seq} {due_ns} {filler}")) {
                tracker.queued[s] += 1;
                fleet.chat_sent += 1;
            }
            m += 1;
        }
        side.tick(fleet);
        let next_due_ns = start_ns + (m as f64 * interval_ns) as u64;
        let wait = Duration::from_nanos(next_due_ns.saturating_sub(fleet.now_ns()));
        fleet.turn(wait.min(Duration::from_millis(20)), &mut tracker);
    }
    // Drain: until everything queued has arrived everywhere, or nothing arrives for a
    // while, or the hard limit.
    let expected = tracker.queued.iter().sum::<u64>() * receivers.len() as u64;
    let drain_deadline = Instant::now() + DRAIN_MAX;
    // Idle is measured from the last delivery's read time (`now_ns` of its read), not
    // a clock read per delivery: at millions of deliveries a second those cost the
    // load generator more than the parsing.
    let drain_start_ns = fleet.now_ns();
    while tracker.delivered < expected
        && Instant::now() < drain_deadline
        && fleet
            .now_ns()
            .saturating_sub(tracker.last_delivery_ns.max(drain_start_ns))
            < DRAIN_IDLE.as_nanos() as u64
    {
        side.tick(fleet);
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
        side.tick(fleet);
        fleet.turn(Duration::from_millis(20), &mut tracker);
    }
    let slow_report = slow
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let c = &fleet.conns[i];
            SlowDrop {
                dropped_after_s: c
                    .closed_ns
                    .map(|ns| ns.saturating_sub(start_ns) as f64 / 1e9),
                joined_after_s: side.joined_ns[k]
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
        payload: spec.payload,
        max_gap_us: tracker.max_gap_ns / 1000,
        max_gap_end_s: tracker.max_gap_end_ns.saturating_sub(start_ns) as f64 / 1e9,
        tcp_mem_start: side.tcp_mem_start,
        tcp_mem_peak: side.tcp_mem_peak,
    })
}

pub(crate) fn round_json(r: &RoundResult) -> String {
    let slow: Vec<String> = r
        .slow
        .iter()
        .map(|s| {
            Obj::new()
                .raw(
                    "dropped_after_s",
                    &s.dropped_after_s.map_or("null".to_string(), jf),
                )
                .raw("joined_after_s", &jnum(s.joined_after_s))
                .raw("dropped_after_join_s", &jnum(s.dropped_after_join_s()))
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
        .raw("payload_bytes", &jnum(r.payload.map(|p| p as f64)))
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
        .num("max_gap_ms", ms(r.max_gap_us))
        .num("max_gap_end_s", r.max_gap_end_s)
        .raw(
            "tcp_mem_start_mib",
            &jnum(r.tcp_mem_start.map(pages_to_mib)),
        )
        .raw("tcp_mem_peak_mib", &jnum(r.tcp_mem_peak.map(pages_to_mib)))
        .raw("slow_clients", &json_array(&slow))
        .end()
}

pub(crate) const ROUND_HEADER: &str = "round          clients senders    msgs/s  offered deliv/s achieved deliv/s   p50 ms   p99 ms p99.9 ms   max ms   lost  dup reord disc lg-cpu";

pub(crate) const ROUND_LEGEND: &str =
    "(deliveries = messages x receivers, the sender included; latency from each \
message's scheduled send time; disc = receivers disconnected; lg-cpu = this load generator's \
CPU use: near 100 % it, not the server, is the limit)";

pub(crate) fn round_row(name: &str, r: &RoundResult) -> String {
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

/// The clients and senders of a fan-out workload, with its round settings.
pub(crate) fn fanout_setup(
    fleet: &mut Fleet,
    opts: &Options,
    default_clients: usize,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let n = opts.clients.unwrap_or(default_clients);
    let s = opts.senders.unwrap_or(10).min(n);
    if let Some(asked) = opts.senders.filter(|&asked| asked > n) {
        eprintln!("[loadgen] --senders {asked} lowered to {n}: there are only {n} clients");
    }
    fleet.set_label(&format!("{}: connecting", opts.workload.name()));
    let clients = open_clients(fleet, n, opts.connect_rate)?;
    let senders = clients[..s].to_vec();
    Ok((clients, senders))
}
