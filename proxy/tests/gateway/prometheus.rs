//! The Prometheus endpoint: RabbitMQ's metric names (what its Grafana
//! dashboards query), values that move with AMQP traffic, the identity
//! series the dashboards join on, and per-queue series.

use std::collections::HashMap;
use std::net::SocketAddr;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;

use crate::harness::{unique, TestGateway};
use crate::management::http;

/// Every sample of an exposition: `name{labels}` -> value.
pub async fn scrape(at: SocketAddr, path: &str) -> HashMap<String, f64> {
    let (status, body) = http(at, "GET", path, None, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from the exposition"))
}

#[tokio::test]
async fn metrics_carry_rabbitmqs_names_and_move_with_traffic() {
    let gw = TestGateway::start().await;
    let at = gw.prometheus.expect("the Prometheus endpoint listens");
    let before = scrape(at, "/metrics").await;
    let identity = before
        .keys()
        .find(|k| k.starts_with("rabbitmq_identity_info{"))
        .expect("rabbitmq_identity_info, which the dashboards join on");
    assert!(
        identity.contains("rabbitmq_node=\"amqp-gateway@")
            && identity.contains("rabbitmq_cluster=\"")
    );
    assert_eq!(value(&before, "rabbitmq_connections"), 0.0);

    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let _idle = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("prom");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    for _ in 0..2 {
        let got = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        assert!(got.is_some(), "basic.get finds a message");
    }

    let after = scrape(at, "/metrics").await;
    assert_eq!(value(&after, "rabbitmq_connections"), 1.0);
    assert_eq!(value(&after, "rabbitmq_channels"), 2.0);
    // Counters are the process's: other tests add to them too.
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert!(moved("rabbitmq_global_messages_received_total{protocol=\"amqp091\"}") >= 5.0);
    assert!(moved("rabbitmq_global_messages_confirmed_total{protocol=\"amqp091\"}") >= 5.0);
    assert!(moved("rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}") >= 5.0);
    assert!(
        moved("rabbitmq_global_messages_delivered_get_manual_ack_total{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}")
            >= 2.0
    );
    assert!(moved("rabbitmq_channels_opened_total") >= 2.0);
    assert!(moved("rabbitmq_queues_created_total") >= 1.0);
    assert!(value(&after, "amqp_gateway_rocketmq_send_seconds_count") >= 5.0);
    assert!(value(&after, "rabbitmq_process_open_fds") > 0.0);
    // The follower applies its own declare within its 50 ms poll.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while value(
        &scrape(at, "/metrics").await,
        "amqp_gateway_meta_revisions_behind",
    ) > 0.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let per_queue = scrape(at, "/metrics/per-object").await;
    let of = |family: &str| {
        value(
            &per_queue,
            &format!("{family}{{vhost=\"/\",queue=\"{q}\"}}"),
        )
    };
    assert_eq!(of("rabbitmq_queue_messages_ready"), 3.0);
    assert_eq!(of("rabbitmq_queue_messages_unacked"), 2.0);
    assert_eq!(of("rabbitmq_queue_messages"), 5.0);
    assert_eq!(of("rabbitmq_queue_consumers"), 0.0);
    assert!(
        value(&after, "rabbitmq_queue_messages") >= 5.0,
        "aggregated over every queue"
    );

    let (status, body) = http(at, "GET", "/health", None, "").await;
    assert_eq!((status, body.contains("\"status\":\"ok\"")), (200, true));
    let (status, _) = http(at, "GET", "/nothing", None, "").await;
    assert_eq!(status, 404);
    conn.close(200, "bye".into()).await.unwrap();
}

/// Runs promtool (Debian's prometheus package) on the blocking pool: the
/// gateway answers on this test's runtime. Its status and output.
async fn promtool(args: &[&str], stdin: String) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(crate::harness::repo_root())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs (Debian's prometheus package)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

/// The exposition passes Prometheus' own linter, and the dashboard and
/// alert rules in deploy/ ask only for series the gateway exports.
#[tokio::test]
async fn the_exposition_lints_clean_and_deploys_dashboard_and_rules_use_only_its_series() {
    let gw = TestGateway::start().await;
    let at = gw.prometheus.unwrap();
    let mut families = std::collections::HashSet::new();
    for path in ["/metrics", "/metrics/per-object"] {
        let (status, text) = http(at, "GET", path, None, "").await;
        assert_eq!(status, 200);
        let (ok, lint) = promtool(&["check", "metrics"], text.clone()).await;
        assert!(ok, "promtool check metrics {path}: {lint}");
        families.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .map(str::to_owned),
        );
    }
    for name in RABBITMQ_OVERVIEW {
        assert!(families.contains(*name), "RabbitMQ-Overview queries {name}");
    }
    let (ok, out) = promtool(
        &["check", "rules", "deploy/prometheus/alerts.yml"],
        String::new(),
    )
    .await;
    assert!(ok, "{out}");
    let root = crate::harness::repo_root();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/amqp-gateway.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut asked = 0;
        for name in series_names(&text) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
                .unwrap_or(&name);
            assert!(
                families.contains(family),
                "{file} asks for {name}, which the gateway does not export"
            );
            asked += 1;
        }
        assert!(asked >= 5, "{file} names the gateway's series");
    }
}

/// Every series RabbitMQ's official Grafana dashboard RabbitMQ-Overview
/// (grafana.com 10991) queries, as of RabbitMQ 3.10.8
/// (deps/rabbitmq_prometheus/docker/grafana/dashboards/RabbitMQ-Overview.json
/// at tag v3.10.8, read on 2026-12-07).
const RABBITMQ_OVERVIEW: &[&str] = &[
    "rabbitmq_build_info",
    "rabbitmq_identity_info",
    "rabbitmq_channel_consumers",
    "rabbitmq_channels",
    "rabbitmq_connections",
    "rabbitmq_consumers",
    "rabbitmq_queues",
    "rabbitmq_channels_opened_total",
    "rabbitmq_channels_closed_total",
    "rabbitmq_connections_opened_total",
    "rabbitmq_connections_closed_total",
    "rabbitmq_queues_created_total",
    "rabbitmq_queues_declared_total",
    "rabbitmq_queues_deleted_total",
    "rabbitmq_disk_space_available_bytes",
    "rabbitmq_process_max_fds",
    "rabbitmq_process_open_fds",
    "rabbitmq_process_max_tcp_sockets",
    "rabbitmq_process_open_tcp_sockets",
    "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_resident_memory_limit_bytes",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_global_messages_acknowledged_total",
    "rabbitmq_global_messages_confirmed_total",
    "rabbitmq_global_messages_delivered_consume_auto_ack_total",
    "rabbitmq_global_messages_delivered_consume_manual_ack_total",
    "rabbitmq_global_messages_delivered_get_auto_ack_total",
    "rabbitmq_global_messages_delivered_get_manual_ack_total",
    "rabbitmq_global_messages_get_empty_total",
    "rabbitmq_global_messages_received_confirm_total",
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total",
];

/// Every `rabbitmq_…` or `amqp_gateway_…` identifier in a text.
fn series_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if (rest.starts_with("rabbitmq_") || rest.starts_with("amqp_gateway_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}
