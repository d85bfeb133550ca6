//! RabbitMQ's vhost and user limits: `max-connections` and `max-queues` of
//! a vhost, `max-connections` and `max-channels` of a user. A negative
//! value is no limit (RabbitMQ's -1); 0 refuses everything of the kind.
//! Each write is a topology change (`ChangeKind::Limits`, vhost = the
//! scope, name = the vhost or user), so every gateway follows it.

use sqlx::Row;

use super::{ChangeKind, Result, Store};
use crate::model::{Limit, LimitScope, Limits};

impl Store {
    /// Sets one limit (the caller checked the name against `scope.names()`).
    pub async fn set_limit(
        &self,
        scope: LimitScope,
        owner: &str,
        name: &str,
        value: i64,
    ) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO limits (scope, owner, name, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (scope, owner, name) DO UPDATE SET value = excluded.value",
            )
            .bind(scope.as_str())
            .bind(owner)
            .bind(name)
            .bind(value),
            ChangeKind::Limits,
            scope.as_str(),
            owner,
        )
        .await
        .map(drop)
    }

    /// Clears one limit; whether there was one.
    pub async fn clear_limit(&self, scope: LimitScope, owner: &str, name: &str) -> Result<bool> {
        let done = self
            .write(
                sqlx::query("DELETE FROM limits WHERE scope = $1 AND owner = $2 AND name = $3")
                    .bind(scope.as_str())
                    .bind(owner)
                    .bind(name),
                ChangeKind::Limits,
                scope.as_str(),
                owner,
            )
            .await?;
        Ok(done > 0)
    }

    /// Clears every limit of a vhost or user (deleted with it).
    pub async fn clear_limits(&self, scope: LimitScope, owner: &str) -> Result<()> {
        self.write(
            sqlx::query("DELETE FROM limits WHERE scope = $1 AND owner = $2")
                .bind(scope.as_str())
                .bind(owner),
            ChangeKind::Limits,
            scope.as_str(),
            owner,
        )
        .await
        .map(drop)
    }

    pub async fn limits_of(&self, scope: LimitScope, owner: &str) -> Result<Limits> {
        let rows = sqlx::query("SELECT name, value FROM limits WHERE scope = $1 AND owner = $2")
            .bind(scope.as_str())
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect())
    }

    /// Every limit, sorted by scope, owner and name.
    pub async fn all_limits(&self) -> Result<Vec<Limit>> {
        all_limits_in(&mut *self.pool.acquire().await?).await
    }
}

pub(super) async fn all_limits_in(conn: &mut sqlx::AnyConnection) -> Result<Vec<Limit>> {
    let rows =
        sqlx::query("SELECT scope, owner, name, value FROM limits ORDER BY scope, owner, name")
            .fetch_all(conn)
            .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Limit {
                scope: LimitScope::parse(&r.get::<String, _>(0))?,
                owner: r.get(1),
                name: r.get(2),
                value: r.get(3),
            })
        })
        .collect())
}
