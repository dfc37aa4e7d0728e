//! The calling thread's CPU clock, as evaluations read it: at the start and end of every
//! call, so its cost matters.
//!
//! Linux has no vDSO for `CLOCK_THREAD_CPUTIME_ID`: every read is a system call that takes
//! the run queue's lock, ~0.2 us in a loop on this project's VMs and more between calls into
//! Wasm, while the rules it times take 1-30 us. So a read is kept for [`INTERPOLATE_FOR`]
//! and the clock is interpolated from the monotonic clock (vDSO, ~20 ns) until then: a
//! thread that was on its CPU all along used exactly the wall time that passed. A thread
//! that was not (preempted, or waiting in a system call) is charged for that time too,
//! which bounds the error of any figure derived from here by `INTERPOLATE_FOR`, well
//! under the millisecond a deadline or a cost estimate cares about. A longer gap always
//! reads the kernel's clock.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a read of the thread's CPU clock stands in for it.
pub(crate) const INTERPOLATE_FOR: Duration = Duration::from_micros(50);

thread_local! {
    /// The last kernel read on this thread: (monotonic time, thread CPU time).
    static ANCHOR: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// The calling thread's CPU time at `now` (the monotonic clock, read just before), within
/// [`INTERPOLATE_FOR`] of the kernel's figure and never more than it.
///
/// An interpolated figure assumes the thread ran since the last read, so it can only be
/// ahead of the kernel's by the time the thread did not run; a difference of two figures
/// is therefore off by at most `INTERPOLATE_FOR` either way.
pub(crate) fn thread_cpu_at(now: Instant) -> Duration {
    if let Some((at, cpu)) = ANCHOR.get() {
        let since = now.saturating_duration_since(at);
        if since < INTERPOLATE_FOR {
            return cpu + since;
        }
    }
    thread_cpu_exact(now)
}

/// The calling thread's CPU time from the kernel, kept for [`thread_cpu_at`].
pub(crate) fn thread_cpu_exact(now: Instant) -> Duration {
    let cpu = read_kernel_clock();
    ANCHOR.set(Some((now, cpu)));
    cpu
}

fn read_kernel_clock() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id a constant Linux and the
    // BSDs support.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        // Without a thread clock, deadlines fall back to wall time.
        return Duration::from_nanos(crate::sandbox::monotonic_now());
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy until this thread has used `d` more CPU time.
    fn spin_cpu(d: Duration) {
        let start = read_kernel_clock();
        while read_kernel_clock() - start < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn interpolates_within_the_window_and_reads_the_kernel_after_it() {
        let t0 = Instant::now();
        let c0 = thread_cpu_exact(t0);
        // Inside the window, the figure is the anchor plus the wall time: no kernel read.
        let t1 = t0 + Duration::from_micros(10);
        assert_eq!(thread_cpu_at(t1), c0 + Duration::from_micros(10));
        // Past it, the kernel's clock, which re-anchors.
        spin_cpu(Duration::from_millis(2));
        let t2 = Instant::now();
        let c2 = thread_cpu_at(t2);
        let kernel = read_kernel_clock();
        assert!(c2 <= kernel, "{c2:?} ahead of the kernel's {kernel:?}");
        assert!(
            c2 >= c0 + Duration::from_millis(2),
            "{c2:?} after spinning from {c0:?}"
        );
        assert_eq!(ANCHOR.get(), Some((t2, c2)));
    }

    #[test]
    fn a_difference_is_within_the_window_of_the_kernels() {
        // A thread that sleeps uses no CPU: read after the window, the figure shows it.
        let c0 = thread_cpu_exact(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let c1 = thread_cpu_at(Instant::now());
        assert!(
            c1 - c0 < Duration::from_millis(5),
            "charged {:?} for a 20 ms sleep",
            c1 - c0
        );
        // Work between two figures, the first one interpolated (the anchor is moments
        // old), against the kernel's own clock around them. Preemption moves both alike.
        for work in [Duration::from_micros(20), Duration::from_millis(3)] {
            thread_cpu_exact(Instant::now());
            let c2 = thread_cpu_at(Instant::now());
            let k2 = read_kernel_clock();
            spin_cpu(work);
            let c3 = thread_cpu_at(Instant::now());
            let k3 = read_kernel_clock();
            let (ours, kernel) = (
                c3.as_micros() as i128 - c2.as_micros() as i128,
                (k3 - k2).as_micros() as i128,
            );
            assert!(
                (ours - kernel).abs() <= INTERPOLATE_FOR.as_micros() as i128 + 20,
                "{work:?} of work measured as {ours} us, the kernel says {kernel} us"
            );
        }
    }
}
