//! [`FailoverChannel`]: one logical channel over several coordinators. Each call goes to the
//! coordinator that answered last; when it cannot be reached (transport error) or answers
//! a retryable status before any body (`Unavailable`, `NotLeader`), the call is retried on
//! the next endpoint after a bounded exponential backoff. So gateways and agents configured
//! with every coordinator keep working when one dies or loses leadership, without operator
//! action.
//!
//! Coordinator requests are unary and small (the coordinator never carries object bytes), so
//! the request body is buffered to be replayed; responses are passed on as they stream.
//! Retrying is safe for the coordinator's RPCs: reads are idempotent, `CommitUpload` is
//! idempotent by upload id, and other writes are compare-and-swap transactions whose retry
//! answers "already exists" at worst.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::ErrorCode;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How calls are retried across endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles per attempt up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 50 ms doubling to 2 s: about 6 s of trying before giving up.
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Delay after failed attempt number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.min_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Channels to several coordinators, used one at a time (see the module doc).
#[derive(Clone)]
pub struct FailoverChannel {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<(String, crate::Transport)>,
    current: AtomicUsize,
    policy: RetryPolicy,
}

impl std::fmt::Debug for FailoverChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .inner
            .endpoints
            .iter()
            .map(|(a, _)| a.as_str())
            .collect();
        f.debug_struct("FailoverChannel")
            .field("endpoints", &names)
            .field("policy", &self.inner.policy)
            .finish()
    }
}

impl FailoverChannel {
    /// Over `endpoints` (address and lazily connected channel each; at least one).
    pub fn new(endpoints: Vec<(String, crate::Transport)>, policy: RetryPolicy) -> FailoverChannel {
        FailoverChannel {
            inner: Arc::new(Inner {
                endpoints,
                current: AtomicUsize::new(0),
                policy,
            }),
        }
    }

    /// The address calls go to first.
    pub fn current(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len().max(1);
        self.inner
            .endpoints
            .get(i)
            .map(|(a, _)| a.as_str())
            .unwrap_or_default()
    }
}

/// Whether a response is a retryable gRPC error sent before any body (trailers-only).
fn retryable_status(resp: &http::Response<Body>) -> bool {
    let headers = resp.headers();
    let Some(status) = headers.get("grpc-status") else {
        return false;
    };
    let jcs_code = headers
        .get(common::error::CODE_HEADER)
        .and_then(|v| v.to_str().ok());
    match status.as_bytes() {
        // UNAVAILABLE, from tonic (connection) or from a coordinator.
        b"14" => true,
        // FAILED_PRECONDITION carries NotLeader only when the JCS code says so.
        b"9" => jcs_code == Some(ErrorCode::NotLeader.as_str()),
        _ => false,
    }
}

impl Service<http::Request<Body>> for FailoverChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for its own endpoint's readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes: Bytes = body.collect().await?.to_bytes();
            let n = inner.endpoints.len();
            if n == 0 {
                return Err("no coordinator endpoint configured".into());
            }
            let attempts = inner.policy.attempts.max(1);
            let mut last: Option<Result<http::Response<Body>, BoxError>> = None;
            for attempt in 0..attempts {
                if attempt > 0 {
                    tokio::time::sleep(inner.policy.backoff(attempt - 1)).await;
                }
                let start = inner.current.load(Ordering::Relaxed);
                let (address, channel) = &inner.endpoints[start % n];
                let mut request = http::Request::new(Body::new(Full::new(bytes.clone())));
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                let outcome = match channel.clone().ready_oneshot().await {
                    Ok(mut ch) => ch.call(request).await,
                    Err(e) => Err(e),
                };
                let failed = match &outcome {
                    Ok(resp) => retryable_status(resp),
                    Err(_) => true,
                };
                if !failed {
                    return outcome;
                }
                tracing::debug!(coordinator = %address, attempt, "coordinator call failed; trying the next endpoint");
                // Move on from this endpoint unless another call already did.
                let _ = inner.current.compare_exchange(
                    start,
                    (start + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                last = Some(outcome);
            }
            last.unwrap_or_else(|| Err("no attempt was made".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0), Duration::from_millis(50));
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(5), Duration::from_millis(1600));
        assert_eq!(p.backoff(6), Duration::from_secs(2));
        assert_eq!(p.backoff(60), Duration::from_secs(2));
    }

    #[test]
    fn only_retryable_statuses_are_retried() {
        let resp = |status: &str, code: Option<&str>| {
            let mut r = http::Response::new(Body::empty());
            r.headers_mut()
                .insert("grpc-status", status.parse().unwrap());
            if let Some(c) = code {
                r.headers_mut()
                    .insert(common::error::CODE_HEADER, c.parse().unwrap());
            }
            r
        };
        assert!(retryable_status(&resp("14", None)));
        assert!(retryable_status(&resp("9", Some("NotLeader"))));
        assert!(!retryable_status(&resp("9", Some("Conflict"))));
        assert!(!retryable_status(&resp("5", Some("NotFound"))));
        assert!(!retryable_status(&http::Response::new(Body::empty())));
    }
}
