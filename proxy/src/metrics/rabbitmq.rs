//! The families RabbitMQ's Prometheus plugin (3.10) exports, under its
//! names and labels, so that RabbitMQ's Grafana dashboards and alert rules
//! work against a gateway unchanged; then the gateway's own.
//!
//! Each gateway is one node (`rabbitmq_identity_info`). Queues live in
//! RocketMQ, not on a node: one gateway, the live one with the smallest
//! id, reports the queue families, so that summing over nodes counts each
//! queue once (docs/mapping.md).

use super::{Exposition, COUNTERS, GAUGES, HISTOGRAMS};
use crate::metrics as m;
use crate::registry::queues::Counts;
use crate::Gateway;

/// RabbitMQ's version the gateway answers as (the management API says the same).
const RABBITMQ_VERSION: &str = "3.10.8";
const CLUSTER: &str = "amqp-gateway";
const PROTOCOL: (&str, &str) = ("protocol", "amqp091");
const CLASSIC: (&str, &str) = ("queue_type", "rabbit_classic_queue");

pub async fn render(gateway: &Gateway, per_object: bool) -> String {
    let mut e = Exposition::default();
    identity(gateway, &mut e);
    connections(gateway, &mut e);
    messages(&mut e);
    queues(gateway, per_object, &mut e).await;
    process(gateway, &mut e);
    own(gateway, &mut e);
    feeds(gateway, per_object, &mut e);
    follower_lag(gateway, &mut e).await;
    e.finish()
}

fn identity(gateway: &Gateway, e: &mut Exposition) {
    let node = crate::management::node_name(gateway);
    e.single(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
        &[
            ("rabbitmq_node", &node),
            ("rabbitmq_cluster", CLUSTER),
            ("rabbitmq_cluster_permanent_id", CLUSTER),
        ],
        1,
    );
    e.single(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
        &[
            ("rabbitmq_version", RABBITMQ_VERSION),
            ("prometheus_plugin_version", env!("CARGO_PKG_VERSION")),
            ("prometheus_client_version", env!("CARGO_PKG_VERSION")),
            ("erlang_version", "none (amqp-gateway)"),
        ],
        1,
    );
}

fn connections(gateway: &Gateway, e: &mut Exposition) {
    let t = gateway.connections.totals();
    e.single(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        &[],
        t.connections,
    )
    .single(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        &[],
        t.channels,
    )
    .single(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        &[],
        t.consumers,
    )
    .single(
        "rabbitmq_channel_consumers",
        "gauge",
        "Consumers on a channel",
        &[],
        t.consumers,
    )
    .single(
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
        &[PROTOCOL],
        t.consumers,
    );
    for (name, help, counter) in [
        (
            "rabbitmq_connections_opened_total",
            "Total number of connections opened",
            &m::CONNECTIONS_OPENED,
        ),
        (
            "rabbitmq_connections_closed_total",
            "Total number of connections closed or terminated",
            &m::CONNECTIONS_CLOSED,
        ),
        (
            "rabbitmq_channels_opened_total",
            "Total number of channels opened",
            &m::CHANNELS_OPENED,
        ),
        (
            "rabbitmq_channels_closed_total",
            "Total number of channels closed",
            &m::CHANNELS_CLOSED,
        ),
        (
            "rabbitmq_queues_declared_total",
            "Total number of queues declared",
            &m::QUEUES_DECLARED,
        ),
        (
            "rabbitmq_queues_created_total",
            "Total number of queues created",
            &m::QUEUES_CREATED,
        ),
        (
            "rabbitmq_queues_deleted_total",
            "Total number of queues deleted",
            &m::QUEUES_DELETED,
        ),
    ] {
        e.single(name, "counter", help, &[], counter.get());
    }
}

/// Message counters: per channel (summed, as RabbitMQ's aggregated
/// /metrics gives them) and global.
fn messages(e: &mut Exposition) {
    let delivered = m::DELIVERED_CONSUME_MANUAL_ACK.get()
        + m::DELIVERED_CONSUME_AUTO_ACK.get()
        + m::DELIVERED_GET_MANUAL_ACK.get()
        + m::DELIVERED_GET_AUTO_ACK.get();
    for (name, help, value) in [
        ("rabbitmq_channel_messages_published_total", "Total number of messages published into an exchange on a channel", m::PUBLISHED.get()),
        ("rabbitmq_channel_messages_confirmed_total", "Total number of messages published into an exchange and confirmed on the channel", m::CONFIRMED.get()),
        ("rabbitmq_channel_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", m::UNROUTABLE_RETURNED.get()),
        ("rabbitmq_channel_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", m::UNROUTABLE.get()),
        ("rabbitmq_channel_messages_delivered_ack_total", "Total number of messages delivered to consumers in manual acknowledgement mode", m::DELIVERED_CONSUME_MANUAL_ACK.get()),
        ("rabbitmq_channel_messages_delivered_total", "Total number of messages delivered to consumers in automatic acknowledgement mode", m::DELIVERED_CONSUME_AUTO_ACK.get()),
        ("rabbitmq_channel_get_ack_total", "Total number of messages fetched with basic.get in manual acknowledgement mode", m::DELIVERED_GET_MANUAL_ACK.get()),
        ("rabbitmq_channel_get_total", "Total number of messages fetched with basic.get in automatic acknowledgement mode", m::DELIVERED_GET_AUTO_ACK.get()),
        ("rabbitmq_channel_get_empty_total", "Total number of times basic.get operations fetched no message", m::GET_EMPTY.get()),
        ("rabbitmq_channel_messages_redelivered_total", "Total number of messages redelivered to consumers", m::REDELIVERED.get()),
        ("rabbitmq_channel_messages_acked_total", "Total number of messages acknowledged by consumers", m::ACKED.get()),
    ] {
        e.single(name, "counter", help, &[], value);
    }
    for (name, help, value) in [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", m::PUBLISHED.get()),
        ("rabbitmq_global_messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", m::PUBLISHED_CONFIRM.get()),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", m::ROUTED.get()),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", m::UNROUTABLE.get()),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", m::UNROUTABLE_RETURNED.get()),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", m::CONFIRMED.get()),
    ] {
        e.single(name, "counter", help, &[PROTOCOL], value);
    }
    for (name, help, value) in [
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", delivered),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", m::DELIVERED_CONSUME_MANUAL_ACK.get()),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", m::DELIVERED_CONSUME_AUTO_ACK.get()),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", m::DELIVERED_GET_MANUAL_ACK.get()),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", m::DELIVERED_GET_AUTO_ACK.get()),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", m::GET_EMPTY.get()),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", m::REDELIVERED.get()),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", m::ACKED.get()),
    ] {
        e.single(name, "counter", help, &[PROTOCOL, CLASSIC], value);
    }
}

/// A queue family: name, help, and what it reads of a queue's counts.
type QueueFamily = (&'static str, &'static str, fn(&Counts) -> u64);

/// Queue families, from the reporting gateway only.
async fn queues(gateway: &Gateway, per_object: bool, e: &mut Exposition) {
    let reports = reports_queues(gateway).await;
    let states: Vec<_> = if reports {
        gateway
            .topology
            .vhosts()
            .into_iter()
            .flat_map(|v| v.read().queues.values().cloned().collect::<Vec<_>>())
            .collect()
    } else {
        Vec::new()
    };
    let counts = crate::registry::queues::counts_of(gateway, &states).await;
    let counted: Vec<(&str, &str, Counts)> = states
        .iter()
        .zip(counts)
        .map(|(s, c)| (s.record.vhost.as_str(), s.record.name.as_str(), c))
        .collect();
    e.single(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        &[],
        counted.len(),
    );
    let families: [QueueFamily; 4] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |c| c.ready.into(),
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |c| c.unacked.into(),
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |c| u64::from(c.ready) + u64::from(c.unacked),
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |c| {
            c.consumers.into()
        }),
    ];
    for (name, help, read) in families {
        e.family(name, "gauge", help);
        if per_object {
            for (vhost, queue, counts) in &counted {
                e.sample(name, &[("vhost", vhost), ("queue", queue)], read(counts));
            }
        } else {
            e.sample(
                name,
                &[],
                counted.iter().map(|(_, _, c)| read(c)).sum::<u64>(),
            );
        }
    }
}

/// Whether this gateway is the one that reports queues: the live gateway
/// with the smallest id (itself when the store cannot say).
async fn reports_queues(gateway: &Gateway) -> bool {
    match gateway.store.live_gateways(gateway.clock.now_ms()).await {
        Ok(live) => live
            .iter()
            .filter(|id| id.as_str() != gateway.instance_id)
            .all(|id| id.as_str() > gateway.instance_id.as_str()),
        Err(_) => true,
    }
}

/// The process, as RabbitMQ reports its node's.
fn process(gateway: &Gateway, e: &mut Exposition) {
    let uptime = (gateway.clock.now_ms() - gateway.started_ms).max(0) as f64 / 1000.0;
    let (fds, sockets) = open_files();
    let max_fds = max_open_files();
    // The gateway's sockets share the descriptor limit.
    let gauges: [(&str, &str, Option<f64>); 8] = [
        (
            "rabbitmq_erlang_uptime_seconds",
            "Node uptime",
            Some(uptime),
        ),
        ("rabbitmq_process_open_fds", "Open file descriptors", fds),
        (
            "rabbitmq_process_open_tcp_sockets",
            "Open TCP sockets",
            sockets,
        ),
        (
            "rabbitmq_process_max_fds",
            "Open file descriptors limit",
            max_fds,
        ),
        (
            "rabbitmq_process_max_tcp_sockets",
            "Open TCP sockets limit",
            max_fds,
        ),
        (
            "rabbitmq_process_resident_memory_bytes",
            "Memory used in bytes",
            resident_bytes(),
        ),
        (
            "rabbitmq_resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            memory_limit(),
        ),
        (
            "rabbitmq_disk_space_available_bytes",
            "Disk space available in bytes",
            disk_free(gateway),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(value) = value {
            e.single(name, "gauge", help, &[], value);
        }
    }
}

/// Open descriptors, and how many of them are sockets.
fn open_files() -> (Option<f64>, Option<f64>) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return (None, None);
    };
    let (mut fds, mut sockets) = (0u32, 0u32);
    for entry in entries.flatten() {
        fds += 1;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("socket:") {
            sockets += 1;
        }
    }
    (Some(fds.into()), Some(sockets.into()))
}

/// What the process may use: its cgroup's memory.max, else the machine's
/// memory (the gateway has no high watermark of its own).
fn memory_limit() -> Option<f64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    if let Some(limit) = cgroup.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(limit as f64);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kib * 1024) as f64)
}

/// Free space where the gateway keeps files: the SQLite meta store's
/// directory, else its working directory.
fn disk_free(gateway: &Gateway) -> Option<f64> {
    let dir = gateway
        .config
        .meta_url
        .strip_prefix("sqlite:")
        .filter(|p| !p.contains(":memory:"))
        .and_then(|p| std::path::Path::new(p.split('?').next()?).parent())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize) as f64)
}

fn max_open_files() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096) as f64)
}

/// The gateway's own counters, gauges and histograms.
/// How many meta store changes this gateway has yet to apply; absent when
/// the store does not answer (`amqp_gateway_meta_store_healthy` says so).
async fn follower_lag(gateway: &Gateway, e: &mut Exposition) {
    let Ok(latest) = gateway.store.revision().await else {
        return;
    };
    let wait = std::time::Duration::from_millis(200);
    let Ok(followed) = tokio::time::timeout(wait, gateway.followed.lock()).await else {
        return;
    };
    e.single(
        "amqp_gateway_meta_revisions_behind",
        "gauge",
        "Changes in the meta store this gateway has not applied yet (the follower's lag).",
        &[],
        (latest - *followed).max(0),
    );
}

/// A feed family: name, help, and what it reads of a feed.
type FeedFamily = (
    &'static str,
    &'static str,
    fn(&crate::delivery::feed::Feed) -> u64,
);

/// What this gateway's feeds have not read yet and the read leases they
/// hold: per queue on /metrics/per-object, summed on /metrics.
fn feeds(gateway: &Gateway, per_object: bool, e: &mut Exposition) {
    use std::sync::atomic::Ordering::Relaxed;
    let feeds = gateway.feeds.all();
    let families: [FeedFamily; 2] = [
        (
            "amqp_gateway_feed_lag_messages",
            "Messages stored in RocketMQ, in the message queues this gateway reads for a queue, that it has not read yet.",
            |f| f.lag.load(Relaxed),
        ),
        (
            "amqp_gateway_feed_leases_held",
            "Read leases this gateway holds on a queue's RocketMQ message queues.",
            |f| f.leases.load(Relaxed),
        ),
    ];
    for (name, help, read) in families {
        e.family(name, "gauge", help);
        if per_object {
            for f in &feeds {
                e.sample(name, &[("vhost", &f.vhost), ("queue", &f.queue)], read(f));
            }
        } else {
            e.sample(name, &[], feeds.iter().map(|f| read(f)).sum::<u64>());
        }
    }
}

fn own(gateway: &Gateway, e: &mut Exposition) {
    for c in COUNTERS {
        e.single(c.name, "counter", c.help, &[], c.get());
    }
    for g in GAUGES {
        e.single(g.name, "gauge", g.help, &[], g.get());
    }
    for h in HISTOGRAMS {
        let (buckets, count, sum) = h.read();
        e.family(h.name, "histogram", h.help);
        let bucket = format!("{}_bucket", h.name);
        for (bound, n) in super::BOUNDS.iter().zip(buckets) {
            e.sample(&bucket, &[("le", &bound.to_string())], n);
        }
        e.sample(&bucket, &[("le", "+Inf")], count);
        e.sample(&format!("{}_sum", h.name), &[], sum);
        e.sample(&format!("{}_count", h.name), &[], count);
    }
    let healthy = gateway
        .meta_healthy
        .load(std::sync::atomic::Ordering::Acquire);
    e.single(
        "amqp_gateway_meta_store_healthy",
        "gauge",
        "1 while the meta store answers the follower; 0 while the gateway serves its last topology and refuses changes.",
        &[],
        u8::from(healthy),
    );
    e.single(
        "amqp_gateway_feeds",
        "gauge",
        "Queues this gateway reads from RocketMQ (one feed each).",
        &[],
        gateway.feeds.len(),
    );
}
