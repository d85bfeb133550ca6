//! Per-topic send lanes: at most one request in flight per topic; messages
//! that arrive meanwhile wait and leave together in one batch request (a
//! batch goes to one message queue: consecutive messages for the same one).
//!
//! A lone message is sent at once (no timer, no added latency); under load
//! the per-request cost of the client and its one-at-a-time handling of a
//! message queue are paid once per batch instead of once per message. One
//! request per topic at a time also keeps each queue's publish order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::UpstreamError;

/// Most messages and bytes one batch request carries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
}

type Waiter = oneshot::Sender<Result<(), UpstreamError>>;

/// A message waiting in a lane: the message, its size, the message queue it
/// must go to (None: any), and who waits for the answer.
type Waiting<M> = (M, usize, Option<i32>, Waiter);

/// One topic's queue of messages waiting to be sent.
#[derive(Debug)]
pub struct Lane<M> {
    pending: Mutex<VecDeque<Waiting<M>>>,
    draining: AtomicBool,
}

impl<M> Default for Lane<M> {
    fn default() -> Self {
        Lane {
            pending: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
        }
    }
}

impl<M: Send + 'static> Lane<M> {
    /// Queues a message; returns whether the caller must start draining.
    pub fn push(&self, message: M, size: usize, queue: Option<i32>, waiter: Waiter) -> bool {
        self.lock().push_back((message, size, queue, waiter));
        !self.draining.swap(true, Ordering::AcqRel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<M>>> {
        // Entries are pushed and popped whole; a poisoned lock is still consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch within `limits`, or None once the lane is empty and
    /// released (a push after that starts a new drain).
    fn next_batch(&self, limits: Limits) -> Option<(Vec<M>, Option<i32>, Vec<Waiter>)> {
        loop {
            let mut pending = self.lock();
            if pending.is_empty() {
                self.draining.store(false, Ordering::Release);
                drop(pending);
                // A push may have slipped in between the check and the release.
                if self.lock().is_empty() || self.draining.swap(true, Ordering::AcqRel) {
                    return None;
                }
                continue;
            }
            let (mut messages, mut waiters, mut bytes) = (Vec::new(), Vec::new(), 0);
            let queue = pending.front().and_then(|(_, _, q, _)| *q);
            while let Some((_, size, q, _)) = pending.front() {
                if !messages.is_empty()
                    && (messages.len() >= limits.messages
                        || bytes + size > limits.bytes
                        || *q != queue)
                {
                    break;
                }
                let Some((message, size, _, waiter)) = pending.pop_front() else {
                    break;
                };
                bytes += size;
                messages.push(message);
                waiters.push(waiter);
            }
            return Some((messages, queue, waiters));
        }
    }

    /// Sends batches until the lane is empty; `send` stores one batch (in
    /// the given message queue, if one is named).
    pub async fn drain<F, Fut>(self: Arc<Self>, limits: Limits, send: F)
    where
        F: Fn(Vec<M>, Option<i32>) -> Fut,
        Fut: std::future::Future<Output = Result<(), UpstreamError>>,
    {
        while let Some((messages, queue, waiters)) = self.next_batch(limits) {
            let result = send(messages, queue).await;
            for waiter in waiters {
                // A publisher that went away no longer needs the answer.
                let _ = waiter.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_what_arrives_while_a_send_is_in_flight_in_order() {
        let lane: Arc<Lane<u32>> = Arc::default();
        let limits = Limits {
            messages: 3,
            bytes: 1000,
        };
        let mut answers = Vec::new();
        let mut start = false;
        for i in 0..7 {
            let (tx, rx) = oneshot::channel();
            // Messages 4 and 5 must go to message queue 1: a batch of their own.
            let queue = (4..6).contains(&i).then_some(1);
            start |= lane.push(i, 10, queue, tx);
            answers.push(rx);
        }
        assert!(start, "the first push starts the drain");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        lane.clone()
            .drain(limits, move |batch, queue| {
                record.lock().unwrap().push((batch, queue));
                std::future::ready(Ok(()))
            })
            .await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (vec![0, 1, 2], None),
                (vec![3], None),
                (vec![4, 5], Some(1)),
                (vec![6], None)
            ]
        );
        for rx in answers {
            assert_eq!(rx.await.unwrap(), Ok(()));
        }
        let (tx, _rx) = oneshot::channel();
        assert!(
            lane.push(9, 10, None, tx),
            "an emptied lane is released for the next drain"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_messages_and_big_ones_go_alone() {
        let lane: Arc<Lane<u32>> = Arc::default();
        let (mut answers, limits) = (
            Vec::new(),
            Limits {
                messages: 10,
                bytes: 100,
            },
        );
        for (i, size) in [(0, 60), (1, 60), (2, 500)] {
            let (tx, rx) = oneshot::channel();
            lane.push(i, size, None, tx);
            answers.push(rx);
        }
        let batches = Arc::new(Mutex::new(Vec::new()));
        let record = batches.clone();
        lane.clone()
            .drain(limits, move |batch, _| {
                record.lock().unwrap().push(batch);
                std::future::ready(Err(UpstreamError::Refused("no".into())))
            })
            .await;
        assert_eq!(*batches.lock().unwrap(), vec![vec![0], vec![1], vec![2]]);
        for rx in answers {
            assert!(rx.await.unwrap().is_err());
        }
    }
}
