//! `/api/health/checks/*` as RabbitMQ answers them: 200 `{"status":"ok"}`
//! or 503 `{"status":"failed","reason":…}`. The gateway's alarm is its meta
//! store: unreachable, it serves the last topology and refuses changes.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::api::{Call, Reply};

pub(super) fn check(c: &Call<'_>, check: &[&str]) -> Reply {
    let gateway = c.gateway;
    let meta_ok = gateway.meta_healthy.load(Ordering::Acquire);
    let failed =
        |reason: &str| Reply::error_status(503, json!({"status": "failed", "reason": reason}));
    let ok = || Reply::ok(json!({"status": "ok"}));
    match check {
        ["alarms"] | ["local-alarms"] | ["virtual-hosts"] => {
            if meta_ok {
                ok()
            } else {
                failed("the meta store is unreachable: serving the last topology, changes refused")
            }
        }
        ["port-listener", port] => {
            let ours = listening_ports(c);
            match port.parse::<u16>() {
                Ok(p) if ours.contains(&p) => ok(),
                _ => Reply::error_status(
                    503,
                    json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ours}),
                ),
            }
        }
        ["protocol-listener", protocol] => match *protocol {
            "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1" | "http" => ok(),
            "prometheus" if !gateway.config.prometheus_listen.trim().is_empty() => ok(),
            other => failed(&format!("no active listener for protocol {other}")),
        },
        // No TLS listener, no quorum or mirrored queues: nothing can be
        // about to expire or lose its quorum.
        ["certificate-expiration", _, _]
        | ["node-is-quorum-critical"]
        | ["node-is-mirror-sync-critical"] => ok(),
        _ => Reply::not_found(),
    }
}

/// The ports this gateway serves: AMQP, and the HTTP listeners.
fn listening_ports(c: &Call<'_>) -> Vec<u16> {
    let config = &c.gateway.config;
    let amqp = c
        .gateway
        .amqp_address
        .get()
        .copied()
        .unwrap_or(config.listen);
    let mut ports = vec![amqp.port()];
    let http = [
        c.gateway
            .management_address
            .get()
            .cloned()
            .unwrap_or_default(),
        config.prometheus_listen.clone(),
    ];
    ports.extend(
        http.iter()
            .filter_map(|a| a.rsplit(':').next()?.parse::<u16>().ok())
            .filter(|p| *p != 0),
    );
    ports
}
