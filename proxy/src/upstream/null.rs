//! An upstream that confirms every send at once and keeps messages in this
//! process's memory until they are consumed: the gateway's own ceiling, with
//! RocketMQ taken out (benches/). Nothing survives a restart, and memory grows
//! with the backlog, so it is selected explicitly (`upstream = "null"`) and
//! never by default.
//!
//! One log per message queue of a topic; a topic has one group (as every
//! queue topic of the gateway does), whose committed offset is where the log
//! is trimmed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::clock::Clock;

use super::{InboundMessage, OutboundMessage, Partition, Pulled, Upstream, UpstreamFuture};

#[derive(Debug, Default)]
pub struct NullUpstream {
    topics: DashMap<String, Arc<Topic>>,
    /// Stamps each message's birth (its TTL counts from there).
    clock: Clock,
}

#[derive(Debug, Default)]
struct Topic {
    queues: Mutex<Vec<Log>>,
    arrived: Notify,
}

/// One message queue: `messages[0]` is at offset `start`.
#[derive(Debug, Default)]
struct Log {
    start: i64,
    committed: i64,
    messages: VecDeque<InboundMessage>,
}

impl Log {
    fn end(&self) -> i64 {
        self.start + self.messages.len() as i64
    }

    fn read(&self, from: i64, max: usize) -> Vec<InboundMessage> {
        let skip = (from - self.start).max(0) as usize;
        self.messages.iter().skip(skip).take(max).cloned().collect()
    }

    fn commit(&mut self, offset: i64) {
        self.committed = offset.clamp(self.start, self.end());
        while self.start < self.committed {
            self.messages.pop_front();
            self.start += 1;
        }
    }
}

impl Topic {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Log>> {
        // Every change leaves the logs consistent; a poisoned lock is still usable.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NullUpstream {
    pub fn with_clock(clock: Clock) -> NullUpstream {
        NullUpstream {
            clock,
            ..NullUpstream::default()
        }
    }

    /// The topic, made on first use (sends, declares and reads that wait).
    fn topic(&self, name: &str) -> Arc<Topic> {
        match self.topics.get(name) {
            Some(topic) => topic.clone(),
            None => self.topics.entry(name.to_owned()).or_default().clone(),
        }
    }

    /// The topics that exist (declared, or written to), for tests.
    pub fn topic_names(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.key().clone()).collect()
    }

    /// The topic if it exists, else an empty one that is not kept: a count or
    /// commit after a delete does not bring the topic back.
    fn existing(&self, name: &str) -> Arc<Topic> {
        self.topics.get(name).map(|t| t.clone()).unwrap_or_default()
    }
}

impl Upstream for NullUpstream {
    fn send(&self, message: OutboundMessage) -> UpstreamFuture<'static, ()> {
        let topic = self.topic(&message.topic);
        let queue_id = message.queue_id.unwrap_or(0).max(0);
        {
            let mut queues = topic.lock();
            if queues.len() <= queue_id as usize {
                queues.resize_with(queue_id as usize + 1, Log::default);
            }
            let log = &mut queues[queue_id as usize];
            let offset = log.end();
            log.messages.push_back(InboundMessage {
                queue_id,
                offset,
                born_ms: self.clock.now_ms(),
                body: message.body,
                properties: message
                    .properties
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            });
        }
        topic.arrived.notify_waiters();
        Box::pin(std::future::ready(Ok(())))
    }

    fn create_queue<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
        message_queues: Option<i32>,
    ) -> UpstreamFuture<'a, ()> {
        let topic = self.topic(topic);
        let mut queues = topic.lock();
        let wanted = message_queues.unwrap_or(1).max(1) as usize;
        if queues.len() < wanted {
            queues.resize_with(wanted, Log::default);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete_queue<'a>(&'a self, topic: &'a str, _group: &'a str) -> UpstreamFuture<'a, ()> {
        self.topics.remove(topic);
        Box::pin(std::future::ready(Ok(())))
    }

    fn backlog<'a>(&'a self, topic: &'a str, _group: &'a str) -> UpstreamFuture<'a, u64> {
        let n = self
            .existing(topic)
            .lock()
            .iter()
            .map(|l| l.end() - l.committed)
            .sum::<i64>();
        Box::pin(std::future::ready(Ok(n.max(0) as u64)))
    }

    fn purge<'a>(&'a self, topic: &'a str, _group: &'a str) -> UpstreamFuture<'a, u64> {
        let topic = self.existing(topic);
        let mut skipped = 0;
        for log in topic.lock().iter_mut() {
            skipped += log.end() - log.committed;
            log.commit(log.end());
        }
        Box::pin(std::future::ready(Ok(skipped.max(0) as u64)))
    }

    fn peek<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
        max: u32,
    ) -> UpstreamFuture<'a, Vec<InboundMessage>> {
        let topic = self.existing(topic);
        let mut out = Vec::new();
        for log in topic.lock().iter() {
            let left = (max as usize).saturating_sub(out.len());
            out.extend(log.read(log.committed, left));
        }
        Box::pin(std::future::ready(Ok(out)))
    }

    fn partitions<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
    ) -> UpstreamFuture<'a, Vec<Partition>> {
        let topic = self.existing(topic);
        let partitions = topic
            .lock()
            .iter()
            .enumerate()
            .map(|(id, log)| Partition {
                queue_id: id as i32,
                committed: log.committed,
                max: log.end(),
            })
            .collect();
        Box::pin(std::future::ready(Ok(partitions)))
    }

    fn pull<'a>(
        &'a self,
        topic: &'a str,
        queue_id: i32,
        offset: i64,
        max: u32,
        wait: Option<Duration>,
    ) -> UpstreamFuture<'a, Pulled> {
        let topic = self.topic(topic);
        Box::pin(async move {
            let deadline = wait.map(|w| tokio::time::Instant::now() + w);
            loop {
                // Registered before looking, so a send in between wakes us.
                let arrived = topic.arrived.notified();
                {
                    let queues = topic.lock();
                    let Some(log) = queues.get(queue_id.max(0) as usize) else {
                        return Ok(Pulled {
                            next_offset: offset,
                            offset_illegal: offset != 0,
                            ..Pulled::default()
                        });
                    };
                    let (start, end) = (log.start, log.end());
                    if offset < start || offset > end {
                        return Ok(Pulled {
                            next_offset: offset.clamp(start, end),
                            max_offset: end,
                            offset_illegal: true,
                            ..Pulled::default()
                        });
                    }
                    let messages = log.read(offset, max as usize);
                    if !messages.is_empty() || deadline.is_none() {
                        return Ok(Pulled {
                            next_offset: offset + messages.len() as i64,
                            max_offset: end,
                            messages,
                            offset_illegal: false,
                        });
                    }
                }
                let deadline = deadline.unwrap_or_else(tokio::time::Instant::now);
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    let end = topic
                        .lock()
                        .get(queue_id.max(0) as usize)
                        .map_or(offset, Log::end);
                    return Ok(Pulled {
                        next_offset: offset,
                        max_offset: end,
                        ..Pulled::default()
                    });
                }
            }
        })
    }

    fn commit<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
        queue_id: i32,
        offset: i64,
    ) -> UpstreamFuture<'a, ()> {
        let topic = self.existing(topic);
        if let Some(log) = topic.lock().get_mut(queue_id.max(0) as usize) {
            log.commit(offset);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn max_message_size(&self) -> u64 {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, body: &'static [u8]) -> OutboundMessage {
        OutboundMessage {
            topic: topic.into(),
            queue_id: None,
            body: bytes::Bytes::from_static(body),
            properties: vec![("AMQP_RK", "k".into()), ("AMQP_EMPTY", String::new())],
        }
    }

    #[tokio::test]
    async fn keeps_messages_until_committed_and_counts_the_backlog() {
        let up = NullUpstream::default();
        up.create_queue("t", "g", None).await.unwrap();
        for body in [&b"a"[..], b"b", b"c"] {
            up.send(message("t", body)).await.unwrap();
        }
        assert_eq!(up.backlog("t", "g").await.unwrap(), 3);
        let pulled = up.pull("t", 0, 1, 10, None).await.unwrap();
        let bodies: Vec<&[u8]> = pulled.messages.iter().map(|m| &m.body[..]).collect();
        assert_eq!(bodies, vec![&b"b"[..], b"c"]);
        assert_eq!((pulled.next_offset, pulled.max_offset), (3, 3));
        assert_eq!(pulled.messages[0].property("AMQP_RK"), Some("k"));
        assert_eq!(pulled.messages[0].property("AMQP_EMPTY"), None);
        up.commit("t", "g", 0, 2).await.unwrap();
        assert_eq!(up.backlog("t", "g").await.unwrap(), 1);
        // Trimmed below the commit: reading there is an illegal offset.
        assert!(up.pull("t", 0, 0, 10, None).await.unwrap().offset_illegal);
        assert_eq!(up.peek("t", "g", 10).await.unwrap()[0].body, &b"c"[..]);
        assert_eq!(up.purge("t", "g").await.unwrap(), 1);
        assert_eq!(up.backlog("t", "g").await.unwrap(), 0);
        let parts = up.partitions("t", "g").await.unwrap();
        assert_eq!(
            parts,
            vec![Partition {
                queue_id: 0,
                committed: 3,
                max: 3
            }]
        );
    }

    #[tokio::test]
    async fn a_long_poll_answers_when_a_message_arrives() {
        let up = std::sync::Arc::new(NullUpstream::default());
        up.create_queue("t", "g", None).await.unwrap();
        let reader = up.clone();
        let read = tokio::spawn(async move {
            reader
                .pull("t", 0, 0, 10, Some(Duration::from_secs(10)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        up.send(message("t", b"late")).await.unwrap();
        let pulled = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("answered before its 10 s wait")
            .unwrap()
            .unwrap();
        assert_eq!(pulled.messages.len(), 1);
        // An empty poll waits its time, then answers with nothing.
        let empty = up
            .pull("t", 0, 1, 10, Some(Duration::from_millis(30)))
            .await
            .unwrap();
        assert!(empty.messages.is_empty() && !empty.offset_illegal);
    }
}
