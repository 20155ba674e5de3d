//! The bench payload, pure: `~b<run>:<sender>:<seq>:<nanos>~` padded to a chosen size,
//! and a scanner that finds every payload of one run anywhere in received text, whatever
//! prefix the server put in front of it (`[nick] `, `<user5> `, a JSON string...).
//!
//! The run number keeps runs apart: a server that replays room history on join hands a
//! new run the payloads of the last one, which would otherwise count as reordered.

use memchr::memmem;

/// Starts every payload; chosen so it cannot occur in nicknames or server notices.
pub const MARKER: &[u8] = b"~b";
/// Ends the numeric part of a payload; padding follows it.
const END: u8 = b'~';
/// The padding byte: plain, printable, never part of a number or the marker.
const PAD: u8 = b'.';
/// The longest encoded header: marker, a u32, three u64s, three separators, the end byte.
pub const MAX_HEADER_BYTES: usize = 2 + 10 + 20 * 3 + 3 + 1;

/// What a payload carries: which run sent it, who sent it, its number in that sender's
/// stream, and when it was sent (nanoseconds since the bench's clock started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub run: u32,
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
    push_decimal(out, u64::from(payload.run));
    out.push(b':');
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
/// bytes after `stop`. At most 20 digits; the first 19 cannot overflow a `u64`, so only
/// the 20th is checked (this runs for every delivery the bench counts). Eight digits at
/// a time (SWAR) measured no faster: the numbers here are short.
#[inline]
fn take_number(bytes: &[u8], stop: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == stop {
            return (index > 0).then(|| (value, &bytes[index + 1..]));
        }
        let digit = u64::from(byte.wrapping_sub(b'0'));
        if digit > 9 || index >= 20 {
            return None;
        }
        value = if index < 19 {
            value * 10 + digit
        } else {
            value.checked_mul(10)?.checked_add(digit)?
        };
    }
    None
}

/// Parse the rest of a payload from the bytes right after its run's prefix
/// (`~b<run>:`).
fn parse_after_prefix(run: u32, bytes: &[u8]) -> Option<Payload> {
    let (sender, rest) = take_number(bytes, b':')?;
    let (seq, rest) = take_number(rest, b':')?;
    let (sent_ns, _) = take_number(rest, END)?;
    Some(Payload {
        run,
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_ns,
    })
}

/// This process's run number: different for every bench run (time and process id), the
/// same for all of one run's senders and receivers.
pub fn this_run() -> u32 {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos() ^ since.as_secs() as u32);
        nanos ^ std::process::id().rotate_left(16)
    })
}

/// Finds one run's payloads in text. Holds a prebuilt substring searcher for the run's
/// prefix: build one per run and share it ([`Scanner::this_run`] for this process's).
pub struct Scanner {
    /// Searches for `~b<run>:`: other runs' payloads are skipped by the search itself,
    /// and the run number is never parsed.
    prefix: memmem::Finder<'static>,
    run: u32,
}

impl Scanner {
    /// The scanner for [`this_run`], built once: every reader shares it, so a
    /// connection that never reads (the connect scenario) costs no searcher.
    pub fn this_run() -> &'static Scanner {
        static SCANNER: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
        SCANNER.get_or_init(|| Scanner::for_run(this_run()))
    }

    pub fn for_run(run: u32) -> Self {
        let mut prefix = MARKER.to_vec();
        push_decimal(&mut prefix, u64::from(run));
        prefix.push(b':');
        Scanner {
            prefix: memmem::Finder::new(&prefix).into_owned(),
            run,
        }
    }

    /// Append every well-formed payload of this scanner's run in `text` to `out`, in
    /// order. Malformed or cut payloads (a peer that split a message) are skipped; they
    /// count as lost. Other runs' payloads (history replayed on join) are ignored.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Payload>) {
        let prefix_len = self.prefix.needle().len();
        for at in self.prefix.find_iter(text) {
            if let Some(payload) = parse_after_prefix(self.run, &text[at + prefix_len..]) {
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

    /// What `take_number` must agree with: the standard library's parse.
    fn reference_number(bytes: &[u8], stop: u8) -> Option<(u64, &[u8])> {
        let end = bytes.iter().position(|&byte| byte == stop)?;
        let digits = &bytes[..end];
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
        Some((value, &bytes[end + 1..]))
    }

    #[test]
    fn numbers_parse_as_str_parse_does() {
        let numbers = [
            "",
            "0",
            "7",
            "42",
            "00000000",
            "12345678",
            "123456789",
            "0000000000000000001",
            "9999999999999999999",
            "10000000000000000000",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "000000000000000000001",
            "123456789012345678901",
        ];
        // Every byte after the number, including the ones beside the digits in ASCII,
        // and input that ends at every point.
        let followers: Vec<u8> = (0..=255u8).collect();
        let mut checked = 0;
        for number in numbers {
            for &follower in &followers {
                for padding in [0, 9] {
                    let mut input = number.as_bytes().to_vec();
                    input.push(follower);
                    input.extend(std::iter::repeat_n(b'.', padding));
                    for end in 0..=input.len() {
                        let cut = &input[..end];
                        assert_eq!(
                            take_number(cut, b':'),
                            reference_number(cut, b':'),
                            "{:?}",
                            String::from_utf8_lossy(cut)
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
        assert_eq!(
            take_number(b"18446744073709551615:", b':'),
            Some((u64::MAX, &b""[..]))
        );
        assert_eq!(
            take_number(b"12345678901:rest", b':'),
            Some((12_345_678_901, &b"rest"[..]))
        );
    }

    #[test]
    fn round_trips_and_pads() {
        let payload = Payload {
            run: 5,
            sender: 7,
            seq: 12345,
            sent_ns: 987654321,
        };
        let bytes = encoded(payload, 64);
        assert_eq!(bytes.len(), 64);
        assert!(bytes.starts_with(b"~b5:7:12345:987654321~...."));
        let mut found = Vec::new();
        Scanner::for_run(5).scan(&bytes, &mut found);
        assert_eq!(found, [payload]);
        // Shorter than the header: no padding, nothing cut.
        assert_eq!(encoded(payload, 0), b"~b5:7:12345:987654321~");
    }

    #[test]
    fn extremes_round_trip() {
        for payload in [
            Payload {
                run: 0,
                sender: 0,
                seq: 0,
                sent_ns: 0,
            },
            Payload {
                run: u32::MAX,
                sender: u32::MAX,
                seq: u64::MAX,
                sent_ns: u64::MAX,
            },
        ] {
            let bytes = encoded(payload, 0);
            assert!(bytes.len() <= MAX_HEADER_BYTES);
            let mut found = Vec::new();
            Scanner::for_run(payload.run).scan(&bytes, &mut found);
            assert_eq!(found, [payload]);
        }
    }

    #[test]
    fn finds_payloads_behind_any_prefix_and_several_per_line() {
        let text = b"*** b3 joined #general\n[b1] ~b0:1:2:3~..\n<user5> ~b0:4:5:6~\
                     {\"text\":\"~b0:7:8:9~...\"}\n[x] ~b0:1:2:3~\n~b0:9:9:9~";
        let mut found = Vec::new();
        Scanner::for_run(0).scan(text, &mut found);
        let seqs: Vec<(u32, u64)> = found.iter().map(|p| (p.sender, p.seq)).collect();
        assert_eq!(seqs, [(1, 2), (4, 5), (7, 8), (1, 2), (9, 9)]);
    }

    #[test]
    fn malformed_or_cut_payloads_are_skipped() {
        for bad in [
            &b"~b"[..],
            b"~b0:1",
            b"~b0:1:2",
            b"~b0:1:2:3",
            b"~b0::2:3~",
            b"~b0:1::3~",
            b"~b0:x:2:3~",
            b"~b0:1:2:3x~",
            b"~b0:99999999999:1:1~",
            b"~b0:1:99999999999999999999999:1~",
            b"~b99999999999:1:1:1~",
        ] {
            let mut found = Vec::new();
            Scanner::for_run(0).scan(bad, &mut found);
            assert!(found.is_empty(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_payload_split_anywhere_is_found_only_when_whole() {
        let payload = Payload {
            run: 9,
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
            let scanner = Scanner::for_run(9);
            scanner.scan(head, &mut found);
            scanner.scan(tail, &mut found);
            // A cut before the end byte loses the payload; never a wrong one.
            assert!(found.is_empty() || found == [payload], "cut at {cut}");
        }
    }

    #[test]
    fn other_runs_are_ignored() {
        // History replayed on join carries the previous run's payloads.
        // Runs whose numbers start or end alike are told apart too.
        let text = b"[b1] ~b1:1:2:3~\n[b1] ~b2:1:0:3~\n[b1] ~b12:1:7:3~\n[b1] ~b21:1:8:3~\n\
                     [b1] ~b1:1:3:4~\n";
        for (run, expected) in [
            (1, &[2, 3][..]),
            (12, &[7]),
            (21, &[8]),
            (2, &[0]),
            (3, &[]),
        ] {
            let mut found = Vec::new();
            Scanner::for_run(run).scan(text, &mut found);
            let seqs: Vec<u64> = found.iter().map(|p| p.seq).collect();
            assert_eq!(seqs, expected, "run {run}");
            assert!(found.iter().all(|payload| payload.run == run));
        }
    }
}
