//! The bytes under a connection: plain TCP or TLS over it, read and written
//! from one task through two halves.
//!
//! TLS keeps ciphertext of its own: a write may leave some in the session
//! when the socket is full. `Writer::unflushed` says so, and the connection
//! keeps flushing until it is out, even with nothing new to write.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::PeerIdentity;

/// A connection's socket, split, with what TLS said about the client.
pub struct Transport {
    pub reader: Reader,
    pub writer: Writer,
    /// The address the client connected to.
    pub local: Option<SocketAddr>,
    /// The client's verified certificate, if it showed one (TLS only).
    pub peer_identity: Option<PeerIdentity>,
}

impl Transport {
    pub fn plain(socket: TcpStream) -> Transport {
        let _ = socket.set_nodelay(true);
        let local = socket.local_addr().ok();
        let (reader, writer) = socket.into_split();
        Transport {
            reader: Reader::Plain(reader),
            writer: Writer::Plain(writer),
            local,
            peer_identity: None,
        }
    }

    /// A TLS stream whose handshake is done.
    pub fn tls(stream: TlsStream<TcpStream>) -> Transport {
        let (socket, session) = stream.get_ref();
        let _ = socket.set_nodelay(true);
        let local = socket.local_addr().ok();
        let peer_identity = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(crate::tls::identity);
        let (reader, writer) = tokio::io::split(stream);
        Transport {
            reader: Reader::Tls(reader),
            writer: Writer::Tls {
                half: writer,
                unflushed: false,
            },
            local,
            peer_identity,
        }
    }
}

pub enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

pub enum Writer {
    Plain(OwnedWriteHalf),
    Tls {
        half: WriteHalf<TlsStream<TcpStream>>,
        /// Ciphertext may be waiting in the session for room in the socket.
        unflushed: bool,
    },
}

impl Writer {
    /// Writes what the socket takes now; `WouldBlock` if it takes nothing.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Writer::Plain(w) => w.try_write(buf),
            Writer::Tls { .. } => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match Pin::new(self).poll_write(&mut cx, buf) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// TLS ciphertext is still waiting to go out.
    pub fn unflushed(&self) -> bool {
        matches!(
            self,
            Writer::Tls {
                unflushed: true,
                ..
            }
        )
    }

    /// Writes some of `buf`, or with `buf` empty pushes out what TLS holds
    /// (then 0).
    pub async fn write_or_flush(&mut self, buf: &[u8]) -> io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        if buf.is_empty() {
            self.flush().await?;
            return Ok(0);
        }
        self.write(buf).await
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls { half, unflushed } => {
                let written = Pin::new(&mut *half).poll_write(cx, buf);
                if let Poll::Ready(Ok(_)) = written {
                    *unflushed = !matches!(Pin::new(half).poll_flush(cx), Poll::Ready(Ok(())));
                }
                written
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls { half, unflushed } => {
                let flushed = Pin::new(half).poll_flush(cx);
                if let Poll::Ready(Ok(())) = flushed {
                    *unflushed = false;
                }
                flushed
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls { half, .. } => Pin::new(half).poll_shutdown(cx),
        }
    }
}
