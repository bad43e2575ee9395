//! In-process calls. When JCS runs several roles in one process (`jcs standalone`), the
//! gateway's calls to the coordinator and the agent, and theirs to each other, need not
//! cross loopback TCP and HTTP/2: a server that [`register`]s its routes under the address
//! it listens on is called directly by every [`Transport`] dialling that address, with the
//! same protobuf messages, the same server layers and the same handlers, but without the
//! socket copies, HTTP/2 framing and flow control, and connection tasks.
//!
//! Off unless [`enable`]d (by `jcs standalone`, at start): a process that runs one role, or
//! tests that exercise the network path, dial every address over TCP as before.
//!
//! Each in-process call runs its handler in a task of its own (as hyper does for a stream),
//! aborted when the caller drops the call before the response head, like an HTTP/2 stream
//! reset. Request and response bodies are passed on as they are, so a streamed call keeps
//! the bounded memory of its producer and consumer; a panic in a handler answers `Internal`
//! instead of taking the caller's task with it. A server's registration ends when it
//! begins shutting down, so later calls go to TCP and find it closed, as they would across
//! processes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server's routes and layers, callable in-process.
pub type LocalService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Registered servers by address key, each with the id of its [`Registration`].
static SERVERS: LazyLock<RwLock<HashMap<String, (u64, LocalService)>>> =
    LazyLock::new(Default::default);
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Let servers of this process [`register`] for in-process calls from now on.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The registry key of an address: without scheme and trailing slash, so
/// `http://127.0.0.1:7900/` and `127.0.0.1:7900` are one server.
fn key(address: &str) -> String {
    let rest = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/');
    rest.to_owned()
}

/// Serve in-process calls to `address` with `service` until the returned registration is
/// dropped. `None` (nothing registered) unless in-process calls are [`enable`]d.
pub fn register<S>(address: &str, service: S) -> Option<Registration>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let key = key(address);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut servers = SERVERS.write().unwrap_or_else(|p| p.into_inner());
    servers.insert(key.clone(), (id, BoxCloneSyncService::new(service)));
    Some(Registration { key, id })
}

/// [`register`] `routes` (behind the same [`common::grpc::RpcLayer`] as the TCP server) under
/// `address` until `until` completes (the server's shutdown signal) or the returned guard is
/// dropped, whichever comes first (a server keeps the guard while it serves, so once it has
/// stopped it is certainly no longer called in-process). `None` (a no-op) unless in-process
/// calls are [`enable`]d.
#[must_use = "the registration ends when the guard is dropped"]
pub fn serve_until(
    address: &str,
    role: &'static str,
    routes: tonic::service::Routes,
    until: impl Future<Output = ()> + Send + 'static,
) -> Option<Served> {
    use tower::Layer;
    let service = common::grpc::RpcLayer::new(role).layer(routes.prepare());
    let registration = register(address, service)?;
    tracing::debug!(address, role, "serving in-process calls");
    let shared = Arc::new(std::sync::Mutex::new(Some(registration)));
    let on_signal = shared.clone();
    tokio::spawn(async move {
        until.await;
        on_signal.lock().unwrap_or_else(|p| p.into_inner()).take();
    });
    Some(Served(shared))
}

/// Ends a [`serve_until`] registration when dropped.
#[derive(Debug)]
pub struct Served(Arc<std::sync::Mutex<Option<Registration>>>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Whether calls to `address` are made in-process now (a server of this process is
/// registered at it).
pub fn is_local(address: &str) -> bool {
    lookup(&key(address)).is_some()
}

fn lookup(key: &str) -> Option<LocalService> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let servers = SERVERS.read().unwrap_or_else(|p| p.into_inner());
    servers.get(key).map(|(_, service)| service.clone())
}

/// An in-process server's registration; dropping it ends in-process calls to it (unless
/// another server has registered at the same address since: that one stays).
#[derive(Debug)]
pub struct Registration {
    key: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut servers = SERVERS.write().unwrap_or_else(|p| p.into_inner());
        if servers.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            servers.remove(&self.key);
        }
    }
}

/// The channel of a client: in-process to a server of this process registered under the
/// address, else the TCP (or mTLS) [`Channel`] to it. Decided per call, so a server that
/// registers after its clients were built is still called in-process.
#[derive(Clone)]
pub struct Transport {
    key: Arc<str>,
    remote: Channel,
    /// Deadline of a whole in-process call (the channel has its own, `Endpoint::timeout`).
    timeout: Option<Duration>,
    /// The in-process server that `poll_ready` chose for the next `call`.
    ready: Option<LocalService>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("address", &self.key)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Calls to `address`, over `remote` unless a server of this process is registered at it.
    pub fn new(address: &str, remote: Channel, timeout: Option<Duration>) -> Self {
        Transport {
            key: key(address).into(),
            remote,
            timeout,
            ready: None,
        }
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::Either<
        futures::future::MapErr<
            tonic::transport::channel::ResponseFuture,
            fn(tonic::transport::Error) -> BoxError,
        >,
        LocalFuture,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready = lookup(&self.key);
        if self.ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.remote.poll_ready(cx).map_err(BoxError::from)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        use futures::TryFutureExt;
        match self.ready.take() {
            Some(server) => {
                futures::future::Either::Right(Box::pin(call_local(server, req, self.timeout)))
            }
            None => futures::future::Either::Left(
                self.remote
                    .call(req)
                    .map_err(BoxError::from as fn(tonic::transport::Error) -> BoxError),
            ),
        }
    }
}

/// Aborts a task when dropped (the caller gave up on the call).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn call_local(
    server: LocalService,
    req: http::Request<Body>,
    timeout: Option<Duration>,
) -> Result<http::Response<Body>, BoxError> {
    let task = tokio::spawn(async move {
        match server.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    });
    let _abort = AbortOnDrop(task.abort_handle());
    let answered = match timeout {
        Some(t) => match tokio::time::timeout(t, task).await {
            Ok(answered) => answered,
            Err(_) => return Err(Box::new(tonic::TimeoutExpired(()))),
        },
        None => task.await,
    };
    match answered {
        Ok(resp) => Ok(resp),
        Err(e) if e.is_panic() => {
            tracing::error!("an in-process call's handler panicked");
            Ok(tonic::Status::internal("the handler of this call panicked").into_http())
        }
        Err(e) => Err(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// An address nothing listens on: a port bound and released.
    async fn closed_address() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn health_routes() -> tonic::service::Routes {
        let (_, svc) = tonic_health::server::health_reporter();
        tonic::service::Routes::new(svc).prepare()
    }

    async fn check(address: &str) -> Result<(), tonic::Status> {
        let t = crate::transport(address, &crate::ChannelOptions::default()).unwrap();
        let mut c = HealthClient::new(t);
        c.check(HealthCheckRequest::default()).await.map(drop)
    }

    /// A registered server answers calls to its address in-process (nothing listens on the
    /// port); once its registration ends, calls go to TCP and find nothing there.
    #[tokio::test]
    async fn a_registered_server_is_called_in_process_until_it_unregisters() {
        let address = closed_address().await;
        assert!(
            register(&address, health_routes()).is_none(),
            "off by default"
        );
        assert!(check(&address).await.is_err(), "nothing listens: {address}");
        enable();
        let (stop, until) = until_dropped();
        let served = serve_until(
            &format!("http://{address}/"),
            "test",
            health_routes(),
            until,
        );
        assert!(served.is_some());
        assert!(is_local(&address));
        check(&address).await.unwrap();
        drop(stop);
        // The registration ends once `until` completes (on the spawned task).
        let mut tries = 0;
        while lookup(&key(&address)).is_some() {
            tries += 1;
            assert!(tries < 1000, "registration not dropped");
            tokio::task::yield_now().await;
        }
        let err = check(&address).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }

    /// A server that registers at an address another one used keeps it when the older
    /// registration ends late.
    #[tokio::test]
    async fn a_late_unregistration_leaves_a_newer_server_registered() {
        enable();
        let address = closed_address().await;
        let old = register(&address, health_routes()).unwrap();
        let new = register(&address, health_routes()).unwrap();
        drop(old);
        check(&address).await.unwrap();
        drop(new);
        assert!(!is_local(&address));
    }

    /// Dropping the guard ends the registration at once, without waiting for `until`.
    #[tokio::test]
    async fn dropping_the_guard_unregisters() {
        enable();
        let address = closed_address().await;
        let served = serve_until(&address, "test", health_routes(), std::future::pending());
        check(&address).await.unwrap();
        drop(served);
        assert!(lookup(&key(&address)).is_none());
        assert!(check(&address).await.is_err());
    }

    /// `until` as a oneshot: dropping the sender completes it.
    fn until_dropped() -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    /// A handler that panics answers `Internal`; the caller's task goes on.
    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        enable();
        let address = closed_address().await;
        let boom = tower::service_fn(|_req: http::Request<Body>| async move {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let _registration = register(&address, boom).unwrap();
        let err = check(&address).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal, "{err}");
        assert!(err.message().contains("panicked"), "{err}");
    }

    /// A call whose handler does not answer within the transport's deadline fails with
    /// tonic's timeout, and the handler's task is aborted.
    #[tokio::test]
    async fn a_slow_handler_times_out_and_is_aborted() {
        enable();
        let address = closed_address().await;
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
        let slow = tower::service_fn(move |_req: http::Request<Body>| {
            let guard = DropSignal(dropped_tx.lock().unwrap().take());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(http::Response::new(Body::empty()))
            }
        });
        let _registration = register(&address, slow).unwrap();
        let opts = crate::ChannelOptions {
            request_timeout: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let mut c = HealthClient::new(crate::transport(&address, &opts).unwrap());
        let err = c.check(HealthCheckRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Cancelled, "{err}");
        dropped_rx.await.unwrap();
    }

    struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    #[test]
    fn addresses_with_and_without_scheme_are_one_key() {
        assert_eq!(key("http://127.0.0.1:7900/"), "127.0.0.1:7900");
        assert_eq!(key("https://h:1"), "h:1");
        assert_eq!(key("127.0.0.1:7900"), "127.0.0.1:7900");
    }
}
