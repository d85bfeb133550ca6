//! A queue's storage made and unmade: its topic and its consumer group on
//! every master broker of the cluster.
//!
//! Each step goes straight to the brokers, whose addresses are kept for a
//! few seconds, and a broker's topic and group are asked for together:
//! applications that declare and delete queues by the thousand (RPC reply
//! queues, test suites) wait for a round trip per step, not for a name
//! server lookup and then the steps one after another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cheetah_string::CheetahString;
use rocketmq_client_rust::{ConsumerAdmin, DefaultMQAdminExt, RouteAdmin, TopicAdmin};
use rocketmq_model::topic::TopicConfig;
use rocketmq_protocol::protocol::subscription::subscription_group_config::SubscriptionGroupConfig;
use tokio::sync::Mutex;

use super::gate::Gate;
use super::rocketmq::unavailable;
use super::UpstreamError;

/// How long the brokers' addresses are trusted before the name server is
/// asked again (sooner after any failure).
const BROKERS_KEPT: Duration = Duration::from_secs(5);

pub struct QueueStorage {
    admin: Arc<DefaultMQAdminExt>,
    /// Serialises topology changes so two declares do not race on the broker.
    lock: Mutex<()>,
    brokers: std::sync::Mutex<Option<(Instant, Vec<CheetahString>)>>,
    /// Learns the brokers' addresses from each lookup.
    gate: Arc<Gate>,
}

impl QueueStorage {
    pub fn new(admin: Arc<DefaultMQAdminExt>, gate: Arc<Gate>) -> QueueStorage {
        QueueStorage {
            admin,
            gate,
            lock: Mutex::new(()),
            brokers: std::sync::Mutex::new(None),
        }
    }

    /// Creates `topic` with `message_queues` queues and `group` on every
    /// master broker.
    pub async fn create(
        &self,
        topic: &str,
        group: &str,
        message_queues: u32,
    ) -> Result<(), UpstreamError> {
        let _guard = self.lock.lock().await;
        let result = async {
            for addr in self.broker_addresses().await? {
                // Readable and writable: the default permission.
                let config = TopicConfig::with_queues(topic, message_queues, message_queues);
                let mut group_config = SubscriptionGroupConfig::default();
                group_config.set_group_name(group.into());
                let (made, grouped) = tokio::join!(
                    self.admin
                        .create_and_update_topic_config(addr.clone(), config),
                    self.admin
                        .create_and_update_subscription_group_config(addr, group_config),
                );
                made.map_err(|e| unavailable("create topic", e))?;
                grouped.map_err(|e| unavailable("create group", e))?;
            }
            Ok(())
        }
        .await;
        self.forget_brokers_after(&result);
        result
    }

    /// Deletes `group` and `topic` from every master broker.
    pub async fn delete(&self, topic: &str, group: &str) -> Result<(), UpstreamError> {
        let _guard = self.lock.lock().await;
        let result = async {
            for addr in self.broker_addresses().await? {
                let (ungrouped, unmade) = tokio::join!(
                    self.admin
                        .delete_subscription_group(addr.clone(), group.into(), Some(true)),
                    self.admin
                        .delete_topic_in_broker([addr].into_iter().collect(), topic.into()),
                );
                ungrouped.map_err(|e| unavailable("delete group", e))?;
                unmade.map_err(|e| unavailable("delete topic", e))?;
            }
            Ok(())
        }
        .await;
        self.forget_brokers_after(&result);
        result
    }

    /// The kept addresses (a poisoned lock is still usable: each write
    /// replaces the value).
    fn brokers(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Vec<CheetahString>)>> {
        self.brokers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_brokers_after(&self, result: &Result<(), UpstreamError>) {
        if result.is_err() {
            *self.brokers() = None;
        }
    }

    /// The master broker addresses of every broker of the cluster.
    pub(super) async fn broker_addresses(&self) -> Result<Vec<CheetahString>, UpstreamError> {
        if let Some((at, addresses)) = self.brokers().as_ref() {
            if at.elapsed() < BROKERS_KEPT {
                return Ok(addresses.clone());
            }
        }
        let info = self
            .admin
            .examine_broker_cluster_info()
            .await
            .map_err(|e| unavailable("cluster info", e))?;
        let mut addresses = Vec::new();
        if let Some(brokers) = info.broker_addr_table.as_ref() {
            for data in brokers.values() {
                if let Some(addr) = data.broker_addrs().get(&0) {
                    addresses.push(addr.clone());
                }
            }
        }
        if addresses.is_empty() {
            return Err(UpstreamError::Unavailable(
                "no master broker registered with the name server".into(),
            ));
        }
        self.gate.know(addresses.iter().map(|a| a.as_str()));
        *self.brokers() = Some((Instant::now(), addresses.clone()));
        Ok(addresses)
    }
}
