//! The gateway's wall clock, in milliseconds since the epoch: what message
//! TTLs, reader leases and gateway heartbeats in the meta store count with.
//!
//! `Clock::System` reads the system clock (production). `Clock::Tokio`
//! starts at the system time when it was made and then moves with tokio's
//! clock, so that under a paused test runtime (`start_paused`) expiry,
//! leases and heartbeats are tested without waiting: time passes only when
//! the runtime advances it. Timers (`tokio::time::sleep`) already follow
//! tokio's clock; this makes the wall clock agree with them.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    #[default]
    System,
    Tokio {
        epoch_ms: i64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that moves with tokio's: call it inside the runtime whose
    /// clock it follows.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            epoch_ms: system_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_ms(),
            Clock::Tokio { epoch_ms, start } => {
                epoch_ms.saturating_add(start.elapsed().as_millis() as i64)
            }
        }
    }

    /// Seconds since the epoch (x-death's time).
    pub fn now_secs(&self) -> u64 {
        (self.now_ms().max(0) / 1000) as u64
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_the_runtime() {
        let clock = Clock::tokio();
        let before = clock.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now_ms(), before, "real time does not move it");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms(), before + 3_600_000);
    }

    #[test]
    fn the_system_clock_is_the_epoch_time() {
        let now = Clock::System.now_ms();
        // 2020-01-01 .. 2100-01-01
        assert!((1_577_836_800_000..4_102_444_800_000).contains(&now));
    }
}
