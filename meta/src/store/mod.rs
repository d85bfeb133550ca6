//! The sqlx store, on one of two backends through sqlx's `Any` driver:
//! SQLite (one file in the data directory, the embedded default) or
//! PostgreSQL (shared by several gateways). The SQL is the common subset of
//! both (`$n` parameters, `ON CONFLICT`, integers for booleans); only the
//! schema's type names differ. Every write bumps `meta_revision` and records
//! what it changed in `meta_changes`, in the same transaction, so that
//! gateways can follow each other's changes (crate docs).
//!
//! Over 500 lines: one write function per kind of record, each a short
//! statement with its change record; reads are in `read`.

mod limits;
mod read;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::model::*;
use crate::password::hash_password;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("meta store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("meta store holds an invalid record: {0}")]
    Corrupt(String),
    #[error("unsupported meta store URL {0:?} (sqlite:<path> or postgres://...)")]
    Url(String),
}

impl MetaError {
    /// Whether the same request may succeed later (the database was out of
    /// reach), rather than the store holding something it cannot read.
    pub fn retry_may_help(&self) -> bool {
        matches!(self, MetaError::Unavailable(_))
    }
}

pub type Result<T> = std::result::Result<T, MetaError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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
    (
        3,
        r#"
    CREATE TABLE meta_changes (revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, vhost TEXT NOT NULL,
                               name TEXT NOT NULL);
    "#,
    ),
    (
        4,
        r#"
    CREATE TABLE gateways (id TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);
    "#,
    ),
    (
        5,
        r#"
    ALTER TABLE queue_readers ADD COLUMN consumers INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE queue_readers ADD COLUMN exclusive_consumer INTEGER NOT NULL DEFAULT 0;
    "#,
    ),
    (
        6,
        r#"
    ALTER TABLE gateways ADD COLUMN management TEXT NOT NULL DEFAULT '';
    "#,
    ),
    (
        7,
        r#"
    CREATE TABLE queue_use (topic TEXT PRIMARY KEY, used_ms INTEGER NOT NULL);
    "#,
    ),
    (
        8,
        r#"
    ALTER TABLE gateways ADD COLUMN seat TEXT NOT NULL DEFAULT '';
    "#,
    ),
    (
        9,
        r#"
    CREATE TABLE limits (scope TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL,
                         value INTEGER NOT NULL, PRIMARY KEY (scope, owner, name));
    ALTER TABLE gateways ADD COLUMN usage TEXT NOT NULL DEFAULT '';
    "#,
    ),
];

/// The schema in a backend's type names (written in SQLite's).
fn dialect(backend: Backend, sql: &str) -> String {
    match backend {
        Backend::Sqlite => sql.to_owned(),
        Backend::Postgres => sql.replace("INTEGER", "BIGINT").replace("BLOB", "BYTEA"),
    }
}

/// The PostgreSQL channel on which writers wake followers (a hint only).
pub const NOTIFY_CHANNEL: &str = "amqp_gateway_meta";

/// The meta store. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    url: String,
}

/// What one write changed, as recorded in `meta_changes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Vhost,
    User,
    /// `name` is the user.
    Permission,
    Exchange,
    Queue,
    /// The bindings whose source is exchange `name`.
    Bindings,
    /// The limits of vhost or user `name`; `vhost` is the scope
    /// ("vhost" or "user", limits.rs).
    Limits,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Vhost => "vhost",
            ChangeKind::User => "user",
            ChangeKind::Permission => "permission",
            ChangeKind::Exchange => "exchange",
            ChangeKind::Queue => "queue",
            ChangeKind::Bindings => "bindings",
            ChangeKind::Limits => "limits",
        }
    }

    fn parse(text: &str) -> Option<ChangeKind> {
        Some(match text {
            "vhost" => ChangeKind::Vhost,
            "user" => ChangeKind::User,
            "permission" => ChangeKind::Permission,
            "exchange" => ChangeKind::Exchange,
            "queue" => ChangeKind::Queue,
            "bindings" => ChangeKind::Bindings,
            "limits" => ChangeKind::Limits,
            _ => return None,
        })
    }
}

/// One entry of the revision log: which record to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub kind: ChangeKind,
    pub vhost: String,
    pub name: String,
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

fn get_flag(r: &AnyRow, i: usize) -> bool {
    r.get::<i64, _>(i) != 0
}

/// The SQLite file holds password hashes: it is created readable by its
/// owner only, and an existing one is narrowed to that (SQLite gives its
/// -wal and -shm files the database file's mode).
fn owner_only(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = path.strip_prefix("//").unwrap_or(path);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        if let Ok(meta) = std::fs::metadata(&file) {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Opens the store at `url` (`sqlite:<path>`, `sqlite::memory:` or
    /// `postgres://user@host/db`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, connect_url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains(":memory:") || rest.contains("mode=") {
                url.to_owned()
            } else {
                owner_only(rest.split('?').next().unwrap_or(rest))
                    .map_err(|e| MetaError::Unavailable(sqlx::Error::Io(e)))?;
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(MetaError::Url(url.to_owned()));
        };
        // In-memory SQLite exists per connection: keep exactly one.
        let max = match backend {
            Backend::Sqlite if url.contains(":memory:") => 1,
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // NORMAL: a commit is written to the WAL but not
                        // synced; a process crash loses nothing, a power loss
                        // the last commits (as RocketMQ's ASYNC_FLUSH does
                        // messages). docs/operations.md says so.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await?;
        let store = Store {
            pool,
            backend,
            url: url.to_owned(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL it was opened with (followers open their own listener on it).
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            if self.backend == Backend::Postgres {
                // Two gateways starting together migrate one after the other.
                sqlx::query("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_some() {
                tx.rollback().await?;
                continue;
            }
            sqlx::raw_sql(&dialect(self.backend, sql))
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
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

    /// Bumps the revision and records the change, inside the write's transaction.
    async fn bump(
        &self,
        tx: &mut sqlx::AnyConnection,
        kind: ChangeKind,
        vhost: &str,
        name: &str,
    ) -> Result<()> {
        let revision: i64 = sqlx::query_scalar(
            "UPDATE meta_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO meta_changes (revision, kind, vhost, name) VALUES ($1, $2, $3, $4)",
        )
        .bind(revision)
        .bind(kind.as_str())
        .bind(vhost)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if self.backend == Backend::Postgres {
            // Delivered at commit; followers read the log, this only wakes them.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(revision.to_string())
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Runs one write statement and records its change in the same transaction.
    async fn write<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        kind: ChangeKind,
        vhost: &str,
        name: &str,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let done = query.execute(&mut *tx).await?;
        if done.rows_affected() > 0 {
            self.bump(&mut tx, kind, vhost, name).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub async fn put_vhost(&self, vhost: &Vhost) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO vhosts (name, namespace) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET namespace = excluded.namespace",
            )
            .bind(&vhost.name)
            .bind(&vhost.namespace),
            ChangeKind::Vhost,
            &vhost.name,
            &vhost.name,
        )
        .await
        .map(drop)
    }

    /// Deletes a vhost with its exchanges, bindings, queue records and
    /// permissions; whether there was one. (Its queues' RocketMQ topics are
    /// the caller's: it deletes the queues first.)
    pub async fn delete_vhost(&self, name: &str) -> Result<bool> {
        self.clear_limits(LimitScope::Vhost, name).await?;
        let users: Vec<(String,)> =
            sqlx::query_as("SELECT user_name FROM permissions WHERE vhost = $1")
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
        for (user,) in users {
            self.delete_permission(&user, name).await?;
        }
        let mut tx = self.pool.begin().await?;
        for table in ["bindings", "exchanges", "queues"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE vhost = $1"))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM vhosts WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            self.bump(&mut tx, ChangeKind::Vhost, name, name).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn put_user(&self, user: &User) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO users (name, password_hash, tags, loopback_only) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, tags = excluded.tags, \
                 loopback_only = excluded.loopback_only",
            )
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(&user.tags)
            .bind(flag(user.loopback_only)),
            ChangeKind::User,
            "",
            &user.name,
        )
        .await
        .map(drop)
    }

    pub async fn put_permission(&self, p: &Permission) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO permissions (user_name, vhost, configure, write, read) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (user_name, vhost) DO UPDATE SET configure = excluded.configure, \
                 write = excluded.write, read = excluded.read",
            )
            .bind(&p.user)
            .bind(&p.vhost)
            .bind(&p.configure)
            .bind(&p.write)
            .bind(&p.read),
            ChangeKind::Permission,
            &p.vhost,
            &p.user,
        )
        .await
        .map(drop)
    }

    /// Deletes a user's permission on a vhost; whether there was one.
    pub async fn delete_permission(&self, user: &str, vhost: &str) -> Result<bool> {
        let deleted = self
            .write(
                sqlx::query("DELETE FROM permissions WHERE user_name = $1 AND vhost = $2")
                    .bind(user)
                    .bind(vhost),
                ChangeKind::Permission,
                vhost,
                user,
            )
            .await?;
        Ok(deleted > 0)
    }

    /// Deletes a user and its permissions; whether there was one.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        self.clear_limits(LimitScope::User, name).await?;
        let vhosts: Vec<(String,)> =
            sqlx::query_as("SELECT vhost FROM permissions WHERE user_name = $1")
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
        for (vhost,) in vhosts {
            self.delete_permission(name, &vhost).await?;
        }
        let deleted = self
            .write(
                sqlx::query("DELETE FROM users WHERE name = $1").bind(name),
                ChangeKind::User,
                "",
                name,
            )
            .await?;
        Ok(deleted > 0)
    }

    pub async fn put_exchange(&self, e: &Exchange) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO exchanges (vhost, name, kind, durable, auto_delete, internal, arguments) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (vhost, name) DO UPDATE SET kind = excluded.kind, durable = excluded.durable, \
                 auto_delete = excluded.auto_delete, internal = excluded.internal, arguments = excluded.arguments",
            )
            .bind(&e.vhost)
            .bind(&e.name)
            .bind(&e.kind)
            .bind(flag(e.durable))
            .bind(flag(e.auto_delete))
            .bind(flag(e.internal))
            .bind(&e.arguments),
            ChangeKind::Exchange,
            &e.vhost,
            &e.name,
        )
        .await
        .map(drop)
    }

    /// Deletes an exchange and every binding from or to it.
    pub async fn delete_exchange(&self, vhost: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM exchanges WHERE vhost = $1 AND name = $2")
            .bind(vhost)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM bindings WHERE vhost = $1 AND (source = $2 OR (destination = $2 AND destination_kind = 'exchange'))",
        )
        .bind(vhost)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        self.bump(&mut tx, ChangeKind::Exchange, vhost, name)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new queue unless one of its name is there, and returns the
    /// one that is stored with whether it is this one: when two gateways
    /// declare a queue at once, the first insert wins and both use it.
    pub async fn insert_queue(&self, q: &Queue) -> Result<(Queue, bool)> {
        loop {
            let inserted = self
                .write(
                    sqlx::query(
                        "INSERT INTO queues (vhost, name, durable, auto_delete, exclusive_owner, arguments, \
                         topic, consumer_group) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (vhost, name) DO NOTHING",
                    )
                    .bind(&q.vhost)
                    .bind(&q.name)
                    .bind(flag(q.durable))
                    .bind(flag(q.auto_delete))
                    .bind(&q.exclusive_owner)
                    .bind(&q.arguments)
                    .bind(&q.topic)
                    .bind(&q.group),
                    ChangeKind::Queue,
                    &q.vhost,
                    &q.name,
                )
                .await?;
            if inserted > 0 {
                return Ok((q.clone(), true));
            }
            // Deleted again between the insert and this read: try again.
            if let Some(stored) = self.queue(&q.vhost, &q.name).await? {
                return Ok((stored, false));
            }
        }
    }

    /// Deletes a queue and every binding to it.
    /// Deletes a queue, its bindings, and its topic's leases, readers and use.
    pub async fn delete_queue(&self, vhost: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        crate::lease::forget_queue_topic_in(&mut tx, vhost, name).await?;
        sqlx::query("DELETE FROM queues WHERE vhost = $1 AND name = $2")
            .bind(vhost)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM bindings WHERE vhost = $1 AND destination = $2 AND destination_kind = 'queue'")
            .bind(vhost)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.bump(&mut tx, ChangeKind::Queue, vhost, name).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn put_binding(&self, b: &Binding) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO bindings (vhost, source, destination, destination_kind, routing_key, arguments) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&b.vhost)
            .bind(&b.source)
            .bind(&b.destination)
            .bind(b.destination_kind.as_str())
            .bind(&b.routing_key)
            .bind(&b.arguments),
            ChangeKind::Bindings,
            &b.vhost,
            &b.source,
        )
        .await
        .map(drop)
    }

    /// Returns whether the binding existed.
    pub async fn delete_binding(&self, b: &Binding) -> Result<bool> {
        self.write(
            sqlx::query(
                "DELETE FROM bindings WHERE vhost = $1 AND source = $2 AND destination = $3 AND destination_kind = $4 \
                 AND routing_key = $5 AND arguments = $6",
            )
            .bind(&b.vhost)
            .bind(&b.source)
            .bind(&b.destination)
            .bind(b.destination_kind.as_str())
            .bind(&b.routing_key)
            .bind(&b.arguments),
            ChangeKind::Bindings,
            &b.vhost,
            &b.source,
        )
        .await
        .map(|n| n > 0)
    }

    /// Forgets all but the newest `keep` changes of the log. A follower that
    /// was further behind finds the log starting past its revision and
    /// reads the whole state again (proxy/src/follow.rs).
    pub async fn prune_changes(&self, keep: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM meta_changes WHERE revision <= (SELECT MAX(revision) FROM meta_changes) - $1",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The changes made after `revision`, oldest first (at most `limit`).
    pub async fn changes_after(&self, revision: i64, limit: i64) -> Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT revision, kind, vhost, name FROM meta_changes WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .bind(revision)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.get(1);
                Ok(Change {
                    revision: r.get(0),
                    kind: ChangeKind::parse(&kind)
                        .ok_or_else(|| MetaError::Corrupt(format!("change kind {kind:?}")))?,
                    vhost: r.get(2),
                    name: r.get(3),
                })
            })
            .collect()
    }
}
