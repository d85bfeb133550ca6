//! The Prometheus endpoint (`prometheus_listen`, RabbitMQ's 15692):
//! `/metrics` aggregated as RabbitMQ's plugin gives it by default,
//! `/metrics/per-object` with a series per queue, and `/health` for load
//! balancers (the same answer as the health listener).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use crate::http::Body;
use crate::Gateway;

pub async fn start(gateway: &Arc<Gateway>) -> Option<SocketAddr> {
    let address = gateway.config.prometheus_listen.clone();
    let handler: crate::http::Handler = Arc::new(|gateway, _peer, request| {
        Box::pin(async move { answer(&gateway, request).await })
    });
    crate::http::start(gateway, "prometheus", &address, handler).await
}

async fn answer(gateway: &Gateway, request: Request<hyper::body::Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => exposition(super::rabbitmq::render(gateway, false).await),
        "/metrics/per-object" => exposition(super::rabbitmq::render(gateway, true).await),
        "/health" => {
            let (code, body) = crate::health::report(gateway);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            reply(status, "application/json", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /metrics/per-object or /health\n".into(),
        ),
    }
}

fn exposition(text: String) -> Response<Body> {
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
