//! The provider concurrency limiter: at most N turns in flight, a bounded FIFO queue beyond.
//!
//! tokio's semaphore is fair (first come, first served), which gives the FIFO order. The
//! in-flight and queued counts are gauges for `/metrics` and the sampler's load.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Bounded FIFO concurrency limiter with gauges.
#[derive(Debug)]
pub struct Limiter {
    slots: Semaphore,
    max_queue: usize,
    queued: AtomicU64,
    in_flight: AtomicU64,
    queue_full: AtomicU64,
}

/// A held slot; dropping it frees the slot and the in-flight gauge.
#[derive(Debug)]
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    limiter: &'a Limiter,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the queue gauge however the wait ends (acquired, cancelled, dropped).
struct Queued<'a>(&'a Limiter);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    /// `slots` turns in flight, `max_queue` waiting.
    pub fn new(slots: usize, max_queue: usize) -> Limiter {
        Limiter {
            slots: Semaphore::new(slots.max(1)),
            max_queue,
            queued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
        }
    }

    /// Whether a new turn would find room in the queue (counts a refusal when not).
    pub fn admit(&self) -> bool {
        let ok = (self.queued() as usize) < self.max_queue || self.slots.available_permits() > 0;
        if !ok {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Waits in FIFO order for a slot.
    pub async fn acquire(&self) -> Slot<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let guard = Queued(self);
        // The semaphore is never closed (nothing calls `close`), so `acquire` only fails if
        // that changes; yielding and retrying keeps this path free of panics regardless.
        let permit = loop {
            match self.slots.acquire().await {
                Ok(p) => break p,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        drop(guard);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Slot { _permit: permit, limiter: self }
    }

    /// Turns holding a slot.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Turns waiting for a slot.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Turns refused because the queue was full, since start.
    pub fn refused(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    /// The queue bound.
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_served_in_order_and_gauges_follow() {
        let limiter = std::sync::Arc::new(Limiter::new(1, 8));
        let first = limiter.acquire().await;
        assert_eq!(limiter.in_flight(), 1);
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (l, o) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = l.acquire().await;
                o.lock().unwrap().push(i);
            }));
            // Let each waiter enqueue before the next one, so FIFO order is defined.
            while limiter.queued() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(limiter.queued(), 3);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_counts() {
        let limiter = Limiter::new(1, 0);
        assert!(limiter.admit());
        let _slot = limiter.acquire().await;
        assert!(!limiter.admit());
        assert_eq!(limiter.refused(), 1);
    }
}
