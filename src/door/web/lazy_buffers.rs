//! Read and write buffering for web connections that costs nothing while idle.
//!
//! tungstenite keeps a read buffer of `read_buffer_size` for the life of a WebSocket,
//! and its write buffer keeps the capacity of the largest batch it ever held. With
//! tens of thousands of idle sockets that dominates the server's memory. So the web
//! door gives tungstenite tiny buffers (a small read size, no write batching) and
//! does the batching here instead, in buffers that exist only while they hold bytes:
//! - reads go into a stack buffer; what the caller has no room for is kept on the
//!   heap until taken, then freed;
//! - small writes are gathered (up to [`WRITE_BATCH_BYTES`]) and go out on flush or
//!   when the batch is full; the batch is freed once written. Large writes (hyper's
//!   already-buffered responses) pass straight through when nothing is waiting.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One socket read takes up to this much (on the stack).
pub const READ_CHUNK_BYTES: usize = 8 * 1024;
/// Small writes are gathered up to this much before going to the socket.
pub const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// A byte stream with lazily allocated read and write buffers.
pub struct LazyBuffers<S> {
    inner: S,
    /// Bytes read but not yet taken, from `unread_start`; empty (unallocated) when idle.
    unread: Vec<u8>,
    unread_start: usize,
    /// Bytes accepted but not yet written, from `unwritten_start`; empty when idle.
    unwritten: Vec<u8>,
    unwritten_start: usize,
}

impl<S> LazyBuffers<S> {
    pub fn new(inner: S) -> Self {
        LazyBuffers {
            inner,
            unread: Vec::new(),
            unread_start: 0,
            unwritten: Vec::new(),
            unwritten_start: 0,
        }
    }

    /// Bytes held in either buffer (for tests).
    #[cfg(test)]
    fn buffered(&self) -> (usize, usize) {
        (self.unread.capacity(), self.unwritten.capacity())
    }
}

impl<S: AsyncWrite + Unpin> LazyBuffers<S> {
    /// Write out everything gathered; frees the batch once it is all out.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unwritten_start < self.unwritten.len() {
            let pending = &self.unwritten[self.unwritten_start..];
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unwritten_start += written;
        }
        self.unwritten = Vec::new();
        self.unwritten_start = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LazyBuffers<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.unread_start < this.unread.len() {
            let unread = &this.unread[this.unread_start..];
            let taken = unread.len().min(buf.remaining());
            buf.put_slice(&unread[..taken]);
            this.unread_start += taken;
            if this.unread_start == this.unread.len() {
                this.unread = Vec::new();
                this.unread_start = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK_BYTES {
            // The caller has a big buffer of its own: no copy.
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // Uninitialised: zeroing the chunk on every poll costs more than the read.
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
        let mut chunk = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        let taken = read.len().min(buf.remaining());
        buf.put_slice(&read[..taken]);
        if taken < read.len() {
            this.unread = read[taken..].to_vec();
            this.unread_start = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LazyBuffers<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.unwritten.len() + data.len() > WRITE_BATCH_BYTES {
            // No room: the batch goes first (waiting for the socket if it must).
            ready!(this.poll_write_batch(cx))?;
        }
        if this.unwritten.is_empty() && data.len() >= WRITE_BATCH_BYTES {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.unwritten.is_empty() {
            this.unwritten
                .reserve_exact(WRITE_BATCH_BYTES.min(data.len() * 4));
        }
        this.unwritten.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_write_batch(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_write_batch(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_take_a_big_chunk_piece_by_piece_then_free_it() {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        let mut far = LazyBuffers::new(far);
        let sent: Vec<u8> = (0..3000u32).map(|n| n as u8).collect();
        near.write_all(&sent).await.unwrap();
        let mut received = Vec::new();
        let mut piece = [0u8; 7];
        while received.len() < sent.len() {
            let read = far.read(&mut piece).await.unwrap();
            assert!(read > 0);
            received.extend_from_slice(&piece[..read]);
        }
        assert_eq!(received, sent);
        assert_eq!(far.buffered(), (0, 0), "nothing held once all is taken");
    }

    #[tokio::test]
    async fn a_read_with_no_room_takes_nothing_from_the_socket() {
        let (mut near, far) = tokio::io::duplex(1024);
        let mut far = LazyBuffers::new(far);
        near.write_all(b"kept").await.unwrap();
        assert_eq!(far.read(&mut []).await.unwrap(), 0);
        assert_eq!(far.buffered(), (0, 0));
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"kept");
    }

    #[tokio::test]
    async fn small_writes_wait_for_flush_and_the_batch_is_freed() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut near = LazyBuffers::new(near);
        near.write_all(b"one ").await.unwrap();
        near.write_all(b"two").await.unwrap();
        assert!(near.buffered().1 > 0, "small writes are gathered");
        near.flush().await.unwrap();
        assert_eq!(near.buffered(), (0, 0));
        let mut got = [0u8; 7];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
    }

    #[tokio::test]
    async fn a_full_batch_waits_for_a_slow_reader_and_nothing_is_lost() {
        // The pipe holds less than two batches: writing must wait for the reader.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut near = LazyBuffers::new(near);
        let sent: Vec<u8> = (0..100_000u32).map(|n| (n % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for piece in sent.chunks(100) {
                    near.write_all(piece).await.unwrap();
                }
                near.shutdown().await.unwrap();
                near.buffered()
            })
        };
        let mut received = Vec::new();
        far.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, sent);
        assert_eq!(writer.await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn large_writes_pass_straight_through() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut near = LazyBuffers::new(near);
        let big = vec![7u8; WRITE_BATCH_BYTES];
        let written = near.write(&big).await.unwrap();
        assert!(written > 0);
        assert_eq!(near.buffered().1, 0, "not copied into a batch");
        let mut got = vec![0u8; written];
        far.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&byte| byte == 7));
    }
}
