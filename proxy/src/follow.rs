//! Follows the meta store's revision log into this gateway's topology, so
//! that what another gateway declares, binds or deletes routes here too.
//!
//! Each change names one record (or one exchange's bindings); the follower
//! reads its current state and sets the in-memory image to it, so applying a
//! change twice, or this gateway's own changes again, is harmless. Publishing
//! never waits: each record is swapped in under the vhost's short write lock.
//! If the store goes away the gateway keeps serving with the topology it
//! has, says so (log and `Gateway::meta_healthy`), and catches up from its
//! last revision when the store returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use meta::{Change, ChangeKind, MetaError};

use crate::registry::image;
use crate::Gateway;

/// Longest wait between looks at the log (a NOTIFY usually comes first).
const POLL: Duration = Duration::from_millis(50);
/// Changes read per query.
const BATCH: i64 = 500;

/// How often this gateway says it is alive, and looks for exclusive queues
/// of gateways that are not.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const ORPHANS_EVERY: Duration = Duration::from_secs(5);
/// How often the change log is cut back to its newest `CHANGES_KEPT`
/// entries (any gateway may; a follower further behind reads everything
/// again). A busy RPC application declares and deletes a queue per call:
/// unpruned, the log grows by millions of rows a day.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const CHANGES_KEPT: i64 = 100_000;

/// Applies what the store's log holds beyond this gateway's revision, now
/// rather than at the follower's next look: before answering 404 for a name
/// another gateway may just have declared. A failure leaves the topology as
/// it was (the follower reports the store's health).
pub async fn catch_up_now(gw: &Arc<Gateway>) {
    let mut revision = gw.followed.lock().await;
    if let Err(error) = catch_up(gw, &mut revision).await {
        tracing::debug!(%error, "Catching up with the meta store before a lookup failed.");
    }
}

/// Runs until the gateway is dropped, from the revision in `Gateway::followed`.
pub async fn follow(gateway: std::sync::Weak<Gateway>) {
    let mut wakeups = None;
    let mut heartbeat_at = Instant::now() + HEARTBEAT_EVERY;
    let mut orphans_at = Instant::now() + ORPHANS_EVERY;
    let mut prune_at = Instant::now() + PRUNE_EVERY;
    loop {
        let Some(gw) = gateway.upgrade() else { return };
        if wakeups.is_none() {
            wakeups = gw.store.wakeups().await.ok();
        }
        let mut result = {
            let mut revision = gw.followed.lock().await;
            catch_up(&gw, &mut revision).await
        };
        if result.is_ok() && Instant::now() >= heartbeat_at {
            heartbeat_at = Instant::now() + HEARTBEAT_EVERY;
            result = gw.heartbeat().await;
            gw.start_expiring_feeds();
        }
        if result.is_ok() && Instant::now() >= orphans_at {
            orphans_at = Instant::now() + ORPHANS_EVERY;
            result = gw.delete_orphaned_exclusive_queues().await;
        }
        if result.is_ok() && Instant::now() >= prune_at {
            prune_at = Instant::now() + PRUNE_EVERY;
            if let Err(error) = gw.store.prune_changes(CHANGES_KEPT).await {
                tracing::warn!(%error, "The meta store's change log was not pruned; it grows until the next try.");
            }
        }
        match result {
            Ok(()) => {
                if !gw.meta_healthy.swap(true, Ordering::AcqRel) {
                    tracing::warn!("Meta store is back; topology caught up.");
                }
            }
            Err(error) => {
                if gw.meta_healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(%error, "Meta store unreachable: serving with the last topology, refusing changes until it returns.");
                }
                wakeups = None;
            }
        }
        drop(gw);
        match wakeups.as_mut() {
            Some(w) => w.wait(POLL).await,
            None => tokio::time::sleep(POLL).await,
        }
    }
}

async fn catch_up(gw: &Arc<Gateway>, revision: &mut i64) -> Result<(), MetaError> {
    loop {
        let mut changes = gw.store.changes_after(*revision, BATCH).await?;
        // The log is contiguous; one that starts further on was pruned past
        // this gateway's revision: read everything again, then go on from
        // the revision that reading started at (what came meanwhile is
        // applied twice, which is harmless).
        if changes.first().is_some_and(|c| c.revision > *revision + 1) {
            let from = gw.store.revision().await?;
            tracing::warn!(
                followed = *revision,
                oldest_kept = changes[0].revision,
                "The meta store's change log was pruned past this gateway's revision; reading the whole topology again."
            );
            reconcile(gw).await?;
            *revision = from;
            changes = gw.store.changes_after(*revision, BATCH).await?;
        }
        let n = changes.len();
        for change in changes {
            apply(gw, &change).await?;
            *revision = change.revision;
        }
        if (n as i64) < BATCH {
            return Ok(());
        }
    }
}

/// Sets every record the store or the image knows to what the store holds
/// now, as if each had changed: vhosts first, bindings last.
async fn reconcile(gw: &Arc<Gateway>) -> Result<(), MetaError> {
    let snapshot = gw.store.snapshot().await?;
    let topology = &gw.topology;
    let mut names: Vec<(ChangeKind, String, String)> = Vec::new();
    let image_vhosts = topology.vhosts();
    names.extend(
        snapshot
            .vhosts
            .iter()
            .map(|v| (ChangeKind::Vhost, String::new(), v.name.clone())),
    );
    names.extend(
        image_vhosts
            .iter()
            .map(|v| (ChangeKind::Vhost, String::new(), v.name.clone())),
    );
    names.extend(
        snapshot
            .users
            .iter()
            .map(|u| (ChangeKind::User, String::new(), u.name.clone())),
    );
    names.extend(
        topology
            .user_names()
            .into_iter()
            .map(|u| (ChangeKind::User, String::new(), u)),
    );
    names.extend(
        snapshot
            .permissions
            .iter()
            .map(|p| (ChangeKind::Permission, p.vhost.clone(), p.user.clone())),
    );
    names.extend(
        topology
            .permission_keys()
            .into_iter()
            .map(|(user, vhost)| (ChangeKind::Permission, vhost, user)),
    );
    names.extend(
        snapshot
            .exchanges
            .iter()
            .map(|e| (ChangeKind::Exchange, e.vhost.clone(), e.name.clone())),
    );
    names.extend(
        snapshot
            .queues
            .iter()
            .map(|q| (ChangeKind::Queue, q.vhost.clone(), q.name.clone())),
    );
    names.extend(
        snapshot
            .bindings
            .iter()
            .map(|b| (ChangeKind::Bindings, b.vhost.clone(), b.source.clone())),
    );
    for vhost in &image_vhosts {
        let image = vhost.read();
        names.extend(
            image
                .exchanges
                .keys()
                .map(|e| (ChangeKind::Exchange, vhost.name.clone(), e.clone())),
        );
        names.extend(
            image
                .exchanges
                .keys()
                .map(|e| (ChangeKind::Bindings, vhost.name.clone(), e.clone())),
        );
        names.extend(
            image
                .queues
                .keys()
                .map(|q| (ChangeKind::Queue, vhost.name.clone(), q.clone())),
        );
    }
    names.extend(snapshot.limits.iter().map(|l| {
        (
            ChangeKind::Limits,
            l.scope.as_str().to_owned(),
            l.owner.clone(),
        )
    }));
    names.extend(
        topology
            .limits
            .owners()
            .into_iter()
            .map(|(scope, owner)| (ChangeKind::Limits, scope.as_str().to_owned(), owner)),
    );
    let order = |kind: &ChangeKind| match kind {
        ChangeKind::Vhost => 0,
        ChangeKind::User => 1,
        ChangeKind::Permission => 2,
        ChangeKind::Exchange => 3,
        ChangeKind::Queue => 4,
        ChangeKind::Bindings => 5,
        ChangeKind::Limits => 6,
    };
    names.sort_by(|a, b| (order(&a.0), &a.1, &a.2).cmp(&(order(&b.0), &b.1, &b.2)));
    names.dedup_by(|a, b| order(&a.0) == order(&b.0) && a.1 == b.1 && a.2 == b.2);
    for (kind, vhost, name) in names {
        let change = Change {
            revision: snapshot.revision,
            kind,
            vhost,
            name,
        };
        apply(gw, &change).await?;
    }
    Ok(())
}

/// Sets the in-memory image of one record to what the store holds now.
async fn apply(gw: &Arc<Gateway>, c: &Change) -> Result<(), MetaError> {
    let topology = &gw.topology;
    match c.kind {
        ChangeKind::Vhost => match gw.store.vhost(&c.name).await? {
            Some(v) if topology.vhost(&v.name).is_none() => {
                topology.add_vhost(&v.name, &v.namespace)
            }
            Some(_) => {}
            None => crate::registry::vhosts::gone(gw, &c.name),
        },
        ChangeKind::Limits => {
            if let Some(scope) = meta::LimitScope::parse(&c.vhost) {
                let limits = gw.store.limits_of(scope, &c.name).await?;
                topology.limits.set(scope, &c.name, limits);
            }
        }
        ChangeKind::User => match gw.store.user(&c.name).await? {
            Some(u) => topology.put_user(u),
            None => topology.remove_user(&c.name),
        },
        ChangeKind::Permission => match gw.store.permission(&c.name, &c.vhost).await? {
            Some(p) => topology.put_permission(&p),
            None => topology.remove_permission(&c.name, &c.vhost),
        },
        ChangeKind::Exchange => {
            let record = gw.store.exchange(&c.vhost, &c.name).await?;
            let Some(vhost) = topology.vhost(&c.vhost) else {
                return Ok(());
            };
            match record {
                Some(e) => {
                    if let Err(error) = image::put_exchange(&vhost, &e) {
                        tracing::error!(vhost = %c.vhost, exchange = %c.name, %error, "Changed exchange skipped.")
                    }
                }
                // Auto-deletes that follow were decided, and logged, where it happened.
                None => drop(image::remove_exchange(&vhost, &c.name)),
            }
        }
        ChangeKind::Queue => {
            let record = gw.store.queue(&c.vhost, &c.name).await?;
            let Some(vhost) = topology.vhost(&c.vhost) else {
                return Ok(());
            };
            let gone_topic = match record {
                Some(q) => image::put_queue(&vhost, q).1,
                None => image::remove_queue(&vhost, &c.name).map(|(old, _)| old.record.topic),
            };
            // Deleted elsewhere: this gateway's consumers of it are cancelled.
            if let Some(topic) = gone_topic {
                image::queue_gone(gw, &topic);
            }
        }
        ChangeKind::Bindings => {
            let bindings = gw.store.bindings_from(&c.vhost, &c.name).await?;
            if let Some(vhost) = topology.vhost(&c.vhost) {
                image::set_bindings(&vhost, &c.name, &bindings);
            }
        }
    }
    Ok(())
}
