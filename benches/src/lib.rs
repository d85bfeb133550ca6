//! Throughput and latency harness: `publish-probe` (one publisher with a
//! confirm window) and `consume-probe` (one consumer draining a queue). The
//! side-by-side harness (gateway, RabbitMQ, direct RocketMQ, null upstream)
//! with report and chart is the benchmarks issue.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

/// Connects and declares the durable queue a probe works on.
pub async fn open_queue(url: &str, queue: &str) -> Result<(Connection, Channel), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    Ok((conn, ch))
}
