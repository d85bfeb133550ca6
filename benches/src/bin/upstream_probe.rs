//! The gateway's RocketMQ upstream alone (no AMQP): W sends in flight to one
//! queue topic, msg/s and send latency. Separates the cost of RocketMQ (client
//! and broker) from the cost of the gateway's AMQP side.
//!
//!   upstream-probe --name-server 127.0.0.1:9876 --messages 10000 --window 256

#![recursion_limit = "512"]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::stream::{FuturesUnordered, StreamExt};
use proxy::upstream::rocketmq::{RocketMq, RocketMqSettings};
use proxy::upstream::{OutboundMessage, Upstream};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9876")]
    name_server: String,
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    #[arg(long, default_value_t = 256)]
    window: usize,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Message queues per topic.
    #[arg(long, default_value_t = 1)]
    queues_per_topic: i32,
    /// Topics to spread the messages over.
    #[arg(long, default_value_t = 1)]
    topics: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let upstream = RocketMq::connect(RocketMqSettings {
        name_server: args.name_server.clone(),
        producer_group: "upstream-probe".into(),
        queues_per_topic: args.queues_per_topic,
        send_timeout: Duration::from_secs(3),
        max_message_size: 4 << 20,
        max_in_flight: args.window,
    })
    .await?;
    let topics: Vec<String> = (0..args.topics)
        .map(|i| format!("bench_upstream_probe_q{}_{i}", args.queues_per_topic))
        .collect();
    for topic in &topics {
        upstream
            .create_queue(topic, &format!("{topic}_group"), None)
            .await?;
    }
    let body = Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let (mut ok, mut failed, mut latencies) = (0usize, 0usize, Vec::with_capacity(args.messages));
    let mut first_error: Option<String> = None;
    for i in 0..args.messages {
        let topic = topics[i % topics.len()].as_str();
        if in_flight.len() >= args.window {
            if let Some((at, r)) = in_flight.next().await {
                latencies.push(Instant::now() - at);
                tally(r, &mut ok, &mut failed, &mut first_error)
            }
        }
        let message = OutboundMessage {
            topic: topic.into(),
            queue_id: None,
            body: body.clone(),
            properties: vec![("AMQP_RK", "k".into())],
        };
        let send = upstream.send(message);
        let at = Instant::now();
        in_flight.push(async move { (at, send.await) });
    }
    while let Some((at, r)) = in_flight.next().await {
        latencies.push(Instant::now() - at);
        tally(r, &mut ok, &mut failed, &mut first_error)
    }
    if let Some(e) = &first_error {
        eprintln!("first failure: {e}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "messages={} ok={ok} failed={failed} window={} msg_per_s={:.0} send_p50_ms={:.2} send_p99_ms={:.2}",
        args.messages,
        args.window,
        ok as f64 / elapsed,
        p(0.5),
        p(0.99)
    );
    Ok(())
}

fn tally(
    r: Result<(), proxy::upstream::UpstreamError>,
    ok: &mut usize,
    failed: &mut usize,
    first: &mut Option<String>,
) {
    match r {
        Ok(()) => *ok += 1,
        Err(e) => {
            *failed += 1;
            first.get_or_insert(e.to_string());
        }
    }
}
