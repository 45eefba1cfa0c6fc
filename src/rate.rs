//! Per-client flood control: a token bucket plus a rule for kicking persistent flooders.
//!
//! One client pasting thousands of lines would otherwise fill every other screen in
//! the room. Each client may send a burst of lines at once (default 10) and then a
//! steady rate (default 2 per second); extra lines are dropped with `ERR
//! rate-limited`. Only a client that keeps going over the limit for 10 seconds is
//! disconnected, so a person pasting a few lines is never kicked. Time is always
//! passed in, so the tests are exact and never sleep.

use std::fmt;
use std::time::{Duration, Instant};

/// How many lines a client may send: `burst` at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Lines that may arrive at once after a quiet spell (the bucket's capacity).
    pub burst: u32,
    /// Lines per second allowed in the long run (the refill rate).
    pub per_second: f64,
}

impl Default for RateLimit {
    /// A burst of 10 lines, then 2 lines per second.
    fn default() -> Self {
        RateLimit {
            burst: 10,
            per_second: 2.0,
        }
    }
}

impl RateLimit {
    /// Parses a command-line value: `off` (no limit, gives `None`) or
    /// `BURST/PER_SECOND`, such as `10/2` or `10/0.5`.
    pub fn parse(s: &str) -> Result<Option<RateLimit>, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let usage = || format!("expected BURST/PER_SECOND such as 10/2, or off; got {s:?}");
        let (burst, per_second) = s.split_once('/').ok_or_else(usage)?;
        let burst: u32 = burst.trim().parse().map_err(|_| usage())?;
        let per_second: f64 = per_second.trim().parse().map_err(|_| usage())?;
        if burst == 0 {
            return Err(format!("the burst must be at least 1 line; got {s:?}"));
        }
        // f64 parsing accepts "NaN" and "inf", so check the value, not just the syntax.
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "the rate must be a positive number of lines per second; got {s:?}"
            ));
        }
        Ok(Some(RateLimit { burst, per_second }))
    }
}

impl fmt::Display for RateLimit {
    /// The same `BURST/PER_SECOND` form that [`RateLimit::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.burst, self.per_second)
    }
}

/// What to do with one incoming line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle the line.
    Allowed,
    /// Over the limit: drop the line and answer `ERR rate-limited`.
    Limited,
    /// Over the limit for too long: say `BYE flooding` and disconnect.
    Disconnect,
}

/// The flood state of one client.
#[derive(Debug, Clone)]
pub struct FloodGuard {
    /// The limit being enforced.
    limit: RateLimit,
    /// Lines that may be sent right now; fractional because it refills continuously.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled_at: Instant,
    /// When the current flood episode began (its first limited line), if one is on.
    episode_start: Option<Instant>,
    /// The most recent limited line of the current episode.
    last_limited: Option<Instant>,
    /// When the client was last told `ERR rate-limited`.
    last_answer: Option<Instant>,
}

impl FloodGuard {
    /// A flood episode that lasts this long ends with a disconnect.
    pub const FLOOD_DISCONNECT_AFTER: Duration = Duration::from_secs(10);
    /// A flood episode ends when no line was limited for longer than this.
    pub const FLOOD_QUIET_RESET: Duration = Duration::from_secs(1);
    /// At most one `ERR rate-limited` per this long.
    pub const ANSWER_EVERY: Duration = Duration::from_secs(1);
    /// Longest pause in reading a client that is over its budget. Shorter than
    /// [`Self::FLOOD_QUIET_RESET`], so a pause never ends a flood episode by itself
    /// (a flooder must still be disconnected after 10 s, whatever the rate).
    pub const MAX_PAUSE: Duration = Duration::from_millis(500);

    /// A guard with a full bucket, so a new client may send a whole burst at once.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        FloodGuard {
            limit,
            tokens: f64::from(limit.burst),
            refilled_at: now,
            episode_start: None,
            last_limited: None,
            last_answer: None,
        }
    }

    /// Judges one line that arrived at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.refill(now);
        if let Some(last) = self.last_limited {
            if now.saturating_duration_since(last) > Self::FLOOD_QUIET_RESET {
                self.episode_start = None;
                self.last_limited = None;
            }
        }
        // A hair below 1.0 still counts as a token: refilling by float steps (a third
        // of a token every 1/6 s, say) can land on 0.999... where exact maths gives 1.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Verdict::Allowed;
        }
        let start = *self.episode_start.get_or_insert(now);
        self.last_limited = Some(now);
        if now.saturating_duration_since(start) >= Self::FLOOD_DISCONNECT_AFTER {
            Verdict::Disconnect
        } else {
            Verdict::Limited
        }
    }

    /// How long from `now` until the next line would be allowed (zero if one would be
    /// now). The connection thread stops reading for that long (at most
    /// [`Self::MAX_PAUSE`]) once a client is over its budget, so that TCP pushes back
    /// on the flooder instead of the server reading lines only to drop them.
    pub fn until_next_token(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let tokens = self.tokens + elapsed.as_secs_f64() * self.limit.per_second;
        if tokens >= 1.0 - 1e-9 {
            return Duration::ZERO;
        }
        // `try_`: a tiny rate (`10/1e-300` parses) would overflow a `Duration`.
        Duration::try_from_secs_f64((1.0 - tokens) / self.limit.per_second).unwrap_or(Duration::MAX)
    }

    /// Whether a limited line at `now` should be answered with `ERR rate-limited`: at
    /// most one answer per second, so refusing a flood costs one line a second, not
    /// one per refused line.
    pub fn should_answer(&mut self, now: Instant) -> bool {
        match self.last_answer {
            Some(last) if now.saturating_duration_since(last) < Self::ANSWER_EVERY => false,
            _ => {
                self.last_answer = Some(now);
                true
            }
        }
    }

    /// Adds the tokens earned since the last refill, up to the burst.
    fn refill(&mut self, now: Instant) {
        // saturating: a `now` older than the last one (callers racing) earns nothing
        // rather than panicking.
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = elapsed.as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        self.refilled_at = self.refilled_at.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parse_accepts_good_values() {
        let limit = |burst, per_second| Ok(Some(RateLimit { burst, per_second }));
        assert_eq!(RateLimit::parse("10/2"), limit(10, 2.0));
        assert_eq!(RateLimit::parse(" 10 / 0.5 "), limit(10, 0.5));
        assert_eq!(RateLimit::parse("1/100"), limit(1, 100.0));
        assert_eq!(RateLimit::parse("off"), Ok(None));
        assert_eq!(RateLimit::parse("OFF"), Ok(None));
    }

    #[test]
    fn parse_rejects_bad_values() {
        for bad in [
            "", "10", "10/", "/2", "0/2", "10/0", "10/-1", "-1/2", "10/NaN", "10/inf", "a/b",
            "10/2/3", "10/0.0",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RateLimit::parse("10/0").unwrap_err().contains("positive"));
        assert!(RateLimit::parse("0/2").unwrap_err().contains("at least 1"));
    }

    #[test]
    fn display_round_trips() {
        for text in ["10/2", "10/0.5"] {
            let limit = RateLimit::parse(text).unwrap().unwrap();
            assert_eq!(limit.to_string(), text);
        }
        assert_eq!(RateLimit::default().to_string(), "10/2");
    }

    #[test]
    fn a_full_burst_passes_and_the_next_line_is_limited() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        for _ in 0..10 {
            assert_eq!(guard.check(t0), Verdict::Allowed);
        }
        assert_eq!(guard.check(t0), Verdict::Limited);
        // Half a second later one token has come back.
        assert_eq!(guard.check(t0 + ms(500)), Verdict::Allowed);
        assert_eq!(guard.check(t0 + ms(500)), Verdict::Limited);
    }

    #[test]
    fn the_wait_for_the_next_token_follows_the_rate() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        assert_eq!(guard.until_next_token(t0), Duration::ZERO);
        for _ in 0..10 {
            guard.check(t0);
        }
        // Empty bucket at 2 lines/s: the next token in 500 ms, 200 ms later 300 ms.
        assert_eq!(guard.until_next_token(t0).as_millis(), 500);
        assert_eq!(guard.until_next_token(t0 + ms(200)).as_millis(), 300);
        assert_eq!(guard.until_next_token(t0 + ms(600)), Duration::ZERO);
    }

    #[test]
    fn a_flood_is_answered_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        assert!(guard.should_answer(t0));
        assert!(!guard.should_answer(t0 + ms(1)));
        assert!(!guard.should_answer(t0 + ms(999)));
        assert!(guard.should_answer(t0 + ms(1000)));
        assert!(!guard.should_answer(t0 + ms(1500)));
    }

    #[test]
    fn a_pasted_block_then_silence_is_never_disconnected() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        let verdicts: Vec<Verdict> = (0..15).map(|i| guard.check(t0 + ms(i))).collect();
        assert_eq!(
            verdicts.iter().filter(|&&v| v == Verdict::Allowed).count(),
            10
        );
        assert!(!verdicts.contains(&Verdict::Disconnect));
        // Chatting normally long after the paste is fine again.
        for i in 0..100 {
            assert_eq!(
                guard.check(t0 + Duration::from_secs(20) + ms(600 * i)),
                Verdict::Allowed
            );
        }
    }

    #[test]
    fn several_pastes_with_pauses_are_never_disconnected() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        for paste in 0..10 {
            let at = t0 + Duration::from_secs(3 * paste);
            for line in 0..30 {
                assert_ne!(guard.check(at + ms(line)), Verdict::Disconnect);
            }
        }
    }

    #[test]
    fn a_constant_flood_is_disconnected_after_about_ten_seconds() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        // 50 lines per second: one every 20 ms.
        let cut_at = (0..2_000u64)
            .map(|i| ms(20 * i))
            .find(|&at| guard.check(t0 + at) == Verdict::Disconnect)
            .expect("the flood must be cut off");
        assert!(cut_at >= Duration::from_secs(10), "{cut_at:?}");
        assert!(cut_at <= ms(10_500), "{cut_at:?}");
    }

    #[test]
    fn exactly_the_allowed_rate_is_never_limited() {
        let t0 = Instant::now();
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        for i in 0..10_000 {
            assert_eq!(guard.check(t0 + ms(500 * i)), Verdict::Allowed, "line {i}");
        }
        // Also with an empty bucket and an awkward rate (3 per second).
        let limit = RateLimit {
            burst: 1,
            per_second: 3.0,
        };
        let mut guard = FloodGuard::new(limit, t0);
        for i in 0..10_000u32 {
            let at = t0 + Duration::from_secs(1) * i / 3;
            assert_eq!(guard.check(at), Verdict::Allowed, "line {i}");
        }
    }

    #[test]
    fn a_quiet_second_ends_the_episode() {
        let t0 = Instant::now();
        // So slow a refill that no token comes back during the test.
        let limit = RateLimit {
            burst: 1,
            per_second: 0.01,
        };
        let mut guard = FloodGuard::new(limit, t0);
        assert_eq!(guard.check(t0), Verdict::Allowed);
        // Limited lines 0.9 s apart keep one episode going until it is 10 s old.
        let mut at = t0;
        let mut verdict = Verdict::Limited;
        while verdict == Verdict::Limited {
            at += ms(900);
            verdict = guard.check(at);
        }
        assert_eq!(verdict, Verdict::Disconnect);
        // First limited at 0.9 s; at 11.7 s the episode is 10.8 s old.
        assert_eq!(at - t0, ms(900 * 13));
        // Lines 1.1 s apart start a new episode every time: never disconnected.
        let mut guard = FloodGuard::new(limit, t0);
        for i in 0..100 {
            assert_ne!(guard.check(t0 + ms(1_100 * i)), Verdict::Disconnect);
        }
    }

    #[test]
    fn time_going_backwards_does_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut guard = FloodGuard::new(RateLimit::default(), t0);
        for i in 0..20 {
            guard.check(t0 - Duration::from_secs(i));
        }
    }
}
