//! Progress bars for long-running commands (hidden when stderr is not a terminal), and the
//! polling of a server job that a command follows.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use super::api::Api;

// One style of bar for the commands and the benchmarks.
pub use pathfed_bench::progress::{bar, reporter};

/// Polls the state of a job a command follows: the first poll at once, then one every `every`.
/// One Ctrl-C listener serves the whole wait, so a Ctrl-C while polling or between polls ends it.
pub struct Follow<'a> {
    api: &'a Api,
    path: String,
    every: Duration,
    polled: bool,
    interrupt: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>,
}

impl<'a> Follow<'a> {
    /// Follows `path` on `api`.
    pub fn new(api: &'a Api, path: String, every: Duration) -> Self {
        Self {
            api,
            path,
            every,
            polled: false,
            interrupt: Box::pin(tokio::signal::ctrl_c()),
        }
    }

    /// The next state, or `None` once Ctrl-C was pressed.
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        let wait = if self.polled {
            self.every
        } else {
            Duration::ZERO
        };
        self.polled = true;
        let (api, path) = (self.api, &self.path);
        let poll = async move {
            tokio::time::sleep(wait).await;
            api.get(path).await
        };
        tokio::select! {
            state = poll => state.map(Some),
            _ = &mut self.interrupt => Ok(None),
        }
    }
}
