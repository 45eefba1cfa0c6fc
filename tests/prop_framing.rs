//! Property tests for line framing and text rules.
//!
//! The framer must give the same frames however TCP happens to cut the stream, so
//! it is checked against a plain reference framer that sees the whole input at
//! once. proptest shrinks any failing input to a minimal byte string.

use proptest::prelude::*;
use underworld_line::{frame::*, text::*};

/// True when `prefix`, the first bytes of a line still without its LF, already
/// shows that the line is too long (past `max_line` even if a final CR is dropped).
fn known_too_long(prefix: &[u8], max_line: usize) -> bool {
    prefix.len() > max_line + 1 || (prefix.len() == max_line + 1 && prefix.last() != Some(&b'\r'))
}

/// The reference: split the whole input on LF and judge each piece on its own.
fn reference(input: &[u8], max_line: usize, max_unterminated: usize) -> Vec<Frame> {
    // The same clamp as LineFramer::new: a max_line line plus CRLF is always fine.
    let max_unterminated = max_unterminated.max(max_line + 1);
    let pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let last = pieces.len() - 1; // split() always yields at least one piece
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if piece.len() > max_unterminated {
            // Cut off at byte max_unterminated + 1: a TooLong known before then comes first.
            if known_too_long(&piece[..max_unterminated], max_line) {
                out.push(Frame::TooLong);
            }
            out.push(Frame::Unterminated);
            return out;
        }
        if i == last {
            // No LF yet: only a TooLong can already be known.
            if known_too_long(piece, max_line) {
                out.push(Frame::TooLong);
            }
        } else {
            let content = piece.strip_suffix(b"\r").unwrap_or(piece);
            if content.len() > max_line {
                out.push(Frame::TooLong);
            } else {
                out.push(Frame::Line(content.to_vec()));
            }
        }
    }
    out
}

/// Feeds `chunks` one after the other to a fresh framer.
fn framed<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    max_line: usize,
    max_unterminated: usize,
) -> (Vec<Frame>, LineFramer) {
    let mut framer = LineFramer::new(max_line, max_unterminated);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk, &mut out);
    }
    (out, framer)
}

/// Input bytes rich in LFs and CRs, so lines and CRLFs are common. The share of
/// other bytes varies per case, so that some cases have long lines and some short.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (1u32..40).prop_flat_map(|weight| {
        prop::collection::vec(
            prop_oneof![weight => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b'\r')],
            0..4096,
        )
    })
}

/// (max_line, max_unterminated), small so that both limits are hit often.
fn limits() -> impl Strategy<Value = (usize, usize)> {
    (1usize..40).prop_flat_map(|max_line| (Just(max_line), max_line..200))
}

proptest! {
    /// Any bytes, cut into any chunks, frame exactly like the simple reference, and the
    /// same as when fed all at once or one byte at a time (the predecessor's bug).
    #[test]
    fn framing_ignores_chunk_boundaries(
        input in stream(),
        (max_line, max_unterminated) in limits(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let expected = reference(&input, max_line, max_unterminated);

        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        let chunks = cuts.windows(2).map(|w| &input[w[0]..w[1]]);
        let (random_cuts, framer) = framed(chunks, max_line, max_unterminated);
        prop_assert_eq!(&random_cuts, &expected);

        let (all_at_once, _) = framed([input.as_slice()], max_line, max_unterminated);
        prop_assert_eq!(&all_at_once, &expected);

        let (byte_by_byte, _) = framed(input.chunks(1), max_line, max_unterminated);
        prop_assert_eq!(&byte_by_byte, &expected);

        let dead = expected.last() == Some(&Frame::Unterminated);
        prop_assert_eq!(framer.is_dead(), dead);
        if !dead {
            let tail = input.iter().rev().take_while(|&&b| b != b'\n').count();
            prop_assert_eq!(framer.partial_len(), tail);
        }
    }

    /// Sanitized text never keeps a forbidden or control character (TAB aside), and
    /// sanitizing twice changes nothing.
    #[test]
    fn sanitized_text_is_clean_and_stable(s in any::<String>()) {
        let clean = sanitize_text(&s);
        for c in clean.chars() {
            prop_assert!(!is_forbidden_char(c), "{:?} left in {:?}", c, clean);
            prop_assert!(!c.is_control() || c == '\t', "{:?} left in {:?}", c, clean);
        }
        prop_assert_eq!(sanitize_text(&clean), clean.clone());
    }

    /// A nick that passes validation uses only the allowed alphabet and length, and is
    /// never a reserved name.
    #[test]
    fn accepted_nicks_use_only_allowed_chars(s in any::<String>()) {
        if validate_nick(&s).is_ok() {
            let allowed = |c: char| {
                c.is_ascii_alphanumeric() || c == '_' || c == '-' || ('\u{AC00}'..='\u{D7A3}').contains(&c)
            };
            prop_assert!(s.chars().all(allowed), "{:?}", s);
            prop_assert!((NICK_MIN_CHARS..=NICK_MAX_CHARS).contains(&s.chars().count()));
            prop_assert!(!is_reserved_nick(&s));
        }
    }

    /// Mostly valid-looking nicks never panic validation, and the lookalike key is
    /// stable (keying a key changes nothing).
    #[test]
    fn nick_like_strings_never_panic(s in "[a-zA-Z0-9_\\-가-힣 #]{0,20}") {
        // Mostly valid-looking input reaches the deeper checks that random strings miss.
        let _ = validate_nick(&s);
        prop_assert_eq!(nick_key(&s), nick_key(&nick_key(&s)));
    }

    /// A normalized room name normalizes to itself (room-like input).
    #[test]
    fn normalized_rooms_are_fixed_points(s in "#?[a-zA-Z0-9_\\-가-힣 .]{0,30}") {
        if let Ok(room) = normalize_room(&s) {
            prop_assert_eq!(normalize_room(&room), Ok(room.clone()));
        }
    }

    /// The same for any string at all: no panic, and a fixed point when accepted.
    #[test]
    fn any_room_string_is_handled(s in any::<String>()) {
        if let Ok(room) = normalize_room(&s) {
            prop_assert_eq!(normalize_room(&room), Ok(room.clone()));
        }
    }
}

/// Whatever is relayed to others: message text, actions, whisper text, quit reasons,
/// ping tokens. Nicks and rooms are checked by validation instead (they are refused).
fn relayed_text(command: &underworld_line::Command) -> Vec<&str> {
    use underworld_line::Command::*;
    match command {
        Say(text) | Me(text) | Ping(text) => vec![text],
        Whisper { to, text } => vec![to, text],
        Quit(Some(reason)) => vec![reason],
        _ => vec![],
    }
}

proptest! {
    /// Command parsing never panics, and no text it hands on for relaying contains a
    /// control character (TAB aside) or any other forbidden character.
    #[test]
    fn parsed_text_never_carries_control_characters(
        line in prop_oneof![
            any::<String>(),
            "/(me|w|msg|quit|ping|nick|join) .{0,40}",
            "//?.{0,40}",
        ]
    ) {
        if let Ok(Some(command)) = underworld_line::command::parse_line(&line) {
            for text in relayed_text(&command) {
                prop_assert!(
                    !text.chars().any(|c| c != '\t' && (c.is_control() || is_forbidden_char(c))),
                    "{:?} from {:?}", text, line
                );
            }
        }
    }

    /// A nick that passes validation contains no forbidden character, so a nick taken
    /// as typed can never smuggle one to others.
    #[test]
    fn valid_nicks_are_clean(s in any::<String>()) {
        if validate_nick(&s).is_ok() {
            prop_assert!(!s.chars().any(|c| c.is_control() || is_forbidden_char(c)));
        }
    }
}
