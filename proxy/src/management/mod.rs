//! RabbitMQ's management HTTP API, served by the gateway (`management_listen`,
//! default 127.0.0.1:15672), for `rabbitmqadmin`, client libraries and
//! monitoring tools. It changes topology through the registry, exactly as
//! AMQP does. The path of a request: `auth` (HTTP basic against the meta
//! store's users, their tags), `api` (routing and answers), `json` (objects in
//! RabbitMQ's shapes). `/` serves a small page (page.html) on top of the API.

mod api;
mod auth;
mod bindings;
mod connections;
mod definitions;
mod exchanges;
mod health;
mod json;
mod limits;
mod listing;
mod messages;
mod peers;
mod queues;
mod users;

use std::sync::Arc;

use crate::Gateway;

/// The management page (page.html): static, its data from the API with the
/// user's credentials. Not framed by other sites (its buttons delete).
fn page() -> hyper::Response<crate::http::Body> {
    let mut response = hyper::Response::new(crate::http::Body::from(include_str!("page.html")));
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, hyper::header::HeaderValue::from_static(value));
    }
    response
}

/// This gateway's node name, as the API and the metrics give it.
pub fn node_name(gateway: &Gateway) -> String {
    json::node(gateway)
}

/// Binds `management_listen` and serves in the background; None when it is
/// empty. A port in use is logged and AMQP goes on without the API.
pub async fn start(gateway: &Arc<Gateway>) -> Option<std::net::SocketAddr> {
    let address = gateway.config.management_listen.clone();
    let handler: crate::http::Handler = Arc::new(|gateway, peer, request| {
        Box::pin(async move {
            match request.uri().path() {
                "/" | "/index.html" => page(),
                _ => api::answer(&gateway, peer, request).await.into_response(),
            }
        })
    });
    let tls = gateway
        .tls
        .clone()
        .filter(|_| gateway.config.management_tls);
    let bound = crate::http::start_with_tls(gateway, "management", &address, handler, tls).await?;
    let advertised = match gateway.config.management_advertise.trim() {
        "" => bound.to_string(),
        other => other.to_owned(),
    };
    if bound.ip().is_unspecified() && gateway.config.management_advertise.trim().is_empty() {
        tracing::warn!(%bound, "The management API listens on a wildcard address; set management_advertise so other gateways can list this one's connections.");
    }
    let _ = gateway.management_address.set(advertised);
    Some(bound)
}
