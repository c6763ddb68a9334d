//! Where blocking work (file I/O that may wait on the device) runs.
//!
//! A runtime worker must never block: it hands such work to tokio's blocking pool. A FUSE
//! session thread exists to wait for the one request it runs (`Fuse::block` drives the
//! request's future on it), so it does the work itself: the hop to the blocking pool and
//! back costs two thread wake-ups, which measured more than the work for the small
//! journal, staging and local-store calls of a create or a commit. Session threads mark
//! themselves with [`enter_session_thread`].

use std::cell::Cell;

thread_local! {
    static SESSION_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one that may block for the request it runs.
pub fn enter_session_thread() {
    SESSION_THREAD.with(|c| c.set(true));
}

/// Runs `f` where blocking is allowed: here on a session thread, on the blocking pool
/// anywhere else. `Err` with a description when `f` panicked (caught here too, so a
/// panic inline fails the request as one on the pool does) or the runtime is shutting
/// down.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    if SESSION_THREAD.with(Cell::get) {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|_| "the blocking call panicked".to_string());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_threads_run_inline_and_others_on_the_pool() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let here = std::thread::current().id();
        let on_pool = rt.block_on(run(|| std::thread::current().id())).unwrap();
        assert_ne!(
            on_pool, here,
            "an unmarked thread hands the work to the pool"
        );
        enter_session_thread();
        let inline = rt.block_on(run(|| std::thread::current().id())).unwrap();
        assert_eq!(inline, here, "a session thread runs it itself");
        let failed = rt.block_on(run(|| -> u32 { panic!("boom") }));
        assert!(failed.is_err(), "a panic inline is an error, not a crash");
    }
}
