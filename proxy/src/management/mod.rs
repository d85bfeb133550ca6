//! RabbitMQ's management HTTP API, served by the gateway (`management_listen`,
//! default 127.0.0.1:15672), for `rabbitmqadmin`, client libraries and
//! monitoring tools. It changes topology through the registry, exactly as
//! AMQP does. The path of a request: `auth` (HTTP basic against the meta
//! store's users, their tags), `api` (routing and answers), `json` (objects in
//! RabbitMQ's shapes).

mod api;
mod auth;
mod connections;
mod exchanges;
mod json;
mod queues;
mod users;

use std::sync::Arc;

use crate::Gateway;

/// This gateway's node name, as the API and the metrics give it.
pub fn node_name(gateway: &Gateway) -> String {
    json::node(gateway)
}

/// Binds `management_listen` and serves in the background; None when it is
/// empty. A port in use is logged and AMQP goes on without the API.
pub async fn start(gateway: &Arc<Gateway>) -> Option<std::net::SocketAddr> {
    let address = gateway.config.management_listen.clone();
    let handler: crate::http::Handler = Arc::new(|gateway, peer, request| {
        Box::pin(async move { api::answer(&gateway, peer, request).await.into_response() })
    });
    crate::http::start(gateway, "management", &address, handler).await
}
