//! Helper threads that share a dependency layer's rules with the thread evaluating the
//! bundle: the caller works through the layer itself and helpers take what they can, so a
//! layer of cheap rules never waits for a hand-off and an expensive one runs on every core.
//!
//! Idle helpers and a caller waiting for a helper's last item spin briefly before they
//! sleep ([`SPIN`]): on a VM a wake-up costs about what a rule does.
//!
//! The threads have no async runtime: a rule's blocking WASI calls (a file read through a
//! grant) run on wasmtime-wasi's own, as on any plain thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Task = Box<dyn FnOnce() + Send>;

/// How long an idle helper, and a caller waiting for a helper's last item, keep checking
/// before they sleep. Waking a sleeping thread costs tens of microseconds on a VM (a futex
/// wake, an inter-processor interrupt, the scheduler), as much as the rules it would share:
/// a helper that finished a layer moments ago picks up the next one without that cost.
const SPIN: Duration = Duration::from_micros(100);

/// A fixed set of threads, started on first use, stopped when dropped.
pub(crate) struct Helpers {
    queue: Arc<Queue>,
    started: Mutex<bool>,
    threads: usize,
}

struct Queue {
    tasks: Mutex<State>,
    ready: Condvar,
    /// Tasks queued and not yet taken: what a spinning helper watches.
    queued: AtomicUsize,
}

#[derive(Default)]
struct State {
    tasks: VecDeque<Task>,
    /// Helpers asleep on `ready`, which a new task must wake.
    sleeping: usize,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next task, waiting (spinning first) until there is one; `None` once closed.
    fn take(&self) -> Option<Task> {
        loop {
            let spin_until = Instant::now() + SPIN;
            while self.queued.load(Ordering::Acquire) == 0 && Instant::now() < spin_until {
                std::hint::spin_loop();
            }
            let mut state = self.lock();
            loop {
                if let Some(task) = state.tasks.pop_front() {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Some(task);
                }
                if state.closed {
                    return None;
                }
                state.sleeping += 1;
                state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
                state.sleeping -= 1;
                if state.tasks.is_empty() && !state.closed {
                    // Woken for a task another helper took: spin again before sleeping.
                    break;
                }
            }
        }
    }

    fn push(&self, task: Task) {
        let mut state = self.lock();
        state.tasks.push_back(task);
        self.queued.fetch_add(1, Ordering::AcqRel);
        // A spinning helper takes it without a wake; only a sleeping one needs the syscall.
        if state.sleeping > 0 {
            self.ready.notify_one();
        }
    }
}

impl Helpers {
    /// `threads` helpers (at least one).
    pub fn new(threads: usize) -> Helpers {
        Helpers {
            queue: Arc::new(Queue {
                tasks: Mutex::new(State::default()),
                ready: Condvar::new(),
                queued: AtomicUsize::new(0),
            }),
            started: Mutex::new(false),
            threads: threads.max(1),
        }
    }

    /// Starts the threads the first time; false when they could not be started (this
    /// thread then does all the work).
    fn start(&self) -> bool {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if !*started {
            for n in 0..self.threads {
                let queue = self.queue.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("rulebox-helper-{n}"))
                    .spawn(move || {
                        while let Some(task) = queue.take() {
                            task();
                        }
                    });
                if spawned.is_err() {
                    // Fewer helpers than asked still share the work; none means none.
                    *started = n > 0;
                    return n > 0;
                }
            }
            *started = true;
        }
        true
    }

    /// Runs `work(i)` for every `i` in `0..n`, on this thread and on up to `extra` helpers,
    /// and returns the results in order (`None` for an item that panicked). Returns once
    /// every item is done; a helper that comes late finds nothing left and is not waited for.
    pub fn run<T, F>(&self, n: usize, extra: usize, work: F) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: Fn(usize) -> T + Send + Sync + 'static,
    {
        let extra = extra.min(self.threads).min(n.saturating_sub(1));
        let shared = Arc::new(Shared {
            claimed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            finished: AtomicUsize::new(0),
            results: Mutex::new((0..n).map(|_| None).collect()),
            all_done: Condvar::new(),
            n,
            workers: extra + 1,
            work,
        });
        if extra > 0 && self.start() {
            for worker in 1..=extra {
                let shared = shared.clone();
                self.queue.push(Box::new(move || shared.drain(worker)));
            }
        }
        shared.drain(0);
        // The last items may still be running on a helper: check for a while before
        // sleeping, since a wake-up costs more than a short rule.
        let spin_until = Instant::now() + SPIN;
        while shared.finished.load(Ordering::Acquire) < n && Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        // `finished` only grows under the results' lock, so checking it there cannot miss
        // the last item's wake-up.
        let mut results = shared.results.lock().unwrap_or_else(|e| e.into_inner());
        while shared.finished.load(Ordering::Acquire) < n {
            results = shared
                .all_done
                .wait(results)
                .unwrap_or_else(|e| e.into_inner());
        }
        std::mem::take(&mut *results)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        // Ends each helper's loop once the queue is empty.
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

struct Shared<T, F> {
    /// Items taken, by index.
    claimed: Box<[AtomicBool]>,
    /// Items done; raised under `results`' lock, read without it by the caller's spin.
    finished: AtomicUsize,
    /// Each item's result, `None` until done (and for one that panicked).
    results: Mutex<Vec<Option<T>>>,
    all_done: Condvar,
    n: usize,
    /// This thread and the helpers asked to share the items.
    workers: usize,
    work: F,
}

impl<T, F: Fn(usize) -> T> Shared<T, F> {
    /// Takes items until none are left, starting at `worker`'s share of them
    /// (`worker`/`workers` of the way in) and going round.
    ///
    /// So that, while costs stay put, each item runs on the same thread every time: a reused
    /// instance or a pooled slot stays in one core's cache instead of crossing to the
    /// other's on every evaluation (measured on 2 cores: twenty rules of ~36 us in fresh
    /// instances took 0.55x the sequential time handed out by a shared counter, 0.50x this
    /// way). A faster thread takes over the rest of a slower one's share.
    fn drain(&self, worker: usize) {
        let first = worker * self.n / self.workers;
        for i in (first..self.n).chain(0..first) {
            if self.claimed[i].swap(true, Ordering::AcqRel) {
                continue;
            }
            // A panicking item (a host bug) must not leave the caller waiting forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.work)(i)));
            let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(r) = result {
                results[i] = Some(r);
            }
            if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
                self.all_done.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_starts_at_its_share_and_goes_round() {
        let order = |worker: usize, workers: usize| {
            let taken = Arc::new(Mutex::new(Vec::new()));
            let log = taken.clone();
            let shared = Shared {
                claimed: (0..6).map(|_| AtomicBool::new(false)).collect(),
                finished: AtomicUsize::new(0),
                results: Mutex::new(vec![None; 6]),
                all_done: Condvar::new(),
                n: 6,
                workers,
                work: move |i| log.lock().unwrap().push(i),
            };
            shared.drain(worker);
            assert_eq!(shared.finished.load(Ordering::Acquire), 6);
            let taken: Vec<usize> = taken.lock().unwrap().drain(..).collect();
            taken
        };
        assert_eq!(order(0, 2), [0, 1, 2, 3, 4, 5]);
        assert_eq!(order(1, 2), [3, 4, 5, 0, 1, 2]);
        assert_eq!(order(2, 3), [4, 5, 0, 1, 2, 3]);
    }

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
