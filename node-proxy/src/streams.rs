//! A client connection's HTTP/2 streams, polled on the connection's own
//! task instead of a task each: hyper hands every stream to an executor,
//! and this one queues it for the connection's driver. No task is spawned
//! per request, and a stream's response wakes nothing but its own
//! connection.

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper is given for one connection.
#[derive(Clone, Default)]
pub struct Streams(Arc<Queue>);

#[derive(Default)]
struct Queue {
    new: Mutex<Vec<Stream>>,
    waker: AtomicWaker,
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A panic ends its stream, as it would end its task: not the
        // connection's other streams.
        let stream = AssertUnwindSafe(stream).catch_unwind().map(|_| ());
        let mut new = self.0.new.lock().unwrap_or_else(|e| e.into_inner());
        new.push(Box::pin(stream));
        drop(new);
        self.0.waker.wake();
    }
}

impl Streams {
    /// Polls `conn` and the streams it hands over until the connection
    /// is done and its last stream has finished.
    pub async fn drive<T>(self, conn: impl Future<Output = T>) -> T {
        let mut conn = std::pin::pin!(conn);
        let mut running = FuturesUnordered::new();
        let mut done = None;
        std::future::poll_fn(|cx| {
            self.0.waker.register(cx.waker());
            loop {
                if done.is_none()
                    && let Poll::Ready(out) = conn.as_mut().poll(cx)
                {
                    done = Some(out);
                }
                let new =
                    std::mem::take(&mut *self.0.new.lock().unwrap_or_else(|e| e.into_inner()));
                let more = !new.is_empty();
                running.extend(new);
                while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
                // Streams just handed over are polled before the
                // connection is again: their requests leave at once.
                if !more {
                    break;
                }
            }
            match done.take() {
                Some(out) if running.is_empty() => Poll::Ready(out),
                out => {
                    done = out;
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::Streams;
    use hyper::rt::Executor;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The driver returns the connection's output only once every stream
    /// it handed over has finished, and a stream that panics ends alone.
    #[tokio::test]
    async fn streams_finish_before_the_connection_and_a_panic_ends_one() {
        let streams = Streams::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let exec = streams.clone();
        let seen = finished.clone();
        let conn = async move {
            for i in 0..3u64 {
                let seen = seen.clone();
                exec.execute(async move {
                    tokio::time::sleep(Duration::from_millis(20 * (i + 1))).await;
                    seen.fetch_add(1, Ordering::SeqCst);
                });
            }
            exec.execute(async { panic!("a stream's bug") });
            // The connection itself is done at once.
            "closed"
        };
        let out = tokio::time::timeout(Duration::from_secs(5), streams.drive(conn))
            .await
            .expect("the driver finishes");
        assert_eq!(out, "closed");
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }
}
