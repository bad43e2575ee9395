//! The HTTP accept loop with a graceful shutdown that finishes every request already
//! started, uploads included (used by [`crate::Gateway::serve`]).
//!
//! Why not `axum::serve(..).with_graceful_shutdown(..)`: on the signal it closes the
//! listener, which resets the connections still in the kernel's accept queue, and tells
//! every connection to shut down gracefully, which hyper does by closing at once each
//! connection that has not delivered its first request yet (hyper-util's `ReadVersion`
//! is cancelled, an HTTP/1 connection in its initial state is closed). A client that
//! connected just before the signal and is sending an upload then sees `connection reset`
//! or `connection closed before message completed` (the symptom formerly listed under
//! "Known limits" in docs/operations.md). Its connection tasks are also detached, so when
//! the drain deadline passed they kept running (and reading upload bodies) after `serve`
//! returned.
//!
//! Here, on the signal:
//! 1. the accept queue is drained without blocking and those connections are served too;
//!    then the listener is closed (new connections are refused);
//! 2. a connection that has served requests and is idle is closed; one with a request in
//!    progress finishes it (its response carries `Connection: close`, hyper reads the rest
//!    of an upload body meanwhile) and then closes;
//! 3. a connection that has not delivered its first request yet gets
//!    [`FIRST_REQUEST_GRACE`] for it to arrive, then is handled as in 2;
//! 4. the future ends when every connection has closed. Dropping it (the drain deadline of
//!    [`common::shutdown::drain_within`]) aborts the connection tasks that are left: their
//!    request bodies end in an error, so an upload still streaming is not committed.

use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long a connection accepted before the shutdown signal, which has not sent its first
/// request yet, may still send one (a client that connected just before the signal).
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Serve `app` on `listener` until `shutdown` is cancelled, then finish the requests
/// already started (see the module documentation) and return.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut conns: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => spawn(&mut conns, tcp, &app, &shutdown),
                Err(e) => accept_failed(&e, &shutdown).await,
            },
        }
    }
    // Connections whose handshake completed before the signal wait in the accept queue:
    // serve them too rather than reset them by closing the listener. Plain `accept` calls
    // on the (non-blocking) socket until it would block.
    let mut queued = 0usize;
    match listener.into_std() {
        Ok(listener) => {
            loop {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let tcp = tcp
                            .set_nonblocking(true)
                            .and_then(|()| TcpStream::from_std(tcp));
                        match tcp {
                            Ok(tcp) => {
                                queued += 1;
                                spawn(&mut conns, tcp, &app, &shutdown);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot serve a queued connection")
                            }
                        }
                    }
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            tracing::warn!(error = %e, "accept failed while stopping");
                        }
                        break;
                    }
                }
            }
            drop(listener);
        }
        Err(e) => tracing::warn!(error = %e, "cannot drain the accept queue"),
    }
    tracing::info!(
        connections = conns.len(),
        queued,
        "stopped accepting; finishing the requests in progress"
    );
    while conns.join_next().await.is_some() {}
}

fn spawn(conns: &mut JoinSet<()>, tcp: TcpStream, app: &Router, shutdown: &CancellationToken) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    conns.spawn(connection(tcp, app.clone(), shutdown.clone()));
}

/// Serve one connection; on `shutdown`, let the request in progress (or, after a grace,
/// the first one) finish and close.
async fn connection(tcp: TcpStream, app: Router, shutdown: CancellationToken) {
    // Notes on `started` that the connection has delivered a request.
    let started = CancellationToken::new();
    let service = TowerToHyperService::new(app.map_request(mark_started(started.clone())));
    let builder = Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return finished(done),
        () = shutdown.cancelled() => {}
    }
    if !started.is_cancelled() {
        tokio::select! {
            done = conn.as_mut() => return finished(done),
            () = started.cancelled() => {}
            () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    finished(conn.await);
}

/// A request mapper that cancels `started` (whatever the body type hyper hands over).
fn mark_started<B>(
    started: CancellationToken,
) -> impl Fn(axum::http::Request<B>) -> axum::http::Request<B> + Clone {
    move |req| {
        started.cancel();
        req
    }
}

fn finished(done: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = done {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Errors of `accept` that concern one connection only (the next accept may succeed).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A failed `accept`: skip a connection error; otherwise (out of file descriptors, …)
/// log and back off for a moment, as `axum::serve` does, unless `shutdown` comes first.
async fn accept_failed(e: &io::Error, shutdown: &CancellationToken) {
    if is_connection_error(e) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}
