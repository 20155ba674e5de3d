//! The bench payload, pure: `~b<sender>:<seq>:<nanos>~` padded to a chosen size, and a
//! scanner that finds every payload anywhere in received text, whatever prefix the
//! server put in front of it (`[nick] `, `<user5> `, a JSON string...).

use memchr::memmem;

/// Starts every payload; chosen so it cannot occur in nicknames or server notices.
pub const MARKER: &[u8] = b"~b";
/// Ends the numeric part of a payload; padding follows it.
const END: u8 = b'~';
/// The padding byte: plain, printable, never part of a number or the marker.
const PAD: u8 = b'.';
/// The longest encoded header: marker, three u64s, two separators, the end byte.
pub const MAX_HEADER_BYTES: usize = 2 + 20 * 3 + 2 + 1;

/// What a payload carries: who sent it, its number in that sender's stream, and when
/// it was sent (nanoseconds since the bench's clock started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Append `payload` to `out`, padded with `.` to at least `size` bytes. No newline.
pub fn encode(payload: &Payload, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(MARKER);
    push_decimal(out, u64::from(payload.sender));
    out.push(b':');
    push_decimal(out, payload.seq);
    out.push(b':');
    push_decimal(out, payload.sent_ns);
    out.push(END);
    let written = out.len() - start;
    if written < size {
        out.resize(start + size, PAD);
    }
}

/// Parse a decimal number at the start of `bytes` ending at `stop`; returns it and the
/// bytes after `stop`.
fn take_number(bytes: &[u8], stop: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == stop {
            return (index > 0).then(|| (value, &bytes[index + 1..]));
        }
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 || index >= 20 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    None
}

/// Parse a payload from the bytes right after a [`MARKER`].
fn parse_after_marker(bytes: &[u8]) -> Option<Payload> {
    let (sender, rest) = take_number(bytes, b':')?;
    let (seq, rest) = take_number(rest, b':')?;
    let (sent_ns, _) = take_number(rest, END)?;
    Some(Payload {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_ns,
    })
}

/// Finds payloads in text. Holds a prebuilt substring searcher, so make one per reader.
pub struct Scanner {
    finder: memmem::Finder<'static>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            finder: memmem::Finder::new(MARKER),
        }
    }
}

impl Scanner {
    /// Append every well-formed payload in `text` to `out`, in order. Malformed or cut
    /// payloads (a peer that split a message) are skipped; they count as lost.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Payload>) {
        for at in self.finder.find_iter(text) {
            if let Some(payload) = parse_after_marker(&text[at + MARKER.len()..]) {
                out.push(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(payload: Payload, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&payload, size, &mut out);
        out
    }

    #[test]
    fn round_trips_and_pads() {
        let payload = Payload {
            sender: 7,
            seq: 12345,
            sent_ns: 987654321,
        };
        let bytes = encoded(payload, 64);
        assert_eq!(bytes.len(), 64);
        assert!(bytes.starts_with(b"~b7:12345:987654321~...."));
        let mut found = Vec::new();
        Scanner::default().scan(&bytes, &mut found);
        assert_eq!(found, [payload]);
        // Shorter than the header: no padding, nothing cut.
        assert_eq!(encoded(payload, 0), b"~b7:12345:987654321~");
    }

    #[test]
    fn extremes_round_trip() {
        for payload in [
            Payload {
                sender: 0,
                seq: 0,
                sent_ns: 0,
            },
            Payload {
                sender: u32::MAX,
                seq: u64::MAX,
                sent_ns: u64::MAX,
            },
        ] {
            let bytes = encoded(payload, 0);
            assert!(bytes.len() <= MAX_HEADER_BYTES);
            let mut found = Vec::new();
            Scanner::default().scan(&bytes, &mut found);
            assert_eq!(found, [payload]);
        }
    }

    #[test]
    fn finds_payloads_behind_any_prefix_and_several_per_line() {
        let text = b"*** b3 joined #general\n[b1] ~b1:2:3~..\n<user5> ~b4:5:6~\
                     {\"text\":\"~b7:8:9~...\"}\n[x] ~b1:2:3~\n~b9:9:9~";
        let mut found = Vec::new();
        Scanner::default().scan(text, &mut found);
        let seqs: Vec<(u32, u64)> = found.iter().map(|p| (p.sender, p.seq)).collect();
        assert_eq!(seqs, [(1, 2), (4, 5), (7, 8), (1, 2), (9, 9)]);
    }

    #[test]
    fn malformed_or_cut_payloads_are_skipped() {
        for bad in [
            &b"~b"[..],
            b"~b1",
            b"~b1:2",
            b"~b1:2:3",
            b"~b:2:3~",
            b"~b1::3~",
            b"~bx:2:3~",
            b"~b1:2:3x~",
            b"~b99999999999:1:1~",
            b"~b1:99999999999999999999999:1~",
        ] {
            let mut found = Vec::new();
            Scanner::default().scan(bad, &mut found);
            assert!(found.is_empty(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_payload_split_anywhere_is_found_only_when_whole() {
        let payload = Payload {
            sender: 3,
            seq: 41,
            sent_ns: 5_000_000,
        };
        let line = {
            let mut line = b"[b3] ".to_vec();
            encode(&payload, 40, &mut line);
            line
        };
        for cut in 0..line.len() {
            let (head, tail) = line.split_at(cut);
            let mut found = Vec::new();
            let scanner = Scanner::default();
            scanner.scan(head, &mut found);
            scanner.scan(tail, &mut found);
            // A cut before the end byte loses the payload; never a wrong one.
            assert!(found.is_empty() || found == [payload], "cut at {cut}");
        }
    }
}
