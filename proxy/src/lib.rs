//! An AMQP 0-9-1 gateway that stores and delivers messages through RocketMQ.
//!
//! A message's path, folder by folder:
//!
//! ```text
//!  client socket
//!     │  bytes
//!  codec/        frames in and out (amq-protocol), frame_max, content assembly
//!     │  frames
//!  connection/   one task per TCP connection: handshake, heartbeats, channel
//!     │          table, publish pipeline, backpressure (connection.blocked),
//!     │          deliveries written in batches
//!     │  methods
//!  channel/      the channel state machine, one file per AMQP class
//!     │          (exchange.rs, queue.rs, basic.rs, confirm.rs, consume.rs)
//!     ├────────► mapping/   pure: names, routing (bindings), properties
//!     │  topic + body + properties
//!  upstream/     the only module importing rocketmq-client-rust
//!     │
//!  RocketMQ      one topic per AMQP queue (docs/architecture.md)
//!     │  pull by offset
//!  delivery/     one feed per consumed queue: hands messages to consumers
//!                within their credit, commits what is settled; back to
//!                connection/ as basic.deliver
//! ```
//!
//! Dependencies point one way: codec -> connection -> channel -> mapping;
//! upstream sees no AMQP types; mapping sees no tokio and no RocketMQ client.
//! `topology` is the in-memory image of the meta store (crate `meta`) that
//! routing reads.

#![recursion_limit = "512"]

pub mod channel;
pub mod clock;
pub mod codec;
pub mod config;
pub mod connection;
pub mod definitions;
pub mod delivery;
pub mod error;
pub mod follow;
pub mod health;
pub mod http;
pub mod logging;
pub mod management;
pub mod mapping;
pub mod metrics;
pub mod publish;
pub mod registry;
pub mod server;
pub mod tls;
pub mod topology;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
use topology::Topology;
use upstream::Upstream;

/// What other gateways announced about one queue's consumers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumersElsewhere {
    pub count: i64,
    /// One of them holds the queue exclusively.
    pub exclusive: bool,
}

/// A gateway that has not said it is alive for this long is gone: its
/// connections' exclusive queues are deleted by the others.
pub const GATEWAY_TTL_MS: i64 = 10_000;

/// Everything connections share: configuration, topology, stores.
pub struct Gateway {
    pub config: Config,
    pub topology: Topology,
    pub store: meta::Store,
    pub upstream: Arc<dyn Upstream>,
    /// The queues consumed through this gateway (delivery/).
    pub feeds: delivery::Feeds,
    /// Lengths of queues that refuse publishes when full.
    pub admissions: publish::admission::Admissions,
    /// Refused logins per client address (connection/login_failures.rs).
    pub login_failures: connection::login_failures::LoginFailures,
    /// Deleted queues' RocketMQ storage being deleted in the background.
    pub reclaims: registry::reclaim::Reclaims,
    /// Queues with x-expires this gateway watches.
    pub expiring: registry::expiry::Watched,
    /// Direct reply-to consumers on this gateway.
    pub replies: delivery::reply_to::Replies,
    /// Distinguishes this process's connections from other gateways'.
    pub instance_id: String,
    /// The meta store answered the follower's last look (false: serving
    /// with the last topology, changes refused).
    pub meta_healthy: std::sync::atomic::AtomicBool,
    /// The meta store revision the topology has applied; held while
    /// applying (the follower, or a lookup catching up: follow.rs).
    pub followed: tokio::sync::Mutex<i64>,
    /// Set once when the gateway shuts down: every connection closes with
    /// 320 (server.rs, connection/).
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// What TTLs, leases and heartbeats count with (clock.rs).
    pub clock: clock::Clock,
    /// The open client connections (metrics, management API).
    pub connections: Arc<connection::roster::Roster>,
    /// When it started, by `clock` (uptime).
    pub started_ms: i64,
    /// Where other gateways reach this one's management API (host:port),
    /// said with every heartbeat; unset without the API.
    pub management_address: std::sync::OnceLock<String>,
    /// Where this gateway listens, as no other live process can (host name
    /// and bound AMQP address): set when the listener is bound.
    pub seat: std::sync::OnceLock<String>,
    /// The address AMQP clients reach (the bound `listen`).
    pub amqp_address: std::sync::OnceLock<std::net::SocketAddr>,
    /// The address AMQP-over-TLS clients reach (the bound `tls_listen`).
    pub amqps_address: std::sync::OnceLock<std::net::SocketAddr>,
    /// The TLS settings in force, with a certificate configured (tls.rs).
    pub tls: Option<Arc<tls::Tls>>,
    /// Connections and channels per vhost and user on the other gateways,
    /// as announced with their heartbeats (registry/limits.rs).
    pub usage_elsewhere: std::sync::RwLock<registry::limits::Usage>,
    /// Message rates for the management API (sampled every 5 s).
    pub rates: metrics::rates::Rates,
}

/// This machine's name (Linux: the kernel's; else $HOSTNAME), "" unknown.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// What a gateway runs on besides its configuration. Production takes the
/// defaults: the system clock and the upstream the configuration names.
/// The fast test tier runs gateways under tokio's paused clock, several of
/// them on one in-memory upstream.
#[derive(Default)]
pub struct Surroundings {
    pub clock: clock::Clock,
    /// Used instead of connecting to the configured upstream.
    pub upstream: Option<Arc<dyn Upstream>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("RocketMQ: {0}")]
    Upstream(#[from] upstream::UpstreamError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// The message store named in `config`: RocketMQ, or "null" for benchmarks.
pub async fn connect_upstream(
    config: &Config,
    clock: clock::Clock,
) -> Result<Arc<dyn Upstream>, StartError> {
    Ok(match config.upstream.as_str() {
        "null" => {
            tracing::warn!("Upstream is \"null\": messages are confirmed at once and kept only in memory. For benchmarks only.");
            Arc::new(upstream::null::NullUpstream::with_clock(clock))
        }
        _ => Arc::new(
            upstream::rocketmq::RocketMq::connect(upstream::rocketmq::RocketMqSettings {
                name_server: config.name_server.clone(),
                producer_group: config.producer_group.clone(),
                queues_per_topic: config.queues_per_topic,
                send_timeout: Duration::from_millis(config.send_timeout_ms),
                max_message_size: config.max_message_size,
                max_in_flight: config.upstream_max_in_flight,
            })
            .await?,
        ),
    })
}

impl Gateway {
    /// Opens the meta store (creating guest/guest and "/" on first start),
    /// loads the topology and connects to the upstream named in `config`.
    pub async fn start(config: Config) -> Result<Arc<Gateway>, StartError> {
        Gateway::start_in(config, Surroundings::default()).await
    }

    pub async fn start_in(
        config: Config,
        surroundings: Surroundings,
    ) -> Result<Arc<Gateway>, StartError> {
        let clock = surroundings.clock;
        // Certificates first: a wrong path fails the start at once.
        let tls = match tls::Files::from_config(&config) {
            Some(files) => Some(tls::Tls::load(files)?),
            None => None,
        };
        let store = meta::Store::open(&config.meta_url).await?;
        store
            .bootstrap_defaults(&mapping::names::vhost_namespace("/"))
            .await?;
        let snapshot = store.snapshot().await?;
        let topology = Topology::from_snapshot(&snapshot);
        let upstream = match surroundings.upstream {
            Some(upstream) => upstream,
            None => connect_upstream(&config, clock).await?,
        };
        let instance_id = format!("{:016x}", rand::random::<u64>());
        tracing::info!(revision = snapshot.revision, vhosts = snapshot.vhosts.len(), queues = snapshot.queues.len(), %instance_id, "Gateway started.");
        let gateway = Arc::new_cyclic(|gateway| Gateway {
            feeds: delivery::Feeds::new(delivery::FeedContext {
                upstream: upstream.clone(),
                store: store.clone(),
                owner: instance_id.clone(),
                gateway: gateway.clone(),
                clock,
            }),
            config,
            topology,
            store,
            upstream,
            admissions: Default::default(),
            replies: Default::default(),
            expiring: Default::default(),
            reclaims: Default::default(),
            login_failures: Default::default(),
            instance_id,
            meta_healthy: std::sync::atomic::AtomicBool::new(true),
            followed: tokio::sync::Mutex::new(snapshot.revision),
            stopping: tokio::sync::watch::Sender::new(false),
            clock,
            connections: Default::default(),
            started_ms: clock.now_ms(),
            management_address: std::sync::OnceLock::new(),
            rates: Default::default(),
            amqp_address: std::sync::OnceLock::new(),
            seat: std::sync::OnceLock::new(),
            usage_elsewhere: Default::default(),
            amqps_address: std::sync::OnceLock::new(),
            tls,
        });
        if let Some(tls) = &gateway.tls {
            tokio::spawn(tls::Tls::watch(Arc::downgrade(tls)));
        }
        gateway.heartbeat().await?;
        gateway.delete_orphaned_exclusive_queues().await?;
        gateway.start_expiring_feeds();
        tokio::spawn(follow::follow(Arc::downgrade(&gateway)));
        tokio::spawn(metrics::rates::Rates::run(Arc::downgrade(&gateway)));
        tokio::spawn(registry::expiry::run(Arc::downgrade(&gateway)));
        Ok(gateway)
    }

    /// Consumers of a queue topic through other gateways, as they last
    /// announced them in the meta store (at most about a second old). With
    /// the store unreachable: none known, logged.
    pub async fn consumers_elsewhere(&self, topic: &str) -> ConsumersElsewhere {
        match self
            .store
            .reader_consumers(topic, self.clock.now_ms())
            .await
        {
            Ok(readers) => readers
                .iter()
                .filter(|(owner, n, _)| *owner != self.instance_id && *n > 0)
                .fold(ConsumersElsewhere::default(), |acc, (_, n, excl)| {
                    ConsumersElsewhere {
                        count: acc.count + n,
                        exclusive: acc.exclusive || *excl,
                    }
                }),
            Err(error) => {
                tracing::warn!(%error, %topic, "Consumers on other gateways unknown (meta store); only this gateway's are counted.");
                ConsumersElsewhere::default()
            }
        }
    }

    /// Says this gateway is alive (its connections own exclusive queues)
    /// with the connections and channels it holds, and learns what the
    /// others hold (limits count over every gateway).
    pub async fn heartbeat(&self) -> Result<(), meta::MetaError> {
        let mine = registry::limits::Usage::of_roster(&self.connections, None);
        let now = self.clock.now_ms();
        self.store
            .heartbeat(
                &self.instance_id,
                now,
                GATEWAY_TTL_MS,
                self.management_address.get().map_or("", String::as_str),
                &serde_json::to_string(&mine).unwrap_or_default(),
            )
            .await?;
        let mut elsewhere = registry::limits::Usage::default();
        for announced in self.store.usage_elsewhere(&self.instance_id, now).await? {
            match serde_json::from_str(&announced) {
                Ok(usage) => elsewhere.add(&usage),
                Err(error) => {
                    tracing::debug!(%error, "Another gateway's usage unreadable; left out.")
                }
            }
        }
        *self
            .usage_elsewhere
            .write()
            .unwrap_or_else(|p| p.into_inner()) = elsewhere;
        Ok(())
    }

    /// Takes this gateway's seat (host name and the bound AMQP address): a
    /// gateway that held it before is dead (this process holds the port),
    /// so its read leases are freed now and its exclusive queues deleted,
    /// and a restarted gateway's consumers are served within a second
    /// instead of after the dead one's 5 s leases lapse.
    pub async fn take_seat(&self, bound: std::net::SocketAddr) {
        let seat = format!("{}|{bound}", host_name());
        let _ = self.seat.set(seat.clone());
        match self.store.take_seat(&seat, &self.instance_id).await {
            Ok(before) if before.is_empty() => {}
            Ok(before) => {
                tracing::info!(%seat, predecessors = ?before, "Took over from the gateway that listened here before: its read leases are free now.");
                if let Err(error) = self.delete_orphaned_exclusive_queues().await {
                    tracing::warn!(%error, "Deleting the predecessor's exclusive queues failed; retried later.");
                }
            }
            Err(error) => {
                tracing::warn!(%error, %seat, "Could not record where this gateway listens; a predecessor's read leases lapse on their own (5 s).");
            }
        }
    }

    /// Exclusive queues whose gateway is gone (crashed, killed, lost) are
    /// deleted, as RabbitMQ deletes them with their connection. Runs at
    /// start and then periodically; queues of live gateways are left alone
    /// (their connections delete them when they close).
    pub async fn delete_orphaned_exclusive_queues(&self) -> Result<(), meta::MetaError> {
        let live = self.store.live_gateways(self.clock.now_ms()).await?;
        let owner_alive = |owner: &str| {
            let gateway = owner.split('/').next().unwrap_or(owner);
            gateway == self.instance_id || live.iter().any(|g| g == gateway)
        };
        let orphans: Vec<(Arc<topology::Vhost>, meta::Queue)> = self
            .topology
            .vhosts()
            .into_iter()
            .flat_map(|vhost| {
                let queues: Vec<meta::Queue> = vhost
                    .read()
                    .queues
                    .values()
                    .filter(|q| {
                        q.record
                            .exclusive_owner
                            .as_deref()
                            .is_some_and(|o| !owner_alive(o))
                    })
                    .map(|q| q.record.clone())
                    .collect();
                queues.into_iter().map(move |q| (vhost.clone(), q))
            })
            .collect();
        for (vhost, q) in orphans {
            let _changes = vhost.changes.lock().await;
            match registry::queues::delete(self, &vhost, &q).await {
                Ok(()) => {
                    tracing::info!(vhost = %q.vhost, queue = %q.name, owner = ?q.exclusive_owner, "Exclusive queue of a gateway that is gone deleted.")
                }
                Err(error) => tracing::error!(
                    vhost = %q.vhost, queue = %q.name, %error,
                    "Exclusive queue of a gateway that is gone could not be deleted."
                ),
            }
        }
        Ok(())
    }

    /// Queues whose messages expire (x-message-ttl) or are dead-lettered get
    /// a feed even without consumers, so that expired messages leave (to
    /// their dead-letter exchange) when they reach the head, as in RabbitMQ.
    /// Runs at start and with every heartbeat (queues declared elsewhere).
    pub fn start_expiring_feeds(&self) {
        for vhost in self.topology.vhosts() {
            let queues: Vec<meta::Queue> = vhost
                .read()
                .queues
                .values()
                .filter(|q| self.feeds.get(&q.record.topic).is_none() && q.arguments.reaps())
                .map(|q| q.record.clone())
                .collect();
            for queue in queues {
                self.feeds.get_or_start(&vhost, &queue);
            }
        }
    }

    /// The largest body accepted: the configured limit, within RocketMQ's.
    pub fn max_message_size(&self) -> u64 {
        self.config
            .max_message_size
            .min(self.upstream.max_message_size())
    }
}
