//! [`TerminalBars`]: transfer progress as terminal progress bars, for the two binaries' `circuit`
//! commands (feature `progress-bars`; the library itself draws nothing).

use std::io::IsTerminal;
use std::sync::Arc;

use crate::transfer::{FileProgress, Progress};

/// Progress bars on stderr, drawn only when it is a terminal (hidden in logs and pipes).
#[derive(Debug)]
pub struct TerminalBars;

struct Bar(indicatif::ProgressBar);

impl Progress for TerminalBars {
    fn start(&self, verb: &str, name: &str, len: Option<u64>) -> Arc<dyn FileProgress> {
        if !std::io::stderr().is_terminal() {
            return Arc::new(Bar(indicatif::ProgressBar::hidden()));
        }
        let bar = match len {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::no_length(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("{verb} {name}"));
        Arc::new(Bar(bar))
    }
}

impl FileProgress for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
