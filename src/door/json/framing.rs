//! JSON-lines framing, pure: bytes in, one frame per newline-terminated message out.
//! A message over the cap is reported once, with its first bytes kept so its `id` can
//! still be found, and the rest is discarded up to the next newline: memory stays
//! bounded whatever the peer sends. Blank lines are skipped.

use bytes::{Bytes, BytesMut};

use super::codec::OVERSIZE_HEAD_BYTES;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonFrame {
    /// One message, without its line terminator.
    Message(Bytes),
    /// A message went over the cap; `head` is its start.
    TooLong { head: Bytes },
}

#[derive(Debug)]
pub struct JsonLineFramer {
    max_bytes: usize,
    /// The unfinished message; while discarding, the head of the over-long one.
    partial: BytesMut,
    /// Inside an over-long message: dropping bytes until its newline.
    discarding: bool,
    /// The over-long message is not reported yet: its head is still being collected,
    /// so the head is always the message's first bytes, however reads split it.
    head_pending: bool,
}

fn trim(line: Bytes) -> Option<Bytes> {
    let mut line = line;
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

impl JsonLineFramer {
    pub fn new(max_bytes: usize) -> Self {
        JsonLineFramer {
            max_bytes,
            partial: BytesMut::new(),
            discarding: false,
            head_pending: false,
        }
    }

    /// Feed bytes; complete frames are appended to `out`.
    pub fn push<T: From<JsonFrame>>(&mut self, chunk: &Bytes, out: &mut Vec<T>) {
        let mut start = 0;
        while start < chunk.len() {
            let newline = memchr::memchr(b'\n', &chunk[start..]).map(|offset| start + offset);
            let end = newline.unwrap_or(chunk.len());
            let ended = newline.is_some();
            if !self.discarding {
                // One byte of slack: a message of exactly the cap may still carry its CR.
                if self.partial.len() + (end - start) > self.max_bytes + 1 {
                    self.discarding = true;
                    self.head_pending = true;
                } else if ended {
                    let line = if self.partial.is_empty() {
                        chunk.slice(start..end)
                    } else {
                        self.partial.extend_from_slice(&chunk[start..end]);
                        std::mem::take(&mut self.partial).freeze()
                    };
                    self.emit(line, out);
                } else {
                    self.partial.extend_from_slice(&chunk[start..end]);
                }
            }
            if self.discarding {
                if self.head_pending {
                    let room = OVERSIZE_HEAD_BYTES.saturating_sub(self.partial.len());
                    let take = (end - start).min(room);
                    self.partial.extend_from_slice(&chunk[start..start + take]);
                    if ended || self.partial.len() >= OVERSIZE_HEAD_BYTES {
                        out.push(self.too_long().into());
                    }
                }
                if ended {
                    self.discarding = false;
                }
            }
            start = end + usize::from(ended);
        }
    }

    /// A complete message: its CR trimmed, blank ones skipped, and the cap checked
    /// again (the one byte of slack is only for a CR).
    fn emit<T: From<JsonFrame>>(&self, line: Bytes, out: &mut Vec<T>) {
        let Some(line) = trim(line) else { return };
        if line.len() > self.max_bytes {
            let head = line.slice(..line.len().min(OVERSIZE_HEAD_BYTES));
            out.push(JsonFrame::TooLong { head }.into());
        } else {
            out.push(JsonFrame::Message(line).into());
        }
    }

    /// Report the over-long message whose head is in `partial`.
    fn too_long(&mut self) -> JsonFrame {
        let mut head = std::mem::take(&mut self.partial);
        head.truncate(OVERSIZE_HEAD_BYTES);
        self.head_pending = false;
        JsonFrame::TooLong {
            head: head.freeze(),
        }
    }

    /// The peer closed: a last message without a newline still counts.
    pub fn finish<T: From<JsonFrame>>(&mut self, out: &mut Vec<T>) {
        if self.discarding {
            if self.head_pending {
                out.push(self.too_long().into());
            }
        } else {
            let partial = std::mem::take(&mut self.partial).freeze();
            self.emit(partial, out);
        }
        self.partial = BytesMut::new();
        self.discarding = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the json_protocol fuzz target: one byte over the cap slipped through
    /// when that byte was not a CR.
    #[test]
    fn the_cr_slack_admits_only_a_cr() {
        let mut framer = JsonLineFramer::new(4);
        let mut out = Vec::new();
        framer.push(&Bytes::from_static(b"abcd\r\nabcde\nabcde"), &mut out);
        framer.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], JsonFrame::Message(Bytes::from_static(b"abcd")));
        assert!(matches!(out[1], JsonFrame::TooLong { .. }));
        assert!(matches!(out[2], JsonFrame::TooLong { .. }));
    }

    /// Found by the json_protocol fuzz target: the head of an over-long message
    /// depended on where reads split it.
    #[test]
    fn over_long_head_does_not_depend_on_chunking() {
        let mut input = vec![b'x'; 300];
        input.extend_from_slice(b"\"id\":7 and more");
        input.extend(vec![b'y'; 400]);
        input.push(b'\n');
        let whole = {
            let mut framer = JsonLineFramer::new(256);
            let mut out = Vec::new();
            framer.push(&Bytes::copy_from_slice(&input), &mut out);
            out
        };
        for step in [1, 7, 256, 257, 300] {
            let mut framer = JsonLineFramer::new(256);
            let mut out = Vec::<JsonFrame>::new();
            for piece in input.chunks(step) {
                framer.push(&Bytes::copy_from_slice(piece), &mut out);
            }
            framer.finish(&mut out);
            assert_eq!(out, whole, "chunks of {step}");
        }
        let JsonFrame::TooLong { head } = &whole[0] else {
            panic!("{whole:?}")
        };
        assert_eq!(head.len(), OVERSIZE_HEAD_BYTES);
        assert!(head.starts_with(&input[..OVERSIZE_HEAD_BYTES]));
    }

    fn frames_split_at(input: &[u8], split: usize, max: usize) -> Vec<JsonFrame> {
        let mut framer = JsonLineFramer::new(max);
        let mut out = Vec::new();
        framer.push(&Bytes::copy_from_slice(&input[..split]), &mut out);
        framer.push(&Bytes::copy_from_slice(&input[split..]), &mut out);
        framer.finish(&mut out);
        out
    }

    #[test]
    fn same_frames_wherever_the_input_is_split() {
        let long = format!("{{\"id\":1,\"text\":\"{}\"}}", "x".repeat(40));
        let input = format!("{{\"a\":1}}\r\n\n  \n{long}\n{{\"b\":2}}\n{{\"c\":3}}");
        let expected = [
            JsonFrame::Message(Bytes::from_static(b"{\"a\":1}")),
            JsonFrame::TooLong {
                head: Bytes::copy_from_slice(&long.as_bytes()[..long.len().min(512)]),
            },
            JsonFrame::Message(Bytes::from_static(b"{\"b\":2}")),
            JsonFrame::Message(Bytes::from_static(b"{\"c\":3}")),
        ];
        for split in 0..=input.len() {
            let got = frames_split_at(input.as_bytes(), split, 20);
            assert_eq!(got.len(), expected.len(), "split at {split}: {got:?}");
            assert_eq!(got[0], expected[0], "split at {split}");
            assert_eq!(&got[2..], &expected[2..], "split at {split}");
            let JsonFrame::TooLong { head } = &got[1] else {
                panic!("split at {split}: {got:?}");
            };
            // The head is a prefix of the long message, long enough to hold its id.
            assert!(long.as_bytes().starts_with(head), "split at {split}");
            assert!(head.len() >= 8, "split at {split}: {head:?}");
        }
    }

    #[test]
    fn memory_stays_bounded_while_discarding() {
        let mut framer = JsonLineFramer::new(16);
        let mut out = Vec::new();
        for _ in 0..1000 {
            framer.push(&Bytes::from(vec![b'x'; 1000]), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert!(framer.partial.capacity() <= OVERSIZE_HEAD_BYTES * 2);
        framer.push(&Bytes::from_static(b"\n{}\n"), &mut out);
        assert_eq!(
            out.last(),
            Some(&JsonFrame::Message(Bytes::from_static(b"{}")))
        );
    }
}
