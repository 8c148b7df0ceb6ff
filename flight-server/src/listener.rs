//! The listening socket, bounded: at most `--max-clients` connections at
//! once.
//!
//! Every accepted connection holds a permit until it closes. Past the cap a
//! new connection is accepted and closed at once (the client sees a reset
//! right away instead of hanging in the kernel's backlog), and a warning
//! says so — at most once a second, so a flood does not flood the log too.
//! Idle connections do not hold permits forever: HTTP/2 keepalive pings
//! (see [`crate::server`]) close connections whose peer stopped answering,
//! and the TLS handshake has a deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Default `--max-clients`: client connections served at once.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// How often TCP keepalive probes an idle connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A client connection holding one of the listener's permits.
#[derive(Debug)]
pub struct Capped {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections `listener` accepts, at most `max` open at once.
pub fn capped(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<Capped>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max.max(1)));
    let mut last_warning: Option<Instant> = None;
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
        .filter_map(move |accepted| {
            let out = match accepted {
                Err(e) => Some(Err(e)),
                Ok(stream) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => Some(Ok(Capped {
                        stream,
                        _permit: permit,
                    })),
                    Err(_) => {
                        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            last_warning = Some(Instant::now());
                            tracing::warn!(
                                peer = ?stream.peer_addr().ok(),
                                max,
                                "refused a connection: --max-clients connections are open"
                            );
                        }
                        None
                    }
                },
            };
            std::future::ready(out)
        })
}
