//! Group calls: items submitted by concurrent requests while a call is in flight go out
//! together in the next call.
//!
//! A [`Batcher`] owns one worker task (started on first use). The worker waits for a free
//! call slot, then for the first queued item, then takes whatever else is queued (up to
//! `max_batch`) and makes one call with all of it. An idle gateway therefore sends each
//! item at once, alone (no added latency); a busy one sends fewer, larger calls. Queues and
//! in-flight calls are bounded. A call carries the request id (`x-request-id`) of its first
//! item.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::ApiError;

type Reply<O> = oneshot::Sender<Result<O, ApiError>>;
/// An item, where to answer, and the request id it was submitted under.
type Queued<I, O> = (I, Reply<O>, Option<String>);
type Call<I, O> = Arc<
    dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Vec<Result<O, ApiError>>> + Send>> + Send + Sync,
>;

/// Scheduler rounds a batcher lets pass, taking what arrives meanwhile, before it sends a
/// call that is not full. Each costs a few microseconds when nothing else is ready to run.
const YIELDS: usize = 4;

/// Queued items a batcher holds before `submit` waits.
const QUEUE: usize = 1024;

pub struct Batcher<I, O> {
    name: &'static str,
    max_batch: usize,
    max_in_flight: usize,
    call: Call<I, O>,
    queue: OnceLock<mpsc::Sender<Queued<I, O>>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// `call` gets a non-empty batch and must answer one result per item, in order.
    pub fn new<F, Fut>(name: &'static str, max_batch: usize, max_in_flight: usize, call: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<O, ApiError>>> + Send + 'static,
    {
        Batcher {
            name,
            max_batch: max_batch.max(1),
            max_in_flight: max_in_flight.max(1),
            call: Arc::new(move |items| Box::pin(call(items))),
            queue: OnceLock::new(),
        }
    }

    /// Queue `item` for the next call and wait for its result.
    pub async fn submit(&self, item: I) -> Result<O, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .send((item, reply, common::request_id::current()))
            .await
            .map_err(|_| ApiError::internal(format!("{} batcher stopped", self.name)))?;
        answer.await.map_err(|_| {
            ApiError::internal(format!("{} batcher dropped a call unanswered", self.name))
        })?
    }

    fn sender(&self) -> &mpsc::Sender<Queued<I, O>> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(
                rx,
                self.max_batch,
                Arc::new(Semaphore::new(self.max_in_flight)),
                self.call.clone(),
            ));
            tx
        })
    }
}

async fn run<I: Send + 'static, O: Send + 'static>(
    mut rx: mpsc::Receiver<Queued<I, O>>,
    max_batch: usize,
    slots: Arc<Semaphore>,
    call: Call<I, O>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        take_queued(&mut rx, &mut batch, max_batch);
        // Let the tasks that are ready to run now (requests a moment from submitting) run
        // first, for a few scheduler rounds, while what they queue still joins this call.
        for _ in 0..YIELDS {
            if batch.len() == max_batch {
                break;
            }
            tokio::task::yield_now().await;
            take_queued(&mut rx, &mut batch, max_batch);
        }
        let call = call.clone();
        tokio::spawn(async move {
            // The call carries the request id of its first item (the only one when the
            // gateway is not busy).
            let request_id = batch.first().and_then(|(_, _, id)| id.clone());
            let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch
                .into_iter()
                .map(|(item, reply, _)| (item, reply))
                .unzip();
            let sent = replies.len();
            let answer = call(items);
            let results = match request_id {
                Some(id) => common::request_id::scope(id, answer).await,
                None => answer.await,
            };
            let mut results = results.into_iter();
            for reply in replies {
                let result = results.next().unwrap_or_else(|| {
                    Err(ApiError::internal(format!(
                        "batch call answered fewer results than the {sent} items sent"
                    )))
                });
                // The requester may be gone (client disconnected): nothing to do.
                let _ = reply.send(result);
            }
            drop(slot);
        });
    }
}

/// Moves queued items into `batch` until it holds `max_batch` or the queue is empty.
fn take_queued<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_calls_and_get_their_own_results() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let gate = Arc::new(tokio::sync::Notify::new());
        let open = gate.clone();
        let b = Arc::new(Batcher::new("test", 8, 1, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            let gate = gate.clone();
            async move {
                // The first call waits until everything else is queued behind it.
                if items == [0] {
                    gate.notified().await;
                }
                items
                    .into_iter()
                    .map(|i| {
                        if i % 5 == 4 {
                            Err(ApiError::bad_argument(format!("bad {i}")))
                        } else {
                            Ok(i * 10)
                        }
                    })
                    .collect()
            }
        }));
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.submit(0).await })
        };
        assert!(
            common::testing::wait_until(std::time::Duration::from_secs(5), || {
                let n = sizes.lock().unwrap().len();
                async move { n == 1 }
            })
            .await
        );
        let rest: Vec<_> = (1..20u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        // Let the 19 others queue up behind the blocked call, then release it.
        assert!(
            common::testing::wait_until(std::time::Duration::from_secs(5), || {
                let queued = b.queue.get().map_or(0, |q| QUEUE - q.capacity());
                async move { queued == 19 }
            })
            .await
        );
        open.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for task in rest {
            let (i, r) = task.await.unwrap();
            match r {
                Ok(v) => assert_eq!(v, i * 10),
                Err(e) => {
                    assert_eq!(i % 5, 4);
                    assert!(e.to_string().contains(&format!("bad {i}")), "{e}");
                }
            }
        }
        // 1 alone, then 19 in batches of at most 8.
        assert_eq!(*sizes.lock().unwrap(), vec![1, 8, 8, 3]);
    }

    #[tokio::test]
    async fn items_a_few_scheduler_rounds_behind_the_first_join_its_call() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Arc::new(Batcher::new("test", 64, 1, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { items.into_iter().map(Ok).collect() }
        }));
        // Start the worker, then let it go idle.
        b.submit(0).await.unwrap();
        sizes.lock().unwrap().clear();
        // Request i submits after i scheduler rounds (as requests parsing their bodies do),
        // so the worker wakes for item 1 while the others are still a round or more away.
        let tasks: Vec<_> = (1..=3u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    for _ in 0..i {
                        tokio::task::yield_now().await;
                    }
                    b.submit(i).await
                })
            })
            .collect();
        for (i, task) in (1..=3u32).zip(tasks) {
            assert_eq!(task.await.unwrap().unwrap(), i);
        }
        assert_eq!(
            *sizes.lock().unwrap(),
            vec![3],
            "one call for the three items"
        );
    }
}
