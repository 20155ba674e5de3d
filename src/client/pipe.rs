//! Pipe mode (stdin is not a terminal): read lines from stdin, print what arrives on
//! stdout, one line each, and the client's own notices on stderr, so scripts can both
//! pipe into the client and parse its output.

use std::io::Write as _;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::UserInput;

/// Longest stdin line passed on; longer ones are dropped with a notice (the server
/// would refuse them anyway).
pub const MAX_STDIN_LINE_BYTES: usize = 64 * 1024;

pub struct PipeUi {
    lines: mpsc::Receiver<StdinLine>,
    stdin_done: bool,
}

enum StdinLine {
    Line(String),
    TooLong,
    End,
}

impl PipeUi {
    pub fn start() -> Self {
        // A small queue: stdin is read only as fast as lines are sent.
        let (sender, lines) = mpsc::channel(8);
        tokio::spawn(read_lines(tokio::io::stdin(), sender));
        PipeUi {
            lines,
            stdin_done: false,
        }
    }

    /// The next stdin line, or Quit at end of input. Cancel-safe.
    pub async fn next_input(&mut self) -> UserInput {
        loop {
            if self.stdin_done {
                return UserInput::Quit;
            }
            match self.lines.recv().await {
                Some(StdinLine::Line(line)) => return UserInput::Line(line),
                Some(StdinLine::TooLong) => self.notice(&format!(
                    "*** input line longer than {MAX_STDIN_LINE_BYTES} bytes was not sent"
                )),
                Some(StdinLine::End) | None => self.stdin_done = true,
            }
        }
    }

    /// One server line to stdout.
    pub fn show(&mut self, line: &str) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()
    }

    /// The client's own remarks go to stderr, out of the way of scripts reading stdout.
    pub fn notice(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// Read `\n`-terminated lines (a trailing `\r` removed, invalid UTF-8 replaced) until
/// end of input or until the receiver is gone.
async fn read_lines<R: AsyncRead + Unpin>(mut input: R, sender: mpsc::Sender<StdinLine>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut discarding = false;
    let mut chunk = vec![0u8; 8192];
    loop {
        let read = match input.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut data = &chunk[..read];
        while let Some(newline) = memchr::memchr(b'\n', data) {
            let (head, rest) = (&data[..newline], &data[newline + 1..]);
            data = rest;
            if discarding {
                discarding = false;
                continue;
            }
            pending.extend_from_slice(head);
            let message = if pending.len() > MAX_STDIN_LINE_BYTES {
                StdinLine::TooLong
            } else {
                StdinLine::Line(decode_line(&pending))
            };
            pending.clear();
            if sender.send(message).await.is_err() {
                return;
            }
        }
        if !discarding {
            pending.extend_from_slice(data);
            if pending.len() > MAX_STDIN_LINE_BYTES {
                pending.clear();
                discarding = true;
                if sender.send(StdinLine::TooLong).await.is_err() {
                    return;
                }
            }
        }
    }
    if !pending.is_empty() && !discarding {
        let _ = sender.send(StdinLine::Line(decode_line(&pending))).await;
    }
    let _ = sender.send(StdinLine::End).await;
}

fn decode_line(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<Option<String>> {
        let (sender, mut receiver) = mpsc::channel(4);
        let input = input.to_vec();
        tokio::spawn(async move { read_lines(&input[..], sender).await });
        let mut out = Vec::new();
        while let Some(line) = receiver.recv().await {
            match line {
                StdinLine::Line(line) => out.push(Some(line)),
                StdinLine::TooLong => out.push(None),
                StdinLine::End => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_last_unterminated_one() {
        assert_eq!(
            lines_of(b"one\r\ntwo\n\nthree").await,
            vec![
                Some("one".into()),
                Some("two".into()),
                Some(String::new()),
                Some("three".into())
            ]
        );
        assert_eq!(lines_of(b"").await, Vec::<Option<String>>::new());
    }

    #[tokio::test]
    async fn over_long_lines_are_reported_not_sent() {
        let mut input = vec![b'x'; MAX_STDIN_LINE_BYTES * 2 + 10];
        input.extend_from_slice(b"\nnext\n");
        assert_eq!(lines_of(&input).await, vec![None, Some("next".into())]);
    }
}
