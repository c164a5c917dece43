//! Progress bars for long-running commands (hidden when stderr is not a terminal), and the
//! polling of a server job that a command follows.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::case::Api;

/// A bar counting `unit`s with rate and time left.
pub fn bar(message: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(0).with_message(message.to_string());
    let template =
        format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A callback that moves `bar` to (done, total).
pub fn reporter(bar: &ProgressBar) -> impl Fn(u64, u64) + Sync + '_ {
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }
}

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
