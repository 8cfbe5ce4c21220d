//! A bounded single-consumer queue that costs almost nothing while empty.
//!
//! Every open WebSocket holds two queues (its outbound frames, and its share of
//! the conversation's live events) that are empty nearly all the time. tokio's
//! `mpsc` allocates a block of 32 slots and cache-padded state up front, about
//! a kilobyte each; this one is a `VecDeque` that allocates on first use and
//! lets go once emptied, behind a mutex nobody contends for long.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Mirrors of `items.len()` and `closed`, so a consumer polling an empty
    /// queue (the common case, once per wake-up) takes no lock.
    len: AtomicUsize,
    closed: AtomicBool,
    capacity: usize,
    /// The consumer waiting for an item.
    item_ready: AtomicWaker,
    /// Producers waiting for room.
    room: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section is a few infallible deque operations.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.closed.store(true, Ordering::Release);
        self.item_ready.wake();
        self.room.notify_waiters();
    }
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    Full,
    Closed,
}

/// The producing side; clones share the queue. Dropping the last one does not
/// close it: call [`Sender::close`], as the owner of the producers knows when.
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// The consuming side. Dropping it closes the queue.
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue holding at most `capacity` (at least 1) items.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            closed: false,
        }),
        len: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
        capacity: capacity.max(1),
        item_ready: AtomicWaker::new(),
        room: Notify::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` now, or says why not (the item is dropped).
    pub fn try_push(&self, item: T) -> Result<(), PushError> {
        self.offer(item).map_err(|(why, _)| why)
    }

    /// Queues `item` now, or hands it back with the reason.
    fn offer(&self, item: T) -> Result<(), (PushError, T)> {
        {
            let mut state = self.0.lock();
            if state.closed {
                return Err((PushError::Closed, item));
            }
            if state.items.len() >= self.0.capacity {
                return Err((PushError::Full, item));
            }
            state.items.push_back(item);
            self.0.len.fetch_add(1, Ordering::Release);
        }
        self.0.item_ready.wake();
        Ok(())
    }

    /// Queues `item`, waiting for room; gives it back once the queue is closed.
    pub async fn push(&self, mut item: T) -> Result<(), T> {
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a pop in between is not missed.
            room.as_mut().enable();
            match self.offer(item) {
                Ok(()) => return Ok(()),
                Err((PushError::Closed, back)) => return Err(back),
                Err((PushError::Full, back)) => item = back,
            }
            room.await;
        }
    }

    /// Ends the queue: the consumer gets what is left, then `None`.
    pub fn close(&self) {
        self.0.close();
    }
}

impl<T> Receiver<T> {
    /// Whether nothing is queued right now (no lock taken).
    pub fn is_empty(&self) -> bool {
        self.0.len.load(Ordering::Acquire) == 0
    }

    /// The next item; `None` once the queue is closed and empty. Cancel-safe.
    pub async fn pop(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// [`Self::pop`] for a hand-written `Stream` or `Future`.
    pub fn poll_pop(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<T>> {
        if let Some(ready) = self.try_pop_or_end() {
            return Poll::Ready(ready);
        }
        self.0.item_ready.register(cx.waker());
        match self.try_pop_or_end() {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// `Some(Some(item))`, `Some(None)` at the end, `None` when empty but open.
    fn try_pop_or_end(&self) -> Option<Option<T>> {
        if self.0.len.load(Ordering::Acquire) == 0 {
            return self.0.closed.load(Ordering::Acquire).then_some(None);
        }
        let mut state = self.0.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() {
                    // Empty is the usual state: give the slots back rather
                    // than keep them for every idle socket (the allocator's
                    // thread cache makes the next first push cheap).
                    state.items = VecDeque::new();
                }
                self.0.len.fetch_sub(1, Ordering::Release);
                drop(state);
                self.0.room.notify_one();
                Some(Some(item))
            }
            None if state.closed => Some(None),
            None => None,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn items_come_out_in_order_and_the_bound_holds() {
        let (tx, mut rx) = bounded(2);
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        assert_eq!(tx.try_push(3), Err(PushError::Full));
        assert_eq!(rx.pop().await, Some(1));
        tx.try_push(3).unwrap();
        assert_eq!(rx.pop().await, Some(2));
        assert_eq!(rx.pop().await, Some(3));
    }

    #[tokio::test]
    async fn a_waiting_producer_gets_room_and_a_waiting_consumer_gets_items() {
        let (tx, mut rx) = bounded(1);
        tx.try_push(0).unwrap();
        let producer = {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 1..100 {
                    tx.push(i).await.unwrap();
                }
                tx.close();
            })
        };
        let mut got = Vec::new();
        while let Some(i) = tokio::time::timeout(Duration::from_secs(5), rx.pop())
            .await
            .expect("no lost wake-up")
        {
            got.push(i);
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        producer.await.unwrap();
    }

    #[tokio::test]
    async fn closing_ends_both_sides() {
        let (tx, rx) = bounded::<u8>(4);
        drop(rx);
        assert_eq!(tx.try_push(1), Err(PushError::Closed));
        assert_eq!(tx.push(2).await, Err(2));
        let (tx, mut rx) = bounded(4);
        tx.try_push(7).unwrap();
        tx.close();
        assert_eq!(rx.pop().await, Some(7));
        assert_eq!(rx.pop().await, None);
    }
}
