//! Accepts TCP connections and gives each its own task, within a cap.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::connection::Connection;
use crate::Gateway;

/// Serves connections until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(gateway.config.max_connections));
    let ids = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        // Wait for room first: beyond the cap, clients wait in the accept queue.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = &mut shutdown => return,
        };
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "Accept failed.");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
        let span = tracing::info_span!("connection", id, %peer);
        let gateway = gateway.clone();
        metrics::counter!(crate::metrics::CONNECTIONS_OPENED).increment(1);
        tokio::spawn(
            async move {
                metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).increment(1.0);
                Connection::new(gateway, socket, peer, id).run().await;
                metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).decrement(1.0);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(
    gateway: Arc<Gateway>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(serve(gateway, listener, std::future::pending()));
    Ok((local, handle))
}
