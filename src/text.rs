//! What text may be relayed, and the rules for nicks and room names.
//!
//! Everything a client types ends up on other people's terminals, and `nc` or
//! `telnet` print control characters as they are: an ESC can start an ANSI sequence
//! that recolours or clears a screen, a bare CR can overwrite the start of a line,
//! and bidi controls can make text read backwards. Messages are therefore stripped
//! of such characters, and nicks and rooms (which identify people and places) are
//! held to a strict, lookalike-free alphabet. See "Nicks and rooms" in the README.

use std::borrow::Cow;
use std::fmt;

/// Fewest characters in a nick.
pub const NICK_MIN_CHARS: usize = 2;
/// Most characters in a nick.
pub const NICK_MAX_CHARS: usize = 16;
/// Most characters in a room name (after dropping a leading `#`).
pub const ROOM_MAX_CHARS: usize = 24;

/// Names the server uses for itself; no nick may look like one of them.
const RESERVED_NICKS: [&str; 15] = [
    "server",
    "admin",
    "administrator",
    "system",
    "notice",
    "root",
    "operator",
    "moderator",
    "mod",
    "staff",
    "bot",
    "nobody",
    "everyone",
    "anonymous",
    "underworld",
];

/// True for a character that must never be relayed: C0 controls except TAB, DEL,
/// C1 controls, bidi controls, the Unicode line/paragraph separators, and invisible
/// characters that serve only to make two texts look alike (zero-width space, word
/// joiner and invisible operators, BOM, tag characters). ZWJ and ZWNJ (U+200C, U+200D)
/// stay: emoji sequences and several scripts need them.
pub fn is_forbidden_char(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{8}'             // C0 before TAB
            | '\u{A}'..='\u{1F}'      // C0 after TAB (LF, CR, ESC, ...)
            | '\u{7F}'..='\u{9F}'     // DEL and the C1 controls
            | '\u{61C}'               // Arabic letter mark
            | '\u{200B}'              // zero-width space
            | '\u{200E}'..='\u{200F}' // left-to-right and right-to-left marks
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{2028}'..='\u{2029}' // line and paragraph separators
            | '\u{FEFF}'              // zero-width no-break space (BOM)
            | '\u{E0000}'..='\u{E007F}' // tag characters
    )
}

/// `s` without its forbidden characters (see [`is_forbidden_char`]).
///
/// Returns `Cow::Borrowed` when there is nothing to strip, which is almost always,
/// so the common case allocates nothing. Spaces are kept, leading and trailing ones
/// included: trimming is the caller's choice.
pub fn sanitize_text(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_forbidden_char) {
        Cow::Owned(s.chars().filter(|&c| !is_forbidden_char(c)).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Why a nick was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NickError {
    /// Fewer than [`NICK_MIN_CHARS`] or more than [`NICK_MAX_CHARS`] characters.
    Length,
    /// A character outside the allowed set, or a first character that is not a letter.
    Characters,
    /// The nick is, or looks like, one of the server's own names.
    Reserved,
}

impl NickError {
    /// A short explanation for people, used as the text of the `ERR` line.
    pub fn message(&self) -> &'static str {
        match self {
            NickError::Length => "a nick is 2 to 16 characters",
            NickError::Characters => {
                "a nick uses only ASCII letters, digits, '_', '-' and Hangul syllables, \
                 and starts with a letter or a Hangul syllable"
            }
            NickError::Reserved => "that nick is reserved for the server",
        }
    }
}

impl fmt::Display for NickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for NickError {}

/// Why a room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// Nothing left once the optional leading `#` is dropped.
    Empty,
    /// More than [`ROOM_MAX_CHARS`] characters.
    Length,
    /// A character outside the allowed set.
    Characters,
}

impl RoomError {
    /// A short explanation for people, used as the text of the `ERR` line.
    pub fn message(&self) -> &'static str {
        match self {
            RoomError::Empty => "a room name cannot be empty",
            RoomError::Length => "a room name is 1 to 24 characters",
            RoomError::Characters => {
                "a room name uses only ASCII letters, digits, '_', '-' and Hangul syllables"
            }
        }
    }
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for RoomError {}

/// True for a precomposed Hangul syllable (가 to 힣).
fn is_hangul_syllable(c: char) -> bool {
    ('\u{AC00}'..='\u{D7A3}').contains(&c)
}

/// True for a character allowed anywhere in a nick or a room name.
///
/// Only ASCII and Hangul syllables: letters from other scripts (a Cyrillic `е`)
/// or fullwidth forms could imitate someone else's nick.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || is_hangul_syllable(c)
}

/// Checks `s` against the nick rules: length first, then characters, then the
/// reserved names (so the error names the most basic problem).
pub fn validate_nick(s: &str) -> Result<(), NickError> {
    // take() stops counting early, so a megabyte "nick" costs almost nothing.
    let chars = s.chars().take(NICK_MAX_CHARS + 1).count();
    if !(NICK_MIN_CHARS..=NICK_MAX_CHARS).contains(&chars) {
        return Err(NickError::Length);
    }
    let starts_well = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || is_hangul_syllable(c));
    if !starts_well || !s.chars().all(is_name_char) {
        return Err(NickError::Characters);
    }
    if is_reserved_nick(s) {
        return Err(NickError::Reserved);
    }
    Ok(())
}

/// The "look" of a nick, used for uniqueness: two nicks collide iff their keys are
/// equal.
///
/// It folds exactly the characters of the nick alphabet that look alike in common
/// sans-serif fonts, which are the pairs Unicode's confusables list (UTS #39) gives
/// within that alphabet, plus case (nicks are case-insensitive):
///
/// - ASCII letters are lowercased;
/// - `0` becomes `o` (`0`, `o`, `O`);
/// - `1` and `i` become `l` (`1`, `l`, `I`, and so `i` and `L` by case);
/// - `m` becomes `rn`, as in Unicode's skeletons: the longer spelling, so that the key
///   is a character-by-character map and `mm`, `rnm`, `mrn` and `rnrn` all agree.
///
/// Not folded, because a reader sees the difference: digits standing for letters
/// (`4`/`a`, `5`/`s`, `2`/`z`, `8`/`b`, `3`/`e`: `Ev4n` is not `Evan`), `vv`/`w`,
/// `cl`/`d`, `_`/`-`. Hangul syllables are kept as they are.
pub fn nick_key(s: &str) -> String {
    let mut key = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        match c.to_ascii_lowercase() {
            '0' => key.push('o'),
            '1' | 'i' => key.push('l'),
            'm' => key.push_str("rn"),
            other => key.push(other),
        }
    }
    key
}

/// True when `s` is, or looks like, one of the server's own names, or like one of
/// its fallback aliases (`anon` followed by digits).
///
/// The fallback check is done on the key only: keying turns the digits `0` and `1`
/// into `o` and `l`, so the key of `anon` + digits is `anon` + characters from
/// `2`-`9`, `o` and `l`. Testing the key against that pattern catches `anon42` and
/// `Anon10` and every lookalike such as `AN0N1O`, and is what uniqueness by look
/// means; the price is that a few odd nicks like `AnonOil` count as lookalikes too.
pub fn is_reserved_nick(s: &str) -> bool {
    let key = nick_key(s);
    if RESERVED_NICKS.iter().any(|name| nick_key(name) == key) {
        return true;
    }
    match key.strip_prefix("anon") {
        Some(rest) => !rest.is_empty() && rest.chars().all(|c| matches!(c, '2'..='9' | 'o' | 'l')),
        None => false,
    }
}

/// The canonical form of a room name: one leading `#` dropped, ASCII letters
/// lowercased; or why the name is refused.
pub fn normalize_room(s: &str) -> Result<String, RoomError> {
    let name = s.strip_prefix('#').unwrap_or(s);
    if name.is_empty() {
        return Err(RoomError::Empty);
    }
    if name.chars().take(ROOM_MAX_CHARS + 1).count() > ROOM_MAX_CHARS {
        return Err(RoomError::Length);
    }
    if !name.chars().all(is_name_char) {
        return Err(RoomError::Characters);
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_chars_are_exactly_the_listed_ones() {
        for c in [
            '\0', '\u{8}', '\n', '\r', '\u{1b}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}',
        ] {
            assert!(is_forbidden_char(c), "{c:?}");
        }
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}',
        ] {
            assert!(is_forbidden_char(c), "{c:?}");
        }
        for c in ['\u{2069}', '\u{2028}', '\u{2029}'] {
            assert!(is_forbidden_char(c), "{c:?}");
        }
        for c in [
            '\t', ' ', 'a', '~', '\u{a0}', 'é', '밤', '\u{200d}', '\u{202f}', '😀',
        ] {
            assert!(!is_forbidden_char(c), "{c:?}");
        }
    }

    #[test]
    fn every_control_char_but_tab_is_forbidden() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if c.is_control() && c != '\t' {
                assert!(is_forbidden_char(c), "{c:?}");
            }
        }
    }

    #[test]
    fn sanitize_borrows_clean_text_and_keeps_spaces() {
        let clean = "  hello, 밤손님\tworld  ";
        assert!(matches!(sanitize_text(clean), Cow::Borrowed(s) if s == clean));
    }

    #[test]
    fn sanitize_defuses_escapes_and_bidi() {
        assert_eq!(sanitize_text("\u{1b}[2Jhi\r there"), "[2Jhi there");
        assert_eq!(sanitize_text("abc\u{202e}fed\u{2028}"), "abcfed");
        assert_eq!(sanitize_text("\u{7}\u{85}"), "");
    }

    #[test]
    fn good_nicks_pass() {
        for nick in [
            "ev",
            "Evan",
            "QuietOtter417",
            "a_b-c",
            "밤손님",
            "가나",
            "x234567890123456",
        ] {
            assert_eq!(validate_nick(nick), Ok(()), "{nick}");
        }
    }

    #[test]
    fn nick_length_is_in_chars() {
        assert_eq!(validate_nick("a"), Err(NickError::Length));
        assert_eq!(validate_nick(""), Err(NickError::Length));
        assert_eq!(validate_nick("x2345678901234567"), Err(NickError::Length));
        // 16 Hangul syllables are 48 bytes but 16 characters.
        assert_eq!(validate_nick(&"밤".repeat(16)), Ok(()));
        assert_eq!(validate_nick(&"밤".repeat(17)), Err(NickError::Length));
    }

    #[test]
    fn bad_nick_chars_are_refused() {
        for nick in [
            "1abc",
            "_abc",
            "-abc",
            "ab c",
            "ab.c",
            "\u{435}van",
            "ｅvan",
            "ab\u{1b}",
            "ab\u{200e}",
            "éva",
            "ㅂㅂ",
        ] {
            assert_eq!(validate_nick(nick), Err(NickError::Characters), "{nick:?}");
        }
    }

    #[test]
    fn nick_keys_fold_lookalikes() {
        let alike = [
            ("Evan", "EVAN"),
            ("Bill", "B1ll"),
            ("BILL", "b1LI"),
            ("bill", "biil"),
            ("Root", "R00T"),
            ("mallory", "rnallory"),
            ("Mallory", "RNALL0RY"),
            ("mm", "rnrn"),
            ("rnm", "mrn"),
        ];
        for (a, b) in alike {
            assert_eq!(nick_key(a), nick_key(b), "{a} {b}");
        }
        assert_eq!(nick_key("R00t"), "root");
        assert_eq!(nick_key("Mi1o"), "rnllo");
        assert_eq!(nick_key("밤손님"), "밤손님");
    }

    #[test]
    fn nick_keys_keep_what_looks_different() {
        let different = [
            ("Evan", "Ev4n"),
            ("sam", "5am"),
            ("zed", "2ed"),
            ("bob", "8ob"),
            ("eve", "3ve"),
            ("wes", "vves"),
            ("dan", "clan"),
            ("a_b", "a-b"),
            ("rn", "n"),
            ("밤손님", "밤손넘"),
        ];
        for (a, b) in different {
            assert_ne!(nick_key(a), nick_key(b), "{a} {b}");
        }
    }

    #[test]
    fn reserved_names_and_lookalikes_are_refused() {
        for nick in [
            "server",
            "Admin",
            "ADM1N",
            "admln",
            "Administrator",
            "r00t",
            "M0D",
            "Bot",
            "underworld",
            "everyone",
            "An0nymous",
            "n0b0dy",
            "adrnin",
            "RNOD",
            "Moderat0r",
        ] {
            assert_eq!(validate_nick(nick), Err(NickError::Reserved), "{nick}");
        }
        for nick in ["admins", "moderators1", "botany", "serverx", "roots"] {
            assert_eq!(validate_nick(nick), Ok(()), "{nick}");
        }
    }

    #[test]
    fn fallback_aliases_are_reserved() {
        for nick in [
            "anon1", "anon42", "Anon0", "ANON2026", "an0n7", "AnonI0", "anonO",
        ] {
            assert!(is_reserved_nick(nick), "{nick}");
        }
        for nick in ["anon", "anon_1", "anona", "anon1x", "xanon1", "anon-2"] {
            assert!(!is_reserved_nick(nick), "{nick}");
        }
    }

    #[test]
    fn rooms_are_normalized() {
        assert_eq!(normalize_room("lobby").as_deref(), Ok("lobby"));
        assert_eq!(normalize_room("#Rust-Lang_2").as_deref(), Ok("rust-lang_2"));
        assert_eq!(normalize_room("#밤Night").as_deref(), Ok("밤night"));
        assert_eq!(normalize_room(&"a".repeat(24)).map(|r| r.len()), Ok(24));
        assert!(normalize_room(&format!("#{}", "밤".repeat(24))).is_ok());
    }

    #[test]
    fn bad_rooms_are_refused() {
        assert_eq!(normalize_room(""), Err(RoomError::Empty));
        assert_eq!(normalize_room("#"), Err(RoomError::Empty));
        assert_eq!(normalize_room(&"a".repeat(25)), Err(RoomError::Length));
        assert_eq!(normalize_room("##a"), Err(RoomError::Characters));
        assert_eq!(normalize_room("a b"), Err(RoomError::Characters));
        assert_eq!(normalize_room("caf\u{e9}"), Err(RoomError::Characters));
        assert_eq!(normalize_room("a\u{1b}"), Err(RoomError::Characters));
    }

    #[test]
    fn errors_explain_themselves() {
        assert_eq!(NickError::Length.message(), "a nick is 2 to 16 characters");
        assert_eq!(RoomError::Empty.to_string(), RoomError::Empty.message());
    }
}
