//! RabbitMQ's management HTTP API, served by the gateway (`management_listen`,
//! default 127.0.0.1:15672), for `rabbitmqadmin`, client libraries and
//! monitoring tools. It changes topology through the registry, exactly as
//! AMQP does. The path of a request: `auth` (HTTP basic against the meta
//! store's users, their tags), `api` (routing and answers), `json` (objects in
//! RabbitMQ's shapes).

mod api;
mod auth;
mod exchanges;
mod json;
mod queues;
mod users;

use std::convert::Infallible;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::server::AcceptBackoff;
use crate::Gateway;

/// Binds `management_listen` and serves in the background; None when it is
/// empty. A port in use is logged and AMQP goes on without the API.
pub async fn start(gateway: &Arc<Gateway>) -> Option<std::net::SocketAddr> {
    let address = gateway.config.management_listen.trim();
    if address.is_empty() {
        return None;
    }
    let listener = match TcpListener::bind(address).await {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%address, %error, "Management API not started: cannot listen (set management_listen).");
            return None;
        }
    };
    let bound = listener.local_addr().ok()?;
    tokio::spawn(serve(Arc::downgrade(gateway), listener));
    tracing::info!(address = %bound, "Management API listening (RabbitMQ's HTTP API).");
    Some(bound)
}

async fn serve(gateway: Weak<Gateway>, listener: TcpListener) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                backoff.failed("management", &error).await;
                continue;
            }
        };
        backoff.succeeded();
        if gateway.strong_count() == 0 {
            return;
        }
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(gateway.clone(), peer, request));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                tracing::debug!(%error, "Management API connection ended with an error.");
            }
        });
    }
}

async fn answer(
    gateway: Weak<Gateway>,
    peer: std::net::SocketAddr,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = match gateway.upgrade() {
        Some(gateway) => api::answer(&gateway, peer, request).await,
        None => api::Reply::error(503, "unavailable", "the gateway is shutting down"),
    };
    Ok(reply.into_response())
}
