//! Line framing: turns the byte stream of a TCP connection into complete lines.
//!
//! TCP delivers a stream of bytes, not messages: one `read` may return half a line,
//! three lines, or a line cut in the middle of a UTF-8 character. The predecessor of
//! this server treated one read as one message, which broke under load and with slow
//! links. [`LineFramer`] keeps the unfinished tail between reads and hands out whole
//! lines only. It also enforces the two size limits without ever buffering more than
//! one maximum-length line, so a client cannot make the server hold megabytes.

/// One result of framing: a complete line or a limit that was crossed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line: the bytes before the LF, with one CR right before the LF
    /// removed. Not yet checked for UTF-8.
    Line(Vec<u8>),
    /// A line longer than `max_line` bytes. Reported once, as soon as it is known;
    /// the rest of that line (up to and including its LF) is discarded as it arrives.
    TooLong,
    /// More than `max_unterminated` bytes arrived without an LF: the client must be
    /// disconnected. The framer is dead afterwards and yields nothing more.
    Unterminated,
}

/// Splits a byte stream into [`Frame`]s, keeping the unfinished line between pushes.
#[derive(Debug, Clone)]
pub struct LineFramer {
    /// Longest allowed line content (LF and one CR before it not counted).
    max_line: usize,
    /// Most bytes allowed since the last LF before the client is cut off.
    max_unterminated: usize,
    /// The current line's bytes; never more than `max_line + 1` (room for a final CR).
    buf: Vec<u8>,
    /// Bytes of the current line seen so far, discarded ones included.
    partial: usize,
    /// The current line was reported as [`Frame::TooLong`]; drop bytes until the LF.
    discarding: bool,
    /// [`Frame::Unterminated`] was reported; ignore everything from now on.
    dead: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes that gives up after
    /// `max_unterminated` bytes without an LF.
    ///
    /// `max_unterminated` is raised to at least `max_line + 1`: a line of exactly
    /// `max_line` bytes followed by CRLF has `max_line + 1` bytes before its LF, and
    /// such a valid line must never count as unterminated.
    pub fn new(max_line: usize, max_unterminated: usize) -> Self {
        LineFramer {
            max_line,
            max_unterminated: max_unterminated.max(max_line.saturating_add(1)),
            buf: Vec::new(),
            partial: 0,
            discarding: false,
            dead: false,
        }
    }

    /// Feeds the next chunk of the stream, of any size; appends every frame it
    /// completes to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        let mut rest = bytes;
        while !self.dead && !rest.is_empty() {
            // Scanning a slice with `position` compiles to a fast loop, far quicker
            // than handling the bytes one by one.
            match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    self.push_complete(&rest[..lf], out);
                    rest = &rest[lf + 1..];
                }
                None => {
                    self.absorb(rest, out);
                    rest = &[];
                }
            }
        }
    }

    /// Bytes of the unfinished current line seen so far, discarded ones included.
    pub fn partial_len(&self) -> usize {
        self.partial
    }

    /// True once [`Frame::Unterminated`] was reported: the framer ignores all input.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Handles `piece`, the last bytes of a line whose LF was just found.
    fn push_complete(&mut self, piece: &[u8], out: &mut Vec<Frame>) {
        // Fast path: the whole line is inside this chunk, so it can be judged
        // directly, without copying it through the buffer first.
        if self.partial == 0 && piece.len() <= self.max_unterminated {
            let content = strip_one_cr(piece);
            if content.len() <= self.max_line {
                out.push(Frame::Line(content.to_vec()));
            } else {
                out.push(Frame::TooLong);
            }
            return;
        }
        self.absorb(piece, out);
        if self.dead {
            return;
        }
        if !self.discarding {
            // absorb() guarantees the buffer is at most max_line bytes plus a final CR.
            let content = strip_one_cr(&self.buf);
            out.push(Frame::Line(content.to_vec()));
        }
        // Clear but keep the allocation: the next line will likely need it too.
        self.buf.clear();
        self.partial = 0;
        self.discarding = false;
    }

    /// Adds `piece` (which contains no LF) to the current line, reporting
    /// [`Frame::TooLong`] and [`Frame::Unterminated`] when they become known.
    fn absorb(&mut self, piece: &[u8], out: &mut Vec<Frame>) {
        let room = self.max_unterminated - self.partial;
        if piece.len() > room {
            // The byte right after `room` crosses the limit. Handle the bytes before
            // it first, so a TooLong known earlier is still reported in order.
            self.absorb(&piece[..room], out);
            out.push(Frame::Unterminated);
            self.dead = true;
            self.buf = Vec::new(); // free the memory: this connection is done
            return;
        }
        self.partial += piece.len();
        if self.discarding {
            return;
        }
        let capacity = self.max_line.saturating_add(1);
        let take = piece.len().min(capacity - self.buf.len());
        self.buf.extend_from_slice(&piece[..take]);
        // With max_line + 1 bytes, the line is too long unless the last one is a CR
        // that the coming LF would strip; one more byte and it is too long for sure.
        let full_without_cr = self.buf.len() == capacity && self.buf.last() != Some(&b'\r');
        if take < piece.len() || full_without_cr {
            out.push(Frame::TooLong);
            self.discarding = true;
            self.buf.clear();
        }
    }
}

/// `line` without one trailing CR, if it has one.
fn strip_one_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut LineFramer, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
            assert!(
                framer.buf.len() <= framer.max_line.saturating_add(1),
                "buffer grew too big"
            );
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_several_lines_in_one_chunk() {
        let mut f = LineFramer::new(100, 1000);
        let out = frames(&mut f, &[b"one\ntwo\r\nthree\n"]);
        assert_eq!(out, vec![line("one"), line("two"), line("three")]);
        assert_eq!(f.partial_len(), 0);
    }

    #[test]
    fn joins_a_line_cut_across_chunks() {
        let mut f = LineFramer::new(100, 1000);
        let out = frames(&mut f, &[b"hel", b"lo wor", b"ld\r", b"\nnext"]);
        assert_eq!(out, vec![line("hello world")]);
        assert_eq!(f.partial_len(), 4);
    }

    #[test]
    fn keeps_a_utf8_char_split_across_chunks_whole() {
        let bytes = "밤손님\n".as_bytes();
        let mut f = LineFramer::new(100, 1000);
        let out = frames(&mut f, &[&bytes[..1], &bytes[1..4], &bytes[4..]]);
        assert_eq!(out, vec![line("밤손님")]);
    }

    #[test]
    fn removes_only_one_cr_and_keeps_inner_crs() {
        let mut f = LineFramer::new(100, 1000);
        let out = frames(&mut f, &[b"a\rb\r\r\n\n"]);
        assert_eq!(out, vec![line("a\rb\r"), line("")]);
    }

    #[test]
    fn a_line_of_exactly_max_line_is_fine_with_lf_or_crlf() {
        let mut f = LineFramer::new(5, 5);
        let out = frames(&mut f, &[b"abcde\n", b"abcde\r", b"\n"]);
        assert_eq!(out, vec![line("abcde"), line("abcde")]);
        assert!(!f.is_dead());
    }

    #[test]
    fn too_long_is_reported_once_as_soon_as_known() {
        let mut f = LineFramer::new(5, 1000);
        let mut out = Vec::new();
        f.push(b"abcdef", &mut out);
        assert_eq!(
            out,
            vec![Frame::TooLong],
            "known at the 6th byte, before any LF"
        );
        f.push(b"more and more", &mut out);
        f.push(b"\nok\n", &mut out);
        assert_eq!(out, vec![Frame::TooLong, line("ok")]);
        assert!(f.buf.is_empty(), "discarded bytes are not kept");
    }

    #[test]
    fn a_cr_at_the_limit_waits_for_the_next_byte() {
        let mut f = LineFramer::new(5, 1000);
        let mut out = Vec::new();
        f.push(b"abcde\r", &mut out);
        assert!(out.is_empty(), "the CR may be part of a CRLF");
        f.push(b"x", &mut out);
        assert_eq!(out, vec![Frame::TooLong]);
    }

    #[test]
    fn too_long_in_one_chunk_uses_the_fast_path() {
        let mut f = LineFramer::new(3, 1000);
        let out = frames(&mut f, &[b"abcd\nabc\r\nab\n"]);
        assert_eq!(out, vec![Frame::TooLong, line("abc"), line("ab")]);
    }

    #[test]
    fn partial_len_counts_discarded_bytes() {
        let mut f = LineFramer::new(4, 1000);
        frames(&mut f, &[b"0123456789", b"abc"]);
        assert_eq!(f.partial_len(), 13);
        assert!(f.buf.is_empty());
    }

    #[test]
    fn unterminated_kills_the_framer() {
        let mut f = LineFramer::new(4, 10);
        let out = frames(&mut f, &[b"ok\n0123456", b"789", b"X", b"\nhello\n"]);
        assert_eq!(out, vec![line("ok"), Frame::TooLong, Frame::Unterminated]);
        assert!(f.is_dead());
        let out = frames(&mut f, &[b"still\nthere\n"]);
        assert!(out.is_empty());
    }

    #[test]
    fn unterminated_even_when_the_lf_is_in_the_same_chunk() {
        // The limit is about the byte stream, not about how it was chunked.
        let mut f = LineFramer::new(4, 10);
        let out = frames(&mut f, &[b"0123456789X\n"]);
        assert_eq!(out, vec![Frame::TooLong, Frame::Unterminated]);
    }

    #[test]
    fn exactly_max_unterminated_bytes_is_not_yet_unterminated() {
        let mut f = LineFramer::new(4, 10);
        let out = frames(&mut f, &[b"0123456789", b"\nab\n"]);
        assert_eq!(out, vec![Frame::TooLong, line("ab")]);
    }

    #[test]
    fn max_unterminated_is_clamped_above_max_line() {
        let mut f = LineFramer::new(5, 0);
        let out = frames(&mut f, &[b"abcde\r", b"\n"]);
        assert_eq!(out, vec![line("abcde")]);
    }

    #[test]
    fn zero_max_line_allows_only_empty_lines() {
        let mut f = LineFramer::new(0, 0);
        let out = frames(&mut f, &[b"\n\r\n"]);
        assert_eq!(out, vec![line(""), line("")]);
        let out = frames(&mut f, &[b"a"]);
        assert_eq!(out, vec![Frame::TooLong]);
        let out = frames(&mut f, &[b"b"]);
        assert_eq!(out, vec![Frame::Unterminated]);
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let mut f = LineFramer::new(usize::MAX, usize::MAX);
        let out = frames(&mut f, &[b"abc", b"\n"]);
        assert_eq!(out, vec![line("abc")]);
    }
}
