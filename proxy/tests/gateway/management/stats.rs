//! Message counts and rates per queue (`message_stats`), added up over the
//! gateways that moved the messages, and the feed gauges in Prometheus.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use serde_json::Value;

use crate::consume::{fill, queue_with_channel};
use crate::harness::{unique, TestGateway};
use crate::management::http;
use crate::prometheus::{scrape, value};

const GUEST: Option<&str> = Some("guest:guest");

async fn queue_json(api: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http(api, "GET", path, GUEST, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Two gateways on one meta store: 3 messages published through A and 2
/// through B, all 5 consumed and acked on B. Either API counts 5 of each;
/// A alone (`local=true`) counts its 3 publishes; the rates turn positive
/// within two sampling intervals.
#[tokio::test]
async fn queue_message_stats_add_up_over_gateways_and_have_rates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let a = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let b = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let (api_a, api_b) = (a.management.unwrap(), b.management.unwrap());
    let q = unique("stats");
    let (conn_a, conn_b) = (a.connect().await, b.connect().await);
    let ch_a = queue_with_channel(&conn_a, &q, FieldTable::default()).await;
    let ch_b = queue_with_channel(&conn_b, &q, FieldTable::default()).await;
    fill(&ch_a, &q, 3).await;
    fill(&ch_b, &q, 2).await;
    let mut consumer = ch_b
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivered")
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
    }

    // B's feed holds the queue's read leases while its consumer is there.
    let metrics = b.prometheus.unwrap();
    let samples = scrape(metrics, "/metrics/per-object").await;
    let series = |name: &str| format!("{name}{{vhost=\"/\",queue=\"{q}\"}}");
    assert!(value(&samples, &series("amqp_gateway_feed_leases_held")) >= 1.0);
    assert_eq!(
        value(&samples, &series("amqp_gateway_feed_lag_messages")),
        0.0
    );
    assert!(
        value(
            &scrape(metrics, "/metrics").await,
            "amqp_gateway_feed_leases_held"
        ) >= 1.0
    );

    let path = format!("/api/queues/%2F/{q}");
    let deadline = Instant::now() + Duration::from_secs(5);
    for api in [api_a, api_b] {
        loop {
            // Acks reach the counters as the client sends them.
            let stats = queue_json(api, &path).await["message_stats"].clone();
            let counts = ["publish", "deliver", "deliver_get", "ack"].map(|k| stats[k].clone());
            if counts.iter().all(|c| *c == 5) {
                assert_eq!(stats["redeliver"], 0, "{stats}");
                break;
            }
            assert!(Instant::now() < deadline, "{api}: {stats}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let own = queue_json(api_a, &format!("{path}?local=true")).await;
    assert_eq!(own["message_stats"]["publish"], 3, "A's own count");
    assert_eq!(own["message_stats"]["deliver"], 0, "A delivered nothing");
    let listed = queue_json(api_a, &format!("/api/queues/%2F?name={q}")).await;
    assert_eq!(listed[0]["message_stats"]["ack"], 5, "{listed}");

    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let stats = queue_json(api_a, &path).await["message_stats"].clone();
        let rate = |k: &str| stats[format!("{k}_details")]["rate"].as_f64().unwrap();
        if rate("publish") > 0.0 && rate("ack") > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "rates stay 0: {stats}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
