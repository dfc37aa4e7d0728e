//! Helper threads that share a dependency layer's rules with the thread evaluating the
//! bundle: the caller works through the layer itself and helpers take what they can, so a
//! layer of cheap rules never waits for a hand-off and an expensive one runs on every core.
//!
//! The threads have no async runtime: a rule's blocking WASI calls (a file read through a
//! grant) run on wasmtime-wasi's own, as on any plain thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of parked threads, started on first use, stopped when dropped.
pub(crate) struct Helpers {
    tx: Mutex<Option<Sender<Task>>>,
    threads: usize,
}

impl Helpers {
    /// `threads` helpers (at least one).
    pub fn new(threads: usize) -> Helpers {
        Helpers {
            tx: Mutex::new(None),
            threads: threads.max(1),
        }
    }

    fn sender(&self) -> Sender<Task> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.get_or_insert_with(|| {
            let (tx, rx) = channel::<Task>();
            let rx = Arc::new(Mutex::new(rx));
            for n in 0..self.threads {
                let rx: Arc<Mutex<Receiver<Task>>> = rx.clone();
                std::thread::Builder::new()
                    .name(format!("rulebox-helper-{n}"))
                    .spawn(move || {
                        loop {
                            let task = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match task {
                                Ok(task) => task(),
                                // The engine is gone.
                                Err(_) => return,
                            }
                        }
                    })
                    .expect("spawning a rulebox helper thread");
            }
            tx
        })
        .clone()
    }

    /// Runs `work(i)` for every `i` in `0..n`, on this thread and on up to `extra` helpers,
    /// and returns the results in order (`None` for an item that panicked). Returns once
    /// every item is done; a helper that comes late finds nothing left and is not waited for.
    pub fn run<T, F>(&self, n: usize, extra: usize, work: F) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: Fn(usize) -> T + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            next: AtomicUsize::new(0),
            done: Mutex::new((0, (0..n).map(|_| None).collect())),
            finished: Condvar::new(),
            n,
            work,
        });
        let extra = extra.min(self.threads).min(n.saturating_sub(1));
        if extra > 0 {
            let tx = self.sender();
            for _ in 0..extra {
                let shared = shared.clone();
                // A send fails only when the helpers are gone: this thread then does it all.
                let _ = tx.send(Box::new(move || shared.drain()));
            }
        }
        shared.drain();
        let mut done = shared.done.lock().unwrap_or_else(|e| e.into_inner());
        while done.0 < n {
            done = shared
                .finished
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut done.1)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        // Dropping the sender ends each helper's loop.
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct Shared<T, F> {
    next: AtomicUsize,
    /// Items done, and their results.
    done: Mutex<(usize, Vec<Option<T>>)>,
    finished: Condvar,
    n: usize,
    work: F,
}

impl<T, F: Fn(usize) -> T> Shared<T, F> {
    /// Takes items until none are left.
    fn drain(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            // A panicking item (a host bug) must not leave the caller waiting forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.work)(i)));
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            done.0 += 1;
            if let Ok(r) = result {
                done.1[i] = Some(r);
            }
            if done.0 == self.n {
                self.finished.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_in_order_across_threads() {
        let helpers = Helpers::new(3);
        for n in [0, 1, 2, 7, 100] {
            let out = helpers.run(n, 3, |i| i * 2);
            let want: Vec<_> = (0..n).map(|i| Some(i * 2)).collect();
            assert_eq!(out, want);
        }
        // Slow items spread over more than one thread.
        let out = helpers.run(8, 3, |_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::thread::current().id()
        });
        let threads: std::collections::HashSet<_> = out.into_iter().flatten().collect();
        assert!(threads.len() > 1, "only one thread worked");
        // A panicking item is reported as missing, and the call returns.
        let out = helpers.run(4, 3, |i| if i == 2 { panic!("item {i}") } else { i });
        assert_eq!(out, [Some(0), Some(1), None, Some(3)]);
    }
}
