//! The client's reading of the line door: bytes from the server in, display lines and
//! registration events out. Pure (no I/O); handles the name prompt that arrives without
//! a newline and anything split across reads; neutralises control characters.

use crate::door::line::NAME_PROMPT;
use crate::text::sanitize_text;

/// Longest server line kept; the rest of a longer line is dropped (the server's own
/// lines are far shorter, so this only guards against a hostile or broken peer).
pub const MAX_SERVER_LINE_BYTES: usize = 64 * 1024;

/// Appended to a line that was cut at [`MAX_SERVER_LINE_BYTES`].
const TRUNCATED_MARK: &str = " [...]";

const REFUSED_PREFIX: &str = "error: cannot use that name: ";
const WELCOME_PREFIX: &str = "*** welcome, ";
const WELCOME_END: &str = "! you are client ";
const RENAME_MIDDLE: &str = " is now known as ";

/// Something the server said, as the client understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// `Enter your name: ` (arrives without a newline; never displayed as a line).
    NamePrompt,
    /// One complete line to display, already made safe for a terminal.
    Line { text: String, kind: LineKind },
}

/// What a displayed line means to the client, beyond being shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Plain,
    /// `error: ...`: remembered so a following disconnect can say why.
    Error,
    /// The server refused the name we sent; the server's reason.
    NameRefused {
        reason: String,
    },
    /// Registration succeeded under `nick`.
    Welcome {
        nick: String,
    },
    /// Someone (maybe us) changed nickname.
    NickChanged {
        old: String,
        new: String,
    },
}

/// Splits server bytes into [`ServerEvent`]s. "Need more bytes" is simply no event.
#[derive(Debug, Default)]
pub struct ServerParser {
    pending: Vec<u8>,
    /// Skipping the rest of an over-long line, up to its newline.
    discarding: bool,
    registered: bool,
}

impl ServerParser {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the welcome line has been seen on this connection.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Feed bytes as they arrive; complete events are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<ServerEvent>) {
        if self.discarding {
            match memchr::memchr(b'\n', bytes) {
                Some(newline) => {
                    bytes = &bytes[newline + 1..];
                    self.discarding = false;
                }
                None => return,
            }
        }
        // Taken out while lines are classified (which updates `self`), then put back.
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &pending[start..];
            if !self.registered && rest.starts_with(NAME_PROMPT.as_bytes()) {
                out.push(ServerEvent::NamePrompt);
                start += NAME_PROMPT.len();
                continue;
            }
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                break;
            };
            let line = &rest[..newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let event = self.line_event(line, false);
            start += newline + 1;
            out.extend(event);
        }
        pending.drain(..start);
        self.pending = pending;
        if self.pending.len() > MAX_SERVER_LINE_BYTES {
            let kept = std::mem::take(&mut self.pending);
            out.extend(self.line_event(&kept, true));
            self.discarding = true;
        }
    }

    /// The connection ended: whatever is left without a newline is a last line (unless
    /// it could still be the start of the prompt).
    pub fn finish(&mut self, out: &mut Vec<ServerEvent>) {
        let rest = std::mem::take(&mut self.pending);
        let prompt_fragment = !self.registered && NAME_PROMPT.as_bytes().starts_with(&rest);
        if !self.discarding && !prompt_fragment {
            out.extend(self.line_event(&rest, false));
        }
        self.discarding = false;
    }

    /// `cut`: the line goes on beyond `raw` (its rest will be skipped).
    fn line_event(&mut self, raw: &[u8], cut: bool) -> Option<ServerEvent> {
        if raw.is_empty() {
            return None;
        }
        let cut = cut || raw.len() > MAX_SERVER_LINE_BYTES;
        let raw = &raw[..raw.len().min(MAX_SERVER_LINE_BYTES)];
        let decoded = String::from_utf8_lossy(raw);
        let mut text = sanitize_text(&decoded).into_owned();
        if cut {
            text.push_str(TRUNCATED_MARK);
        }
        let kind = self.classify(&text);
        Some(ServerEvent::Line { text, kind })
    }

    fn classify(&mut self, text: &str) -> LineKind {
        if !self.registered {
            if let Some(reason) = text.strip_prefix(REFUSED_PREFIX) {
                return LineKind::NameRefused {
                    reason: reason.to_owned(),
                };
            }
            if let Some(rest) = text.strip_prefix(WELCOME_PREFIX) {
                if let Some(end) = rest.find(WELCOME_END) {
                    self.registered = true;
                    return LineKind::Welcome {
                        nick: rest[..end].to_owned(),
                    };
                }
            }
        }
        if text.starts_with("error: ") {
            return LineKind::Error;
        }
        if let Some(rest) = text.strip_prefix("*** ") {
            if let Some((old, new)) = rest.split_once(RENAME_MIDDLE) {
                // Nicknames never contain spaces, so anything else is some other notice.
                if !old.contains(' ') && !new.contains(' ') {
                    return LineKind::NickChanged {
                        old: old.to_owned(),
                        new: new.to_owned(),
                    };
                }
            }
        }
        LineKind::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> ServerEvent {
        ServerEvent::Line {
            text: text.into(),
            kind: LineKind::Plain,
        }
    }

    /// Feed `input` whole, then split at every byte and as single bytes, and check all
    /// three give the same events.
    fn parse_every_split(input: &[u8]) -> Vec<ServerEvent> {
        let whole = {
            let mut parser = ServerParser::new();
            let mut out = Vec::new();
            parser.push(input, &mut out);
            parser.finish(&mut out);
            out
        };
        for split in 0..=input.len() {
            let mut parser = ServerParser::new();
            let mut out = Vec::new();
            parser.push(&input[..split], &mut out);
            parser.push(&input[split..], &mut out);
            parser.finish(&mut out);
            assert_eq!(out, whole, "split at {split}");
        }
        let mut parser = ServerParser::new();
        let mut out = Vec::new();
        for byte in input {
            parser.push(std::slice::from_ref(byte), &mut out);
        }
        parser.finish(&mut out);
        assert_eq!(out, whole, "byte at a time");
        whole
    }

    #[test]
    fn registration_conversation() {
        let input = b"Enter your name: error: cannot use that name: the name is already in use\n\
Enter your name: *** welcome, bob! you are client 7; /help lists the commands\n\
*** bob joined #general\n[alice] hi bob\n";
        assert_eq!(
            parse_every_split(input),
            vec![
                ServerEvent::NamePrompt,
                ServerEvent::Line {
                    text: "error: cannot use that name: the name is already in use".into(),
                    kind: LineKind::NameRefused {
                        reason: "the name is already in use".into()
                    },
                },
                ServerEvent::NamePrompt,
                ServerEvent::Line {
                    text: "*** welcome, bob! you are client 7; /help lists the commands".into(),
                    kind: LineKind::Welcome { nick: "bob".into() },
                },
                line("*** bob joined #general"),
                line("[alice] hi bob"),
            ]
        );
    }

    #[test]
    fn prompt_text_after_registration_is_an_ordinary_line() {
        let input = b"Enter your name: *** welcome, a! you are client 1; x\nEnter your name: x\n";
        let events = parse_every_split(input);
        assert_eq!(events.last(), Some(&line("Enter your name: x")));
        assert_eq!(
            events
                .iter()
                .filter(|e| **e == ServerEvent::NamePrompt)
                .count(),
            1
        );
    }

    #[test]
    fn a_partial_prompt_at_close_is_not_a_line_but_other_text_is() {
        assert_eq!(parse_every_split(b"Enter your"), vec![]);
        assert_eq!(
            parse_every_split(b"error: server is full"),
            vec![ServerEvent::Line {
                text: "error: server is full".into(),
                kind: LineKind::Error
            }]
        );
    }

    #[test]
    fn register_timeout_goodbye_after_the_prompt() {
        let input = b"Enter your name: \nerror: no name chosen within 30s; goodbye\n";
        assert_eq!(
            parse_every_split(input),
            vec![
                ServerEvent::NamePrompt,
                ServerEvent::Line {
                    text: "error: no name chosen within 30s; goodbye".into(),
                    kind: LineKind::Error
                },
            ]
        );
    }

    #[test]
    fn control_characters_are_neutralised_and_crlf_accepted() {
        let input = "[mallory] \u{1b}[2Jgotcha\u{7}\u{202E}x\tend\r\n[eve] caf\u{e9}\r\n";
        assert_eq!(
            parse_every_split(input.as_bytes()),
            vec![
                line("[mallory] \u{FFFD}[2Jgotcha\u{FFFD}x end"),
                line("[eve] caf\u{e9}"),
            ]
        );
        // Invalid UTF-8 becomes replacement characters, never raw bytes.
        assert_eq!(
            parse_every_split(b"[x] \xff\x1b\n"),
            vec![line("[x] \u{FFFD}\u{FFFD}")]
        );
    }

    #[test]
    fn nick_changes_are_recognised() {
        let events =
            parse_every_split(b"*** bob is now known as robert\n*** a b is now known as c d\n");
        assert_eq!(
            events[0],
            ServerEvent::Line {
                text: "*** bob is now known as robert".into(),
                kind: LineKind::NickChanged {
                    old: "bob".into(),
                    new: "robert".into()
                }
            }
        );
        assert_eq!(events[1], line("*** a b is now known as c d"));
    }

    #[test]
    fn over_long_lines_are_cut_and_the_rest_skipped() {
        let mut input = b"[x] ".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_SERVER_LINE_BYTES * 2));
        input.extend_from_slice(b"\n[y] after\n");
        for chunk_size in [1000, 4096, MAX_SERVER_LINE_BYTES * 3] {
            let mut parser = ServerParser::new();
            let mut out = Vec::new();
            for chunk in input.chunks(chunk_size) {
                parser.push(chunk, &mut out);
            }
            parser.finish(&mut out);
            assert_eq!(out.len(), 2, "chunk size {chunk_size}");
            let ServerEvent::Line { text, .. } = &out[0] else {
                panic!("expected a line");
            };
            assert!(text.ends_with(TRUNCATED_MARK));
            assert!(text.len() <= MAX_SERVER_LINE_BYTES + TRUNCATED_MARK.len());
            assert_eq!(out[1], line("[y] after"));
        }
    }
}
