//! The store's thread: takes appends off the queue in batches, commits each batch in
//! one transaction (one fsync), reports it to the hub, answers history queries between
//! batches, and trims by retention in small steps when there is nothing else to do.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::sqlite::{self, Append};
use super::{hint_for, Job, Store};
use crate::chat::Reply;
use crate::hub::Command;
use crate::metrics::HistoryMetrics;

/// Rows one retention step may delete; small, so appends never wait long behind it.
const RETENTION_CHUNK: usize = 500;

/// How often the background retention sweep looks for old messages.
pub(super) fn sweep_interval(store: &Store) -> Duration {
    match store.retention.max_age {
        // Often enough that a short limit is honoured closely, rarely enough to be free.
        Some(age) => (age / 4).clamp(Duration::from_millis(200), Duration::from_secs(60)),
        None => Duration::from_secs(60),
    }
}

/// Fired by the writer thread when it has committed everything and stopped.
pub struct DoneSignal(tokio::sync::oneshot::Sender<()>);

/// Resolves when the writer thread has committed everything and stopped (or could not).
pub struct StoreDone(tokio::sync::oneshot::Receiver<()>);

impl StoreDone {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

pub(super) fn done_pair() -> (DoneSignal, StoreDone) {
    let (signal, done) = tokio::sync::oneshot::channel();
    (DoneSignal(signal), StoreDone(done))
}

pub(super) fn run(
    mut store: Store,
    queue: Receiver<Job>,
    hub: Sender<Command>,
    done: DoneSignal,
    metrics: HistoryMetrics,
) {
    let interval = sweep_interval(&store);
    let retention_on = store.retention.max_age.is_some() || store.retention.max_messages.is_some();
    // Sweep soon after startup: limits may have been lowered since the last run.
    let mut next_sweep = Instant::now();
    let mut jobs = Vec::with_capacity(super::MAX_BATCH);
    loop {
        let wait = if retention_on {
            next_sweep.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        match queue.recv_timeout(wait) {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Group commit: take whatever else is already waiting, up to a batch. A batch
        // ends at a deletion, which runs after the batch's appends: appends queued
        // after it belong to the next batch, so it never deletes them.
        let ends_batch = |jobs: &[Job]| matches!(jobs.last(), Some(Job::ForgetAccount { .. }));
        while jobs.len() < super::MAX_BATCH && !ends_batch(&jobs) {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        process(&mut store, &mut jobs, &hub, &metrics);
        if retention_on && Instant::now() >= next_sweep {
            match sqlite::retention_step(&mut store.connection, store.retention, RETENTION_CHUNK) {
                // More to delete: go again right after the next batch (or at once).
                Ok(deleted) if deleted > 0 => next_sweep = Instant::now(),
                Ok(_) => next_sweep = Instant::now() + interval,
                Err(error) => {
                    tracing::error!(
                        path = %store.path.display(),
                        "history retention failed: {error}{}",
                        hint_for(&error)
                    );
                    next_sweep = Instant::now() + interval;
                }
            }
        }
    }
    // Every sender is gone (the hub stopped): what was queued has been committed above.
    if let Err(error) = store
        .connection
        .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
    {
        tracing::debug!("history checkpoint at shutdown failed: {error}");
    }
    tracing::debug!(path = %store.path.display(), "history writer stopped");
    let _ = done.0.send(());
}

/// Commit the appends in `jobs` as one batch, report it, then answer the queries (so
/// they see the batch). Empties `jobs`.
fn process(
    store: &mut Store,
    jobs: &mut Vec<Job>,
    hub: &Sender<Command>,
    metrics: &HistoryMetrics,
) {
    let mut upto = None;
    // The batch's oldest hand-off: its save time is the longest any message here waited.
    let mut oldest = None;
    let mut appends = Vec::new();
    let mut queries = Vec::new();
    for job in jobs.iter() {
        match job {
            Job::Append {
                seq,
                conversation,
                message,
                handed_off,
            } => {
                oldest.get_or_insert(*handed_off);
                upto = Some(*seq);
                appends.push(Append {
                    conversation,
                    message,
                });
            }
            Job::Query { .. } | Job::ForgetAccount { .. } | Job::SaveRules { .. } => {
                queries.push(job)
            }
        }
    }
    if let Some(upto) = upto {
        let started = Instant::now();
        let committed = sqlite::append_batch(&mut store.connection, &appends, store.retention);
        let finished = Instant::now();
        metrics.commit_seconds.record(finished - started);
        let report = match committed {
            Ok(()) => {
                metrics.batches.increment(1);
                metrics.saved.increment(appends.len() as u64);
                if let Some(oldest) = oldest {
                    metrics.save_seconds.record(finished - oldest);
                }
                Command::Persisted { upto }
            }
            Err(error) => {
                let cause = format!(
                    "cannot save to {}: {error}{}",
                    store.path.display(),
                    hint_for(&error)
                );
                tracing::error!(
                    messages = appends.len(),
                    "HISTORY WRITE FAILED; these messages are refused, not delivered: {cause}"
                );
                metrics.failed.increment(appends.len() as u64);
                Command::PersistFailed {
                    upto,
                    cause: cause.into(),
                }
            }
        };
        // Blocks only while the hub's inbox is full; the hub never waits on us.
        let _ = hub.blocking_send(report);
    }
    for job in queries {
        if let Job::SaveRules { key, rules } = job {
            if let Err(error) = sqlite::save_rules(&store.connection, key, rules.as_deref()) {
                tracing::error!(
                    path = %store.path.display(),
                    room = %key,
                    "a room's moderation rules were not saved (they hold until restart): {error}{}",
                    hint_for(&error)
                );
            }
        }
        if let Job::ForgetAccount { key } = job {
            match sqlite::forget_account(&store.connection, key) {
                Ok(deleted) => {
                    tracing::info!(deleted, "a dropped account's private history was deleted")
                }
                Err(error) => tracing::error!(
                    path = %store.path.display(),
                    "a dropped account's private history was not deleted: {error}{}",
                    hint_for(&error)
                ),
            }
        }
        if let Job::Query { client, tag, query } = job {
            let answer = sqlite::query(&store.connection, query, store.retention)
                .map(|page| Reply::History(Arc::new(page)))
                .map_err(|error| {
                    tracing::error!(path = %store.path.display(), "history query failed: {error}");
                    Arc::from(format!("cannot read history: {error}{}", hint_for(&error)))
                });
            let _ = hub.blocking_send(Command::HistoryAnswer {
                client: *client,
                tag: tag.clone(),
                answer,
            });
        }
    }
    jobs.clear();
}
