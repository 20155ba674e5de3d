//! Slowloris defence for the web door: every HTTP request head must arrive whole
//! within a deadline, counted from when the connection opened or the previous head
//! ended. A client that trickles header bytes, or opens a connection and sends
//! nothing, is cut off; once a request asks for a WebSocket upgrade the watch ends
//! (the WebSocket has its own ping/idle rules).
//!
//! It wraps the byte stream below hyper, so it needs no HTTP parsing beyond spotting
//! the blank line that ends a head and the word "websocket" in it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Watches the bytes of request heads, pure: bytes in, "a head ended" out.
#[derive(Debug, Default)]
pub struct HeadScanner {
    /// The last bytes seen, to find "\r\n\r\n" (or "\n\n") and "websocket" across reads.
    recent: u128,
    /// The current head mentions "websocket" (an upgrade request).
    websocket: bool,
}

/// What a chunk of bytes completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Still inside a head (or between requests).
    More,
    /// A head ended.
    HeadEnded,
    /// A head that asks for a WebSocket ended: stop watching.
    Upgraded,
}

impl HeadScanner {
    fn ends_with(&self, pattern: &[u8]) -> bool {
        let mut recent = self.recent;
        for &byte in pattern.iter().rev() {
            if (recent & 0xff) as u8 != byte {
                return false;
            }
            recent >>= 8;
        }
        true
    }

    /// Scan `bytes`; returns the first head end found (the rest of `bytes` after an
    /// upgrade belongs to the WebSocket and is not looked at).
    pub fn scan(&mut self, bytes: &[u8]) -> (Scan, usize) {
        let mut result = Scan::More;
        for (index, &byte) in bytes.iter().enumerate() {
            self.recent = (self.recent << 8) | u128::from(byte.to_ascii_lowercase());
            if self.ends_with(b"websocket") {
                self.websocket = true;
            }
            if self.ends_with(b"\r\n\r\n") || self.ends_with(b"\n\n") {
                self.recent = 0;
                if std::mem::take(&mut self.websocket) {
                    return (Scan::Upgraded, index + 1);
                }
                result = Scan::HeadEnded;
            }
        }
        (result, bytes.len())
    }
}

/// A stream whose reads fail with `TimedOut` once a request head is overdue.
pub struct HeadDeadline<S> {
    inner: S,
    timeout: Duration,
    scanner: HeadScanner,
    /// `None` once the connection has upgraded to a WebSocket.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> HeadDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        HeadDeadline {
            inner,
            timeout,
            scanner: HeadScanner::default(),
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if this.deadline.is_some() {
                let (scan, _) = this.scanner.scan(&buf.filled()[before..]);
                match scan {
                    Scan::More => {}
                    Scan::HeadEnded => {
                        // The next request has as long again, from now.
                        let next = Instant::now() + this.timeout;
                        if let Some(deadline) = &mut this.deadline {
                            deadline.as_mut().reset(next);
                        }
                    }
                    Scan::Upgraded => this.deadline = None,
                }
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(deadline) = &mut this.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not received in time",
                )));
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    const UPGRADE: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";

    #[test]
    fn finds_head_ends_split_at_every_byte() {
        for split in 0..=GET.len() {
            let mut scanner = HeadScanner::default();
            let (first, _) = scanner.scan(&GET[..split]);
            let (second, _) = scanner.scan(&GET[split..]);
            let ended = [first, second].contains(&Scan::HeadEnded);
            assert!(ended, "split at {split}");
        }
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\nHost: x\r\n").0, Scan::More);
    }

    #[test]
    fn an_upgrade_ends_the_watch_before_websocket_bytes() {
        for split in 0..=UPGRADE.len() {
            let mut scanner = HeadScanner::default();
            let (first, used) = scanner.scan(&UPGRADE[..split]);
            let scans = if first == Scan::Upgraded {
                assert_eq!(used, UPGRADE.len() - 7);
                vec![first]
            } else {
                vec![first, scanner.scan(&UPGRADE[split..]).0]
            };
            assert!(
                scans.contains(&Scan::Upgraded),
                "split at {split}: {scans:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_trickled_head_times_out_and_a_prompt_one_does_not() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut watched = HeadDeadline::new(ours, Duration::from_millis(300));
        theirs.write_all(GET).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(watched.read(&mut buf).await.unwrap(), GET.len());
        // Now a slow second request: a header byte every 50 ms, for up to 2 s.
        let trickle = tokio::spawn(async move {
            for _ in 0..40 {
                if theirs.write_all(b"X").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut outcome = Ok(1);
        while let Ok(n) = outcome {
            assert!(n > 0);
            outcome = watched.read(&mut buf).await;
        }
        assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::TimedOut);
        trickle.abort();
    }

    #[tokio::test]
    async fn an_upgraded_connection_may_stay_quiet() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut watched = HeadDeadline::new(ours, Duration::from_millis(100));
        theirs.write_all(UPGRADE).await.unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(watched.read(&mut buf).await.unwrap(), UPGRADE.len());
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            theirs.write_all(b"later").await.unwrap();
            theirs
        });
        // The read waits past the head timeout without failing.
        assert_eq!(watched.read(&mut buf).await.unwrap(), 5);
        drop(later.await.unwrap());
    }
}
