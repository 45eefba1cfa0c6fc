//! Reporting helpers: hand-written JSON (no serde here), number formatting, and what we
//! read from /proc and getrusage (the server's memory, threads and files; our own CPU).

use std::fmt::Write as _;
use std::time::Duration;

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// JSON string literal.
pub(crate) fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON number (JSON has no NaN or infinity).
pub(crate) fn jf(x: f64) -> String {
    if x.is_finite() {
        format!("{}", (x * 1000.0).round() / 1000.0)
    } else {
        "null".to_string()
    }
}

pub(crate) fn jopt(x: Option<u64>) -> String {
    x.map_or("null".to_string(), |v| v.to_string())
}

/// A JSON object built field by field (hand-written: no serde in this project).
pub(crate) struct Obj(String);

impl Obj {
    pub(crate) fn new() -> Obj {
        Obj(String::from("{"))
    }
    pub(crate) fn raw(mut self, key: &str, value: &str) -> Obj {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{}", js(key), value);
        self
    }
    pub(crate) fn str(self, key: &str, value: &str) -> Obj {
        self.raw(key, &js(value))
    }
    pub(crate) fn num(self, key: &str, value: f64) -> Obj {
        self.raw(key, &jf(value))
    }
    pub(crate) fn int(self, key: &str, value: u64) -> Obj {
        self.raw(key, &value.to_string())
    }
    pub(crate) fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

pub(crate) fn json_array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

#[derive(Clone, Copy, Default)]
pub(crate) struct ProcStats {
    pub(crate) rss_kib: Option<u64>,
    pub(crate) threads: Option<u64>,
    pub(crate) fds: Option<u64>,
}

pub(crate) fn proc_stats(pid: u32) -> ProcStats {
    let mut stats = ProcStats::default();
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let number = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if line.starts_with("VmRSS:") {
                stats.rss_kib = number();
            } else if line.starts_with("Threads:") {
                stats.threads = number();
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        stats.fds = Some(dir.count() as u64);
    }
    stats
}

pub(crate) fn proc_json(s: &ProcStats) -> String {
    Obj::new()
        .raw("rss_kib", &jopt(s.rss_kib))
        .raw("threads", &jopt(s.threads))
        .raw("fds", &jopt(s.fds))
        .end()
}

pub(crate) fn show(x: Option<u64>) -> String {
    x.map_or("-".to_string(), |v| v.to_string())
}

/// CPU time (user + system) this process has used: shows when the load generator, not
/// the server, is the bottleneck.
pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass, which is plain data.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
}

/// Raises our soft RLIMIT_NOFILE to the hard limit: every connection is one fd. Returns
/// the soft limit in force.
pub(crate) fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write one plain struct we own.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The kernel's memory for all TCP sockets, in pages: `TCP: ... mem N` in
/// /proc/net/sockstat (socket buffers, system-wide).
pub(crate) fn tcp_mem_pages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Pages to MiB (the page size from sysconf; 4 KiB if it will not say).
pub(crate) fn pages_to_mib(pages: u64) -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    (pages * page) as f64 / (1024.0 * 1024.0)
}

pub(crate) use crate::proc_stats::process_cpu;

/// p50, p99 and max of a histogram, in milliseconds.
pub(crate) fn hist_ms(h: &hdrhistogram::Histogram<u64>) -> (f64, f64, f64) {
    if h.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}

/// `Some(x)` as a JSON number, `None` as null.
pub(crate) fn jnum(x: Option<f64>) -> String {
    x.map_or("null".to_string(), jf)
}

/// `Some(x)` as text, `None` as "n/a".
pub(crate) fn show_u(x: Option<u64>) -> String {
    x.map_or("n/a".to_string(), |v| v.to_string())
}
