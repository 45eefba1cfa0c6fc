//! Random, friendly anonymous aliases such as `QuietOtter`.
//!
//! Every client gets an alias the moment it connects, so nobody has to pick a name
//! to start chatting. An alias is an adjective and an animal; when the first tries
//! are all taken, a number is added. A tiny SplitMix64 generator is enough here (the
//! aliases need variety, not secrecy), which keeps the project free of extra crates.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Attempts below this number give a plain `AdjectiveAnimal`; later ones add a number.
pub const PLAIN_ATTEMPTS: u32 = 8;

/// How many plain `AdjectiveAnimal` aliases there are (48 × 48 = 2,304).
pub const PLAIN_ALIASES: usize = ADJECTIVES.len() * ANIMALS.len();

/// The first attempt worth making when `online` users hold nicks: once half the plain
/// aliases could be taken, a plain candidate is more likely taken than not, and each
/// taken candidate is a wasted look-up on the dispatcher (during a connection storm of
/// 15,000, eight of them per newcomer were a tenth of its work). So crowded servers
/// start with numbered ones (23 million of them).
pub fn first_attempt(online: usize) -> u32 {
    if online < PLAIN_ALIASES / 2 {
        0
    } else {
        PLAIN_ATTEMPTS
    }
}

/// The adjectives: ASCII, CamelCase, at most 6 letters each, nothing that could hurt.
const ADJECTIVES: [&str; 48] = [
    "Quiet", "Brave", "Silent", "Calm", "Swift", "Gentle", "Bright", "Clever", "Bold", "Kind",
    "Merry", "Jolly", "Sunny", "Lucky", "Happy", "Noble", "Witty", "Eager", "Keen", "Mellow",
    "Nimble", "Polite", "Rapid", "Tidy", "Vivid", "Warm", "Wise", "Zesty", "Lunar", "Dapper",
    "Breezy", "Cheery", "Daring", "Frosty", "Golden", "Hidden", "Humble", "Misty", "Plucky",
    "Rosy", "Snowy", "Stormy", "Velvet", "Amber", "Silver", "Lively", "Steady", "Cosmic",
];

/// The animals: ASCII, CamelCase, at most 6 letters each, so that an adjective, an
/// animal and a 4-digit number fit in the 16 characters of a nick.
const ANIMALS: [&str; 48] = [
    "Otter", "Heron", "Badger", "Fox", "Owl", "Lynx", "Wolf", "Bear", "Hare", "Raven", "Robin",
    "Finch", "Wren", "Crane", "Swan", "Falcon", "Eagle", "Hawk", "Panda", "Koala", "Tiger", "Lion",
    "Puma", "Bison", "Moose", "Elk", "Deer", "Seal", "Whale", "Orca", "Gecko", "Newt", "Frog",
    "Turtle", "Marten", "Ferret", "Lemur", "Yak", "Ibex", "Zebra", "Camel", "Llama", "Alpaca",
    "Moth", "Puffin", "Parrot", "Magpie", "Lark",
];

/// Makes alias candidates; the caller tries them until one is free.
#[derive(Debug, Clone)]
pub struct AliasGenerator {
    /// SplitMix64 state: it only ever advances by a fixed odd constant.
    state: u64,
}

impl AliasGenerator {
    /// A generator seeded differently on every run.
    ///
    /// `RandomState` holds keys the standard library draws from the operating
    /// system's randomness, so hashing the clock with it gives a fresh seed without
    /// a random-number crate.
    pub fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        hasher.write_u128(nanos);
        Self::with_seed(hasher.finish())
    }

    /// A generator that always gives the same sequence for the same seed (for tests).
    pub fn with_seed(seed: u64) -> Self {
        AliasGenerator { state: seed }
    }

    /// The next candidate for try number `attempt` (counting from 0): `QuietOtter`
    /// for the first [`PLAIN_ATTEMPTS`] tries, then `QuietOtter417` (a number from 2
    /// to 9999), since with many people online the plain names run out.
    pub fn candidate(&mut self, attempt: u32) -> String {
        let adjective = ADJECTIVES[self.below(ADJECTIVES.len() as u64) as usize];
        let animal = ANIMALS[self.below(ANIMALS.len() as u64) as usize];
        if attempt < PLAIN_ATTEMPTS {
            format!("{adjective}{animal}")
        } else {
            // Starts at 2: "QuietOtter1" would read as "the first QuietOtter".
            let number = 2 + self.below(9998);
            format!("{adjective}{animal}{number}")
        }
    }

    /// The next 64 random bits (SplitMix64, by Sebastiano Vigna).
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random number in `0..n` (`n > 0`). Multiplying instead of taking `% n`
    /// maps the 64 random bits evenly onto the range (Lemire's method, no bias
    /// worth mentioning for small `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

impl Default for AliasGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{is_reserved_nick, nick_key, validate_nick};
    use std::collections::HashSet;

    #[test]
    fn every_combination_is_a_valid_unreserved_nick() {
        for adjective in ADJECTIVES {
            for animal in ANIMALS {
                for suffix in ["", "2", "9999"] {
                    let nick = format!("{adjective}{animal}{suffix}");
                    assert_eq!(validate_nick(&nick), Ok(()), "{nick}");
                    assert!(!is_reserved_nick(&nick), "{nick}");
                }
                assert!(adjective.len() + animal.len() <= 12, "{adjective}{animal}");
            }
        }
    }

    #[test]
    fn words_are_camel_case_ascii_and_distinct() {
        for list in [&ADJECTIVES, &ANIMALS] {
            let keys: HashSet<String> = list.iter().map(|w| nick_key(w)).collect();
            assert_eq!(keys.len(), list.len(), "a word appears twice");
            for word in list.iter() {
                let mut chars = word.chars();
                assert!(
                    chars.next().is_some_and(|c| c.is_ascii_uppercase()),
                    "{word}"
                );
                assert!(chars.all(|c| c.is_ascii_lowercase()), "{word}");
            }
        }
    }

    #[test]
    fn plain_then_numbered() {
        let mut gen = AliasGenerator::with_seed(7);
        for attempt in 0..PLAIN_ATTEMPTS {
            let nick = gen.candidate(attempt);
            assert!(nick.chars().all(|c| c.is_ascii_alphabetic()), "{nick}");
        }
        for attempt in PLAIN_ATTEMPTS..PLAIN_ATTEMPTS + 200 {
            let nick = gen.candidate(attempt);
            let digits = nick.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            let number: u32 = digits.parse().expect("a number at the end");
            assert!((2..=9999).contains(&number), "{nick}");
            assert_eq!(validate_nick(&nick), Ok(()));
        }
    }

    #[test]
    fn crowded_servers_skip_the_plain_aliases() {
        assert_eq!(first_attempt(0), 0);
        assert_eq!(first_attempt(PLAIN_ALIASES / 2 - 1), 0);
        assert_eq!(first_attempt(PLAIN_ALIASES / 2), PLAIN_ATTEMPTS);
        assert_eq!(first_attempt(15_000), PLAIN_ATTEMPTS);
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = AliasGenerator::with_seed(42);
        let mut b = AliasGenerator::with_seed(42);
        for attempt in 0..20 {
            assert_eq!(a.candidate(attempt), b.candidate(attempt));
        }
    }

    #[test]
    fn candidates_vary() {
        let mut gen = AliasGenerator::new();
        let seen: HashSet<String> = (0..100).map(|_| gen.candidate(0)).collect();
        assert!(
            seen.len() > 50,
            "only {} distinct aliases in 100",
            seen.len()
        );
    }

    #[test]
    fn below_stays_in_range() {
        let mut gen = AliasGenerator::with_seed(0);
        for n in [1, 2, 48, 9998] {
            assert!((0..1000).all(|_| gen.below(n) < n));
        }
    }
}
