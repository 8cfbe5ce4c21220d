//! The one way the SQLite adapters touch their connection: on the blocking
//! pool, under its mutex, so a query never blocks a runtime thread.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::application::ports::StoreFailure;

/// Runs `work` on the blocking pool with `conn` locked; a task that dies
/// (a panic in `work`) is a [`StoreFailure`] in the caller's error type.
pub(super) async fn with_conn<T, E, F>(conn: &Arc<Mutex<Connection>>, work: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreFailure> + Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        // Statements are atomic, so a panic under the lock leaves nothing
        // half-written: a poisoned mutex is still safe to use.
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut guard)
    })
    .await
    .map_err(|e| E::from(StoreFailure::new("sqlite task failed", e)))?
}
