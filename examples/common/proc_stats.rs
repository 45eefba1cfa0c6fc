//! What the benchmark examples read about a server process from `/proc`: shared by
//! `loadgen` and `pushpoll` (each includes this file with `#[path]`; a folder without a
//! `main.rs` is not an example of its own).

use std::time::Duration;

/// CPU time (user + system) process `pid` has used so far, from /proc/PID/stat.
pub(crate) fn process_cpu(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // after its closing one. utime and stime are fields 14 and 15.
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}
