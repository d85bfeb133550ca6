//! POP straight on RocketMQ with rocketmq-client-rust: the `direct-pop`
//! target, end to end only. The broker hands each popped message out once,
//! hides it for an invisible time and should give it out again unless it is
//! acknowledged: the way several stateless gateways could serve one queue
//! (docs/architecture.md, "One queue, many gateways"). The same producer as
//! the `direct` target; one popper (`POP_MAX` messages a pop)
//! acknowledging each message through a pool of client handles, since a
//! handle runs one call at a time.
//!
//! After the run, a second check: messages popped and not acknowledged must
//! come back once their invisible time is over. What came back is reported
//! in `Outcome::split`.
//!
//! With rocketmq-rust 1.0.0 a pop of more than one message fails in the
//! client (see `POP_MAX`), so this pops one at a time, and the target runs
//! only when named (`TARGETS=direct-pop`): it is here to tell when a newer
//! client and broker make POP usable.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cheetah_string::CheetahString;
use futures_util::future::join_all;
use rocketmq_client_rust::{ClientConfig, ClientInstanceHandle, PopStatus};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::{MessageConst, MessageTrait};
use rocketmq_protocol::protocol::header::ack_message_request_header::AckMessageRequestHeader;
use rocketmq_protocol::protocol::header::extra_info_util::ExtraInfoUtil;
use rocketmq_protocol::protocol::header::pop_message_request_header::PopMessageRequestHeader;

use crate::direct::{failed, produce, Direct, Read, BROKER_NAME};
use crate::lmq::broker_address;
use crate::measure::Counters;
use crate::{Outcome, Plan};

/// The client instance the POP handles share (apart from the others').
const DOMAIN: u64 = 7;
/// Handles acknowledging at once.
const ACKERS: usize = 8;
/// Messages per pop. The broker allows 32, but rocketmq-rust 1.0.0's broker
/// joins one queue's popped offsets with ';' (`ExtraInfoUtil::
/// build_msg_offset_info`) where its client's parser, like Java's, expects
/// ',': the client then refuses the answer to any pop of more than one
/// message (`core.argument.invalid`). One at a time is what works.
const POP_MAX: u32 = 1;
/// How long a popped message stays hidden in the run.
const INVISIBLE_MS: u64 = 60_000;
/// How long the check hides what it pops, and then waits for it.
const CHECK_INVISIBLE_MS: u64 = 2_000;
const CHECK_WAIT: Duration = Duration::from_secs(20);
const CHECK_MESSAGES: usize = 10;
/// How long the popper may go on after the producer's time is up.
const READ_LONGER: Duration = Duration::from_secs(30);

/// Pops for one group from one broker.
struct Popper {
    group: CheetahString,
    broker: CheetahString,
    handles: Vec<ClientInstanceHandle>,
}

/// 2. A producer (window `plan.window`, batched as `direct`) and one popper.
pub async fn end_to_end(direct: &Direct, plan: &Plan, c: Arc<Counters>) -> io::Result<Outcome> {
    let clients = direct.clients();
    let topic = direct.topic("pop").await?;
    let popper = Popper::start(direct, &topic, "bench-direct-pop").await?;
    let expected = AtomicU64::new(u64::MAX);
    let started = Instant::now();
    // One send at a time: the popper takes one message a pop (`POP_MAX`)
    // and would otherwise face a backlog it cannot read in the run's time.
    let producing = async {
        let sent = produce(
            &clients.producer,
            &topic,
            plan.size,
            1,
            started + plan.duration,
            &c,
        )
        .await;
        let confirmed = sent.as_ref().map_or(0, |s| s.confirmed);
        expected.store(confirmed, Ordering::Release);
        (sent, Instant::now())
    };
    let until = started + plan.duration + READ_LONGER;
    let reading = popper.read(&topic, &expected, until, &c);
    let ((sent, sent_at), read) = tokio::join!(producing, reading);
    let (sent, read) = (sent?, read?);
    let mut outcome = Outcome {
        published: sent.confirmed,
        nacked: sent.failed,
        confirm: sent.latencies,
        consumed: true,
        delivered: read.delivered,
        e2e: read.latencies,
        ..Outcome::default()
    };
    outcome.seconds = (read.last.map_or(sent_at, |at| at.max(sent_at)) - started).as_secs_f64();
    let (hidden, back) = redelivery_check(direct, &popper).await?;
    outcome.split = vec![
        ("popped, not acknowledged".into(), hidden),
        (format!("given out again within {CHECK_WAIT:?}"), back),
    ];
    Ok(outcome)
}

/// Sends `CHECK_MESSAGES` to a new topic, pops them without acknowledging,
/// and counts how many come back within `CHECK_WAIT`.
async fn redelivery_check(direct: &Direct, popper: &Popper) -> io::Result<(u64, u64)> {
    let topic = direct.topic("pop_check").await?;
    let producer = &direct.clients().producer;
    for _ in 0..CHECK_MESSAGES {
        let message = rocketmq_model::common::message::message_single::Message::builder()
            .topic(topic.as_str())
            .body(bytes::Bytes::from_static(b"check"))
            .build_unchecked();
        producer
            .clone()
            .send(message)
            .await
            .map_err(|e| failed("send", e))?;
    }
    let mut failed = Failures::default();
    let mut hidden = 0u64;
    let until = Instant::now() + Duration::from_secs(10);
    while hidden < CHECK_MESSAGES as u64 && Instant::now() < until {
        hidden += failed
            .count(popper.pop(&topic, CHECK_INVISIBLE_MS).await)
            .await;
    }
    let mut back = 0u64;
    let until = Instant::now() + CHECK_WAIT;
    while back < hidden && Instant::now() < until {
        back += failed
            .count(popper.pop(&topic, CHECK_INVISIBLE_MS).await)
            .await;
    }
    eprintln!(
        "  POP check: {hidden} popped and not acknowledged, {back} given out again{}",
        failed.summary()
    );
    Ok((hidden, back))
}

/// Pops that failed: counted, the first error kept, and a pause after each
/// so that a broker refusing everything is not hammered.
#[derive(Default)]
struct Failures {
    n: u64,
    first: Option<String>,
}

impl Failures {
    /// The messages a pop brought, 0 if it failed.
    async fn count(&mut self, popped: io::Result<Vec<MessageExt>>) -> u64 {
        match popped {
            Ok(messages) => messages.len() as u64,
            Err(e) => {
                self.n += 1;
                self.first.get_or_insert_with(|| e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                0
            }
        }
    }

    fn summary(&self) -> String {
        match &self.first {
            Some(first) => format!(" ({} pops failed, the first: {first})", self.n),
            None => String::new(),
        }
    }
}

impl Popper {
    async fn start(direct: &Direct, topic: &str, group: &str) -> io::Result<Popper> {
        let clients = direct.clients();
        let broker = broker_address(clients, topic).await?;
        let mut config = ClientConfig::default();
        let instance = format!("bench-pop-{}", std::process::id());
        config.set_instance_name(CheetahString::from_string(instance));
        config.set_namesrv_addr(CheetahString::from(direct.name_server()));
        let mut handles = Vec::with_capacity(ACKERS + 1);
        for _ in 0..=ACKERS {
            let handle = ClientInstanceHandle::get_or_create(
                clients.runtime.client(),
                DOMAIN,
                config.clone(),
                None,
            )
            .map_err(|e| failed("POP client", e))?;
            handle
                .start()
                .await
                .map_err(|e| failed("POP client start", e))?;
            handles.push(handle);
        }
        Ok(Popper {
            group: CheetahString::from(group),
            broker,
            handles,
        })
    }

    /// One pop of queue 0 (a long poll of a second), hiding what it gets
    /// for `invisible_ms`.
    async fn pop(&self, topic: &str, invisible_ms: u64) -> io::Result<Vec<MessageExt>> {
        let born_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let request = PopMessageRequestHeader {
            consumer_group: self.group.clone(),
            topic: CheetahString::from(topic),
            queue_id: 0,
            max_msg_nums: POP_MAX,
            invisible_time: invisible_ms,
            poll_time: 1_000,
            born_time,
            init_mode: 0,
            exp_type: Some(CheetahString::from_static_str("TAG")),
            exp: Some(CheetahString::from_static_str("*")),
            order: Some(false),
            attempt_id: None,
            topic_request_header: None,
        };
        let result = self.handles[0]
            .pop_message(
                &CheetahString::from_static_str(BROKER_NAME),
                &self.broker,
                request,
                4_000,
            )
            .await
            .map_err(|e| failed("pop", e))?;
        Ok(match result.pop_status {
            PopStatus::Found => result.msg_found_list.unwrap_or_default(),
            _ => Vec::new(),
        })
    }

    /// Acknowledges one popped message with the receipt the broker put in it.
    async fn ack(
        &self,
        handle: &ClientInstanceHandle,
        topic: &str,
        m: &MessageExt,
    ) -> io::Result<()> {
        let receipt = m
            .property(&CheetahString::from_static_str(
                MessageConst::PROPERTY_POP_CK,
            ))
            .ok_or_else(|| io::Error::other("a popped message without its receipt"))?;
        let parts = ExtraInfoUtil::split(receipt.as_str());
        let offset = ExtraInfoUtil::get_queue_offset(&parts).map_err(|e| failed("receipt", e))?;
        let queue_id = ExtraInfoUtil::get_queue_id(&parts).map_err(|e| failed("receipt", e))?;
        let request = AckMessageRequestHeader {
            consumer_group: self.group.clone(),
            topic: CheetahString::from(topic),
            queue_id,
            extra_info: receipt,
            offset,
            lite_topic: None,
            topic_request_header: None,
        };
        handle
            .ack_message(&self.broker, request, 3_000)
            .await
            .map_err(|e| failed("ack", e))?;
        Ok(())
    }

    /// Pops and acknowledges until `expected` messages are in, nothing
    /// came for 10 s after that, or `until`.
    async fn read(
        &self,
        topic: &str,
        expected: &AtomicU64,
        until: Instant,
        c: &Counters,
    ) -> io::Result<Read> {
        let mut out = Read::default();
        let mut heard = Instant::now();
        let mut failed = Failures::default();
        while out.delivered < expected.load(Ordering::Acquire) {
            if Instant::now() > until {
                eprintln!(
                    "  {topic}: {} of {} popped when the time was up",
                    out.delivered,
                    expected.load(Ordering::Acquire)
                );
                break;
            }
            let messages = match self.pop(topic, INVISIBLE_MS).await {
                Ok(messages) => messages,
                Err(e) => {
                    failed.count(Err(e)).await;
                    if failed.n > 1000 {
                        eprintln!("  {topic}: giving up{}", failed.summary());
                        break;
                    }
                    Vec::new()
                }
            };
            if messages.is_empty() {
                if expected.load(Ordering::Acquire) != u64::MAX
                    && heard.elapsed() > Duration::from_secs(10)
                {
                    eprintln!(
                        "  {topic}: {} of {} popped, then nothing for 10 s",
                        out.delivered,
                        expected.load(Ordering::Acquire)
                    );
                    break;
                }
                continue;
            }
            heard = Instant::now();
            out.took(messages.iter().map(|m| m.body()), c);
            let acks = messages
                .chunks(messages.len().div_ceil(ACKERS))
                .zip(&self.handles[1..])
                .map(|(some, handle)| async move {
                    for m in some {
                        self.ack(handle, topic, m).await?;
                    }
                    Ok::<_, io::Error>(())
                });
            for acked in join_all(acks).await {
                acked?;
            }
        }
        if failed.n > 0 {
            eprintln!("  {topic}: {}", failed.summary().trim());
        }
        Ok(out)
    }
}

impl Drop for Popper {
    fn drop(&mut self) {
        let handles = std::mem::take(&mut self.handles);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for handle in handles {
                    handle.shutdown_owned().await;
                }
            });
        }
    }
}
