//! Transactions (tx.select / tx.commit / tx.rollback), run as RabbitMQ runs
//! them.
//!
//! A transactional channel's publishes and acknowledgements are held by the
//! gateway. tx.commit routes the held messages (routing is decided at commit,
//! mandatory returns go out then), stores every one in RocketMQ and waits for
//! all of them, then applies the held acknowledgements and answers
//! commit-ok. tx.rollback drops the held messages and puts the held
//! acknowledgements back among the unacked. As in RabbitMQ, a commit is not
//! atomic across queues: if RocketMQ refuses one message of a transaction,
//! others may be stored; the gateway then closes the connection with 541
//! saying so, never answering commit-ok.

use std::collections::BTreeMap;

use amq_protocol::protocol::{tx, AMQPClass};
use futures_util::future::join_all;

use super::consume::{self, Unacked};
use super::{basic, Channel, Session};
use crate::codec::content::Content;
use crate::delivery::feed::Outcome;
use crate::error::{ConnectionException, HardCode, ProtocolError, SoftCode};

const CLASS: u16 = 90;
const SELECT: u16 = 10;
const COMMIT: u16 = 20;
const ROLLBACK: u16 = 30;

/// Bodies one transaction may hold before commit; beyond it the publish is
/// refused with 406 instead of growing the gateway's memory without bound.
pub const MAX_HELD_BYTES: usize = 256 << 20;

/// What a transactional channel holds until tx.commit.
#[derive(Debug, Default)]
pub struct Transaction {
    publishes: Vec<Content>,
    held_bytes: usize,
    /// Acknowledgements in the order they came, with their delivery tags
    /// (a rollback puts them back).
    settlements: Vec<(BTreeMap<u64, Unacked>, Outcome)>,
}

impl Transaction {
    /// Holds a complete message; false if the transaction is full.
    /// Publishes held until tx.commit.
    pub fn held(&self) -> usize {
        self.publishes.len()
    }

    pub fn hold(&mut self, content: Content) -> bool {
        let size = content.body.len();
        if self.held_bytes + size > MAX_HELD_BYTES {
            return false;
        }
        self.held_bytes += size;
        self.publishes.push(content);
        true
    }

    pub fn hold_settlement(&mut self, entries: BTreeMap<u64, Unacked>, outcome: Outcome) {
        self.settlements.push((entries, outcome));
    }

    /// Puts the held acknowledgements' entries back among the unacked (a
    /// rollback, or a channel closing with a transaction open).
    pub fn return_unsettled(&mut self, unacked: &mut BTreeMap<u64, Unacked>) {
        for (entries, _) in self.settlements.drain(..) {
            unacked.extend(entries);
        }
    }
}

pub fn handle_tx_select(ch: &mut Channel, s: &mut Session<'_>) -> Result<(), ProtocolError> {
    if ch.confirms.is_some() {
        return Err(s.channel_error(
            SoftCode::PreconditionFailed,
            "cannot switch from confirm to tx mode".into(),
            CLASS,
            SELECT,
        ));
    }
    if ch.tx.is_none() {
        ch.tx = Some(Transaction::default());
    }
    s.out.method(
        ch.id,
        AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
    );
    Ok(())
}

pub async fn handle_tx_commit(ch: &mut Channel, s: &mut Session<'_>) -> Result<(), ProtocolError> {
    let Some(held) = ch.tx.as_mut().map(std::mem::take) else {
        return Err(not_transactional(s, COMMIT));
    };
    let count = held.publishes.len();
    let mut sends = Vec::with_capacity(count);
    for content in held.publishes {
        if let Some(send) = basic::route(ch, s, content)? {
            sends.push(send);
        }
    }
    let failed: Vec<String> = join_all(sends)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = failed.first() {
        crate::metrics::SEND_FAILED.increment(failed.len() as u64);
        return Err(ConnectionException::new(
            HardCode::InternalError,
            format!(
                "tx.commit: RocketMQ did not store {} of the transaction's {count} messages ({first}); the others may be stored",
                failed.len()
            ),
        )
        .on_method(CLASS, COMMIT)
        .into());
    }
    crate::metrics::PUBLISHED.increment(count as u64);
    for (entries, outcome) in held.settlements {
        consume::settle(ch, entries.into_values().collect(), outcome);
    }
    s.out.method(
        ch.id,
        AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
    );
    Ok(())
}

pub fn handle_tx_rollback(ch: &mut Channel, s: &mut Session<'_>) -> Result<(), ProtocolError> {
    let Some(mut held) = ch.tx.as_mut().map(std::mem::take) else {
        return Err(not_transactional(s, ROLLBACK));
    };
    held.return_unsettled(&mut ch.consuming.unacked);
    s.out.method(
        ch.id,
        AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
    );
    Ok(())
}

fn not_transactional(s: &Session<'_>, method: u16) -> ProtocolError {
    s.channel_error(
        SoftCode::PreconditionFailed,
        "channel is not transactional".into(),
        CLASS,
        method,
    )
}
