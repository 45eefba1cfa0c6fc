//! Counters for `/stats`: written by the dispatcher and the acceptor, read by anyone.
//! Plain atomics, so reading them never takes a lock or slows the writers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals since the server started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and given a thread.
    pub accepted: AtomicU64,
    /// Connections refused (cap, per-IP cap, failed thread spawn).
    pub refused: AtomicU64,
    /// `MSG`, `ME` and `DM` lines relayed (each counted once, whatever the audience).
    pub messages: AtomicU64,
    /// Lines queued for clients, one per recipient: every kind of line, not only
    /// messages (`/stats` says "lines written to clients").
    pub deliveries: AtomicU64,
    /// Bytes queued for clients that had already been sent `--max-pending` bytes since
    /// they connected. Only such a client's kernel send queue can hold more than that,
    /// so these are what the send-queue watchdog counts to know whether anyone could
    /// have fallen behind since it last looked. (A storm of new clients, each sent one
    /// `HELLO`, adds nothing here, and costs the watchdog no look.)
    pub watched_bytes: AtomicU64,
    /// Of those dropped as too slow, the ones the send-queue watchdog found (their
    /// unacknowledged output in the kernel stayed over `--max-pending`).
    pub send_queue_drops: AtomicU64,
    /// Clients disconnected for reading too slowly.
    pub too_slow: AtomicU64,
    /// Events an observer missed because it fell too far behind
    /// (see [`Server::subscribe`](crate::Server::subscribe)).
    pub observer_drops: AtomicU64,
    /// Cluster mode: whether the node is subscribed to Redis right now, so that its
    /// rooms span nodes (false: Redis unreachable, chat stays local to this node).
    #[cfg(feature = "redis")]
    pub cluster_linked: std::sync::atomic::AtomicBool,
    /// Cluster mode: whether the publisher's last attempt failed (Redis timed out, or
    /// could not be reached for publishing). Until a publish succeeds again, this
    /// node's lines are delivered on this node only, even while it stays subscribed
    /// ([`cluster_linked`](Self::cluster_linked)), so `/stats` says it is not linked.
    #[cfg(feature = "redis")]
    pub cluster_publish_failing: std::sync::atomic::AtomicBool,
    /// Cluster mode: the live nodes and how many users each has registered, by name, as
    /// the register thread last counted them (every second while Redis answers; empty
    /// before the first count). A lock, not atomics: a list of names; the register
    /// thread replaces it in one step, readers copy it.
    #[cfg(feature = "redis")]
    pub cluster_nodes: parking_lot::Mutex<Vec<(String, usize)>>,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: these are independent counters, no other memory hangs off them.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
