//! Graceful shutdown with a bounded drain: a server stops accepting when its token is
//! cancelled and finishes the requests in flight, but for at most the drain timeout.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Run `serve` (a server future that starts draining when `shutdown` is cancelled) to its
/// end, or until `drain` has passed since `shutdown` was cancelled; then it is dropped,
/// which cuts the connections still open. `None` means the drain timed out.
pub async fn drain_within<F: Future>(
    serve: F,
    shutdown: &CancellationToken,
    drain: Duration,
    what: &str,
) -> Option<F::Output> {
    tokio::pin!(serve);
    tokio::select! {
        out = &mut serve => Some(out),
        () = async {
            shutdown.cancelled().await;
            tracing::info!(server = what, timeout = ?drain, "draining in-flight requests");
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(server = what, timeout = ?drain, "drain timed out; cutting the requests still in flight");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finishes_in_time_or_gives_up() {
        let token = CancellationToken::new();
        token.cancel();
        let quick = drain_within(async { 7 }, &token, Duration::from_secs(5), "t").await;
        assert_eq!(quick, Some(7));
        let stuck = drain_within(
            std::future::pending::<()>(),
            &token,
            Duration::from_millis(10),
            "t",
        )
        .await;
        assert_eq!(stuck, None);
    }
}
