//! Polls a future (or stream) only after its own waker fired.
//!
//! A `select!` loop polls every branch each time its task wakes, whichever
//! branch woke it. A socket's task wakes once or more per event it relays,
//! and some of its branches almost never have news (shutdown, the end of
//! the session, the keepalive timer, the user's own events); polling them
//! costs a lock or a timer look-up each time (`watch` waits take their
//! `Notify`'s lock on every poll, and the shutdown one is shared by every
//! socket). Behind a [`WakeGate`] such a branch is handed the gate's own
//! waker, and the gate polls it again only once that waker fired (or after
//! it was ready, since more may be waiting); otherwise a poll is one atomic
//! swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

pub struct WakeGate {
    shared: Arc<Shared>,
    /// Made once: the inner future keeps it, so re-registering is cheap.
    waker: Waker,
}

struct Shared {
    /// The inner future's waker fired since it was last polled.
    woken: AtomicBool,
    /// The task to wake in turn.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for WakeGate {
    fn default() -> Self {
        // Woken to start with: the first poll registers the gate's waker.
        let shared = Arc::new(Shared { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        Self { waker: Waker::from(shared.clone()), shared }
    }
}

impl WakeGate {
    /// `poll` with the gate's waker if it fired since the last pending
    /// poll; `Pending` without calling it otherwise.
    pub fn poll<T>(&self, cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        self.shared.task.register(cx.waker());
        if !self.shared.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = poll(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            // A stream may have more ready without waking anyone.
            self.shared.woken.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::task::Waker;

    use super::*;

    #[test]
    fn polls_again_only_after_its_waker_fired_or_after_a_ready() {
        let gate = WakeGate::default();
        let mut cx = Context::from_waker(Waker::noop());
        let calls = Cell::new(0);
        let kept: Cell<Option<Waker>> = Cell::new(None);
        let mut pending = |cx: &mut Context<'_>| {
            calls.set(calls.get() + 1);
            kept.set(Some(cx.waker().clone()));
            Poll::<()>::Pending
        };
        assert!(gate.poll(&mut cx, &mut pending).is_pending());
        assert!(gate.poll(&mut cx, &mut pending).is_pending());
        assert_eq!(calls.get(), 1, "not woken: not polled again");
        kept.take().expect("the inner waker").wake();
        assert!(gate.poll(&mut cx, &mut pending).is_pending());
        assert_eq!(calls.get(), 2, "woken: polled");
        assert!(gate.poll(&mut cx, |_| Poll::Ready(())).is_pending(), "not woken since");
        kept.take().expect("the inner waker").wake_by_ref();
        assert_eq!(gate.poll(&mut cx, |_| Poll::Ready(7)), Poll::Ready(7));
        assert_eq!(gate.poll(&mut cx, |_| Poll::Ready(8)), Poll::Ready(8), "after a ready, polled again");
    }
}
