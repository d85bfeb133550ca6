//! The log: one line per event whatever a client sent, and no flood of the
//! same line.
//!
//! Names, mechanisms and reply texts come from clients; a newline in one
//! would start a forged line at column 0. Rather than trusting every call
//! site to escape, the writer escapes every control character of an event
//! but its final newline. Lines repeated per message (a nack per publish
//! while RocketMQ restarts) go through a [`Throttle`].

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often a repeated line may be written.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Installs the global subscriber: stderr, `RUST_LOG` (or `default_filter`).
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let _ = tracing_subscriber::fmt()
        .with_writer(OneLine(std::io::stderr))
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}

/// Makes writers that escape control characters (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }
}

/// Writes each buffer (tracing's fmt layer writes one event per call) with
/// its control characters escaped, but for the newline that ends it.
#[derive(Debug)]
pub struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, &b"\n"[..]),
            _ => (buf, &b""[..]),
        };
        if !body.iter().any(u8::is_ascii_control) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut escaped = Vec::with_capacity(body.len() + 16);
        for &b in body {
            match b {
                b'\n' => escaped.extend_from_slice(b"\\n"),
                b'\r' => escaped.extend_from_slice(b"\\r"),
                b'\t' => escaped.extend_from_slice(b"\\t"),
                b if b.is_ascii_control() => {
                    escaped.extend_from_slice(format!("\\x{b:02x}").as_bytes())
                }
                b => escaped.push(b),
            }
        }
        escaped.extend_from_slice(end);
        self.0.write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Lets one line through per interval and counts what it held back, so
/// that a line logged per message says how often it happened instead.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    /// When a line last went through (ms since the epoch; 0: never).
    last_ms: AtomicU64,
    held_back: AtomicU64,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// Some(number of lines held back since the last one) when this line
    /// may be written, None when it is to be held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::clock::Clock::System.now_ms().max(0) as u64)
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= self.interval_ms)
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_client_value_with_newlines_stays_on_its_line() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(OneLine(move || sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let name = "q\n2026-12-07T00:00:00Z  INFO forged: admin logged in\r\x1b[31m";
            tracing::info!(queue = %name, "Queue declared.");
            tracing::warn!(mechanism = name, "Unknown mechanism.");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("q\\n2026-12-07T00:00:00Z  INFO forged"),
            "{text}"
        );
        assert!(!text.contains('\r') && !text.contains('\x1b'));
    }

    #[test]
    fn a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.admit_at(1_000), Some(0));
        for ms in 1_001..1_100 {
            assert_eq!(t.admit_at(ms), None);
        }
        assert_eq!(t.admit_at(10_999), None);
        assert_eq!(t.admit_at(11_000), Some(100));
        assert_eq!(t.admit_at(11_001), None);
    }
}
