//! The sqlx store. SQLite is the embedded default (one file in the data
//! directory). Writes are single statements or short transactions, and every
//! write bumps `meta_revision` so that gateways can tell what changed.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::model::*;
use crate::password::hash_password;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("meta store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("meta store holds an invalid record: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// Versioned schema migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE vhosts (name TEXT PRIMARY KEY, namespace TEXT NOT NULL UNIQUE);
    CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, tags TEXT NOT NULL,
                        loopback_only INTEGER NOT NULL);
    CREATE TABLE permissions (user_name TEXT NOT NULL, vhost TEXT NOT NULL, configure TEXT NOT NULL,
                              write TEXT NOT NULL, read TEXT NOT NULL, PRIMARY KEY (user_name, vhost));
    CREATE TABLE exchanges (vhost TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
                            durable INTEGER NOT NULL, auto_delete INTEGER NOT NULL, internal INTEGER NOT NULL,
                            arguments BLOB NOT NULL, PRIMARY KEY (vhost, name));
    CREATE TABLE queues (vhost TEXT NOT NULL, name TEXT NOT NULL, durable INTEGER NOT NULL,
                         auto_delete INTEGER NOT NULL, exclusive_owner TEXT, arguments BLOB NOT NULL,
                         topic TEXT NOT NULL UNIQUE, consumer_group TEXT NOT NULL UNIQUE,
                         PRIMARY KEY (vhost, name));
    CREATE TABLE bindings (vhost TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL,
                           destination_kind TEXT NOT NULL, routing_key TEXT NOT NULL, arguments BLOB NOT NULL,
                           PRIMARY KEY (vhost, source, destination, destination_kind, routing_key, arguments));
    CREATE TABLE meta_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
    INSERT INTO meta_revision (id, revision) VALUES (1, 0);
    "#,
    ),
    (
        2,
        r#"
    CREATE TABLE queue_leases (topic TEXT NOT NULL, queue_id INTEGER NOT NULL, owner TEXT NOT NULL,
                               expires_ms INTEGER NOT NULL, PRIMARY KEY (topic, queue_id));
    CREATE TABLE queue_readers (topic TEXT NOT NULL, owner TEXT NOT NULL, expires_ms INTEGER NOT NULL,
                                PRIMARY KEY (topic, owner));
    "#,
    ),
];

/// The meta store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the store at `url` (`sqlite:path` or
    /// `sqlite::memory:`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        // In-memory databases exist per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if applied.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "Meta schema migrated.");
        }
        Ok(())
    }

    /// Creates the default vhost "/" and user guest/guest (loopback only, all
    /// permissions on "/") when the store has no users and no vhosts yet.
    pub async fn bootstrap_defaults(&self, default_namespace: &str) -> Result<()> {
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        let vhosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vhosts")
            .fetch_one(&self.pool)
            .await?;
        if vhosts == 0 {
            self.put_vhost(&Vhost {
                name: "/".into(),
                namespace: default_namespace.into(),
            })
            .await?;
        }
        if users == 0 {
            self.put_user(&User {
                name: "guest".into(),
                password_hash: hash_password("guest"),
                tags: "administrator".into(),
                loopback_only: true,
            })
            .await?;
            self.put_permission(&Permission {
                user: "guest".into(),
                vhost: "/".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .await?;
        }
        Ok(())
    }

    pub async fn revision(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT revision FROM meta_revision WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn bump(&self, tx: &mut sqlx::SqliteConnection) -> Result<()> {
        sqlx::query("UPDATE meta_revision SET revision = revision + 1 WHERE id = 1")
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Runs one write statement and bumps the revision in the same transaction.
    async fn write<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let done = query.execute(&mut *tx).await?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub async fn put_vhost(&self, vhost: &Vhost) -> Result<()> {
        self.write(
            sqlx::query("INSERT OR REPLACE INTO vhosts (name, namespace) VALUES (?, ?)")
                .bind(&vhost.name)
                .bind(&vhost.namespace),
        )
        .await
        .map(drop)
    }

    pub async fn put_user(&self, user: &User) -> Result<()> {
        self.write(
            sqlx::query("INSERT OR REPLACE INTO users (name, password_hash, tags, loopback_only) VALUES (?, ?, ?, ?)")
                .bind(&user.name)
                .bind(&user.password_hash)
                .bind(&user.tags)
                .bind(user.loopback_only),
        )
        .await
        .map(drop)
    }

    pub async fn put_permission(&self, p: &Permission) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT OR REPLACE INTO permissions (user_name, vhost, configure, write, read) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&p.user)
            .bind(&p.vhost)
            .bind(&p.configure)
            .bind(&p.write)
            .bind(&p.read),
        )
        .await
        .map(drop)
    }

    pub async fn put_exchange(&self, e: &Exchange) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT OR REPLACE INTO exchanges (vhost, name, kind, durable, auto_delete, internal, arguments) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&e.vhost)
            .bind(&e.name)
            .bind(&e.kind)
            .bind(e.durable)
            .bind(e.auto_delete)
            .bind(e.internal)
            .bind(&e.arguments),
        )
        .await
        .map(drop)
    }

    /// Deletes an exchange and every binding from or to it.
    pub async fn delete_exchange(&self, vhost: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM exchanges WHERE vhost = ? AND name = ?")
            .bind(vhost)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM bindings WHERE vhost = ? AND (source = ? OR (destination = ? AND destination_kind = 'exchange'))",
        )
        .bind(vhost)
        .bind(name)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn put_queue(&self, q: &Queue) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT OR REPLACE INTO queues (vhost, name, durable, auto_delete, exclusive_owner, arguments, topic, \
                 consumer_group) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&q.vhost)
            .bind(&q.name)
            .bind(q.durable)
            .bind(q.auto_delete)
            .bind(&q.exclusive_owner)
            .bind(&q.arguments)
            .bind(&q.topic)
            .bind(&q.group),
        )
        .await
        .map(drop)
    }

    /// Deletes a queue and every binding to it.
    pub async fn delete_queue(&self, vhost: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM queues WHERE vhost = ? AND name = ?")
            .bind(vhost)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM bindings WHERE vhost = ? AND destination = ? AND destination_kind = 'queue'")
            .bind(vhost)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn put_binding(&self, b: &Binding) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT OR IGNORE INTO bindings (vhost, source, destination, destination_kind, routing_key, arguments) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&b.vhost)
            .bind(&b.source)
            .bind(&b.destination)
            .bind(b.destination_kind.as_str())
            .bind(&b.routing_key)
            .bind(&b.arguments),
        )
        .await
        .map(drop)
    }

    /// Returns whether the binding existed.
    pub async fn delete_binding(&self, b: &Binding) -> Result<bool> {
        self.write(
            sqlx::query(
                "DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ? AND destination_kind = ? \
                 AND routing_key = ? AND arguments = ?",
            )
            .bind(&b.vhost)
            .bind(&b.source)
            .bind(&b.destination)
            .bind(b.destination_kind.as_str())
            .bind(&b.routing_key)
            .bind(&b.arguments),
        )
        .await
        .map(|n| n > 0)
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
            .map(|r| Vhost {
                name: r.get(0),
                namespace: r.get(1),
            })
            .collect();
        let users = sqlx::query("SELECT name, password_hash, tags, loopback_only FROM users")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| User {
                name: r.get(0),
                password_hash: r.get(1),
                tags: r.get(2),
                loopback_only: r.get(3),
            })
            .collect();
        let permissions =
            sqlx::query("SELECT user_name, vhost, configure, write, read FROM permissions")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Permission {
                    user: r.get(0),
                    vhost: r.get(1),
                    configure: r.get(2),
                    write: r.get(3),
                    read: r.get(4),
                })
                .collect();
        let exchanges = sqlx::query(
            "SELECT vhost, name, kind, durable, auto_delete, internal, arguments FROM exchanges",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Exchange {
            vhost: r.get(0),
            name: r.get(1),
            kind: r.get(2),
            durable: r.get(3),
            auto_delete: r.get(4),
            internal: r.get(5),
            arguments: r.get(6),
        })
        .collect();
        let queues = sqlx::query(
            "SELECT vhost, name, durable, auto_delete, exclusive_owner, arguments, topic, consumer_group FROM queues",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Queue {
            vhost: r.get(0),
            name: r.get(1),
            durable: r.get(2),
            auto_delete: r.get(3),
            exclusive_owner: r.get(4),
            arguments: r.get(5),
            topic: r.get(6),
            group: r.get(7),
        })
        .collect();
        let mut bindings = Vec::new();
        for r in sqlx::query(
            "SELECT vhost, source, destination, destination_kind, routing_key, arguments FROM bindings",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let kind: String = r.get(3);
            let destination_kind =
                DestinationKind::parse(&kind).ok_or_else(|| MetaError::Corrupt(format!("destination kind {kind:?}")))?;
            bindings.push(Binding {
                vhost: r.get(0),
                source: r.get(1),
                destination: r.get(2),
                destination_kind,
                routing_key: r.get(4),
                arguments: r.get(5),
            });
        }
        tx.commit().await?;
        Ok(Snapshot {
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
