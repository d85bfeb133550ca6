//! An upstream that stores nothing and confirms at once, counting messages per
//! topic so that queue counts stay meaningful. Only for measuring the
//! gateway's own ceiling (benches/); selected explicitly, never by default.

use dashmap::DashMap;

use super::{InboundMessage, OutboundMessage, Partition, Pulled, Upstream, UpstreamFuture};

#[derive(Debug, Default)]
pub struct NullUpstream {
    stored: std::sync::Arc<DashMap<String, u64>>,
}

impl Upstream for NullUpstream {
    fn send(&self, message: OutboundMessage) -> UpstreamFuture<'static, ()> {
        *self.stored.entry(message.topic).or_default() += 1;
        Box::pin(std::future::ready(Ok(())))
    }

    fn create_queue<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
        _message_queues: Option<i32>,
    ) -> UpstreamFuture<'a, ()> {
        self.stored.entry(topic.to_owned()).or_default();
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete_queue<'a>(&'a self, topic: &'a str, _group: &'a str) -> UpstreamFuture<'a, ()> {
        self.stored.remove(topic);
        Box::pin(std::future::ready(Ok(())))
    }

    fn backlog<'a>(&'a self, topic: &'a str, _group: &'a str) -> UpstreamFuture<'a, u64> {
        let n = self.stored.get(topic).map(|n| *n).unwrap_or(0);
        Box::pin(std::future::ready(Ok(n)))
    }

    fn purge<'a>(&'a self, topic: &'a str, _group: &'a str) -> UpstreamFuture<'a, u64> {
        let n = self
            .stored
            .get_mut(topic)
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or(0);
        Box::pin(std::future::ready(Ok(n)))
    }

    fn peek<'a>(
        &'a self,
        _topic: &'a str,
        _group: &'a str,
        _max: u32,
    ) -> UpstreamFuture<'a, Vec<InboundMessage>> {
        // Nothing is stored: there is nothing to read back.
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn partitions<'a>(
        &'a self,
        topic: &'a str,
        _group: &'a str,
    ) -> UpstreamFuture<'a, Vec<Partition>> {
        // Counted messages are all unread: the log "ends" at the count.
        let max = self.stored.get(topic).map(|n| *n as i64).unwrap_or(0);
        Box::pin(std::future::ready(Ok(vec![Partition {
            queue_id: 0,
            committed: 0,
            max,
        }])))
    }

    fn pull<'a>(
        &'a self,
        _topic: &'a str,
        _queue_id: i32,
        offset: i64,
        _max: u32,
        wait: Option<std::time::Duration>,
    ) -> UpstreamFuture<'a, Pulled> {
        // Nothing is stored, so a read finds nothing (after the long poll).
        Box::pin(async move {
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            Ok(Pulled {
                next_offset: offset,
                ..Pulled::default()
            })
        })
    }

    fn commit<'a>(
        &'a self,
        _topic: &'a str,
        _group: &'a str,
        _queue_id: i32,
        _offset: i64,
    ) -> UpstreamFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn max_message_size(&self) -> u64 {
        u64::MAX
    }
}
