//! Read leases: this gateway announces itself as a reader of the queue,
//! takes its share of the topic's message queues, renews what it holds and
//! gives back what it no longer needs (once settled), and hands everything
//! back at shutdown after a last commit. The store calls run on the feed's
//! event stream; their answers come back as `Event::Leased`.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Event, Task};
use crate::delivery::ledger::Part;
use crate::upstream::Partition;

/// What one lease round found.
pub(super) struct LeaseRound {
    /// Whether this gateway wanted to read when the round started.
    pub(super) wanted: bool,
    /// This gateway's share of the topic's message queues.
    pub(super) share: usize,
    /// Held leases and whether they were renewed.
    pub(super) renewed: Vec<(i32, bool)>,
    pub(super) released: Vec<i32>,
    /// Newly taken, with the group's position on each.
    pub(super) acquired: Vec<Partition>,
}

/// Leases are renewed (and shares looked at again) this often...
const LEASE_EVERY: Duration = Duration::from_secs(1);

/// ...and lapse this long after their last renewal.
const LEASE_TTL: Duration = Duration::from_secs(5);

impl Task {
    /// When the next lease round should run; none while one runs, or while
    /// this gateway neither reads the queue nor wants to (an idle feed costs
    /// the meta store nothing).
    pub(super) fn lease_due(&self) -> Option<Instant> {
        let idle = self.withdrawn && !self.wants_to_read() && !self.parts.iter().any(|p| p.leased);
        (!self.leasing && !idle).then_some(self.lease_at)
    }

    /// A first reader here should not wait for the next lease round.
    pub(super) fn lease_now_if_idle(&mut self) {
        if !self.parts.iter().any(|p| p.leased) {
            self.lease_at = Instant::now();
            // What the last round found no longer tells whether a get may wait.
            self.leases_known = false;
        }
    }

    /// Whether this gateway should read the queue at all.
    pub(super) fn wants_to_read(&self) -> bool {
        self.expiry.reaps
            || !self.consumers.is_empty()
            || !self.gets.is_empty()
            || self.parts.iter().any(|p| p.leased && !p.settled())
    }

    /// Starts a lease round when one is due: announce (or withdraw) this
    /// gateway as a reader, renew held leases, give back surplus ones that
    /// are settled, and take free ones up to this gateway's share.
    pub(super) fn lease(&mut self) {
        if self.lease_due().is_none_or(|at| Instant::now() < at) {
            return;
        }
        self.leasing = true;
        self.lease_at = Instant::now() + LEASE_EVERY;
        let want = self.wants_to_read();
        let consumers = self.consumers.len() as i64;
        let exclusive = self.consumers.iter().any(|c| c.exclusive);
        let held: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| p.leased)
            .map(|p| p.id)
            .collect();
        // Settled leases that may go if they are (or turn out to be) beyond the share.
        let mut idle: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| p.leased && p.idle())
            .map(|p| p.id)
            .collect();
        // Parts holding only requeued messages nobody here asks for: handed
        // over when another gateway wants to read (or they would wait for a
        // consumer here forever).
        let settled: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| p.leased && p.settled())
            .map(|p| p.id)
            .collect();
        let all: Vec<i32> = self.parts.iter().map(|p| p.id).collect();
        let whole = self.priority;
        let clock = self.clock;
        let (store, upstream, owner, topic, group) = (
            self.store.clone(),
            self.upstream.clone(),
            self.owner.clone(),
            self.topic.clone(),
            self.group.clone(),
        );
        self.pending.push(Box::pin(async move {
            let round = async {
                let now = clock.now_ms();
                let ttl = LEASE_TTL.as_millis() as i64;
                let share = if want {
                    store
                        .announce_reader(&topic, &owner, now, ttl, consumers, exclusive)
                        .await?;
                    let readers = store.reader_consumers(&topic, now).await?;
                    if whole {
                        // Levels are ordered only within one reader.
                        meta::lease::share_among(1, &readers, &owner) * all.len()
                    } else {
                        meta::lease::share_among(all.len(), &readers, &owner)
                    }
                } else {
                    store.withdraw_reader(&topic, &owner).await?;
                    if !settled.is_empty() {
                        let readers = store.reader_consumers(&topic, now).await?;
                        if readers.iter().any(|(other, _, _)| *other != owner) {
                            idle.extend(settled);
                        }
                    }
                    0
                };
                let mut round = LeaseRound {
                    wanted: want,
                    share,
                    renewed: Vec::new(),
                    released: Vec::new(),
                    acquired: Vec::new(),
                };
                let mut kept = 0;
                for (position, id) in held.iter().enumerate() {
                    // The same fixed order as `leased` uses to pick the surplus.
                    if position >= share && idle.contains(id) {
                        store.release_lease(&topic, *id, &owner).await?;
                        round.released.push(*id);
                        continue;
                    }
                    let renewed = store.try_lease(&topic, *id, &owner, now, ttl).await?;
                    kept += usize::from(renewed);
                    round.renewed.push((*id, renewed));
                }
                let mut taken = Vec::new();
                for id in all.iter().filter(|id| !held.contains(id)) {
                    if kept + taken.len() >= share {
                        break;
                    }
                    if store.try_lease(&topic, *id, &owner, now, ttl).await? {
                        taken.push(*id);
                    }
                }
                Ok::<_, meta::MetaError>((round, taken))
            }
            .await;
            let result = match round {
                Err(e) => Err(e.to_string()),
                Ok((mut round, taken)) if !taken.is_empty() => {
                    // Where the group stands now on what was just taken.
                    match upstream.partitions(&topic, &group).await {
                        Ok(positions) => {
                            round.acquired = positions
                                .into_iter()
                                .filter(|p| taken.contains(&p.queue_id))
                                .collect();
                            Ok(round)
                        }
                        Err(e) => {
                            for id in taken {
                                let _ = store.release_lease(&topic, id, &owner).await;
                            }
                            Err(e.to_string())
                        }
                    }
                }
                Ok((round, _)) => Ok(round),
            };
            Event::Leased(result)
        }));
    }

    pub(super) fn leased(&mut self, result: Result<LeaseRound, String>) {
        self.leasing = false;
        let round = match result {
            Ok(round) => round,
            Err(error) => {
                tracing::warn!(topic = %self.topic, %error, "Renewing read leases failed; retrying (held leases lapse after their TTL).");
                return;
            }
        };
        // Only a round that knew of the waiting gets tells them anything.
        self.leases_known = round.wanted;
        for (id, renewed) in round.renewed {
            let Some(part) = self.parts.iter_mut().find(|p| p.id == id) else {
                continue;
            };
            if !renewed {
                tracing::warn!(topic = %self.topic, queue_id = id, "Read lease lost to another gateway; what this one handed out will be delivered again there.");
                part.lose_lease();
            }
        }
        for id in round.released {
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                part.leased = false;
                part.releasing = false;
                // The next holder reads these from the committed offset.
                part.fresh.clear();
                part.again.clear();
                part.redeliver.clear();
                tracing::debug!(topic = %self.topic, queue_id = id, "Read lease given back.");
            }
        }
        for position in round.acquired {
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == position.queue_id) {
                *part = Part::acquired(part.id, position.committed, position.max);
                tracing::debug!(topic = %self.topic, queue_id = part.id, from = part.next, "Read lease taken.");
            }
        }
        // Beyond the share (in a fixed order): stop reading; the lease goes
        // once settled. Within it: read.
        let mut held = 0;
        for part in self.parts.iter_mut().filter(|p| p.leased) {
            held += 1;
            let surplus = held > round.share;
            if surplus && !part.releasing {
                if let Some(first) = part.fresh.front().map(|m| m.offset) {
                    part.next = part.next.min(first);
                }
                part.fresh.clear();
            }
            part.releasing = surplus;
        }
        self.withdrawn = round.share == 0 && held == 0;
    }

    /// Commits what is settled, at most every COMMIT_EVERY per message queue.
    /// Commits every leased part up to what is settled, now, then gives
    /// the leases back; answers `done` when finished. Runs on its own
    /// task: the feed ends at once.
    pub(super) fn drain(&mut self, done: oneshot::Sender<()>) {
        let targets: Vec<(i32, Option<i64>)> = self
            .parts
            .iter()
            .filter(|p| p.leased)
            .map(|p| {
                let target = p.settled_below();
                (p.id, (target > p.committed).then_some(target))
            })
            .collect();
        let (upstream, store, owner, topic, group) = (
            self.upstream.clone(),
            self.store.clone(),
            self.owner.clone(),
            self.topic.clone(),
            self.group.clone(),
        );
        tokio::spawn(async move {
            for (id, target) in targets {
                if let Some(target) = target {
                    if let Err(error) = upstream.commit(&topic, &group, id, target).await {
                        tracing::warn!(%topic, queue_id = id, %error, "Commit at shutdown failed; the next reader starts from the last commit.");
                        continue;
                    }
                }
                let _ = store.release_lease(&topic, id, &owner).await;
            }
            let _ = store.withdraw_reader(&topic, &owner).await;
            let _ = done.send(());
        });
    }
}
