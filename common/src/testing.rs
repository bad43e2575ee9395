//! Helpers for tests: logging to the test writer and polling instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

/// Route `tracing` output to the test harness (idempotent).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// Poll `check` every 20 ms until it returns `Some` or `timeout` passes; the value, or
/// `None` on timeout. `check` runs at least once, and once more at the deadline.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `check` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Deterministic pseudo-random bytes (xorshift), different for every `seed`, so test
/// failures are reproducible. Shared by the test suites of every crate.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_returns_the_first_value() {
        let mut calls = 0;
        let got = wait_for(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n * 10) }
        })
        .await;
        assert_eq!(got, Some(30));
    }

    #[tokio::test]
    async fn wait_for_gives_up_after_the_timeout() {
        let start = Instant::now();
        let got: Option<()> = wait_for(Duration::from_millis(60), || async { None }).await;
        assert_eq!(got, None);
        assert!(start.elapsed() >= Duration::from_millis(60));
        assert!(!wait_until(Duration::from_millis(10), || async { false }).await);
        assert!(wait_until(Duration::from_millis(10), || async { true }).await);
    }
}
