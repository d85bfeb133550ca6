//! Reads a message queue by offset without being a consumer: one
//! PULL_MESSAGE request to the broker the caller names, and nothing else.
//!
//! It exists because the client's pull consumer (`DefaultMQPullConsumer`, in
//! 1.0.0 a lite pull consumer in classic mode) registers every topic it ever
//! reads in its group's subscription table, with no way to unsubscribe. From
//! then on the client refreshes that topic's route, rebalances it and keeps
//! hidden pull tasks on its queues, retrying once a second after the topic is
//! deleted, and the first read of a new topic takes seconds. Here a pull goes
//! through `ClientInstanceHandle::pull_outcome_from_broker`. Nothing is
//! registered, a failed pull is reported once and never retried, and no state
//! outlives the call.
//!
//! A handle runs one call at a time, so each concurrent pull (a long poll
//! holds one for seconds) leases its own. All handles share one client
//! instance (one connection per broker) that runs no consumer of ours. This
//! module owns only those handles. It does not touch offsets, routes or groups:
//! the caller passes the broker address from its route.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cheetah_string::CheetahString;
use rocketmq_client_rust::{
    ClientConfig, ClientInstanceHandle, ClientRuntime, PullOutcome, PullStatus,
};
use rocketmq_model::common::filter::expression_type::ExpressionType;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::sys_flag::pull_sys_flag::PullSysFlag;
use rocketmq_protocol::protocol::header::namesrv::topic_operation_header::TopicRequestHeader;
use rocketmq_protocol::protocol::header::pull_message_request_header::PullMessageRequestHeader;
use rocketmq_protocol::rpc::rpc_request_header::RpcRequestHeader;
use tokio::time::error::Elapsed;

use super::rocketmq::unavailable;
use super::UpstreamError;

/// The reader's client instance is named `{INSTANCE}-{pid}#managed-domain-{DOMAIN}`
/// in the runtime's pool. That name keeps it apart from the producer's and the
/// admin's instances, so it never carries a consumer or producer group of ours.
const INSTANCE: &str = "amqp-gateway-reader";
const DOMAIN: u64 = 1;

/// What one pull of a message queue returned.
#[derive(Debug, Default)]
pub struct PullBatch {
    /// Messages at or after the offset asked for, in offset order.
    pub messages: Vec<MessageExt>,
    /// Where the next pull starts.
    pub next_offset: i64,
    /// Where the message queue's log ends, as the broker saw it.
    pub max_offset: i64,
    /// The offset asked for is outside the log (OFFSET_ILLEGAL).
    pub offset_illegal: bool,
}

/// Pulls message queues for one group, through a pool of client handles.
pub struct Reader {
    runtime: Arc<ClientRuntime>,
    config: ClientConfig,
    group: CheetahString,
    send_timeout: Duration,
    /// Handles no pull is using; the pool grows to the most pulls at once.
    idle: Mutex<Vec<Arc<ClientInstanceHandle>>>,
}

/// A handle taken from the pool. It goes back when dropped, so a pull that is
/// cancelled halfway through still returns it.
struct Lease<'a> {
    reader: &'a Reader,
    handle: Arc<ClientInstanceHandle>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.reader.idle().push(self.handle.clone());
    }
}

impl Reader {
    /// Opens a reader for `group` (the gateway's `{producer_group}-reader`),
    /// starting one handle now so that a bad configuration fails here and not
    /// on the first read.
    pub async fn start(
        runtime: &Arc<ClientRuntime>,
        name_server: &str,
        group: &str,
        send_timeout: Duration,
    ) -> Result<Reader, UpstreamError> {
        let mut config = ClientConfig::default();
        let instance = format!("{INSTANCE}-{}", std::process::id());
        config.set_instance_name(CheetahString::from_string(instance));
        // Without a name server address, the instance would look one up over HTTP.
        config.set_namesrv_addr(CheetahString::from(name_server));
        let reader = Reader {
            runtime: runtime.clone(),
            config,
            group: CheetahString::from(group),
            send_timeout,
            idle: Mutex::default(),
        };
        let first = reader.open().await?;
        reader.idle().push(first);
        Ok(reader)
    }

    /// Reads up to `max` messages of `mq` from `offset`, on the broker at
    /// `broker_addr`. With `wait`, the broker holds the request until a
    /// message arrives or `wait` passes (a long poll). An error is reported
    /// once: nothing is retried and nothing stays registered.
    pub async fn pull(
        &self,
        broker_addr: &CheetahString,
        mq: &MessageQueue,
        offset: i64,
        max: i32,
        wait: Option<Duration>,
    ) -> Result<PullBatch, UpstreamError> {
        let wait = wait.filter(|w| !w.is_zero());
        let timeout = wait.unwrap_or_default() + self.send_timeout;
        let request = pull_request(&self.group, mq, offset, max, wait);
        let lease = self.lease().await?;
        let handle = &lease.handle;
        let call = handle.pull_outcome_from_broker(broker_addr.as_str(), request, millis(timeout));
        // The transport has its own deadline. This one is in case it does not
        // enforce it, and the classic pull had one too.
        let late =
            |_: Elapsed| unavailable("pull", format!("{broker_addr} silent for {timeout:?}"));
        let outcome = tokio::time::timeout(timeout, call)
            .await
            .map_err(late)?
            .map_err(|e| unavailable("pull", e))?;
        Ok(outcome_to_batch(outcome))
    }

    /// An idle handle, or a new one when every handle is busy.
    async fn lease(&self) -> Result<Lease<'_>, UpstreamError> {
        // Taken in its own statement: the lock must not be held across `open`.
        let idle = self.idle().pop();
        let handle = match idle {
            Some(handle) => handle,
            None => self.open().await?,
        };
        Ok(Lease {
            reader: self,
            handle,
        })
    }

    /// A new handle on the reader's client instance. Only the first one
    /// creates and starts the instance. Later ones take a lease on it (a map
    /// lookup), and their `start` finds it running and returns.
    async fn open(&self) -> Result<Arc<ClientInstanceHandle>, UpstreamError> {
        let handle =
            ClientInstanceHandle::get_or_create(&self.runtime, DOMAIN, self.config.clone(), None)
                .map_err(|e| unavailable("reader client", e))?;
        if let Err(e) = handle.start().await {
            handle.shutdown_owned().await;
            return Err(unavailable("reader client start", e));
        }
        Ok(Arc::new(handle))
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Arc<ClientInstanceHandle>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Reader {
    /// Gives the handles' leases back to the client's pool; the last one
    /// shuts the reader's client instance down. A handle dropped without
    /// this only logs a warning.
    fn drop(&mut self) {
        let handles = std::mem::take(self.idle.get_mut().unwrap_or_else(PoisonError::into_inner));
        if handles.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for handle in handles {
                    handle.shutdown_owned().await;
                }
            });
        }
    }
}

/// The request a classic pull sends, without the consumer around it. The
/// subscription ("*", TAG) goes in the request, so the broker needs no
/// heartbeat from us. Suspend only for a long poll, and never commit an offset.
fn pull_request(
    group: &CheetahString,
    mq: &MessageQueue,
    offset: i64,
    max: i32,
    wait: Option<Duration>,
) -> PullMessageRequestHeader {
    PullMessageRequestHeader {
        consumer_group: group.clone(),
        topic: mq.topic().clone(),
        queue_id: mq.queue_id(),
        queue_offset: offset,
        max_msg_nums: max,
        sys_flag: PullSysFlag::build_sys_flag(false, wait.is_some(), true, false) as i32,
        commit_offset: 0,
        suspend_timeout_millis: wait.map_or(0, millis),
        sub_version: 0,
        subscription: Some(CheetahString::from_static_str("*")),
        expression_type: Some(CheetahString::from_static_str(ExpressionType::TAG)),
        max_msg_bytes: Some(i32::MAX),
        topic_request: Some(TopicRequestHeader {
            lo: None,
            rpc: Some(RpcRequestHeader {
                broker_name: Some(mq.broker_name().clone()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Only FOUND carries messages (already decoded by the client). NO_NEW_MSG and
/// NO_MATCHED_MSG are an empty read that still moves `next_offset`.
fn outcome_to_batch(outcome: PullOutcome) -> PullBatch {
    let status = outcome.pull_status();
    let next_offset = i64::try_from(outcome.next_begin_offset()).unwrap_or(i64::MAX);
    let max_offset = i64::try_from(outcome.max_offset()).unwrap_or(i64::MAX);
    let messages = match status {
        PullStatus::Found => outcome.into_messages().unwrap_or_default(),
        _ => Vec::new(),
    };
    PullBatch {
        messages,
        next_offset,
        max_offset,
        offset_illegal: status == PullStatus::OffsetIllegal,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq() -> MessageQueue {
        MessageQueue::from_parts("q.orders", "broker-a", 0)
    }

    #[test]
    fn a_long_poll_suspends_and_a_plain_pull_does_not() {
        let group = CheetahString::from("gw-reader");
        let plain = pull_request(&group, &mq(), 7, 32, None);
        let long = pull_request(&group, &mq(), 7, 32, Some(Duration::from_secs(5)));
        for request in [&plain, &long] {
            let flag = request.sys_flag as u32;
            assert!(PullSysFlag::has_subscription_flag(flag));
            assert!(!PullSysFlag::has_commit_offset_flag(flag));
            assert_eq!(request.subscription.as_deref(), Some("*"));
        }
        assert!(!PullSysFlag::has_suspend_flag(plain.sys_flag as u32));
        assert!(PullSysFlag::has_suspend_flag(long.sys_flag as u32));
        assert_eq!(long.suspend_timeout_millis, 5_000);
    }

    #[test]
    fn only_found_carries_messages() {
        let found = PullOutcome::new(
            PullStatus::Found,
            9,
            0,
            9,
            Some(vec![MessageExt::default()]),
        );
        assert_eq!(outcome_to_batch(found).messages.len(), 1);
        let none = PullOutcome::new(PullStatus::NoNewMsg, 9, 0, 9, None::<Vec<MessageExt>>);
        let batch = outcome_to_batch(none);
        assert!(batch.messages.is_empty() && !batch.offset_illegal);
        assert_eq!((batch.next_offset, batch.max_offset), (9, 9));
        let moved = PullOutcome::new(PullStatus::OffsetIllegal, 3, 3, 9, None::<Vec<MessageExt>>);
        assert!(outcome_to_batch(moved).offset_illegal);
    }
}
