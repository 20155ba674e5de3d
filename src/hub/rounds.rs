//! The hub's run loop and flush rounds: commands taken in batches, the open room
//! batch shared mid-round and sealed at the flush, writers woken a slice at a time,
//! and the one timer for presence and the round's interval.

use super::*;

/// Writers woken at once within a round. Woken writers queue on the runtime ahead of
/// any connection that becomes readable meanwhile, so waking a whole 1000-member room at
/// once would keep the next messages unread for a whole round of writes (~10 ms here);
/// in slices, input is read between slices and its lines still make this round.
pub(super) const WAKE_SLICE: usize = 128;

impl Hub {
    /// Handle commands in batches and wake the writers with output in flush rounds:
    /// a round wakes its writers [`WAKE_SLICE`] at a time, each slice once the last has
    /// taken its output, and a new round starts once the last slice is done (or
    /// `flush_interval` after the round started, whichever is first). An idle server writes at
    /// once; a busy room's lines gather while the last round is being written, so a
    /// room of N costs about N writes per round however many messages it carries (the
    /// write, not the queueing, is what costs).
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(256);
        let round = Arc::new(FlushRound::default());
        let interval = self.config.flush_interval;
        let mut last_flush: Option<Instant> = None;
        let flush_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush_timer);
        let mut flush_armed = false;
        loop {
            tokio::select! {
                biased;
                received = commands.recv_many(&mut batch, 256) => {
                    if received == 0 {
                        break;
                    }
                    for command in batch.drain(..) {
                        self.handle(command);
                        self.remove_overflowed();
                    }
                    if round.outstanding() > 0 || !self.outgoing.wake.is_empty() {
                        self.share_batch();
                    }
                }
                () = round.finished(), if self.has_output() => {}
                () = &mut flush_timer, if flush_armed => flush_armed = false,
            }
            if self.shutting_down {
                break;
            }
            // Flush for as long as nothing is outstanding: writers busy with a full
            // socket are woken but not counted, so a slice of them ends at once and
            // nothing would come to say so. One reading of the clock per pass: were the
            // exit test and the presence deadline read apart, a deadline passing in
            // between would leave nothing armed, and the notices waiting for a command.
            loop {
                let now = Instant::now();
                if !self.has_output_at(now) {
                    if let Some(due) = self.presence_due_at(now) {
                        arm(flush_timer.as_mut(), &mut flush_armed, due);
                    }
                    break;
                }
                let due = last_flush.map_or(now, |at| at + interval);
                let overdue = now >= due;
                if round.outstanding() > 0 && !overdue {
                    arm(flush_timer.as_mut(), &mut flush_armed, due);
                    break;
                }
                if self.outgoing.wake.is_empty() || overdue {
                    // The last round is wholly woken and done (or too slow): start the
                    // next, with the open batch unless it is joins and leaves not yet due.
                    if self.presence_due_at(now).is_none() {
                        self.seal_batches();
                    }
                    last_flush = Some(now);
                }
                let slice = if overdue { usize::MAX } else { WAKE_SLICE };
                self.outgoing.wake_writers(&round, slice);
                flush_armed = false;
            }
        }
        self.seal_batches();
        self.outgoing.wake_writers(&round, usize::MAX);
        tracing::debug!("hub stopped");
    }

    /// Output is waiting for a flush: writers to wake, or an open room batch that is due.
    pub(super) fn has_output(&self) -> bool {
        self.has_output_at(Instant::now())
    }

    pub(super) fn has_output_at(&self, now: Instant) -> bool {
        !self.outgoing.wake.is_empty()
            || self
                .batch
                .as_ref()
                .is_some_and(|batch| batch.presence_until.is_none_or(|until| now >= until))
    }

    /// When the open batch, holding only joins and leaves, falls due; `None` if there is
    /// no such batch or it is due already at `now`.
    pub(super) fn presence_due_at(&self, now: Instant) -> Option<Instant> {
        let until = self.batch.as_ref()?.presence_until?;
        (now < until).then_some(until)
    }

    /// Push the open room batch to the room's members, each what it has not had yet.
    pub(super) fn seal_batch(&mut self) {
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        // Joins and leaves keep the batch in step with the room's member list.
        if let Some(room) = self.rooms.get(&batch.key) {
            batch.seal(&room.members, &mut self.outgoing);
        }
    }

    /// Mid-round: hand what the open batch has gathered to the members whose writer is
    /// still to come in the round, so it makes their coming write.
    pub(super) fn share_batch(&mut self) {
        let Some(batch) = &mut self.batch else {
            return;
        };
        let Some(room) = self.rooms.get(&batch.key) else {
            return;
        };
        if batch.share(&room.members, &mut self.outgoing) {
            self.remove_overflowed();
        }
    }

    /// Seal before a flush: pushing may overflow a slow client, whose removal announces
    /// it to its rooms and so opens another batch, sealed in turn.
    pub(super) fn seal_batches(&mut self) {
        self.seal_batch();
        while !self.outgoing.overflowed.is_empty() {
            self.remove_overflowed();
            self.seal_batch();
        }
    }

    /// Seal before `id` gets anything from elsewhere, if the open batch is for one of its rooms.
    pub(super) fn seal_for(&mut self, id: ClientId) {
        let Some(batch) = &self.batch else {
            return;
        };
        if self
            .clients
            .get(&id)
            .is_some_and(|client| client.in_room(&batch.key))
        {
            self.seal_batch();
        }
    }

    pub(super) fn remove_overflowed(&mut self) {
        // Removing a slow consumer announces its departure, which can overflow another.
        while let Some(id) = self.outgoing.overflowed.pop() {
            self.disconnect(id, CloseReason::SlowConsumer, None);
        }
    }
}

/// Arm the hub's one timer for `at`, unless it is armed for something sooner already.
fn arm(timer: std::pin::Pin<&mut tokio::time::Sleep>, armed: &mut bool, at: Instant) {
    if !*armed || at < timer.deadline() {
        timer.reset(at);
        *armed = true;
    }
}
