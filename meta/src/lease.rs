//! Read leases: which gateway reads which message queue of a queue's topic.
//!
//! A queue's messages must be read by one gateway at a time per message
//! queue, or two gateways would deliver the same message. A gateway that
//! wants to read a queue announces itself as a reader; the readers split the
//! topic's message queues between them and each takes leases on its share.
//! A lease lapses if not renewed within its time to live, so the share of a
//! gateway that died goes to the others. Times are wall-clock milliseconds
//! of the gateways (their clocks are assumed to agree within the TTL).

use crate::store::{Result, Store};

impl Store {
    /// Takes or renews the lease on one message queue; false if another
    /// owner holds an unexpired one.
    pub async fn try_lease(
        &self,
        topic: &str,
        queue_id: i32,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO queue_leases (topic, queue_id, owner, expires_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (topic, queue_id) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms \
             WHERE queue_leases.owner = excluded.owner OR queue_leases.expires_ms < $5",
        )
        .bind(topic)
        .bind(i64::from(queue_id))
        .bind(owner)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease back (only if `owner` holds it).
    pub async fn release_lease(&self, topic: &str, queue_id: i32, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM queue_leases WHERE topic = $1 AND queue_id = $2 AND owner = $3")
            .bind(topic)
            .bind(i64::from(queue_id))
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Says `owner` wants to read the topic, until `now_ms + ttl_ms`, for
    /// `consumers` consumers (one of them exclusive or not).
    pub async fn announce_reader(
        &self,
        topic: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
        consumers: i64,
        exclusive: bool,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO queue_readers (topic, owner, expires_ms, consumers, exclusive_consumer) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (topic, owner) DO UPDATE SET expires_ms = excluded.expires_ms, \
             consumers = excluded.consumers, exclusive_consumer = excluded.exclusive_consumer",
        )
        .bind(topic)
        .bind(owner)
        .bind(now_ms + ttl_ms)
        .bind(consumers)
        .bind(i64::from(exclusive))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Live readers of a topic with their consumer counts and whether one
    /// of their consumers is exclusive.
    pub async fn reader_consumers(
        &self,
        topic: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, i64, bool)>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT owner, consumers, exclusive_consumer FROM queue_readers \
             WHERE topic = $1 AND expires_ms >= $2 ORDER BY owner",
        )
        .bind(topic)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(o, c, e)| (o, c, e != 0)).collect())
    }

    pub async fn withdraw_reader(&self, topic: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM queue_readers WHERE topic = $1 AND owner = $2")
            .bind(topic)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The live readers of a topic, sorted (every gateway sees the same order).
    pub async fn readers(&self, topic: &str, now_ms: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT owner FROM queue_readers WHERE topic = $1 AND expires_ms >= $2 ORDER BY owner",
        )
        .bind(topic)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Who holds which message queue of a topic (expired leases included,
    /// with their expiry), for operators and tests.
    pub async fn lease_holders(&self, topic: &str) -> Result<Vec<(i32, String, i64)>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT queue_id, owner, expires_ms FROM queue_leases WHERE topic = $1 ORDER BY queue_id",
        )
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, owner, expires)| (id as i32, owner, expires))
            .collect())
    }

    /// Says gateway `id` is alive until `now_ms + ttl_ms`, where its
    /// management API answers ("" if it has none), and what it uses of
    /// the limits (connections and channels per vhost and user, as the
    /// gateway writes them).
    pub async fn heartbeat(
        &self,
        id: &str,
        now_ms: i64,
        ttl_ms: i64,
        management: &str,
        usage: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO gateways (id, expires_ms, management, usage) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET expires_ms = excluded.expires_ms, \
             management = excluded.management, usage = excluded.usage",
        )
        .bind(id)
        .bind(now_ms + ttl_ms)
        .bind(management)
        .bind(usage)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the other live gateways said they use (`heartbeat`).
    pub async fn usage_elsewhere(&self, id: &str, now_ms: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT usage FROM gateways WHERE id <> $1 AND expires_ms >= $2 AND usage <> ''",
        )
        .bind(id)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Gateway `id` (heartbeating already) takes `seat`: where it listens,
    /// which no other live process can hold. Earlier gateways of the same
    /// seat are therefore dead: their read leases and reader announcements
    /// are dropped and they count as gone at once, instead of after their
    /// leases' and heartbeat's time to live. Returns them.
    pub async fn take_seat(&self, seat: &str, id: &str) -> Result<Vec<String>> {
        let before: Vec<String> =
            sqlx::query_scalar("SELECT id FROM gateways WHERE seat = $1 AND id <> $2")
                .bind(seat)
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        for gone in &before {
            for table in ["queue_leases", "queue_readers"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE owner = $1"))
                    .bind(gone)
                    .execute(&self.pool)
                    .await?;
            }
            sqlx::query("UPDATE gateways SET expires_ms = 0, seat = '' WHERE id = $1")
                .bind(gone)
                .execute(&self.pool)
                .await?;
        }
        sqlx::query("UPDATE gateways SET seat = $1 WHERE id = $2")
            .bind(seat)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(before)
    }

    /// The gateways whose heartbeat has not lapsed. Gateways, read leases
    /// and reader announcements lapsed for a minute are forgotten (a
    /// queue's are deleted with it, but a feed still stopping may take or
    /// announce one after that).
    pub async fn live_gateways(&self, now_ms: i64) -> Result<Vec<String>> {
        for table in ["gateways", "queue_leases", "queue_readers"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE expires_ms < $1"))
                .bind(now_ms - 60_000)
                .execute(&self.pool)
                .await?;
        }
        Ok(
            sqlx::query_scalar("SELECT id FROM gateways WHERE expires_ms >= $1 ORDER BY id")
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The live gateways with the address of their management API.
    pub async fn live_gateway_addresses(&self, now_ms: i64) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as(
                "SELECT id, management FROM gateways WHERE expires_ms >= $1 ORDER BY id",
            )
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await?,
        )
    }
}

/// Forgets the leases, readers and use of a queue's topic, within the
/// transaction that deletes the queue (before it does: the first statement
/// writes, so the transaction holds SQLite's write lock from its start).
pub(crate) async fn forget_queue_topic_in(
    tx: &mut sqlx::AnyConnection,
    vhost: &str,
    queue: &str,
) -> Result<()> {
    for table in ["queue_leases", "queue_readers", "queue_use"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE topic IN (SELECT topic FROM queues WHERE vhost = $1 AND name = $2)"
        ))
        .bind(vhost)
        .bind(queue)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// How many of `queues` message queues reader number `index` of `readers`
/// should hold: an even split, the first ones taking the remainder.
pub fn share(queues: usize, readers: usize, index: usize) -> usize {
    if readers == 0 {
        return queues;
    }
    queues / readers + usize::from(index < queues % readers)
}

/// This reader's share given every live reader as (owner, consumers,
/// exclusive): readers with consumers split the message queues; readers
/// without (a basic.get, a gateway expiring messages) read only while no
/// reader has consumers, so that messages never wait where no one consumes.
pub fn share_among(queues: usize, readers: &[(String, i64, bool)], me: &str) -> usize {
    let consuming = readers.iter().any(|(_, n, _)| *n > 0);
    let eligible: Vec<&str> = readers
        .iter()
        .filter(|(_, n, _)| !consuming || *n > 0)
        .map(|(owner, _, _)| owner.as_str())
        .collect();
    match eligible.iter().position(|o| *o == me) {
        Some(index) => share(queues, eligible.len(), index),
        None if eligible.is_empty() => queues,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::{share, share_among};

    #[test]
    fn readers_with_consumers_come_before_readers_without() {
        let r = |o: &str, n: i64| (o.to_owned(), n, false);
        let idle = [r("a", 0), r("b", 0)];
        assert_eq!(share_among(4, &idle, "a") + share_among(4, &idle, "b"), 4);
        let mixed = [r("a", 0), r("b", 2), r("c", 1)];
        assert_eq!(share_among(4, &mixed, "a"), 0, "no consumers: stands by");
        assert_eq!(share_among(4, &mixed, "b"), 2);
        assert_eq!(share_among(4, &mixed, "c"), 2);
        assert_eq!(
            share_among(3, &[], "a"),
            3,
            "not announced yet: reads alone"
        );
    }

    #[test]
    fn shares_cover_every_queue_exactly_once() {
        for queues in 1..9 {
            for readers in 1..6 {
                let total: usize = (0..readers).map(|i| share(queues, readers, i)).sum();
                assert_eq!(total, queues, "{queues} queues, {readers} readers");
            }
        }
        assert_eq!(share(1, 2, 1), 0, "a second reader of one queue stands by");
    }
}
