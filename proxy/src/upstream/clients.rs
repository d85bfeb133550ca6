//! rocketmq-client-rust's producer, reader and admin client started
//! together on a runtime of their own (`Clients`), for the gateway's
//! `RocketMq` and for benches/' direct-client baseline.
#![allow(deprecated)]

use std::sync::Arc;

use rocketmq_client_rust::{
    ClientRuntime, ClientRuntimeConfig, DefaultMQAdminExt, DefaultMQProducer, DefaultMQPullConsumer,
};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

use super::reader::Reader;
use super::rocketmq::{unavailable, RocketMqSettings};
use super::UpstreamError;

/// rocketmq-client-rust's producer, reader and admin client, on their own
/// runtime. The gateway wraps them in `RocketMq`; benches/ uses them
/// directly as the "direct client" baseline, with the client's own pull
/// consumer (which the gateway does not use: it subscribes to every topic
/// it reads, for good, see reader.rs).
pub struct Clients {
    pub producer: DefaultMQProducer,
    pub reader: Reader,
    /// Only with `start_with_pull_consumer`.
    pub pull_consumer: Option<DefaultMQPullConsumer>,
    pub admin: Arc<DefaultMQAdminExt>,
    pub runtime: ClientRuntimeGuard,
}

/// Owns the client's background tasks; drop it last.
pub struct ClientRuntimeGuard {
    client: Arc<ClientRuntime>,
    _owner: RuntimeOwner,
}

impl ClientRuntimeGuard {
    /// The client runtime, for more client instances on it (benches' POP).
    pub fn client(&self) -> &Arc<ClientRuntime> {
        &self.client
    }
}

impl Clients {
    /// Starts a producer (group `settings.producer_group`), a pull consumer
    /// and an admin client against the name server.
    pub async fn start(settings: &RocketMqSettings) -> Result<Clients, UpstreamError> {
        Self::start_inner(settings, false).await
    }

    /// As `start`, plus the client's pull consumer (for benches' direct target).
    pub async fn start_with_pull_consumer(
        settings: &RocketMqSettings,
    ) -> Result<Clients, UpstreamError> {
        Self::start_inner(settings, true).await
    }

    async fn start_inner(
        settings: &RocketMqSettings,
        with_pull_consumer: bool,
    ) -> Result<Clients, UpstreamError> {
        let owner = RuntimeOwner::plan(RuntimeConfig {
            thread_name: "rocketmq-client".to_owned(),
            worker_threads: 2,
            ..Default::default()
        })
        .map_err(|e| unavailable("client runtime plan", e))?
        .build()
        .map_err(|e| unavailable("client runtime", e))?;
        let telemetry = rocketmq_observability::TelemetryRuntimeGuard::noop();
        let client = ClientRuntime::try_new(
            owner.root_context().component("amqp-gateway-client"),
            ClientRuntimeConfig::default(),
            telemetry.handle(),
        )
        .map_err(|e| unavailable("client runtime", e))?;

        let mut producer = DefaultMQProducer::builder(client.clone())
            .producer_group(settings.producer_group.clone())
            .name_server_addr(settings.name_server.clone())
            .send_msg_timeout(settings.send_timeout.as_millis() as u32)
            .max_message_size(settings.max_message_size.min(i32::MAX as u64) as u32)
            .retry_times_when_send_failed(1)
            .build();
        producer
            .start()
            .await
            .map_err(|e| unavailable("producer start", e))?;

        let pull_consumer = if with_pull_consumer {
            let consumer = DefaultMQPullConsumer::builder(client.clone())
                .consumer_group(format!("{}-pull", settings.producer_group))
                .name_server_addr(settings.name_server.clone())
                .build()
                .map_err(|e| unavailable("pull consumer", e))?;
            consumer
                .start()
                .await
                .map_err(|e| unavailable("pull consumer start", e))?;
            Some(consumer)
        } else {
            None
        };
        let reader = Reader::start(
            &client,
            &settings.name_server,
            &format!("{}-reader", settings.producer_group),
            settings.send_timeout,
        )
        .await?;

        let mut admin = DefaultMQAdminExt::new(client.clone());
        admin.set_namesrv_addr(settings.name_server.as_str());
        admin
            .start()
            .await
            .map_err(|e| unavailable("admin start", e))?;
        Ok(Clients {
            producer,
            reader,
            pull_consumer,
            admin: Arc::new(admin),
            runtime: ClientRuntimeGuard {
                client,
                _owner: owner,
            },
        })
    }
}
