//! The kernel's own TCP counters that tell whether clients are being lost before the
//! server ever sees them: `/proc/net/netstat`, section `TcpExt`.
//!
//! `ListenOverflows` counts connections the kernel dropped because a listener's accept
//! queue was full: clients arrived faster than `accept` took them (see `acceptor.rs`
//! for why that matters so much for a server-speaks-first protocol). The counters are
//! system-wide, since boot, so the console shows their growth since the server
//! started. On systems without `/proc/net/netstat` they are simply unknown.

use std::fs;

/// Reads one `TcpExt` counter, such as `"ListenOverflows"`; `None` when the file or
/// the counter does not exist.
pub fn tcp_ext(counter: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    parse_tcp_ext(&text, counter)
}

/// The file holds pairs of lines: `TcpExt: Name1 Name2 …` then `TcpExt: 1 2 …`.
fn parse_tcp_ext(text: &str, counter: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        let (Some(names), Some(values)) = (
            names.strip_prefix("TcpExt:"),
            values.strip_prefix("TcpExt:"),
        ) else {
            continue;
        };
        let position = names.split_whitespace().position(|name| name == counter)?;
        return values.split_whitespace().nth(position)?.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_counter_in_its_section() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 4260 17363 17363\n\
                    IpExt: InNoRoutes ListenOverflows\n\
                    IpExt: 0 99\n";
        assert_eq!(parse_tcp_ext(text, "ListenOverflows"), Some(17363));
        assert_eq!(parse_tcp_ext(text, "SyncookiesSent"), Some(4260));
        assert_eq!(parse_tcp_ext(text, "NoSuchCounter"), None);
        assert_eq!(parse_tcp_ext("TcpExt: A B\n", "A"), None);
        assert_eq!(parse_tcp_ext("", "A"), None);
    }

    #[test]
    fn this_machine_has_the_counter() {
        // Linux always has it; elsewhere `None` is the documented answer.
        if cfg!(target_os = "linux") {
            assert!(tcp_ext("ListenOverflows").is_some());
        }
    }
}
