//! The connection cap, derived from what this process can really hold.
//!
//! Each connection costs **one thread** and **one file descriptor** here. Running out of
//! either must never be discovered by a failing `thread::spawn`: on this machine a thread
//! that could not map its guard page aborted the whole process, dropping every user
//! (seen at ~16,370 threads, with `vm.max_map_count` at 65,530). So at start-up we read the limits from `/proc` and refuse
//! connections (`BYE server full`) well before any of them is reached.

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::fs;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Memory mappings one thread costs: its stack and the guard page below it, plus the
/// alternate signal stack and its guard that Rust's std gives every thread (to report
/// stack overflows). Measured here: ~16,370 threads at 65,530 mappings.
const MAPS_PER_THREAD: usize = 4;

/// Mappings kept back for what grows besides threads: malloc's per-thread arenas (up to
/// 8 per core), the binary's libraries, an embedding program's own.
const RESERVED_MAPS: usize = 1024;

/// File descriptors kept back for everything that is not a client: stdin/stdout/stderr,
/// the listener, `/proc` reads, log files, and the one extra socket the acceptor must
/// accept in order to tell a client `BYE server full`.
pub(crate) const RESERVED_FDS: usize = 64;

/// Threads kept back for the server's own (acceptor, dispatcher, flusher, console,
/// signal handler) and for an embedding program's.
const RESERVED_THREADS: usize = 64;

/// The connection cap as slots, shared by every listener (the TCP one, and the web one
/// with the `web` feature). A connection holds a slot for as long as its thread lives,
/// so that all listeners together stay below the limit whose crossing would abort the
/// process, however the users split between them.
#[derive(Debug)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    max: usize,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            taken: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot; `false` when all are taken.
    pub(crate) fn take(&self) -> bool {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a slot taken with [`take`](Self::take).
    pub(crate) fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `--max-per-ip` as counts: the users from each source address (see
/// `acceptor::source_key`), whichever way they came in: a TCP connection, a WebSocket,
/// a polling session (feature `web`). Each is given back as soon as its user is gone,
/// so that leaving one way frees a place for coming back another.
#[derive(Debug)]
pub(crate) struct Sources {
    /// 0: no limit (and nothing is counted).
    max: usize,
    counts: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    pub(crate) fn new(max: usize) -> Sources {
        Sources {
            max,
            counts: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more user from `source`; `false` (nothing counted) when it already
    /// has `max`.
    pub(crate) fn take(&self, source: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut counts = self.counts.lock();
        let count = counts.entry(source).or_default();
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// One user fewer from `source` (taken with [`take`](Self::take)).
    pub(crate) fn give_back(&self, source: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&source);
            }
        }
    }
}

/// What a limit allows and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// The most concurrent clients this process should accept.
    pub max_clients: usize,
    /// Which limit binds, in words, for the log and `/stats`.
    pub reason: String,
}

impl Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.max_clients, self.reason)
    }
}

/// Derives the safe cap from the OS, then applies a requested cap (`--max-clients`):
/// a request above the safe cap is lowered to it, with the reason saying so.
pub fn connection_cap(requested: Option<usize>) -> Cap {
    let safe = os_cap();
    match requested {
        Some(wanted) if wanted <= safe.max_clients => Cap {
            max_clients: wanted,
            reason: format!("--max-clients; the OS would allow {}", safe),
        },
        Some(wanted) => Cap {
            max_clients: safe.max_clients,
            reason: format!(
                "--max-clients {wanted} lowered to what the OS allows: {}",
                safe.reason
            ),
        },
        None => safe,
    }
}

/// The smallest of the per-limit caps below; a limit that cannot be read does not count.
pub fn os_cap() -> Cap {
    // Threads on the whole system now: three limits below are shared by all of them.
    let threads_now = system_threads();
    let candidates = [
        open_file_cap(),
        map_count_cap(),
        thread_pool_cap(
            threads_now,
            read_number("/proc/sys/kernel/threads-max"),
            |max| format!("kernel.threads-max {max}"),
        ),
        // Every thread takes an id from the system-wide pid space.
        thread_pool_cap(
            threads_now,
            read_number("/proc/sys/kernel/pid_max"),
            |max| format!("kernel.pid_max {max}"),
        ),
        // `RLIMIT_NPROC` counts this user's threads, in all processes.
        thread_pool_cap(threads_now, read_limit("Max processes"), |max| {
            format!("process limit {max} (ulimit -u)")
        }),
    ];
    candidates
        .into_iter()
        .flatten()
        .min_by_key(|cap| cap.max_clients)
        .unwrap_or(Cap {
            max_clients: 1000,
            reason: "no limits readable in /proc; a conservative 1000".to_string(),
        })
}

/// One file descriptor per connection: the soft `RLIMIT_NOFILE`.
fn open_file_cap() -> Option<Cap> {
    let limit = read_limit("Max open files")?;
    let open_now = fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let cap = limit.saturating_sub(open_now + RESERVED_FDS);
    Some(Cap {
        max_clients: cap,
        reason: format!("open-file limit {limit} (ulimit -n), one per connection"),
    })
}

/// One thread per connection, each about `MAPS_PER_THREAD` memory mappings.
fn map_count_cap() -> Option<Cap> {
    let max = read_number("/proc/sys/vm/max_map_count")?;
    let used = fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().count())
        .unwrap_or(0);
    let cap = max.saturating_sub(used + RESERVED_MAPS) / MAPS_PER_THREAD;
    Some(Cap {
        max_clients: cap.saturating_sub(RESERVED_THREADS),
        reason: format!(
            "vm.max_map_count {max}, {used} mappings in use, about {MAPS_PER_THREAD} per thread"
        ),
    })
}

/// A limit on threads that others share with us: what is left of `max` once the
/// threads that exist now (and our reserve) are counted.
fn thread_pool_cap(
    threads_now: Option<usize>,
    max: Option<usize>,
    reason: impl FnOnce(usize) -> String,
) -> Option<Cap> {
    let max = max?;
    Some(Cap {
        max_clients: max.saturating_sub(threads_now? + RESERVED_THREADS),
        reason: reason(max),
    })
}

/// Threads on the whole system now: the 4th field of `/proc/loadavg` is "running/total".
fn system_threads() -> Option<usize> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    let field = loadavg.split_whitespace().nth(3)?;
    field.split('/').nth(1)?.parse().ok()
}

/// The soft value of a line of `/proc/self/limits`; `None` if absent or "unlimited".
fn read_limit(name: &str) -> Option<usize> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn read_number(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_below_every_limit_and_explains_itself() {
        let cap = os_cap();
        assert!(cap.max_clients > 0);
        if let Some(files) = read_limit("Max open files") {
            assert!(cap.max_clients < files);
        }
        assert!(!cap.reason.is_empty());
    }

    #[test]
    fn a_request_is_honoured_below_the_safe_cap_and_lowered_above_it() {
        assert_eq!(connection_cap(Some(5)).max_clients, 5);
        let huge = connection_cap(Some(usize::MAX));
        // Not exactly equal: the cap counts this process's memory mappings, and tests
        // running alongside start and end threads (4 mappings each) between the calls.
        let os = os_cap().max_clients;
        assert!(
            huge.max_clients.abs_diff(os) <= 64,
            "{} vs {os}",
            huge.max_clients
        );
        assert!(huge.reason.contains("lowered"));
    }
}
