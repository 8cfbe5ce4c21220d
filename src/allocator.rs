//! Process-wide tuning of the C allocator, so memory a burst used goes back
//! to the system once the burst is over.
//!
//! glibc keeps what is freed in its per-thread arenas for reuse. After a
//! flood (500 logins at once: their connections, request buffers and tasks)
//! the server's RSS stayed ~15 MiB above where it started, for good, though
//! nothing held that memory any more; `malloc_trim(0)` gave it back (measured
//! with `cargo bench --bench login_storm`). Trimming walks the arenas' free
//! lists under their locks, so it runs on a blocking thread, every
//! [`TRIM_INTERVAL`], never per request.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is handed back: well inside the minute in which a
/// storm's memory should be gone, rare enough that its cost does not show.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(20);

/// Hands freed heap memory back to the system every [`TRIM_INTERVAL`] until
/// `stop` is cancelled. The caller owns the task and awaits it on shutdown.
pub async fn return_freed_memory_periodically(stop: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate and there is nothing to give back yet.
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let started = std::time::Instant::now();
                if tokio::task::spawn_blocking(trim).await.is_ok() {
                    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "freed memory returned to the system");
                }
            }
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages the allocator holds; it
    // touches no memory a caller owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_trimmer_stops_when_told() {
        let stop = CancellationToken::new();
        let task = tokio::spawn(return_freed_memory_periodically(stop.clone()));
        tokio::time::sleep(TRIM_INTERVAL * 3).await;
        assert!(!task.is_finished(), "it keeps running until stopped");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("it stops at once")
            .expect("it does not panic");
    }
}
