//! Blocking work from async code: the store, the file system and the CPU-bound stages run
//! on tokio's blocking threads, never on the async workers.

use crate::{Error, Result};

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("worker thread failed: {e}")))?
}
