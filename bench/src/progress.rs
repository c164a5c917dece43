//! Progress bars for long work, hidden when stderr is not a terminal: the benchmarks' and, by
//! re-export, the `pathfed` command's own, so both look alike.

use indicatif::{ProgressBar, ProgressStyle};

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
