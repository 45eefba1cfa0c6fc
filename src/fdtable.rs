//! Grows the process's file-descriptor table once, at start-up, to its full size.
//!
//! # Why
//!
//! Linux keeps a process's open files in a table that starts small and doubles when a
//! new descriptor does not fit. In a process with several threads, each doubling waits
//! for an RCU grace period (about 10 ms here) so that no other thread still reads the
//! old table. During a storm of arrivals that wait lands in the acceptor's `accept`:
//! at 20,000 connections a second, 10 ms is 200 arrivals, more than the 128 the listen
//! queue holds, and the kernel drops the rest (`ListenOverflows`). A burst of 15,000
//! connections crosses eight doublings (64 → 16,384), all in its first tenth of a second.
//!
//! The kernel never shrinks the table, so opening enough descriptors once and closing
//! them leaves it big for the life of the process: `accept` then never waits for it.
//! The cost is the table itself, 8 bytes per slot (128 KiB for 16,000 connections).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The table size this process has already grown to (several servers may be started in
/// one process, as the tests do): only the first pays.
static GROWN_TO: AtomicUsize = AtomicUsize::new(0);

/// Makes room for descriptors up to `slots` without any later growth. Stops early,
/// without error, at the open-file limit: the table is then as big as it can be used.
pub(crate) fn make_room_for(slots: usize) {
    if GROWN_TO.load(Ordering::Relaxed) >= slots {
        return;
    }
    let Ok(first) = File::open("/dev/null") else {
        return; // no /dev/null (not Linux, a sandbox): the table grows as it goes
    };
    let mut held = Vec::with_capacity(slots);
    let mut highest = first.as_raw_fd();
    held.push(first);
    // Each clone takes the lowest free number, so holding them all open pushes the
    // highest one up to `slots`. Bounded by `slots` clones.
    while usize::try_from(highest).is_ok_and(|fd| fd < slots) && held.len() <= slots {
        match held[0].try_clone() {
            Ok(file) => {
                highest = file.as_raw_fd();
                held.push(file);
            }
            Err(_) => break, // the open-file limit
        }
    }
    let grown = usize::try_from(highest).unwrap_or(0);
    GROWN_TO.fetch_max(grown, Ordering::Relaxed);
    log::debug!("file-descriptor table grown to {grown} slots up front");
    // `held` closes them all here; the table keeps its size.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_leaves_no_descriptor_open() {
        make_room_for(3000);
        assert!(GROWN_TO.load(Ordering::Relaxed) >= 3000);
        // Every clone was closed again: the lowest free number is low once more (other
        // tests running alongside hold a few descriptors, not thousands).
        let next = File::open("/dev/null").unwrap().as_raw_fd();
        assert!(
            next < 1000,
            "descriptor {next} after growing: clones were kept open"
        );
    }
}
