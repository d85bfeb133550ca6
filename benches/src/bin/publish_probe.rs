//! One AMQP publisher with confirms and a bounded window of unconfirmed
//! messages: msg/s and publish-to-confirm latency percentiles, against any
//! AMQP 0-9-1 server (the gateway or RabbitMQ).
//!
//!   publish-probe --url amqp://guest:guest@127.0.0.1:5672/%2f --messages 20000 --window 1000

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Parser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::BasicProperties;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Unconfirmed messages allowed in flight.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value = "bench.publish")]
    queue: String,
    /// Stop after this many seconds even if not all messages were sent.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (conn, ch) = benches::open_queue(&args.url, &args.queue).await?;
    ch.queue_purge(args.queue.as_str().into(), QueuePurgeOptions::default())
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; args.size];
    let props = BasicProperties::default().with_delivery_mode(2);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut window = VecDeque::new();
    let mut latencies = Vec::with_capacity(args.messages);
    let (mut acked, mut nacked, mut sent) = (0usize, 0usize, 0usize);
    while sent < args.messages && Instant::now() < deadline {
        if window.len() >= args.window {
            let (at, confirm): (Instant, lapin::PublisherConfirm) =
                window.pop_front().expect("non-empty");
            let outcome = confirm.await?;
            latencies.push(at.elapsed());
            if outcome.is_ack() {
                acked += 1
            } else {
                nacked += 1
            }
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                args.queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await?;
        window.push_back((Instant::now(), confirm));
        sent += 1;
        if sent % 10_000 == 0 {
            eprintln!("  {sent} sent, {acked} acked");
        }
    }
    for (at, confirm) in window {
        let outcome = confirm.await?;
        latencies.push(at.elapsed());
        if outcome.is_ack() {
            acked += 1
        } else {
            nacked += 1
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "messages={sent} acked={acked} nacked={nacked} window={} size={} msg_per_s={:.0} confirm_p50_ms={:.2} confirm_p99_ms={:.2}",
        args.window,
        args.size,
        acked as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    conn.close(200, "done".into()).await?;
    Ok(())
}
