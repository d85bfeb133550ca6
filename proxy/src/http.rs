//! The accept loop and HTTP/1 connection handling shared by the gateway's
//! HTTP listeners (the management API, Prometheus' endpoint). Each request
//! is answered by a handler given the live gateway and the peer; once the
//! gateway is gone, requests get 503 and the loop ends.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::server::AcceptBackoff;
use crate::tls::Tls;
use crate::Gateway;

/// How long an HTTPS client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// What answers a listener's requests.
pub type Handler = Arc<
    dyn Fn(
            Arc<Gateway>,
            SocketAddr,
            Request<hyper::body::Incoming>,
        ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// Binds `address` and serves it in the background with `handler`; None
/// when the address is empty or cannot be bound (logged: AMQP goes on).
pub async fn start(
    gateway: &Arc<Gateway>,
    what: &'static str,
    address: &str,
    handler: Handler,
) -> Option<SocketAddr> {
    start_with_tls(gateway, what, address, handler, None).await
}

/// The same, over HTTPS with `tls` (its settings in force at each accept).
pub async fn start_with_tls(
    gateway: &Arc<Gateway>,
    what: &'static str,
    address: &str,
    handler: Handler,
    tls: Option<Arc<Tls>>,
) -> Option<SocketAddr> {
    let address = address.trim();
    if address.is_empty() {
        return None;
    }
    let listener = match TcpListener::bind(address).await {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%address, %error, listener = what, "HTTP listener not started: cannot listen.");
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    let https = tls.is_some();
    tokio::spawn(serve(Arc::downgrade(gateway), listener, what, handler, tls));
    tracing::info!(address = %bound, listener = what, https, "HTTP listening.");
    Some(bound)
}

async fn serve(
    gateway: Weak<Gateway>,
    listener: TcpListener,
    what: &'static str,
    handler: Handler,
    tls: Option<Arc<Tls>>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                backoff.failed(what, &error).await;
                continue;
            }
        };
        backoff.succeeded();
        if gateway.strong_count() == 0 {
            return;
        }
        let (gateway, handler) = (gateway.clone(), handler.clone());
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (gateway, handler) = (gateway.upgrade(), handler.clone());
                async move {
                    Ok::<_, Infallible>(match gateway {
                        Some(gateway) => handler(gateway, peer, request).await,
                        None => unavailable(),
                    })
                }
            });
            let served = match acceptor {
                None => {
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, listener = what, "HTTPS handshake failed.");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, listener = what, "HTTP connection ended with an error.");
            }
        });
    }
}

fn unavailable() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        br#"{"error":"unavailable","reason":"the gateway is shutting down"}"#,
    )));
    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    response
}
