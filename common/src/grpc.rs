//! The server-side tower layer of every JCS gRPC server: reads the request id from the
//! metadata, opens the `rpc` span (role, path, request_id), scopes the handler with the id
//! (see [`crate::request_id`]) and records the call in [`crate::metrics`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::{InFlight, metrics};
use crate::request_id;

/// Add with `tonic::transport::Server::builder().layer(RpcLayer::new("agent"))`.
#[derive(Debug, Clone, Copy)]
pub struct RpcLayer {
    role: &'static str,
}

impl RpcLayer {
    /// `role` labels the metrics and the span (`coordinator`, `agent`).
    pub fn new(role: &'static str) -> RpcLayer {
        RpcLayer { role }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            role: self.role,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
    role: &'static str,
}

/// The gRPC code of a response head: `grpc-status` is in the head for errors answered at
/// once; otherwise it comes later in the trailers and the head means `Ok` so far.
fn code_of<B>(resp: &http::Response<B>) -> String {
    match resp.headers().get("grpc-status") {
        None => "Ok".to_owned(),
        Some(v) => format!("{:?}", tonic::Code::from_bytes(v.as_bytes())),
    }
}

impl<S, B, RB> Service<http::Request<B>> for RpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let role = self.role;
        let id = req
            .headers()
            .get(request_id::HEADER)
            .and_then(|v| request_id::sanitize(v.as_bytes()))
            .map(str::to_owned);
        let method = req.uri().path().trim_start_matches('/').to_owned();
        let span = tracing::info_span!(
            "rpc",
            role,
            path = %method,
            request_id = id.as_deref().unwrap_or(""),
        );
        let fut = async move {
            let _in_flight = InFlight::new(&metrics().grpc_in_flight, role);
            let start = Instant::now();
            let result = inner.call(req).await;
            let code = match &result {
                Ok(resp) => code_of(resp),
                Err(_) => "TransportError".to_owned(),
            };
            let elapsed = start.elapsed();
            metrics().observe_grpc(role, &method, &code, elapsed);
            tracing::debug!(
                code = %code,
                elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                "rpc answered"
            );
            result
        }
        .instrument(span);
        match id {
            Some(id) => Box::pin(request_id::scope(id, fut)),
            None => Box::pin(fut),
        }
    }
}
