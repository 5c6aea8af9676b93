//! Work split over threads: independent index ranges run on scoped threads.

use crate::LanceError;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Environment variable with the default thread count (`1` pins kernels to the calling thread).
pub const THREADS_ENV: &str = "LANCE_CORE_THREADS";

static THREADS: AtomicUsize = AtomicUsize::new(0); // 0: not set yet

/// The thread count kernels use by default: [`set_num_threads`], else `LANCE_CORE_THREADS`,
/// else the machine's available parallelism.
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var(THREADS_ENV).ok().and_then(|v| v.parse().ok());
            let threads = from_env
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            THREADS.store(threads, Ordering::Relaxed);
            threads
        }
        n => n,
    }
}

/// Sets the default thread count of later kernel calls (at least 1).
pub fn set_num_threads(threads: usize) -> Result<(), LanceError> {
    if threads == 0 {
        return Err(LanceError::Invalid(
            "threads must be at least 1, got 0".into(),
        ));
    }
    THREADS.store(threads, Ordering::Relaxed);
    Ok(())
}

/// Elementary operations (element copies, or eight multiply-adds) a thread must get to pay for
/// its start-up (tens of microseconds, more when BLAS threads still spin on the other cores).
const GRAIN: usize = 1 << 18;

/// How many of `threads` to use for `work` elementary operations.
pub(crate) fn threads_for(work: usize, threads: usize) -> usize {
    threads.min(work / GRAIN).max(1)
}

/// Runs `work(start, end)` over `0..items` split into at most `threads` contiguous ranges of
/// at least `min_items` items each; on the calling thread when there is a single range.
pub(crate) fn for_ranges<F>(items: usize, threads: usize, min_items: usize, work: F)
where
    F: Fn(usize, usize) + Sync,
{
    let ranges = threads.min(items / min_items.max(1)).max(1);
    if ranges == 1 {
        work(0, items);
        return;
    }
    let per_range = items.div_ceil(ranges);
    std::thread::scope(|scope| {
        let work = &work;
        for start in (per_range..items).step_by(per_range) {
            scope.spawn(move || work(start, (start + per_range).min(items)));
        }
        work(0, per_range.min(items));
    });
}
