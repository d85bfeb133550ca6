//! Where a queue topic's message queues are: each with its broker's
//! address, looked up from the name server once per topic and shared with
//! the send lanes; forgotten when the topic is deleted.

use std::sync::Arc;

use cheetah_string::CheetahString;
use dashmap::DashMap;
use rocketmq_client_rust::{DefaultMQAdminExt, TopicAdmin};
use rocketmq_model::common::message::message_queue::MessageQueue;

use super::rocketmq::unavailable;
use super::UpstreamError;

/// A topic's message queues, each with its broker's address.
type Route = Arc<Vec<(CheetahString, MessageQueue)>>;

/// Each queue topic's message queues with their broker, looked up once;
/// shared with the send lanes.
#[derive(Clone)]
pub(super) struct Routes {
    pub(super) admin: Arc<DefaultMQAdminExt>,
    pub(super) cache: Arc<DashMap<String, Route>>,
    /// Learns the brokers' addresses from each lookup.
    pub(super) gate: Arc<super::gate::Gate>,
}

impl Routes {
    /// The message queue for a priority level; a topic made with fewer
    /// message queues (declared before it was a priority queue, or by an
    /// older gateway) takes the message into its highest one, logged.
    pub(super) async fn level(
        &self,
        topic: &str,
        level: i32,
    ) -> Result<MessageQueue, UpstreamError> {
        let mut route = self.route(topic).await?;
        if !route.iter().any(|(_, mq)| mq.queue_id() == level) {
            // The topic may have grown since it was looked up.
            self.cache.remove(topic);
            route = self.route(topic).await?;
        }
        let best = route
            .iter()
            .filter(|(_, mq)| mq.queue_id() <= level)
            .max_by_key(|(_, mq)| mq.queue_id())
            .map(|(_, mq)| mq.clone())
            .ok_or_else(|| UpstreamError::Refused(format!("topic {topic} has no queue")))?;
        if best.queue_id() != level {
            tracing::warn!(%topic, level, stored_in = best.queue_id(), "The queue's topic has fewer message queues than its priority levels (created before x-max-priority applied?); stored in its highest one.");
        }
        Ok(best)
    }

    /// The topic's message queues, each with its broker's address.
    pub(super) async fn queues_of(
        &self,
        topic: &str,
    ) -> Result<Vec<(CheetahString, MessageQueue)>, UpstreamError> {
        let route = self
            .admin
            .examine_topic_route_info(topic.into())
            .await
            .map_err(|e| unavailable("topic route", e))?
            .ok_or_else(|| UpstreamError::Refused(format!("topic {topic} has no route")))?;
        let mut out = Vec::new();
        for qd in &route.queue_datas {
            let Some(addr) = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name() == &qd.broker_name)
                .and_then(|b| b.broker_addrs().get(&0).cloned())
            else {
                continue;
            };
            self.gate.know([addr.as_str()]);
            for id in 0..qd.read_queue_nums {
                out.push((
                    addr.clone(),
                    MessageQueue::from_parts(topic, qd.broker_name.clone(), id as i32),
                ));
            }
        }
        Ok(out)
    }

    /// `queues_of`, remembered per topic (routes change only when the topic
    /// is deleted and created again, and deletion forgets them).
    pub(super) async fn route(
        &self,
        topic: &str,
    ) -> Result<Arc<Vec<(CheetahString, MessageQueue)>>, UpstreamError> {
        if let Some(route) = self.cache.get(topic) {
            return Ok(route.clone());
        }
        let route = Arc::new(self.queues_of(topic).await?);
        if !route.is_empty() {
            self.cache.insert(topic.to_owned(), route.clone());
        }
        Ok(route)
    }

    pub(super) async fn message_queue(
        &self,
        topic: &str,
        queue_id: i32,
    ) -> Result<(CheetahString, MessageQueue), UpstreamError> {
        self.route(topic)
            .await?
            .iter()
            .find(|(_, mq)| mq.queue_id() == queue_id)
            .cloned()
            .ok_or_else(|| UpstreamError::Refused(format!("topic {topic} has no queue {queue_id}")))
    }
}
