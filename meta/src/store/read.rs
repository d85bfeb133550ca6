//! Reading the store: one record, an exchange's bindings, or everything at
//! once (the snapshot a gateway starts from); and turning rows into records.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_flag, MetaError, Result, Store};
use crate::model::*;

impl Store {
    pub async fn vhost(&self, name: &str) -> Result<Option<Vhost>> {
        let row = sqlx::query("SELECT name, namespace FROM vhosts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(vhost_of))
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT name, password_hash, tags, loopback_only FROM users WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_of))
    }

    pub async fn permission(&self, user: &str, vhost: &str) -> Result<Option<Permission>> {
        let row = sqlx::query(
            "SELECT user_name, vhost, configure, write, read FROM permissions WHERE user_name = $1 AND vhost = $2",
        )
        .bind(user)
        .bind(vhost)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(permission_of))
    }

    pub async fn exchange(&self, vhost: &str, name: &str) -> Result<Option<Exchange>> {
        let row = sqlx::query(
            "SELECT vhost, name, kind, durable, auto_delete, internal, arguments FROM exchanges \
             WHERE vhost = $1 AND name = $2",
        )
        .bind(vhost)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(exchange_of))
    }

    pub async fn queue(&self, vhost: &str, name: &str) -> Result<Option<Queue>> {
        let row = sqlx::query(
            "SELECT vhost, name, durable, auto_delete, exclusive_owner, arguments, topic, consumer_group \
             FROM queues WHERE vhost = $1 AND name = $2",
        )
        .bind(vhost)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(queue_of))
    }

    /// The bindings whose source is one exchange.
    pub async fn bindings_from(&self, vhost: &str, source: &str) -> Result<Vec<Binding>> {
        let rows = sqlx::query(
            "SELECT vhost, source, destination, destination_kind, routing_key, arguments FROM bindings \
             WHERE vhost = $1 AND source = $2",
        )
        .bind(vhost)
        .bind(source)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(binding_of).collect()
    }

    /// Reads everything, consistently (one transaction).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin().await?;
        let revision = sqlx::query_scalar("SELECT revision FROM meta_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let vhosts = sqlx::query("SELECT name, namespace FROM vhosts")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(vhost_of)
            .collect();
        let users = sqlx::query("SELECT name, password_hash, tags, loopback_only FROM users")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(user_of)
            .collect();
        let permissions =
            sqlx::query("SELECT user_name, vhost, configure, write, read FROM permissions")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(permission_of)
                .collect();
        let exchanges = sqlx::query(
            "SELECT vhost, name, kind, durable, auto_delete, internal, arguments FROM exchanges",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(exchange_of)
        .collect();
        let queues = sqlx::query(
            "SELECT vhost, name, durable, auto_delete, exclusive_owner, arguments, topic, consumer_group FROM queues",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(queue_of)
        .collect();
        let bindings = sqlx::query(
            "SELECT vhost, source, destination, destination_kind, routing_key, arguments FROM bindings",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(binding_of)
        .collect::<Result<Vec<_>>>()?;
        let limits = super::limits::all_limits_in(&mut tx).await?;
        tx.commit().await?;
        Ok(Snapshot {
            limits,
            revision,
            vhosts,
            users,
            permissions,
            exchanges,
            queues,
            bindings,
        })
    }
}

fn vhost_of(r: &AnyRow) -> Vhost {
    Vhost {
        name: r.get(0),
        namespace: r.get(1),
    }
}

fn user_of(r: &AnyRow) -> User {
    User {
        name: r.get(0),
        password_hash: r.get(1),
        tags: r.get(2),
        loopback_only: get_flag(r, 3),
    }
}

fn permission_of(r: &AnyRow) -> Permission {
    Permission {
        user: r.get(0),
        vhost: r.get(1),
        configure: r.get(2),
        write: r.get(3),
        read: r.get(4),
    }
}

fn exchange_of(r: &AnyRow) -> Exchange {
    Exchange {
        vhost: r.get(0),
        name: r.get(1),
        kind: r.get(2),
        durable: get_flag(r, 3),
        auto_delete: get_flag(r, 4),
        internal: get_flag(r, 5),
        arguments: r.get(6),
    }
}

fn queue_of(r: &AnyRow) -> Queue {
    Queue {
        vhost: r.get(0),
        name: r.get(1),
        durable: get_flag(r, 2),
        auto_delete: get_flag(r, 3),
        exclusive_owner: r.get(4),
        arguments: r.get(5),
        topic: r.get(6),
        group: r.get(7),
    }
}

fn binding_of(r: &AnyRow) -> Result<Binding> {
    let kind: String = r.get(3);
    let destination_kind = DestinationKind::parse(&kind)
        .ok_or_else(|| MetaError::Corrupt(format!("destination kind {kind:?}")))?;
    Ok(Binding {
        vhost: r.get(0),
        source: r.get(1),
        destination: r.get(2),
        destination_kind,
        routing_key: r.get(4),
        arguments: r.get(5),
    })
}
