//! Refused logins counted per client address: after a few, each further
//! refusal from that address is answered later and later, so that guessing
//! passwords costs an attacker time while a client with one wrong password
//! is told at once. The count lapses a minute after the last failure.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Refusals answered at once from one address.
const FREE: u32 = 3;
/// The delay of the first slowed refusal, doubling with each one after.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// Longest delay.
const MOST_DELAY: Duration = Duration::from_secs(5);
/// A count lapses this long after its last failure.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses remembered at most before lapsed ones are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginFailures {
    by_address: DashMap<IpAddr, (u32, Instant)>,
}

impl LoginFailures {
    /// Counts a refused login from `address`; how long to wait before
    /// answering it.
    pub fn failed(&self, address: IpAddr, now: Instant) -> Duration {
        if self.by_address.len() > SWEEP_ABOVE {
            self.by_address
                .retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        let mut entry = self.by_address.entry(address).or_insert((0, now));
        let (count, last) = *entry;
        let count = if now.duration_since(last) >= FORGET_AFTER {
            1
        } else {
            count + 1
        };
        *entry = (count, now);
        delay_for(count)
    }
}

fn delay_for(failures: u32) -> Duration {
    if failures <= FREE {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE - 1).min(16);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MOST_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_slow_down_after_three_per_address_and_lapse_after_a_minute() {
        let failures = LoginFailures::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        let delays: Vec<u128> = (0..8).map(|_| failures.failed(a, t).as_millis()).collect();
        assert_eq!(delays, [0, 0, 0, 200, 400, 800, 1600, 3200]);
        assert_eq!(failures.failed(a, t), MOST_DELAY);
        assert_eq!(failures.failed(b, t), Duration::ZERO, "another address");
        let later = t + FORGET_AFTER;
        assert_eq!(failures.failed(a, later), Duration::ZERO, "lapsed");
    }
}
