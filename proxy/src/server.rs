//! Accepts TCP connections and gives each its own task, within a cap; shuts
//! the gateway down gracefully when told to.
//!
//! Beyond the cap a client is still accepted, but only to be told why it is
//! refused (connection.close 530 at connection.open); a second, small cap
//! bounds those refusals, past which sockets are closed at once. A failing
//! accept (out of file descriptors) waits before the next try instead of
//! spinning, and says so once per interval.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::connection::transport::Transport;
use crate::connection::Connection;
use crate::logging::{Throttle, LOG_INTERVAL};
use crate::tls::Tls;
use crate::Gateway;

/// Clients being told that the gateway is full, at most.
const MAX_REFUSING: usize = 64;

/// The sockets clients connect to.
pub struct Listeners {
    pub amqp: TcpListener,
    /// AMQP over TLS, with the TLS settings in force.
    pub amqps: Option<(TcpListener, Arc<Tls>)>,
}

/// Serves plain AMQP connections until `shutdown` resolves, then shuts
/// down (see `shut_down`).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let listeners = Listeners {
        amqp: listener,
        amqps: None,
    };
    serve_all(gateway, listeners, shutdown).await;
}

/// Serves connections on every listener until `shutdown` resolves, then
/// shuts down. Plain and TLS connections count against one
/// `max_connections`.
pub async fn serve_all(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let Listeners {
        amqp: listener,
        amqps,
    } = listeners;
    if let Ok(bound) = listener.local_addr() {
        let _ = gateway.amqp_address.set(bound);
    }
    let limit = Arc::new(Semaphore::new(gateway.config.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let ids = AtomicU64::new(0);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer, tls) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => (socket, peer, None),
                Err(error) => {
                    backoff.failed("AMQP", &error).await;
                    continue;
                }
            },
            accepted = accept_tls(amqps.as_ref()) => match accepted {
                Ok((socket, peer, acceptor)) => (socket, peer, Some(acceptor)),
                Err(error) => {
                    backoff.failed("AMQPS", &error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        backoff.succeeded();
        let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                spawn_connection(&gateway, socket, peer, tls, id, permit, false);
            }
            Err(_) => {
                static FULL: Throttle = Throttle::new(LOG_INTERVAL);
                if let Some(more) = FULL.admit() {
                    tracing::warn!(%peer, max_connections = gateway.config.max_connections, more_since_last_line = more, "Connection limit reached; refusing new clients with connection.close 530.");
                }
                crate::metrics::CONNECTIONS_REFUSED.increment(1);
                // Past the refusal cap the socket just closes.
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    spawn_connection(&gateway, socket, peer, tls, id, permit, true);
                }
            }
        }
    }
    drop(listener);
    shut_down(&gateway, &limit).await;
}

/// How long connections get to settle their publishes and close, beyond
/// the send timeout of a publish in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long feeds get to commit and give their leases back.
const FEEDS_GRACE: Duration = Duration::from_secs(5);

/// Graceful shutdown, with the listener closed: every connection settles
/// its publishes in flight (their confirms go out), is closed with 320
/// CONNECTION_FORCED, requeues what it had unacked and deletes its
/// exclusive queues; then every feed commits what is settled and gives its
/// read leases back, so another gateway reads on at once; then deleted
/// queues' topics still being deleted in RocketMQ are waited for. Each step has a
/// bounded wait; what does not finish in time is logged.
async fn shut_down(gateway: &Gateway, connections: &Semaphore) {
    let max = gateway.config.max_connections.min(u32::MAX as usize) as u32;
    let open = max as usize - connections.available_permits();
    tracing::info!(open, "Shutting down: closing every connection with 320.");
    gateway.stopping.send_replace(true);
    let within = Duration::from_millis(gateway.config.send_timeout_ms) + CLOSE_GRACE;
    if tokio::time::timeout(within, connections.acquire_many(max))
        .await
        .is_err()
    {
        let left = max as usize - connections.available_permits();
        tracing::warn!(
            left,
            "Connections still open after the shutdown grace period; ending them."
        );
    }
    if tokio::time::timeout(FEEDS_GRACE, gateway.feeds.drain())
        .await
        .is_err()
    {
        tracing::warn!("Feeds did not all commit within the shutdown grace period; their readers start from the last commit.");
    }
    if tokio::time::timeout(FEEDS_GRACE, gateway.reclaims.drain())
        .await
        .is_err()
    {
        tracing::warn!("Deleted queues' RocketMQ topics still being deleted at shutdown; those left stay in RocketMQ.");
    }
}

/// The next TLS client with the acceptor of the settings in force; never
/// without a TLS listener.
async fn accept_tls(
    amqps: Option<&(TcpListener, Arc<Tls>)>,
) -> std::io::Result<(TcpStream, SocketAddr, TlsAcceptor)> {
    let Some((listener, tls)) = amqps else {
        return std::future::pending().await;
    };
    let (socket, peer) = listener.accept().await?;
    Ok((socket, peer, tls.acceptor()))
}

/// How long a client gets to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS session over `socket`, or None (logged) if the handshake fails.
async fn handshake(socket: TcpStream, acceptor: TlsAcceptor) -> Option<Transport> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Some(Transport::tls(stream)),
        Ok(Err(error)) => {
            crate::metrics::TLS_HANDSHAKES_FAILED.increment(1);
            tracing::info!(%error, "TLS handshake failed.");
            None
        }
        Err(_) => {
            crate::metrics::TLS_HANDSHAKES_FAILED.increment(1);
            tracing::info!("TLS handshake not finished within 10 s; closed.");
            None
        }
    }
}

fn spawn_connection(
    gateway: &Arc<Gateway>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    id: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
    over_limit: bool,
) {
    let span = tracing::info_span!("connection", id, %peer);
    let gateway = gateway.clone();
    if !over_limit {
        crate::metrics::CONNECTIONS_OPENED.increment(1);
    }
    tokio::spawn(
        async move {
            let transport = match tls {
                None => Transport::plain(socket),
                Some(acceptor) => match handshake(socket, acceptor).await {
                    Some(transport) => transport,
                    None => return drop(permit),
                },
            };
            let connection = Connection::new(gateway, transport, peer, id);
            if over_limit {
                connection.over_limit().run().await;
            } else {
                crate::metrics::CONNECTIONS_OPEN.add(1);
                connection.run().await;
                crate::metrics::CONNECTIONS_OPEN.add(-1);
                crate::metrics::CONNECTIONS_CLOSED.increment(1);
            }
            drop(permit);
        }
        .instrument(span),
    );
}

/// Waits after failed accepts, longer each time up to a second (as
/// mini-redis's listener does), and logs once per interval.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_secs(1);

    pub async fn failed(&mut self, listener: &'static str, error: &std::io::Error) {
        static FAILED: Throttle = Throttle::new(LOG_INTERVAL);
        self.delay = self.next();
        if let Some(more) = FAILED.admit() {
            tracing::warn!(listener, %error, retry_in_ms = self.delay.as_millis() as u64, more_since_last_line = more, "Accept failed (out of file descriptors?); waiting before the next try.");
        }
        tokio::time::sleep(self.delay).await;
    }

    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// The wait after one more failure.
    fn next(&self) -> Duration {
        (self.delay * 2).clamp(Self::FIRST, Self::MOST)
    }
}

/// Binds `amqp` and, with TLS configured and `tls_listen` set, the amqps
/// listener (its bound address in `Gateway::amqps_address`).
pub async fn bind(gateway: &Gateway, amqp: SocketAddr) -> std::io::Result<Listeners> {
    let listener = TcpListener::bind(amqp).await?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "Listening for AMQP clients.");
    gateway.take_seat(bound).await;
    let amqps = match &gateway.tls {
        Some(tls) if !gateway.config.tls_listen.is_empty() => {
            let tls_listener = TcpListener::bind(gateway.config.tls_listen.as_str()).await?;
            let bound = tls_listener.local_addr()?;
            let _ = gateway.amqps_address.set(bound);
            tracing::info!(address = %bound, "Listening for AMQP clients over TLS.");
            Some((tls_listener, tls.clone()))
        }
        _ => None,
    };
    Ok(Listeners {
        amqp: listener,
        amqps,
    })
}

/// Binds `addr` (and the amqps listener: `bind`) and serves in the
/// background; returns the bound AMQP address.
pub async fn spawn(
    gateway: Arc<Gateway>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listeners = bind(&gateway, addr).await?;
    let local = listeners.amqp.local_addr()?;
    let handle = tokio::spawn(serve_all(gateway, listeners, std::future::pending()));
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_wait_longer_each_time_up_to_a_second() {
        let mut b = AcceptBackoff::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            b.delay = b.next();
            waits.push(b.delay.as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.next().as_millis(), 10);
    }
}
