//! The progress bar on stderr: redrawn a few times a second while a run is going, only
//! when stderr is a terminal (so piped and logged runs stay clean), erased at the end.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What the bar shows: a fraction done and a status text.
pub type Status = Box<dyn Fn() -> (f64, String) + Send + Sync>;

/// A running progress bar; dropping or [`finish`](Progress::finish)ing it erases it.
pub struct Progress {
    stop: CancellationToken,
    status: Arc<Mutex<Option<Status>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

const WIDTH: usize = 30;

fn bar(fraction: f64) -> String {
    let filled = ((fraction.clamp(0.0, 1.0)) * WIDTH as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), " ".repeat(WIDTH - filled))
}

impl Progress {
    /// Start drawing (if stderr is a terminal). The status can be changed per phase.
    pub fn start() -> Progress {
        let stop = CancellationToken::new();
        let status: Arc<Mutex<Option<Status>>> = Arc::new(Mutex::new(None));
        let task = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let line = {
                        let guard = status
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        guard.as_ref().map(|status| {
                            let (fraction, text) = status();
                            format!("{} {text}", bar(fraction))
                        })
                    };
                    if let Some(line) = line {
                        let mut stderr = std::io::stderr().lock();
                        let _ = write!(stderr, "\r\x1b[2K{line}");
                        let _ = stderr.flush();
                    }
                }
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K");
                let _ = stderr.flush();
            })
        });
        Progress { stop, status, task }
    }

    /// Show `status` from now on.
    pub fn show(&self, status: Status) {
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(status);
    }

    /// Erase the bar and wait until it is gone, so the summary prints on a clean line.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_is_fixed_width_and_clamped() {
        assert_eq!(super::bar(0.0).len(), super::WIDTH + 2);
        assert_eq!(super::bar(0.5).matches('#').count(), super::WIDTH / 2);
        assert_eq!(super::bar(7.0).matches('#').count(), super::WIDTH);
        assert_eq!(super::bar(-1.0).matches('#').count(), 0);
    }
}
