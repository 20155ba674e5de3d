//! Server-side WebSocket (RFC 6455) framing without I/O: turns a client's bytes, in whatever
//! chunks the socket delivers them, into whole messages and control frames, and encodes the
//! server's own frames.
//!
//! The reader lives as long as its connection, and most connections sit idle, so between
//! messages it holds no heap buffer: the message buffer exists only while a message is being
//! assembled and is handed out (not copied) when it completes.

use std::mem;

use bytes::Bytes;

/// Opcodes a server sends.
pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_MASK: u8 = 0x0F;
const FIN_BIT: u8 = 0x80;
/// No extension is ever negotiated, so these must be clear.
const RSV_BITS: u8 = 0x70;
const MASK_BIT: u8 = 0x80;
const SHORT_LENGTH_MASK: u8 = 0x7F;
const LENGTH_16_BIT: u8 = 126;
const LENGTH_64_BIT: u8 = 127;
const MASK_KEY_BYTES: u8 = 4;
const MAX_CONTROL_PAYLOAD: usize = 125;
/// A close payload starts with a 2-byte code, which leaves this much for the reason.
const MAX_CLOSE_REASON_BYTES: usize = MAX_CONTROL_PAYLOAD - 2;

/// The most frames one data message may come in. Browsers send a message as one frame;
/// without a cap, a client could keep a message open forever with empty fragments,
/// which carry no payload and so cost no flood-control token.
const MAX_FRAGMENTS: u16 = 1024;

/// The most a frame's declared length reserves before its payload arrives: one socket
/// read's worth; longer payloads grow the buffer as they come.
const RESERVE_AHEAD_BYTES: usize = 16 * 1024;

/// The longest header a server frame needs: 2 bytes plus a 64-bit length (never a mask key).
pub const MAX_HEADER_BYTES: usize = 10;

/// One thing read from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A complete text message (all fragments joined, unmasked, valid UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A data message over `max_message_bytes`: its first `head_bytes` bytes (fewer if the
    /// message is shorter); the rest was read and discarded, never buffered.
    TooLong {
        head: Bytes,
    },
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame: the code if it carried one, and its reason text.
    Close {
        code: Option<u16>,
        reason: Bytes,
    },
}

/// Why the connection must be closed (the caller sends the matching close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A protocol violation (close code 1002); the text says which, for the log.
    Protocol(&'static str),
    /// A text message (or close reason) that is not UTF-8 (close code 1007).
    BadUtf8,
    /// A frame or message over the hard limit (close code 1009).
    TooBig,
}

/// Reads client frames from bytes pushed in any split.
pub struct FrameReader {
    max_message_bytes: usize,
    hard_max_bytes: usize,
    head_bytes: usize,
    /// The data message being assembled (only its head once it is too long), followed by
    /// the payload of a control frame that arrived between its fragments. Unallocated
    /// between messages.
    buffer: Vec<u8>,
    /// Declared payload length of the data message so far, including the frame being read.
    message_len: usize,
    /// While the header is read, the extended length accumulates here; then it counts the
    /// payload bytes still to come.
    remaining: u64,
    /// Rotated as payload goes by, so `mask_key[0]` always applies to the next byte and a
    /// push may end anywhere.
    mask_key: [u8; 4],
    first_byte: u8,
    second_byte: u8,
    /// Header bytes of the current frame read so far.
    header_pos: u8,
    in_payload: bool,
    /// Opcode of the data message being assembled, `None` between messages.
    message_opcode: Option<u8>,
    message_too_long: bool,
    /// Frames of the data message being assembled so far.
    fragments: u16,
    /// Set after an error or a close frame: the connection is over, input is ignored.
    stopped: bool,
}

impl FrameReader {
    /// `max_message_bytes`: data messages (all fragments together) longer than this come out
    ///   as `TooLong { head }` with the first `head_bytes` bytes.
    /// `hard_max_bytes` (>= max_message_bytes): a single frame whose header declares a longer
    ///   payload, or a message whose fragments add up to more, is `FrameError::TooBig` at once
    ///   (as soon as the header or the fragment that crosses it is seen, before its payload
    ///   arrives).
    pub fn new(max_message_bytes: usize, hard_max_bytes: usize, head_bytes: usize) -> Self {
        debug_assert!(hard_max_bytes >= max_message_bytes);
        FrameReader {
            max_message_bytes,
            hard_max_bytes,
            head_bytes,
            buffer: Vec::new(),
            message_len: 0,
            remaining: 0,
            mask_key: [0; 4],
            first_byte: 0,
            second_byte: 0,
            header_pos: 0,
            in_payload: false,
            message_opcode: None,
            message_too_long: false,
            fragments: 0,
            stopped: false,
        }
    }

    /// Parse `bytes` (any split: one byte at a time or many frames at once), appending what
    /// completes to `frames`. On a violation, returns the error; frames completed earlier in
    /// the same call are still in `frames`. After an error, or after a Close frame was read,
    /// the reader ignores all further input (returns Ok and adds nothing).
    pub fn push<T: From<WsFrame>>(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<T>,
    ) -> Result<(), FrameError> {
        let result = self.read(bytes, frames);
        if result.is_err() {
            self.stop();
        }
        result
    }

    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.buffer.capacity()
    }

    fn read<T: From<WsFrame>>(
        &mut self,
        mut input: &[u8],
        frames: &mut Vec<T>,
    ) -> Result<(), FrameError> {
        while !self.stopped {
            if self.in_payload {
                // Checked before looking at the input so an empty payload completes even
                // when its header was the last thing pushed.
                if self.remaining == 0 {
                    self.finish_frame(frames)?;
                    continue;
                }
                if input.is_empty() {
                    break;
                }
                let available = usize::try_from(self.remaining)
                    .map_or(input.len(), |remaining| remaining.min(input.len()));
                let (chunk, rest) = input.split_at(available);
                self.read_payload(chunk);
                input = rest;
            } else {
                let Some((&byte, rest)) = input.split_first() else {
                    break;
                };
                input = rest;
                self.read_header_byte(byte)?;
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.buffer = Vec::new();
        self.message_opcode = None;
    }

    fn opcode(&self) -> u8 {
        self.first_byte & OPCODE_MASK
    }

    fn is_control(&self) -> bool {
        self.opcode() & 0x8 != 0
    }

    fn extended_length_bytes(&self) -> u8 {
        match self.second_byte & SHORT_LENGTH_MASK {
            LENGTH_16_BIT => 2,
            LENGTH_64_BIT => 8,
            _ => 0,
        }
    }

    /// Header bytes are checked one at a time so a violation is caught as early as the byte
    /// that shows it, and an oversized frame before any of its payload is accepted.
    fn read_header_byte(&mut self, byte: u8) -> Result<(), FrameError> {
        let pos = self.header_pos;
        self.header_pos += 1;
        match pos {
            0 => self.read_first_byte(byte),
            1 => self.read_second_byte(byte),
            _ => {
                let length_end = 2 + self.extended_length_bytes();
                if pos < length_end {
                    self.remaining = (self.remaining << 8) | u64::from(byte);
                    if pos + 1 == length_end {
                        self.length_known()?;
                    }
                } else {
                    let key_index = usize::from(pos - length_end);
                    self.mask_key[key_index] = byte;
                    if pos + 1 == length_end + MASK_KEY_BYTES {
                        self.in_payload = true;
                    }
                }
                Ok(())
            }
        }
    }

    fn read_first_byte(&mut self, byte: u8) -> Result<(), FrameError> {
        self.first_byte = byte;
        if byte & RSV_BITS != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let fin = byte & FIN_BIT != 0;
        match byte & OPCODE_MASK {
            OPCODE_CONTINUATION if self.message_opcode.is_none() => {
                Err(FrameError::Protocol("continuation frame without a message"))
            }
            OPCODE_TEXT | OPCODE_BINARY if self.message_opcode.is_some() => Err(
                FrameError::Protocol("new data frame inside a fragmented message"),
            ),
            OPCODE_CLOSE | OPCODE_PING | OPCODE_PONG if !fin => {
                Err(FrameError::Protocol("fragmented control frame"))
            }
            OPCODE_CONTINUATION | OPCODE_TEXT | OPCODE_BINARY | OPCODE_CLOSE | OPCODE_PING
            | OPCODE_PONG => Ok(()),
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }

    fn read_second_byte(&mut self, byte: u8) -> Result<(), FrameError> {
        self.second_byte = byte;
        if byte & MASK_BIT == 0 {
            return Err(FrameError::Protocol("unmasked client frame"));
        }
        let short_length = byte & SHORT_LENGTH_MASK;
        if self.is_control() && usize::from(short_length) > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::Protocol("control frame payload over 125 bytes"));
        }
        if short_length < LENGTH_16_BIT {
            self.remaining = u64::from(short_length);
            self.length_known()
        } else {
            self.remaining = 0;
            Ok(())
        }
    }

    /// The payload length is known: refuse or make room before any payload arrives.
    fn length_known(&mut self) -> Result<(), FrameError> {
        if self.remaining > i64::MAX as u64 {
            return Err(FrameError::Protocol("64-bit length with the top bit set"));
        }
        if self.is_control() {
            // At most 125 bytes, checked with the second byte.
            self.reserve(self.remaining as usize);
            return Ok(());
        }
        let total = u64::try_from(self.message_len)
            .map_err(|_| FrameError::TooBig)?
            .saturating_add(self.remaining);
        let total = usize::try_from(total).map_err(|_| FrameError::TooBig)?;
        if total > self.hard_max_bytes {
            return Err(FrameError::TooBig);
        }
        // Empty fragments would cost nothing and never end a message: cap their number.
        self.fragments += 1;
        if self.fragments > MAX_FRAGMENTS {
            return Err(FrameError::TooBig);
        }
        // Fits in usize: it is part of `total`.
        let frame_len = self.remaining as usize;
        self.message_len = total;
        if self.message_opcode.is_none() {
            self.message_opcode = Some(self.opcode());
        }
        if !self.message_too_long && total > self.max_message_bytes {
            self.message_too_long = true;
            // Earlier fragments were within the limit and kept whole; only the head survives.
            self.buffer.truncate(self.head_bytes);
            self.buffer.shrink_to_fit();
        }
        let wanted = if self.message_too_long {
            self.head_bytes
                .saturating_sub(self.buffer.len())
                .min(frame_len)
        } else {
            frame_len
        };
        // A header costs a client 14 bytes; memory is committed as payload arrives, not
        // as declared, so idle connections announcing big frames cannot pin megabytes.
        self.reserve(wanted.min(RESERVE_AHEAD_BYTES));
        Ok(())
    }

    /// Exact for a message's first frame (usually its only one), amortized after that so a
    /// message in many small fragments is not copied once per fragment.
    fn reserve(&mut self, additional: usize) {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(additional);
        } else {
            self.buffer.reserve(additional);
        }
    }

    fn read_payload(&mut self, chunk: &[u8]) {
        let kept = if self.message_too_long && !self.is_control() {
            // While a data frame is read the buffer holds only the message's head.
            self.head_bytes
                .saturating_sub(self.buffer.len())
                .min(chunk.len())
        } else {
            chunk.len()
        };
        if kept > 0 {
            let start = self.buffer.len();
            self.buffer.extend_from_slice(&chunk[..kept]);
            apply_mask(&mut self.buffer[start..], self.mask_key);
        }
        self.mask_key.rotate_left(chunk.len() % 4);
        self.remaining -= chunk.len() as u64;
    }

    fn finish_frame<T: From<WsFrame>>(&mut self, frames: &mut Vec<T>) -> Result<(), FrameError> {
        self.header_pos = 0;
        self.in_payload = false;
        let opcode = self.opcode();
        if self.is_control() {
            let payload = self.take_control_payload();
            match opcode {
                OPCODE_PING => frames.push(WsFrame::Ping(payload).into()),
                OPCODE_PONG => frames.push(WsFrame::Pong(payload).into()),
                _ => {
                    let close = parse_close(payload)?;
                    frames.push(close.into());
                    self.stop();
                }
            }
            return Ok(());
        }
        if self.first_byte & FIN_BIT == 0 {
            return Ok(());
        }
        let message = mem::take(&mut self.buffer);
        let message_opcode = self.message_opcode.take();
        let too_long = mem::replace(&mut self.message_too_long, false);
        self.message_len = 0;
        self.fragments = 0;
        let frame = if too_long {
            WsFrame::TooLong {
                head: Bytes::from(message),
            }
        } else if message_opcode == Some(OPCODE_TEXT) {
            std::str::from_utf8(&message).map_err(|_| FrameError::BadUtf8)?;
            WsFrame::Text(Bytes::from(message))
        } else {
            WsFrame::Binary(Bytes::from(message))
        };
        frames.push(frame.into());
        Ok(())
    }

    /// Between messages the buffer holds just the control payload and is handed out whole;
    /// inside one, the payload is copied off the end so the message underneath stays intact.
    fn take_control_payload(&mut self) -> Bytes {
        if self.message_opcode.is_none() {
            return Bytes::from(mem::take(&mut self.buffer));
        }
        // A control frame's length is its short length: anything longer was refused.
        let payload_len = usize::from(self.second_byte & SHORT_LENGTH_MASK);
        let start = self.buffer.len() - payload_len;
        let payload = Bytes::copy_from_slice(&self.buffer[start..]);
        self.buffer.truncate(start);
        payload
    }
}

fn parse_close(payload: Bytes) -> Result<WsFrame, FrameError> {
    match payload.len() {
        0 => Ok(WsFrame::Close {
            code: None,
            reason: Bytes::new(),
        }),
        1 => Err(FrameError::Protocol("close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed_on_wire(code) {
                return Err(FrameError::Protocol("invalid close code"));
            }
            let reason = payload.slice(2..);
            std::str::from_utf8(&reason).map_err(|_| FrameError::BadUtf8)?;
            Ok(WsFrame::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// RFC 6455 7.4: 1004-1006 and 1015 are reserved or local-only, the rest of 1000-2999 is
/// unassigned, 3000-4999 belong to libraries and applications, and nothing else is defined.
fn close_code_allowed_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `bytes` with the repeating `key` (whose first byte applies to `bytes[0]`), eight
/// bytes at a time.
fn apply_mask(bytes: &mut [u8], key: [u8; 4]) {
    let wide_key = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = bytes.chunks_exact_mut(8);
    for word in &mut words {
        let masked = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]) ^ wide_key;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the key starts over at its first byte.
    for (byte, key_byte) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= key_byte;
    }
}

/// A complete server frame (FIN set, never masked, as RFC 6455 requires of servers).
pub fn encode_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut header = [0; MAX_HEADER_BYTES];
    let header_len = write_header(opcode, payload.len(), &mut header);
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[MAX_HEADER_BYTES - header_len..]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// The header of an unmasked final frame with `payload_len` bytes: writes it into the END of
/// `header` (so a caller that reserved `MAX_HEADER_BYTES` in front of a payload can write the
/// header just before it) and returns how many bytes it used (2, 4 or 10).
pub fn write_header(opcode: u8, payload_len: usize, header: &mut [u8; MAX_HEADER_BYTES]) -> usize {
    let first_byte = FIN_BIT | (opcode & OPCODE_MASK);
    if payload_len < usize::from(LENGTH_16_BIT) {
        header[8] = first_byte;
        header[9] = payload_len as u8;
        2
    } else if let Ok(length) = u16::try_from(payload_len) {
        header[6] = first_byte;
        header[7] = LENGTH_16_BIT;
        header[8..].copy_from_slice(&length.to_be_bytes());
        4
    } else {
        header[0] = first_byte;
        header[1] = LENGTH_64_BIT;
        header[2..].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// A close frame's payload: 2-byte big-endian code then the reason, reason truncated at a
/// UTF-8 char boundary so the whole payload fits a control frame (<= 125 bytes).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut reason_end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(reason_end) {
        reason_end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + reason_end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..reason_end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const OTHER_KEY: [u8; 4] = [0x01, 0x80, 0xfe, 0x5a];

    #[derive(Clone, Copy)]
    struct Limits {
        max: usize,
        hard: usize,
        head: usize,
    }

    const ROOMY: Limits = Limits {
        max: 100_000,
        hard: 200_000,
        head: 16,
    };
    const TIGHT: Limits = Limits {
        max: 20,
        hard: 64,
        head: 8,
    };

    type Outcome = (Vec<WsFrame>, Result<(), FrameError>);

    /// A masked client frame with `first_byte` as given, in the shortest length form.
    fn masked_frame(first_byte: u8, payload: &[u8], mask_key: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![first_byte];
        match payload.len() {
            len @ 0..=125 => frame.push(MASK_BIT | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(MASK_BIT | LENGTH_16_BIT);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(MASK_BIT | LENGTH_64_BIT);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask_key);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ mask_key[i % 4]),
        );
        frame
    }

    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask_key: [u8; 4]) -> Vec<u8> {
        let fin_bit = if fin { FIN_BIT } else { 0 };
        masked_frame(fin_bit | opcode, payload, mask_key)
    }

    fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, limits: Limits) -> Outcome {
        let mut reader = FrameReader::new(limits.max, limits.hard, limits.head);
        let mut frames = Vec::new();
        let mut result = Ok(());
        for chunk in chunks {
            let pushed = reader.push(chunk, &mut frames);
            if result.is_ok() {
                result = pushed;
            } else {
                assert_eq!(pushed, Ok(()), "pushes after an error are ignored");
            }
        }
        (frames, result)
    }

    /// Every split point for small inputs; for large ones, every point near both ends (all
    /// the headers) and a spread in between, which keeps debug-build tests quick.
    fn split_points(len: usize) -> Vec<usize> {
        const EDGE: usize = 300;
        if len <= 4 * EDGE {
            return (0..=len).collect();
        }
        (0..EDGE)
            .chain((EDGE..len - EDGE).step_by(251))
            .chain(len - EDGE..=len)
            .collect()
    }

    /// Reads `input` whole, split in two at every point, and one byte at a time, checks
    /// that all give the same frames and result, and returns that outcome.
    fn read_every_way(input: &[u8], limits: Limits) -> Outcome {
        let whole = feed([input], limits);
        for split in split_points(input.len()) {
            let (first, second) = input.split_at(split);
            assert!(
                feed([first, second], limits) == whole,
                "split at {split} differs from whole"
            );
        }
        assert!(
            feed(input.chunks(1), limits) == whole,
            "one byte at a time differs from whole"
        );
        whole
    }

    fn frames_of(input: &[u8], limits: Limits) -> Vec<WsFrame> {
        let (frames, result) = read_every_way(input, limits);
        assert_eq!(result, Ok(()));
        frames
    }

    fn error_of(input: &[u8], limits: Limits) -> FrameError {
        let (frames, result) = read_every_way(input, limits);
        assert_eq!(frames, vec![]);
        result.expect_err("input should be refused")
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    fn text(s: &str) -> WsFrame {
        WsFrame::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn rfc_example_masked_hello() {
        let input = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(client_frame(true, OPCODE_TEXT, b"Hello", KEY), input);
        assert_eq!(frames_of(&input, ROOMY), vec![text("Hello")]);
    }

    #[test]
    fn text_and_binary() {
        let input = client_frame(true, OPCODE_TEXT, "héllo wörld".as_bytes(), KEY);
        assert_eq!(frames_of(&input, ROOMY), vec![text("héllo wörld")]);
        let payload = [0, 0xFF, 0x80, 1, 2, 3, 4, 5, 6, 7, 8];
        let input = client_frame(true, OPCODE_BINARY, &payload, OTHER_KEY);
        assert_eq!(
            frames_of(&input, ROOMY),
            vec![WsFrame::Binary(Bytes::copy_from_slice(&payload))]
        );
    }

    #[test]
    fn empty_payloads() {
        let cases = [
            (OPCODE_TEXT, text("")),
            (OPCODE_BINARY, WsFrame::Binary(Bytes::new())),
            (OPCODE_PING, WsFrame::Ping(Bytes::new())),
            (OPCODE_PONG, WsFrame::Pong(Bytes::new())),
        ];
        for (opcode, expected) in cases {
            let input = client_frame(true, opcode, b"", KEY);
            assert_eq!(frames_of(&input, ROOMY), vec![expected]);
        }
        let fragmented = [
            client_frame(false, OPCODE_TEXT, b"", KEY),
            client_frame(false, OPCODE_CONTINUATION, b"", KEY),
            client_frame(true, OPCODE_CONTINUATION, b"", KEY),
        ]
        .concat();
        assert_eq!(frames_of(&fragmented, ROOMY), vec![text("")]);
    }

    #[test]
    fn all_three_length_forms() {
        for len in [1, 7, 8, 9, 125, 126, 127, 65535, 65536] {
            let payload = pattern(len);
            let input = client_frame(true, OPCODE_BINARY, &payload, KEY);
            let expected_header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            } + 4;
            assert_eq!(input.len(), expected_header + len);
            assert_eq!(
                frames_of(&input, ROOMY),
                vec![WsFrame::Binary(Bytes::from(payload))],
                "length {len}"
            );
        }
        let long_text = "ab".repeat(32768);
        let input = client_frame(true, OPCODE_TEXT, long_text.as_bytes(), OTHER_KEY);
        assert_eq!(frames_of(&input, ROOMY), vec![text(&long_text)]);
    }

    #[test]
    fn fragmented_text_with_ping_between_fragments() {
        let input = [
            client_frame(false, OPCODE_TEXT, b"Hello", KEY),
            client_frame(false, OPCODE_CONTINUATION, b", ", OTHER_KEY),
            client_frame(true, OPCODE_PING, b"are you there", KEY),
            client_frame(true, OPCODE_CONTINUATION, b"world", KEY),
        ]
        .concat();
        assert_eq!(
            frames_of(&input, ROOMY),
            vec![
                WsFrame::Ping(Bytes::from_static(b"are you there")),
                text("Hello, world"),
            ]
        );
    }

    #[test]
    fn control_frame_comes_out_before_the_message_completes() {
        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::<WsFrame>::new();
        let first = client_frame(false, OPCODE_BINARY, b"abc", KEY);
        let pong = client_frame(true, OPCODE_PONG, b"p", KEY);
        let last = client_frame(true, OPCODE_CONTINUATION, b"def", KEY);
        assert_eq!(reader.push(&[first, pong].concat(), &mut frames), Ok(()));
        assert_eq!(frames, vec![WsFrame::Pong(Bytes::from_static(b"p"))]);
        assert_eq!(reader.push(&last, &mut frames), Ok(()));
        assert_eq!(frames[1], WsFrame::Binary(Bytes::from_static(b"abcdef")));
    }

    #[test]
    fn multibyte_char_split_across_fragments() {
        let euro = "€".as_bytes();
        let input = [
            client_frame(false, OPCODE_TEXT, &[b'a', euro[0]], KEY),
            client_frame(true, OPCODE_CONTINUATION, &[euro[1], euro[2], b'b'], KEY),
        ]
        .concat();
        assert_eq!(frames_of(&input, ROOMY), vec![text("a€b")]);
    }

    #[test]
    fn invalid_utf8_is_bad_utf8() {
        let whole = client_frame(true, OPCODE_TEXT, b"ab\xFFcd", KEY);
        assert_eq!(error_of(&whole, ROOMY), FrameError::BadUtf8);
        let truncated_char = [
            client_frame(false, OPCODE_TEXT, b"a\xE2\x82", KEY),
            client_frame(true, OPCODE_CONTINUATION, b"b", KEY),
        ]
        .concat();
        assert_eq!(error_of(&truncated_char, ROOMY), FrameError::BadUtf8);
        // Binary messages are not text.
        let binary = client_frame(true, OPCODE_BINARY, b"\xFF", KEY);
        assert_eq!(
            frames_of(&binary, ROOMY),
            vec![WsFrame::Binary(Bytes::from_static(b"\xFF"))]
        );
    }

    #[test]
    fn message_at_the_limit_is_whole() {
        let payload = pattern(TIGHT.max);
        let input = client_frame(true, OPCODE_BINARY, &payload, KEY);
        assert_eq!(
            frames_of(&input, TIGHT),
            vec![WsFrame::Binary(Bytes::from(payload))]
        );
    }

    #[test]
    fn too_long_keeps_the_head_whole_or_fragmented() {
        let payload = pattern(TIGHT.max + 1);
        let expected = vec![WsFrame::TooLong {
            head: Bytes::copy_from_slice(&payload[..TIGHT.head]),
        }];
        // Fragment sizes: crossing the limit in the first frame, with the head still
        // filling, and after more than the head was already kept.
        let splits: [&[usize]; 5] = [&[21], &[10, 11], &[3, 3, 15], &[15, 6], &[1; 21]];
        for sizes in splits {
            let mut input = Vec::new();
            let mut offset = 0;
            for (i, &size) in sizes.iter().enumerate() {
                let opcode = if i == 0 {
                    OPCODE_TEXT
                } else {
                    OPCODE_CONTINUATION
                };
                let fin = i + 1 == sizes.len();
                let chunk = &payload[offset..offset + size];
                input.extend(client_frame(fin, opcode, chunk, KEY));
                offset += size;
            }
            assert_eq!(frames_of(&input, TIGHT), expected, "fragments {sizes:?}");
        }
    }

    #[test]
    fn too_long_head_is_shorter_when_head_bytes_exceed_the_message() {
        let limits = Limits {
            max: 4,
            hard: 64,
            head: 32,
        };
        let input = client_frame(true, OPCODE_BINARY, b"12345", KEY);
        assert_eq!(
            frames_of(&input, limits),
            vec![WsFrame::TooLong {
                head: Bytes::from_static(b"12345")
            }]
        );
    }

    #[test]
    fn too_long_text_is_not_utf8_checked_and_survives_a_ping() {
        let input = [
            client_frame(false, OPCODE_TEXT, &[0xFF; 15], KEY),
            client_frame(true, OPCODE_PING, b"ping", OTHER_KEY),
            client_frame(true, OPCODE_CONTINUATION, &[0xFE; 15], KEY),
        ]
        .concat();
        assert_eq!(
            frames_of(&input, TIGHT),
            vec![
                WsFrame::Ping(Bytes::from_static(b"ping")),
                WsFrame::TooLong {
                    head: Bytes::from_static(&[0xFF; 8])
                },
            ]
        );
    }

    #[test]
    fn too_long_does_not_buffer_the_rest() {
        let mut reader = FrameReader::new(TIGHT.max, TIGHT.hard, TIGHT.head);
        let mut frames = Vec::<WsFrame>::new();
        let input = client_frame(false, OPCODE_BINARY, &pattern(60), KEY);
        assert_eq!(reader.push(&input, &mut frames), Ok(()));
        assert!(reader.buffered_capacity() <= TIGHT.head);
    }

    #[test]
    fn frame_over_hard_max_is_too_big_from_its_header_alone() {
        let too_big = (TIGHT.hard + 1) as u64;
        let headers: [Vec<u8>; 3] = [
            vec![FIN_BIT | OPCODE_BINARY, MASK_BIT | too_big as u8],
            vec![
                FIN_BIT | OPCODE_BINARY,
                MASK_BIT | LENGTH_16_BIT,
                0,
                too_big as u8,
            ],
            [
                vec![FIN_BIT | OPCODE_TEXT, MASK_BIT | LENGTH_64_BIT],
                too_big.to_be_bytes().to_vec(),
            ]
            .concat(),
        ];
        for header in headers {
            assert_eq!(error_of(&header, TIGHT), FrameError::TooBig);
        }
        let huge = [
            vec![FIN_BIT | OPCODE_BINARY, MASK_BIT | LENGTH_64_BIT],
            (i64::MAX as u64).to_be_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(error_of(&huge, TIGHT), FrameError::TooBig);
    }

    #[test]
    fn fragments_past_hard_max_are_too_big_at_the_crossing_header() {
        let input = [
            client_frame(false, OPCODE_TEXT, &[b'a'; 30], KEY),
            client_frame(false, OPCODE_CONTINUATION, &[b'b'; 30], KEY),
            vec![OPCODE_CONTINUATION, MASK_BIT | 5],
        ]
        .concat();
        assert_eq!(error_of(&input, TIGHT), FrameError::TooBig);
    }

    #[test]
    fn protocol_violations() {
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "unmasked",
                [vec![FIN_BIT | OPCODE_TEXT, 2], b"hi".to_vec()].concat(),
            ),
            (
                "control over 125",
                client_frame(true, OPCODE_PING, &[0; 126], KEY),
            ),
            (
                "fragmented ping",
                client_frame(false, OPCODE_PING, b"x", KEY),
            ),
            (
                "fragmented close",
                client_frame(false, OPCODE_CLOSE, b"", KEY),
            ),
            (
                "continuation without a message",
                client_frame(true, OPCODE_CONTINUATION, b"x", KEY),
            ),
            (
                "new message inside a fragmented one",
                [
                    client_frame(false, OPCODE_TEXT, b"a", KEY),
                    client_frame(true, OPCODE_BINARY, b"b", KEY),
                ]
                .concat(),
            ),
            (
                "64-bit length with top bit",
                [
                    vec![FIN_BIT | OPCODE_BINARY, MASK_BIT | LENGTH_64_BIT, 0x80],
                    vec![0, 0, 0, 0, 0, 0, 1],
                    KEY.to_vec(),
                    vec![0],
                ]
                .concat(),
            ),
        ];
        for rsv in [0x40, 0x20, 0x10] {
            cases.push((
                "reserved bit",
                masked_frame(FIN_BIT | rsv | OPCODE_TEXT, b"x", KEY),
            ));
        }
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            cases.push(("unknown opcode", client_frame(true, opcode, b"", KEY)));
        }
        for (name, input) in cases {
            let error = error_of(&input, ROOMY);
            assert!(
                matches!(error, FrameError::Protocol(_)),
                "{name}: {error:?}"
            );
        }
        let unmasked = [FIN_BIT | OPCODE_TEXT, 0];
        assert_eq!(
            error_of(&unmasked, ROOMY),
            FrameError::Protocol("unmasked client frame")
        );
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let input = [
            vec![FIN_BIT | OPCODE_BINARY, MASK_BIT | LENGTH_64_BIT],
            3u64.to_be_bytes().to_vec(),
            [0; 4].to_vec(),
            b"abc".to_vec(),
        ]
        .concat();
        assert_eq!(
            frames_of(&input, ROOMY),
            vec![WsFrame::Binary(Bytes::from_static(b"abc"))]
        );
    }

    #[test]
    fn close_with_code_and_reason() {
        let input = client_frame(true, OPCODE_CLOSE, &close_payload(1000, "bye now"), KEY);
        assert_eq!(
            frames_of(&input, ROOMY),
            vec![WsFrame::Close {
                code: Some(1000),
                reason: Bytes::from_static(b"bye now"),
            }]
        );
        for code in [1001u16, 1003, 1007, 1011, 1014, 3000, 4999] {
            let input = client_frame(true, OPCODE_CLOSE, &code.to_be_bytes(), KEY);
            assert_eq!(
                frames_of(&input, ROOMY),
                vec![WsFrame::Close {
                    code: Some(code),
                    reason: Bytes::new(),
                }]
            );
        }
    }

    #[test]
    fn close_without_payload() {
        let input = client_frame(true, OPCODE_CLOSE, b"", KEY);
        assert_eq!(
            frames_of(&input, ROOMY),
            vec![WsFrame::Close {
                code: None,
                reason: Bytes::new(),
            }]
        );
    }

    #[test]
    fn close_with_one_byte_payload() {
        let input = client_frame(true, OPCODE_CLOSE, &[3], KEY);
        assert!(matches!(error_of(&input, ROOMY), FrameError::Protocol(_)));
    }

    #[test]
    fn close_with_invalid_code() {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            let input = client_frame(true, OPCODE_CLOSE, &close_payload(code, "x"), KEY);
            assert_eq!(
                error_of(&input, ROOMY),
                FrameError::Protocol("invalid close code"),
                "code {code}"
            );
        }
    }

    #[test]
    fn close_reason_must_be_utf8() {
        let input = client_frame(true, OPCODE_CLOSE, b"\x03\xE8\xC3", KEY);
        assert_eq!(error_of(&input, ROOMY), FrameError::BadUtf8);
    }

    #[test]
    fn input_after_close_is_ignored() {
        let close = client_frame(true, OPCODE_CLOSE, b"", KEY);
        let after = client_frame(true, OPCODE_TEXT, b"late", KEY);
        let input = [close.clone(), after.clone(), vec![0xFF, 0x00]].concat();
        let expected = vec![WsFrame::Close {
            code: None,
            reason: Bytes::new(),
        }];
        assert_eq!(frames_of(&input, ROOMY), expected);

        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::<WsFrame>::new();
        assert_eq!(reader.push(&close, &mut frames), Ok(()));
        assert_eq!(reader.push(&after, &mut frames), Ok(()));
        assert_eq!(reader.push(&[0x00, 0x00], &mut frames), Ok(()));
        assert_eq!(frames, expected);
        assert_eq!(reader.buffered_capacity(), 0);
    }

    #[test]
    fn input_after_an_error_is_ignored_and_earlier_frames_kept() {
        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::<WsFrame>::new();
        let good = client_frame(true, OPCODE_TEXT, b"ok", KEY);
        let input = [good.clone(), vec![FIN_BIT | OPCODE_TEXT, 0]].concat();
        assert_eq!(
            reader.push(&input, &mut frames),
            Err(FrameError::Protocol("unmasked client frame"))
        );
        assert_eq!(frames, vec![text("ok")]);
        assert_eq!(reader.push(&good, &mut frames), Ok(()));
        assert_eq!(frames, vec![text("ok")]);

        let (frames, result) = read_every_way(&input, ROOMY);
        assert_eq!(frames, vec![text("ok")]);
        assert_eq!(result, Err(FrameError::Protocol("unmasked client frame")));
    }

    #[test]
    fn several_frames_in_one_push_come_out_in_order() {
        let input = [
            client_frame(true, OPCODE_TEXT, b"one", KEY),
            client_frame(true, OPCODE_PING, b"", OTHER_KEY),
            client_frame(true, OPCODE_BINARY, &pattern(300), KEY),
            client_frame(true, OPCODE_PONG, b"pong", KEY),
            client_frame(true, OPCODE_TEXT, b"two", OTHER_KEY),
            client_frame(true, OPCODE_CLOSE, &close_payload(1001, "going"), KEY),
        ]
        .concat();
        assert_eq!(
            frames_of(&input, ROOMY),
            vec![
                text("one"),
                WsFrame::Ping(Bytes::new()),
                WsFrame::Binary(Bytes::from(pattern(300))),
                WsFrame::Pong(Bytes::from_static(b"pong")),
                text("two"),
                WsFrame::Close {
                    code: Some(1001),
                    reason: Bytes::from_static(b"going"),
                },
            ]
        );
    }

    /// Decodes an unmasked final server frame by hand: (opcode, payload).
    fn decode_server_frame(frame: &[u8]) -> (u8, &[u8]) {
        assert_eq!(frame[0] & 0xF0, FIN_BIT, "FIN set, no RSV bits");
        assert_eq!(frame[1] & MASK_BIT, 0, "server frames are unmasked");
        let (len, header_len) = match frame[1] {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => {
                let mut length = [0; 8];
                length.copy_from_slice(&frame[2..10]);
                (u64::from_be_bytes(length) as usize, 10)
            }
            short => (usize::from(short), 2),
        };
        assert_eq!(frame.len(), header_len + len);
        (frame[0] & OPCODE_MASK, &frame[header_len..])
    }

    #[test]
    fn encode_frame_and_write_header_round_trip() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = pattern(len);
            let frame = encode_frame(OPCODE_BINARY, &payload);
            assert_eq!(frame.len(), header_len + len);
            assert_eq!(decode_server_frame(&frame), (OPCODE_BINARY, &payload[..]));

            let mut header = [0xEE; MAX_HEADER_BYTES];
            assert_eq!(write_header(OPCODE_TEXT, len, &mut header), header_len);
            let unused = MAX_HEADER_BYTES - header_len;
            assert!(header[..unused].iter().all(|&byte| byte == 0xEE));
            let by_hand = [&header[unused..], &payload[..]].concat();
            assert_eq!(decode_server_frame(&by_hand), (OPCODE_TEXT, &payload[..]));
        }
    }

    #[test]
    fn close_payload_truncates_at_a_char_boundary() {
        assert_eq!(close_payload(1000, "bye"), b"\x03\xE8bye");
        for (reason, expected_reason_len) in [("é".repeat(100), 122), ("😀".repeat(40), 120)] {
            let payload = close_payload(1001, &reason);
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
            assert_eq!(payload.len(), 2 + expected_reason_len);
            assert_eq!(&payload[..2], &1001u16.to_be_bytes());
            assert!(std::str::from_utf8(&payload[2..]).is_ok());
        }
        let exact = "a".repeat(200);
        assert_eq!(close_payload(1000, &exact).len(), MAX_CONTROL_PAYLOAD);
    }

    #[test]
    fn reader_is_small_and_holds_no_heap_between_messages() {
        // 80 bytes on 64-bit targets.
        assert!(std::mem::size_of::<FrameReader>() <= 96);

        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::new();
        assert_eq!(reader.buffered_capacity(), 0);
        let inputs = [
            client_frame(true, OPCODE_TEXT, b"", KEY),
            client_frame(true, OPCODE_TEXT, b"hello", KEY),
            client_frame(true, OPCODE_PING, b"ping", KEY),
            client_frame(true, OPCODE_BINARY, &pattern(1000), KEY),
        ];
        for input in &inputs {
            assert_eq!(reader.push(input, &mut frames), Ok(()));
            assert_eq!(reader.buffered_capacity(), 0);
        }

        assert_eq!(
            reader.push(&client_frame(false, OPCODE_TEXT, b"part", KEY), &mut frames),
            Ok(())
        );
        assert!(reader.buffered_capacity() > 0);
        let ping = client_frame(true, OPCODE_PING, b"p", KEY);
        assert_eq!(reader.push(&ping, &mut frames), Ok(()));
        let last = client_frame(true, OPCODE_CONTINUATION, b"s", KEY);
        assert_eq!(reader.push(&last, &mut frames), Ok(()));
        assert_eq!(reader.buffered_capacity(), 0);
        assert_eq!(frames.last(), Some(&text("parts")));

        let mut too_long = FrameReader::new(TIGHT.max, TIGHT.hard, TIGHT.head);
        let input = client_frame(true, OPCODE_TEXT, &pattern(40), KEY);
        assert_eq!(too_long.push(&input, &mut frames), Ok(()));
        assert_eq!(too_long.buffered_capacity(), 0);
    }

    #[test]
    fn single_frame_is_unmasked_into_an_exact_buffer() {
        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::<WsFrame>::new();
        let payload = pattern(1000);
        let input = client_frame(true, OPCODE_BINARY, &payload, KEY);
        // Everything but the last byte: the buffer was sized from the header.
        assert_eq!(reader.push(&input[..input.len() - 1], &mut frames), Ok(()));
        assert_eq!(reader.buffered_capacity(), payload.len());
    }

    #[test]
    fn a_declared_length_reserves_at_most_one_read_ahead() {
        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::<WsFrame>::new();
        let payload = pattern(90_000);
        let input = client_frame(true, OPCODE_BINARY, &payload, KEY);
        // The header alone (64-bit length and mask key) commits no more than a read's worth.
        assert_eq!(reader.push(&input[..14], &mut frames), Ok(()));
        assert_eq!(reader.buffered_capacity(), RESERVE_AHEAD_BYTES);
        assert_eq!(reader.push(&input[14..], &mut frames), Ok(()));
        assert_eq!(frames, [WsFrame::Binary(Bytes::from(payload))]);
    }

    #[test]
    fn a_message_in_too_many_fragments_is_too_big() {
        let mut reader = FrameReader::new(ROOMY.max, ROOMY.hard, ROOMY.head);
        let mut frames = Vec::<WsFrame>::new();
        let mut input = client_frame(false, OPCODE_TEXT, b"", KEY);
        for _ in 1..MAX_FRAGMENTS - 1 {
            input.extend(client_frame(false, OPCODE_CONTINUATION, b"", KEY));
        }
        input.extend(client_frame(true, OPCODE_CONTINUATION, b"ok", KEY));
        // At the cap: still one message.
        assert_eq!(reader.push(&input, &mut frames), Ok(()));
        assert_eq!(frames, [WsFrame::Text(Bytes::from_static(b"ok"))]);
        // One more fragment than that, and the connection is closed as too big.
        let mut input = client_frame(false, OPCODE_TEXT, b"", KEY);
        for _ in 1..MAX_FRAGMENTS {
            input.extend(client_frame(false, OPCODE_CONTINUATION, b"", KEY));
        }
        assert_eq!(reader.push(&input, &mut frames), Ok(()));
        let last = client_frame(true, OPCODE_CONTINUATION, b"", KEY);
        assert_eq!(reader.push(&last, &mut frames), Err(FrameError::TooBig));
    }

    #[test]
    fn garbage_never_panics_and_never_buffers_past_the_limits() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut frames_seen, mut errors_seen) = (0, 0);
        for round in 0..2000 {
            let mut reader = FrameReader::new(TIGHT.max, TIGHT.hard, TIGHT.head);
            let mut frames = Vec::new();
            // Half pure noise, half noise behind a plausible masked header.
            let mut input: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
            if round % 2 == 1 && input.len() > 2 {
                input[0] = 0x80 | [OPCODE_TEXT, OPCODE_BINARY, OPCODE_PING][rng.usize(0..3)];
                input[1] |= 0x80;
            }
            for piece in input.chunks(rng.usize(1..40)) {
                if reader.push(piece, &mut frames).is_err() {
                    errors_seen += 1;
                    break;
                }
                assert!(reader.buffered_capacity() <= TIGHT.hard.max(RESERVE_AHEAD_BYTES));
            }
            frames_seen += frames.len();
            for frame in &frames {
                match frame {
                    WsFrame::Text(text) => {
                        assert!(std::str::from_utf8(text).is_ok());
                        assert!(text.len() <= TIGHT.max);
                    }
                    WsFrame::Binary(bytes) => assert!(bytes.len() <= TIGHT.max),
                    WsFrame::TooLong { head } => assert!(head.len() <= TIGHT.head),
                    WsFrame::Ping(payload) | WsFrame::Pong(payload) => {
                        assert!(payload.len() <= 125)
                    }
                    WsFrame::Close { .. } => {}
                }
            }
        }
        // Both ways out were taken, many times: the noise reached the parser's depths.
        assert!(
            frames_seen > 100 && errors_seen > 100,
            "{frames_seen} frames, {errors_seen} errors"
        );
    }

    #[test]
    fn apply_mask_matches_a_byte_loop_at_every_length() {
        for len in 0..40 {
            let original = pattern(len);
            let mut masked = original.clone();
            apply_mask(&mut masked, OTHER_KEY);
            let expected: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ OTHER_KEY[i % 4])
                .collect();
            assert_eq!(masked, expected);
        }
    }
}
