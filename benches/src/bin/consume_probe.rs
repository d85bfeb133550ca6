//! One AMQP consumer draining a pre-filled queue: deliveries per second with
//! manual acks (or no-ack), against any AMQP 0-9-1 server (the gateway or
//! RabbitMQ). The queue is filled first with confirms, then timed apart.
//!
//!   consume-probe --url amqp://guest:guest@127.0.0.1:5672/%2f --messages 20000 --prefetch 1000

use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// basic.qos prefetch_count (0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Consume with no-ack instead of acking each message.
    #[arg(long)]
    no_ack: bool,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value = "bench.consume")]
    queue: String,
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Only fill the queue (so a caller can time the drain apart).
    #[arg(long, conflicts_with = "drain_only")]
    fill_only: bool,
    /// Only drain what an earlier --fill-only run stored.
    #[arg(long)]
    drain_only: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (conn, ch) = benches::open_queue(&args.url, &args.queue).await?;
    if !args.drain_only {
        fill(&ch, &args).await?;
        if args.fill_only {
            conn.close(200, "done".into()).await?;
            return Ok(());
        }
        // Stored messages become readable a moment after their confirm.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain(&conn, &args).await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}

async fn fill(ch: &lapin::Channel, args: &Args) -> Result<(), lapin::Error> {
    ch.queue_purge(args.queue.as_str().into(), QueuePurgeOptions::default())
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; args.size];
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut window = std::collections::VecDeque::new();
    for _ in 0..args.messages {
        if window.len() >= 1000 {
            let confirm: lapin::PublisherConfirm = window.pop_front().expect("non-empty");
            confirm.await?;
        }
        window.push_back(
            ch.basic_publish(
                "".into(),
                args.queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?,
        );
    }
    for confirm in window {
        confirm.await?;
    }
    Ok(())
}

async fn drain(conn: &Connection, args: &Args) -> Result<(), lapin::Error> {
    let cc = conn.create_channel().await?;
    cc.basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let options = BasicConsumeOptions {
        no_ack: args.no_ack,
        ..Default::default()
    };
    let started = Instant::now();
    let mut consumer = cc
        .basic_consume(
            args.queue.as_str().into(),
            "probe".into(),
            options,
            FieldTable::default(),
        )
        .await?;
    let deadline = started + Duration::from_secs(args.max_seconds);
    let mut received = 0usize;
    let mut first = None;
    while received < args.messages {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let delivery = delivery?;
        first.get_or_insert_with(|| started.elapsed());
        received += 1;
        if !args.no_ack {
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "messages={received} prefetch={} no_ack={} size={} deliveries_per_s={:.0} first_delivery_ms={:.1}",
        args.prefetch,
        args.no_ack,
        args.size,
        received as f64 / elapsed,
        first.unwrap_or_default().as_secs_f64() * 1000.0
    );
    Ok(())
}
