//! Waiting for other gateways' changes. The revision log (`meta_changes`)
//! is the truth; on PostgreSQL a NOTIFY sent with each write wakes followers
//! at once, on SQLite (one host) followers look again after a short pause.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::store::{Backend, Result, Store, NOTIFY_CHANNEL};

/// Wakes a follower when the store may have changed.
pub struct Wakeups {
    listener: Option<PgListener>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("listening", &self.listener.is_some())
            .finish()
    }
}

impl Wakeups {
    /// Waits for a change notice, or at most `max` (a lost notice, a lost
    /// connection or SQLite: the caller reads the log anyway).
    pub async fn wait(&mut self, max: Duration) {
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(max).await;
            return;
        };
        match tokio::time::timeout(max, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "Meta change listener failed; polling until it reconnects.");
                tokio::time::sleep(max).await;
            }
        }
    }
}

impl Store {
    /// A listener for change notices (PostgreSQL) or a plain timer (SQLite).
    pub async fn wakeups(&self) -> Result<Wakeups> {
        let listener = match self.backend() {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let mut listener = PgListener::connect(self.url()).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                Some(listener)
            }
        };
        Ok(Wakeups { listener })
    }
}
