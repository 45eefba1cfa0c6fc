//! Waiting between connection attempts, and logging that cannot flood.

use std::time::{Duration, Instant};

/// First wait after a failed attempt.
const FIRST: Duration = Duration::from_millis(100);
/// Longest wait: a node finds Redis again at most this long after it is back.
const LONGEST: Duration = Duration::from_secs(2);

/// Exponential back-off: 100 ms, 200 ms, 400 ms… up to 2 s, back to the start on success.
#[derive(Debug)]
pub(crate) struct Backoff {
    wait: Duration,
    not_before: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            wait: FIRST,
            not_before: None,
        }
    }

    /// Whether the next attempt may be made now.
    pub(crate) fn ready(&self) -> bool {
        self.not_before.map_or(true, |t| Instant::now() >= t)
    }

    /// How long until the next attempt may be made.
    pub(crate) fn remaining(&self) -> Duration {
        self.not_before.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    /// An attempt failed: wait longer before the next one.
    pub(crate) fn failed(&mut self) {
        self.not_before = Some(Instant::now() + self.wait);
        self.wait = (self.wait * 2).min(LONGEST);
    }

    /// An attempt worked: the next failure starts the waits over.
    pub(crate) fn succeeded(&mut self) {
        self.wait = FIRST;
        self.not_before = None;
    }
}

/// Lets a message through at most once per `every`, and counts the ones held back,
/// so that a flood of garbage on the channel cannot flood the log too.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimiter {
    pub(crate) fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when this one may be logged, `n` being how many were held back since the
    /// last one logged; `None` when it must be held back.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest_then_start_over() {
        let mut backoff = Backoff::new();
        assert!(backoff.ready());
        for _ in 0..10 {
            backoff.failed();
        }
        assert_eq!(backoff.wait, LONGEST);
        assert!(!backoff.ready());
        backoff.succeeded();
        assert!(backoff.ready());
        assert_eq!(backoff.wait, FIRST);
    }

    #[test]
    fn the_log_limiter_counts_what_it_holds_back() {
        let mut limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
        limiter.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(limiter.allow(), Some(2));
    }
}
