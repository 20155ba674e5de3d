//! Line framing for the plain-text door, pure: bytes in, frames out.
//!
//! Newline-terminated clients (netcat, telnet, programs) get exact lines: CRLF and LF
//! both end a line, and a line is never split or merged. The seed clients send no
//! newline at all, one `sendall` per message; a connection that has never sent a
//! newline is treated as *unframed*, and whatever it sent is one message once the
//! connection goes quiet for a moment (the caller's burst timer calls
//! [`LineFramer::end_burst`]). A line longer than the cap is reported once and its
//! bytes are discarded up to the next newline, so memory stays bounded whatever the
//! peer sends.

use bytes::{Bytes, BytesMut};

/// One unit of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A line (or unframed burst) without its terminator.
    Line(Bytes),
    /// A line went over the cap; its bytes are being discarded.
    TooLong,
}

#[derive(Debug)]
pub struct LineFramer {
    /// The cap (a u32 keeps the framer, held by every connection, at 40 bytes).
    max_line_bytes: u32,
    /// The unfinished line so far.
    partial: BytesMut,
    /// Inside an over-long line: dropping bytes until its newline.
    discarding: bool,
    /// Once a newline has been seen the client is line-framed for good.
    seen_newline: bool,
}

fn strip_cr(mut line: Bytes) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line
}

impl LineFramer {
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            max_line_bytes: u32::try_from(max_line_bytes).unwrap_or(u32::MAX),
            partial: BytesMut::new(),
            discarding: false,
            seen_newline: false,
        }
    }

    /// Feed bytes; complete frames are appended to `out`. Lines that arrive whole in
    /// `chunk` are sliced from it without copying.
    pub fn push<T: From<Frame>>(&mut self, chunk: &Bytes, out: &mut Vec<T>) {
        let mut start = 0;
        while let Some(offset) = memchr::memchr(b'\n', &chunk[start..]) {
            let end = start + offset;
            self.seen_newline = true;
            if self.discarding {
                self.discarding = false;
            } else {
                let line = if self.partial.is_empty() {
                    chunk.slice(start..end)
                } else {
                    self.partial.extend_from_slice(&chunk[start..end]);
                    std::mem::take(&mut self.partial).freeze()
                };
                out.push(self.finish_line(line).into());
            }
            start = end + 1;
        }
        let rest = &chunk[start..];
        if rest.is_empty() || self.discarding {
            return;
        }
        // One extra byte of room: a line of exactly the cap may still have its CR.
        if self.partial.len() + rest.len() > self.max_line_bytes as usize + 1 {
            self.partial = BytesMut::new();
            self.discarding = true;
            out.push(Frame::TooLong.into());
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    fn finish_line(&self, line: Bytes) -> Frame {
        let line = strip_cr(line);
        if line.len() > self.max_line_bytes as usize {
            Frame::TooLong
        } else {
            Frame::Line(line)
        }
    }

    /// True when an unframed client has sent part of a message: the caller should arm
    /// the burst timer and call [`end_burst`](Self::end_burst) when it fires.
    pub fn awaiting_burst_end(&self) -> bool {
        !self.seen_newline && (!self.partial.is_empty() || self.discarding)
    }

    /// The connection went quiet: for an unframed client, what it sent is one message.
    pub fn end_burst<T: From<Frame>>(&mut self, out: &mut Vec<T>) {
        if self.seen_newline {
            return;
        }
        self.discarding = false;
        if !self.partial.is_empty() {
            let burst = std::mem::take(&mut self.partial).freeze();
            out.push(self.finish_line(burst).into());
        }
    }

    /// The peer closed: an unfinished last line still counts.
    pub fn finish<T: From<Frame>>(&mut self, out: &mut Vec<T>) {
        if !self.discarding && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial).freeze();
            out.push(self.finish_line(line).into());
        }
        self.discarding = false;
    }

    /// Bytes held for an unfinished line.
    pub fn buffered_bytes(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Feed `input` split at every possible point (two chunks), plus one byte at a time,
    /// and check each gives `expected`.
    fn check_every_split(max: usize, input: &[u8], expected: &[Frame]) {
        for split in 0..=input.len() {
            let mut framer = LineFramer::new(max);
            let mut out = Vec::<Frame>::new();
            framer.push(&Bytes::copy_from_slice(&input[..split]), &mut out);
            framer.push(&Bytes::copy_from_slice(&input[split..]), &mut out);
            framer.finish(&mut out);
            assert_eq!(out, expected, "split at {split}");
        }
        let mut framer = LineFramer::new(max);
        let mut out = Vec::<Frame>::new();
        for byte in input {
            framer.push(&Bytes::copy_from_slice(&[*byte]), &mut out);
        }
        framer.finish(&mut out);
        assert_eq!(out, expected, "one byte at a time");
    }

    #[test]
    fn lf_and_crlf_lines_are_exact() {
        check_every_split(
            100,
            b"alice\r\nhello world\nbye\n",
            &[line("alice"), line("hello world"), line("bye")],
        );
    }

    #[test]
    fn empty_lines_are_kept_for_the_caller_to_ignore() {
        check_every_split(100, b"\n\r\nx\n", &[line(""), line(""), line("x")]);
    }

    #[test]
    fn last_line_without_newline_counts_at_eof() {
        check_every_split(100, b"one\ntwo", &[line("one"), line("two")]);
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        check_every_split(
            4,
            b"ok\n0123456789\nnext\n",
            &[line("ok"), Frame::TooLong, line("next")],
        );
    }

    #[test]
    fn line_of_exactly_the_cap_passes_with_crlf() {
        check_every_split(4, b"abcd\r\nabcde\r\n", &[line("abcd"), Frame::TooLong]);
    }

    #[test]
    fn endless_line_keeps_memory_bounded() {
        let mut framer = LineFramer::new(1024);
        let mut out = Vec::<Frame>::new();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        for _ in 0..100 {
            framer.push(&chunk, &mut out);
            assert!(framer.buffered_bytes() <= 1025);
        }
        assert_eq!(out, [Frame::TooLong]);
        framer.push(&Bytes::from_static(b"tail\nhello\n"), &mut out);
        assert_eq!(out, [Frame::TooLong, line("hello")]);
    }

    #[test]
    fn unframed_bursts_become_messages() {
        let mut framer = LineFramer::new(100);
        let mut out = Vec::<Frame>::new();
        framer.push(&Bytes::from_static(b"bo"), &mut out);
        framer.push(&Bytes::from_static(b"b"), &mut out);
        assert!(out.is_empty());
        assert!(framer.awaiting_burst_end());
        framer.end_burst(&mut out);
        framer.push(&Bytes::from_static(b"hello there"), &mut out);
        framer.end_burst(&mut out);
        assert_eq!(out, [line("bob"), line("hello there")]);
        assert!(!framer.awaiting_burst_end());
    }

    #[test]
    fn framed_clients_are_never_split_by_quiet_time() {
        let mut framer = LineFramer::new(100);
        let mut out = Vec::<Frame>::new();
        framer.push(&Bytes::from_static(b"alice\nhal"), &mut out);
        assert!(!framer.awaiting_burst_end());
        framer.end_burst(&mut out);
        framer.push(&Bytes::from_static(b"f a line\n"), &mut out);
        assert_eq!(out, [line("alice"), line("half a line")]);
    }

    #[test]
    fn over_long_unframed_burst_is_refused() {
        let mut framer = LineFramer::new(4);
        let mut out = Vec::<Frame>::new();
        framer.push(&Bytes::from_static(b"0123456789"), &mut out);
        framer.end_burst(&mut out);
        framer.push(&Bytes::from_static(b"ok"), &mut out);
        framer.end_burst(&mut out);
        assert_eq!(out, [Frame::TooLong, line("ok")]);
    }
}
