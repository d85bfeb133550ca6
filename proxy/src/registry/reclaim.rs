//! A deleted queue's topic and group handed back to RocketMQ after the
//! delete is answered.
//!
//! Once the meta store and the image no longer have a queue, nothing reads
//! or writes its topic (each incarnation has a topic of its own), so the
//! client need not wait for RocketMQ's two admin round trips: they run in
//! the background, a bounded number at a time, and shutdown waits for them.
//! A failure is logged with what to delete by hand.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::upstream::Upstream;

/// Deletions running in the background at most; past that, the deleting
/// client waits for its own.
const AT_MOST: u32 = 1024;

pub struct Reclaims {
    running: Arc<Semaphore>,
}

impl Default for Reclaims {
    fn default() -> Self {
        Reclaims {
            running: Arc::new(Semaphore::new(AT_MOST as usize)),
        }
    }
}

impl Reclaims {
    /// Deletes `topic` and `group` from RocketMQ, in the background while
    /// fewer than `AT_MOST` are under way.
    pub async fn reclaim(
        &self,
        upstream: &Arc<dyn Upstream>,
        queue: &str,
        topic: &str,
        group: &str,
    ) {
        let deletion = deletion(
            upstream.clone(),
            queue.to_owned(),
            topic.to_owned(),
            group.to_owned(),
        );
        match self.running.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    deletion.await;
                    drop(permit);
                });
            }
            Err(_) => deletion.await,
        }
    }

    /// Waits until every background deletion has ended.
    pub async fn drain(&self) {
        let _all = self.running.acquire_many(AT_MOST).await;
    }
}

async fn deletion(upstream: Arc<dyn Upstream>, queue: String, topic: String, group: String) {
    if let Err(error) = upstream.delete_queue(&topic, &group).await {
        crate::metrics::RECLAIMS_FAILED.increment(1);
        tracing::error!(%queue, %topic, %group, %error, "A deleted queue's RocketMQ topic and group were not deleted; delete them with mqadmin deleteTopic / deleteSubGroup.");
    }
}
