//! `GET /health` over plain HTTP, for load balancers and Kubernetes probes:
//! 200 and `"status":"ok"` when the meta store answers, 503 and
//! `"status":"degraded"` while the gateway serves with its last topology
//! and refuses changes. Hand-written: one fixed answer does not need an
//! HTTP stack (the management API will bring one).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Gateway;

/// The status line and JSON body for the gateway's current state.
pub fn report(gateway: &Gateway) -> (u16, String) {
    if gateway.meta_healthy.load(Ordering::Acquire) {
        (200, r#"{"status":"ok","meta_store":"ok"}"#.to_owned())
    } else {
        (
            503,
            r#"{"status":"degraded","meta_store":"unreachable: serving the last topology, changes refused"}"#
                .to_owned(),
        )
    }
}

/// Answers every request on `listener` with the health report, until the
/// gateway is dropped.
pub async fn serve(gateway: std::sync::Weak<Gateway>, listener: TcpListener) {
    let mut backoff = crate::server::AcceptBackoff::default();
    loop {
        let mut socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                backoff.failed("health", &error).await;
                continue;
            }
        };
        backoff.succeeded();
        let Some(gw) = gateway.upgrade() else { return };
        let (code, body) = report(&gw);
        drop(gw);
        tokio::spawn(async move {
            // Read (and ignore) the request head; the answer does not depend on it.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), socket.read(&mut buf))
                .await;
            let reason = if code == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Binds the configured health address, if any.
pub async fn start(gateway: &Arc<Gateway>) -> std::io::Result<Option<std::net::SocketAddr>> {
    let address = gateway.config.health_listen.trim();
    if address.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(Arc::downgrade(gateway), listener));
    tracing::info!(address = %bound, "Health endpoint listening.");
    Ok(Some(bound))
}
