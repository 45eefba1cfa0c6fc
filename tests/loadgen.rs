//! Smoke tests of the load generator (`examples/loadgen/`): every workload in a tiny
//! configuration against an in-process server. They check that each run completes, exits
//! 0 and reports what it should (everyone accepted, nothing lost...), and assert nothing
//! about timing: latency on a busy CI machine proves nothing either way.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{start_server, test_config};
use underworld_line::Server;

/// The longest any one load generator run may take before the test fails; the tiny runs
/// below take a few seconds at most.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the loadgen with `args`, killing it (and failing) after `RUN_TIMEOUT`.
fn loadgen(args: &[&str]) -> Run {
    let mut child = Command::new(common::example_binary("loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    // Read both pipes on threads, so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = out_pipe.read_to_string(&mut text);
        text
    });
    let err_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("wait for loadgen") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("loadgen {args:?} still running after {RUN_TIMEOUT:?}");
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    Run {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Runs a workload against `server` with `--json` and returns its one JSON line.
fn loadgen_json(server: &Server, args: &[&str]) -> String {
    let addr = server.local_addr().to_string();
    let mut all = args.to_vec();
    all.extend(["--addr", &addr, "--json"]);
    let run = loadgen(&all);
    assert!(
        run.status.success(),
        "loadgen {all:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one JSON line, got:\n{}",
        run.stdout
    );
    let line = lines[0].to_string();
    assert!(
        line.starts_with('{') && line.ends_with('}'),
        "not JSON: {line}"
    );
    line
}

/// Every value of `"key":` in a JSON line, as raw text (`12`, `true`, `null`, `"x"`).
fn values<'a>(json: &'a str, key: &str) -> Vec<&'a str> {
    let pattern = format!("\"{key}\":");
    json.match_indices(&pattern)
        .map(|(at, _)| {
            let rest = &json[at + pattern.len()..];
            let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// The one value of `"key":`, as a number.
fn number(json: &str, key: &str) -> u64 {
    let found = values(json, key);
    assert_eq!(found.len(), 1, "expected one `{key}` in {json}");
    found[0]
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is {} in {json}", found[0]))
}

fn stop(server: Server) {
    server.shutdown();
    server.join();
}

/// `idle`, tiny: every connection is accepted and gets the one broadcast.
#[test]
fn idle_accepts_everyone_and_everyone_gets_the_message() {
    let server = start_server(test_config());
    // The server runs in this process, so our own pid exercises the /proc readings.
    let pid = std::process::id().to_string();
    let json = loadgen_json(
        &server,
        &["idle", "--clients", "5", "--duration", "0.1", "--pid", &pid],
    );
    assert_eq!(number(&json, "accepted"), 5, "{json}");
    assert_eq!(number(&json, "refused"), 0, "{json}");
    assert_eq!(number(&json, "failed"), 0, "{json}");
    assert_eq!(number(&json, "received"), 5, "{json}");
    assert_eq!(values(&json, "all_received"), ["true"], "{json}");
    assert_eq!(
        values(&json, "rss_kib").len(),
        2,
        "before and after: {json}"
    );
    stop(server);
}

/// `idle` against a server capped at 3: the refusals are counted as such.
#[test]
fn idle_counts_connections_refused_over_the_cap() {
    let mut config = test_config();
    config.max_clients = Some(3);
    let server = start_server(config);
    let json = loadgen_json(&server, &["idle", "--clients", "5", "--duration", "0.1"]);
    assert_eq!(number(&json, "accepted"), 3, "{json}");
    assert_eq!(number(&json, "refused"), 2, "{json}");
    assert_eq!(number(&json, "failed"), 0, "{json}");
    assert_eq!(number(&json, "received"), 3, "{json}");
    assert_eq!(values(&json, "all_received"), ["false"], "{json}");
    stop(server);
}

/// `fanout`, tiny: every message reaches every member once, in order (no timing is
/// asserted; that is the benchmark's job).
#[test]
fn fanout_delivers_every_message_once_and_in_order() {
    let server = start_server(test_config());
    let json = loadgen_json(
        &server,
        &[
            "fanout",
            "--clients",
            "4",
            "--senders",
            "2",
            "--rate",
            "40",
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
        ],
    );
    let sent = number(&json, "sent");
    assert!(sent > 0, "{json}");
    // Every message reaches all 4 clients, its sender included.
    assert_eq!(number(&json, "expected_deliveries"), sent * 4, "{json}");
    assert_eq!(number(&json, "delivered"), sent * 4, "{json}");
    assert_eq!(number(&json, "lost"), 0, "{json}");
    assert_eq!(number(&json, "duplicated"), 0, "{json}");
    assert_eq!(number(&json, "reordered"), 0, "{json}");
    assert_eq!(number(&json, "disconnected"), 0, "{json}");
    assert!(number(&json, "samples") > 0, "{json}");
    stop(server);
}

/// `saturate`, two tiny rounds: it runs, reports its rounds and a best rate.
#[test]
fn saturate_runs_its_rounds() {
    let server = start_server(test_config());
    let json = loadgen_json(
        &server,
        &[
            "saturate",
            "--clients",
            "3",
            "--senders",
            "2",
            "--rate",
            "20",
            "--duration",
            "0.2",
            "--warmup",
            "0",
            "--rounds",
            "2",
        ],
    );
    assert_eq!(values(&json, "pass").len(), 2, "two rounds: {json}");
    assert_eq!(values(&json, "lost"), ["0", "0"], "{json}");
    assert_eq!(values(&json, "best_deliveries_per_s").len(), 1, "{json}");
    assert!(values(&json, "stopped").is_empty(), "{json}");
    stop(server);
}

/// `slow`, tiny: a baseline round and one with a client that never reads, both
/// reported.
#[test]
fn slow_runs_a_baseline_and_a_round_with_a_client_that_never_reads() {
    let server = start_server(test_config());
    let json = loadgen_json(
        &server,
        &[
            "slow",
            "--clients",
            "3",
            "--senders",
            "1",
            "--slow",
            "1",
            "--rate",
            "20",
            "--pad",
            "100",
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ],
    );
    assert!(json.contains("\"baseline\":{"), "{json}");
    assert!(json.contains("\"with_slow\":{"), "{json}");
    // Both rounds: nothing lost for the clients that do read.
    assert_eq!(values(&json, "lost"), ["0", "0"], "{json}");
    // The slow client is reported (dropped or not: that depends on timing).
    assert_eq!(values(&json, "how").len(), 1, "{json}");
    assert_eq!(values(&json, "p99_ratio").len(), 1, "{json}");
    stop(server);
}

/// `step`, tiny: clients are added in steps and each step is timed.
#[test]
fn step_adds_clients_step_by_step() {
    let server = start_server(test_config());
    let json = loadgen_json(&server, &["step", "--step", "2", "--max-clients", "4"]);
    assert_eq!(values(&json, "clients"), ["2", "4"], "{json}");
    assert_eq!(values(&json, "refused"), ["0", "0"], "{json}");
    assert_eq!(values(&json, "last_passing_clients").len(), 1, "{json}");
    stop(server);
}

/// `storm`, small: every client is greeted within the window, none stuck, and the
/// kernel counters are reported (as numbers, or null where /proc/net/netstat is absent).
#[test]
fn storm_greets_everyone_and_reports_the_kernel_counters() {
    let server = start_server(test_config());
    let json = loadgen_json(
        &server,
        &[
            "storm",
            "--clients",
            "60",
            "--connect-rate",
            "600",
            "--src-ips",
            "2",
        ],
    );
    assert_eq!(number(&json, "greeted"), 60, "{json}");
    assert_eq!(number(&json, "stuck"), 0, "{json}");
    assert_eq!(number(&json, "refused"), 0, "{json}");
    assert_eq!(number(&json, "failed"), 0, "{json}");
    for key in ["hello_p50_ms", "hello_p99_ms", "hello_max_ms"] {
        assert_eq!(values(&json, key).len(), 1, "{key}: {json}");
    }
    for key in ["listen_overflows", "listen_drops", "syncookies_sent"] {
        let found = values(&json, key);
        assert_eq!(found.len(), 1, "{key}: {json}");
        assert!(
            found[0] == "null" || found[0].parse::<u64>().is_ok(),
            "{key}: {json}"
        );
    }
    stop(server);
}

/// `flood` against the default flood limit: the flooders are answered `ERR rate-limited`,
/// the probers' pings come back, and the server's CPU is measured (the server runs in
/// this process, so our own pid).
#[test]
fn flood_is_rate_limited_and_the_prober_gets_its_pongs() {
    let mut config = test_config();
    config.rate_limit = underworld_line::Config::default().rate_limit;
    assert!(config.rate_limit.is_some(), "the default has a flood limit");
    let server = start_server(config);
    let pid = std::process::id().to_string();
    let json = loadgen_json(
        &server,
        &[
            "flood",
            "--flooders",
            "2",
            "--duration",
            "1.5",
            "--ping-rate",
            "4",
            "--pid",
            &pid,
        ],
    );
    assert_eq!(number(&json, "flooders"), 2, "{json}");
    assert!(number(&json, "lines_sent") > 0, "{json}");
    assert!(number(&json, "rate_limited") > 0, "{json}");
    // One entry per flooder.
    assert_eq!(values(&json, "err_rate_limited").len(), 2, "{json}");
    assert!(number(&json, "pings_sent") > 0, "{json}");
    assert!(number(&json, "pongs") > 0, "{json}");
    // 4 pings/s over 3 probers stays under the limit: no prober is punished.
    assert_eq!(number(&json, "probers"), 3, "{json}");
    assert_eq!(number(&json, "prober_rate_limited"), 0, "{json}");
    assert_eq!(number(&json, "prober_byes"), 0, "{json}");
    for key in ["ping_p50_ms", "ping_p99_ms", "ping_max_ms", "server_cpu_s"] {
        let found = values(&json, key);
        assert_eq!(found.len(), 1, "{key}: {json}");
        assert_ne!(found[0], "null", "{key}: {json}");
    }
    stop(server);
}

/// `slow` with the new options: non-readers joining mid-round with a small receive
/// buffer, 200-byte lines, no baseline. Every reader still gets every line; the joins,
/// the longest gap and the kernel's TCP memory are reported.
#[test]
fn slow_non_readers_can_join_mid_round() {
    let server = start_server(test_config());
    let json = loadgen_json(
        &server,
        &[
            "slow",
            "--clients",
            "3",
            "--senders",
            "2",
            "--slow",
            "2",
            "--slow-join-at",
            "0.2",
            "--slow-rcvbuf",
            "8192",
            "--payload",
            "200",
            "--rate",
            "20",
            "--duration",
            "0.6",
            "--warmup",
            "0",
            "--no-baseline",
        ],
    );
    assert!(!json.contains("\"baseline\""), "{json}");
    assert!(json.contains("\"with_slow\":{"), "{json}");
    assert_eq!(values(&json, "lost"), ["0"], "{json}");
    assert_eq!(number(&json, "payload_bytes"), 200, "{json}");
    assert_eq!(number(&json, "slow_total"), 2, "{json}");
    // Both joined (whether the server dropped them yet depends on timing).
    let joined = values(&json, "joined_after_s");
    assert_eq!(joined.len(), 2, "{json}");
    assert!(joined.iter().all(|&v| v != "null"), "{json}");
    for key in ["readers_max_gap_ms", "readers_p99_ms", "readers_max_ms"] {
        assert_eq!(values(&json, key).len(), 1, "{key}: {json}");
    }
    assert_eq!(
        values(&json, "tcp_mem_peak_mib").len(),
        2,
        "round and summary: {json}"
    );
    stop(server);
}

/// `--pid` of a process that does not exist is a usage error; `--senders` above
/// `--clients` is lowered, and says so.
#[test]
fn missing_pid_is_refused_and_too_many_senders_are_lowered() {
    let missing = loadgen(&["idle", "--pid", "4294967295"]);
    assert_eq!(missing.status.code(), Some(2), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no process with pid 4294967295"),
        "{}",
        missing.stderr
    );

    let server = start_server(test_config());
    let addr = server.local_addr().to_string();
    let run = loadgen(&[
        "fanout",
        "--addr",
        &addr,
        "--clients",
        "2",
        "--senders",
        "5",
        "--rate",
        "10",
        "--duration",
        "0.2",
        "--warmup",
        "0",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("--senders 5 lowered to 2"),
        "{}",
        run.stderr
    );
    stop(server);
}

/// `--help` works and a wrong workload or option is a usage error (exit status 2).
#[test]
fn help_and_usage_errors() {
    let help = loadgen(&["--help"]);
    assert!(help.status.success());
    assert!(help.stdout.contains("usage: loadgen"), "{}", help.stdout);

    let unknown = loadgen(&["fanout", "--bogus", "1"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", unknown.stderr);

    // The traffic rule: nothing but 127.0.0.0/8.
    let remote = loadgen(&["idle", "--addr", "192.0.2.1:2022"]);
    assert_eq!(remote.status.code(), Some(2), "{}", remote.stderr);
    assert!(remote.stderr.contains("127.0.0.0/8"), "{}", remote.stderr);
}
