//! The other gateways behind the same address: listings of connections,
//! channels and consumers cover every live gateway, and a connection held
//! by another gateway is closed there. Each live gateway says in the meta
//! store where its management API answers (its heartbeat); a peer is asked
//! with the caller's own credentials and `?local=true` (answer for
//! yourself only), within two seconds. One that does not answer is left
//! out of the listing, and logged.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::api::Call;

const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the request asks for this gateway's objects only.
pub(super) fn local_only(c: &Call<'_>) -> bool {
    c.query.get("local").is_some_and(|v| v == "true")
}

/// The management API addresses of the other live gateways.
async fn peers(c: &Call<'_>) -> Vec<(String, String)> {
    let now = c.gateway.clock.now_ms();
    match c.gateway.store.live_gateway_addresses(now).await {
        Ok(all) => all
            .into_iter()
            .filter(|(id, address)| *id != c.gateway.instance_id && !address.is_empty())
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "Other gateways unknown (meta store); listing this gateway's objects only.");
            Vec::new()
        }
    }
}

/// The request's own path under /api/, each segment encoded again.
pub(super) fn same_path(c: &Call<'_>) -> String {
    c.path
        .iter()
        .map(|segment| encode(segment))
        .collect::<Vec<_>>()
        .join("/")
}

/// One path segment, percent-encoded.
pub(super) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON arrays every other gateway answers for `path` (under /api/).
pub(super) async fn gather(c: &Call<'_>, path: &str) -> Vec<Value> {
    let asks = peers(c).await.into_iter().map(|(id, address)| async move {
        match ask(c, &address, Method::GET, path).await {
            Ok((200, body)) => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            outcome => {
                tracing::warn!(gateway = %id, %address, ?outcome, %path, "A gateway did not answer for its objects; left out of the listing.");
                Vec::new()
            }
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Sends a DELETE to every other gateway; true when one of them had it.
pub(super) async fn delete_anywhere(c: &Call<'_>, path: &str) -> bool {
    for (_, address) in peers(c).await {
        if let Ok((204, _)) = ask(c, &address, Method::DELETE, path).await {
            return true;
        }
    }
    false
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug, in the log line
enum PeerError {
    Connect(std::io::Error),
    Http(hyper::Error),
    Timeout,
}

/// One request to a peer's API: `path` after /api/, with `local=true`.
async fn ask(
    c: &Call<'_>,
    address: &str,
    method: Method,
    path: &str,
) -> Result<(u16, Bytes), PeerError> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let uri = format!("/api/{path}{sep}local=true");
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, address);
    if let Some(auth) = &c.authorization {
        request = request.header(hyper::header::AUTHORIZATION, auth.as_str());
    }
    if let Some(reason) = &c.reason {
        request = request.header("x-reason", reason.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|_| PeerError::Timeout)?;
    let tls = c
        .gateway
        .tls
        .as_ref()
        .filter(|_| c.gateway.config.management_tls);
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(PeerError::Connect)?;
        match tls {
            None => send(stream, request).await,
            Some(tls) => {
                let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| PeerError::Connect(std::io::Error::other(e)))?;
                let stream = tls
                    .peer_connector()
                    .connect(name, stream)
                    .await
                    .map_err(PeerError::Connect)?;
                send(stream, request).await
            }
        }
    };
    tokio::time::timeout(PEER_TIMEOUT, exchange)
        .await
        .map_err(|_| PeerError::Timeout)?
}

/// Sends `request` over `stream` (HTTP/1.1); the status and body.
async fn send<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<(u16, Bytes), PeerError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(PeerError::Http)?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(PeerError::Http)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(PeerError::Http)?
        .to_bytes();
    Ok((status, body))
}
