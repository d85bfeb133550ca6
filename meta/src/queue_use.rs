//! When a queue was last used (declared, read by basic.get, left by its
//! last consumer): what x-expires counts from. Shared by every gateway, as
//! any of them may be the one that used the queue; keyed by the queue's
//! topic (one incarnation). Wall-clock milliseconds, as leases are.

use crate::store::{Result, Store};

impl Store {
    /// Records a use at `now_ms` (a later use is kept).
    pub async fn touch_queue(&self, topic: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO queue_use (topic, used_ms) VALUES ($1, $2) \
             ON CONFLICT (topic) DO UPDATE SET used_ms = excluded.used_ms \
             WHERE queue_use.used_ms < excluded.used_ms",
        )
        .bind(topic)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last recorded use, if any.
    pub async fn queue_used_ms(&self, topic: &str) -> Result<Option<i64>> {
        let used: Option<(i64,)> = sqlx::query_as("SELECT used_ms FROM queue_use WHERE topic = $1")
            .bind(topic)
            .fetch_optional(&self.pool)
            .await?;
        Ok(used.map(|(ms,)| ms))
    }
}
