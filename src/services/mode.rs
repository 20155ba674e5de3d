//! What each service answers, pure: the `echo`, `upper` and `random` modes turn one
//! message into one reply, with no knowledge of sockets or framing.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

/// The canned replies of the seed's `server_multi.py`, used when no `--replies` file
/// is given.
pub const BUILT_IN_REPLIES: &[&str] = &[
    "Hello!",
    "Request received.",
    "Have a nice day.",
    "This is a random message from the server.",
    "Data received!",
    "Drone link test in progress.",
    "Sending a reply message.",
];

/// Longest line kept from a `--replies` file, and most lines: a reply file is read
/// once into memory, so both are capped.
pub const MAX_REPLY_BYTES: usize = 4096;
pub const MAX_REPLIES: usize = 10_000;

/// Which service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// RFC 862: every byte back exactly as received.
    Echo,
    /// UTF-8 text uppercased (Unicode rules: `straße` becomes `STRASSE`).
    Upper,
    /// A random line from the reply list for each message.
    Random,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Upper => "upper",
            Mode::Random => "random",
        }
    }
}

/// A `--replies` file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RepliesError {
    #[error("cannot read the replies file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the replies file {path} is not UTF-8 text")]
    NotText { path: String },
    #[error("the replies file {path} has no non-empty lines")]
    Empty { path: String },
    #[error("the replies file {path} has a line over {MAX_REPLY_BYTES} bytes (line {line})")]
    LineTooLong { path: String, line: usize },
    #[error("the replies file {path} has more than {MAX_REPLIES} lines")]
    TooMany { path: String },
}

/// Read a replies file: one reply per non-empty line (surrounding whitespace trimmed).
pub fn load_replies(path: &Path) -> Result<Vec<Bytes>, RepliesError> {
    let shown = path.display().to_string();
    let raw = std::fs::read(path).map_err(|source| RepliesError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(raw).map_err(|_| RepliesError::NotText {
        path: shown.clone(),
    })?;
    parse_replies(&text, &shown)
}

fn parse_replies(text: &str, path: &str) -> Result<Vec<Bytes>, RepliesError> {
    let mut replies = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_REPLY_BYTES {
            return Err(RepliesError::LineTooLong {
                path: path.to_owned(),
                line: index + 1,
            });
        }
        if replies.len() == MAX_REPLIES {
            return Err(RepliesError::TooMany {
                path: path.to_owned(),
            });
        }
        replies.push(Bytes::copy_from_slice(line.as_bytes()));
    }
    if replies.is_empty() {
        return Err(RepliesError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(replies)
}

/// Turns one message into one reply. Cheap to clone; shared by every connection.
#[derive(Debug, Clone)]
pub struct Responder {
    mode: Mode,
    replies: Arc<[Bytes]>,
}

impl Responder {
    /// `replies` is used by the random mode; `None` means the built-in list.
    pub fn new(mode: Mode, replies: Option<Vec<Bytes>>) -> Self {
        let replies: Arc<[Bytes]> = match replies {
            Some(replies) if !replies.is_empty() => replies.into(),
            _ => BUILT_IN_REPLIES
                .iter()
                .map(|reply| Bytes::from_static(reply.as_bytes()))
                .collect(),
        };
        Responder { mode, replies }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The reply to one whole message (a line without its terminator, a burst or a
    /// datagram).
    pub fn answer(&self, message: &Bytes) -> Bytes {
        match self.mode {
            Mode::Echo => message.clone(),
            Mode::Upper => match uppercase(message) {
                Ok(upper) => upper,
                Err(error) => Bytes::from(error.to_string()),
            },
            Mode::Random => self.replies[fastrand::usize(..self.replies.len())].clone(),
        }
    }
}

/// Input to the upper mode that is not UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("error: not UTF-8 text (invalid byte at offset {offset}); upper needs UTF-8")]
pub struct NotUtf8 {
    pub offset: usize,
}

/// Uppercase UTF-8 text by Unicode rules; scripts without case pass through unchanged.
/// ASCII-only text (the common case) is uppercased without decoding.
pub fn uppercase(message: &Bytes) -> Result<Bytes, NotUtf8> {
    if message.is_ascii() {
        return Ok(Bytes::from(message.to_ascii_uppercase()));
    }
    match std::str::from_utf8(message) {
        Ok(text) => Ok(Bytes::from(text.to_uppercase())),
        Err(error) => Err(NotUtf8 {
            offset: error.valid_up_to(),
        }),
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character whose
/// remaining bytes have not arrived yet (0 when the text ends on a whole character or
/// is invalid before its end). Lets a burst that ended mid-character wait for the rest.
pub fn unfinished_utf8_tail(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        // error_len() == None: the input ended inside a character that was valid so far.
        Err(error) if error.error_len().is_none() => bytes.len() - error.valid_up_to(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(text: &str) -> String {
        String::from_utf8(
            uppercase(&Bytes::copy_from_slice(text.as_bytes()))
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn uppercases_by_unicode_rules() {
        assert_eq!(upper("hello, world"), "HELLO, WORLD");
        assert_eq!(upper("straße"), "STRASSE");
        assert_eq!(upper("안녕하세요 hi"), "안녕하세요 HI");
        assert_eq!(upper("ça va? ёж"), "ÇA VA? ЁЖ");
        assert_eq!(upper(""), "");
    }

    #[test]
    fn invalid_utf8_is_an_error_with_its_offset() {
        let bad = Bytes::from_static(b"ok\xffno");
        assert_eq!(uppercase(&bad), Err(NotUtf8 { offset: 2 }));
        let responder = Responder::new(Mode::Upper, None);
        let reply = responder.answer(&bad);
        assert!(reply.starts_with(b"error: not UTF-8"), "{reply:?}");
    }

    #[test]
    fn unfinished_tail_is_found_at_every_cut() {
        let text = "a한ß😀".as_bytes();
        let boundaries = [0, 1, 4, 6, 10];
        for cut in 0..=text.len() {
            let expected = cut - boundaries.iter().rev().find(|b| **b <= cut).unwrap();
            assert_eq!(unfinished_utf8_tail(&text[..cut]), expected, "cut {cut}");
        }
        assert_eq!(unfinished_utf8_tail(b"\xff\xe2\x82"), 0);
    }

    #[test]
    fn echo_returns_the_same_bytes_and_random_picks_from_the_list() {
        let message = Bytes::from_static(b"\x00\xff bin");
        assert_eq!(Responder::new(Mode::Echo, None).answer(&message), message);
        let random = Responder::new(Mode::Random, None);
        for _ in 0..50 {
            let reply = random.answer(&message);
            assert!(BUILT_IN_REPLIES.iter().any(|r| r.as_bytes() == reply));
        }
        let custom = Responder::new(Mode::Random, Some(vec![Bytes::from_static(b"only")]));
        assert_eq!(custom.answer(&message), Bytes::from_static(b"only"));
    }

    #[test]
    fn replies_files_are_lines_with_caps() {
        let replies = parse_replies("one\n\n  two  \r\nthree", "f").unwrap();
        assert_eq!(replies, ["one", "two", "three"]);
        assert!(matches!(
            parse_replies("\n \n", "f"),
            Err(RepliesError::Empty { .. })
        ));
        let long = "x".repeat(MAX_REPLY_BYTES + 1);
        assert!(matches!(
            parse_replies(&format!("ok\n{long}\n"), "f"),
            Err(RepliesError::LineTooLong { line: 2, .. })
        ));
    }
}
