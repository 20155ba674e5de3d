//! The fan-out engine: a room's lines since the last flush rendered once per wire
//! format ([`RoomBatch`]), each member's place in them, and the outbox pushes and
//! writer wake-ups they leave for the flush ([`Outgoing`]). It decides nothing: the
//! hub says what to append and when to share or seal.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::{ClientId, Event, Render, Room};
use crate::outbox::{FlushRound, Outbox, Push};

/// A room batch is sealed early once one format's lines reach this: one socket write's
/// worth (the writer's gather size), and far below any client's outbox bound, so a
/// busy round never makes a healthy client look slow.
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Mid-round shares of one room batch, at most. Each gives every member still to be
/// written one more handle, so a long round would otherwise grow every waiting queue
/// by one handle per command batch; past the limit, lines wait for the flush.
pub(super) const MAX_MID_ROUND_SHARES: usize = 32;

/// Mid-round handles one batch may queue in all (members × shares): a big room gets
/// fewer shares (a join storm in a room of 19,000 is one command per join, each share
/// 19,000 handles) while a room of up to 1,024 gets all [`MAX_MID_ROUND_SHARES`]. With
/// 8 shares for every room, the closed-loop run at window 16 lost ~12 % (lines missed
/// their round); with 32 for every room, the idle server after a 19,000-join storm kept
/// ~10 % more memory per connection.
pub(super) const MID_ROUND_HANDLE_BUDGET: usize = 32 * 1024;

/// A leaver owed at most this much of a batch's open lines gets a copy of them;
/// more, and the open lines are frozen and shared instead.
pub(super) const LEAVER_COPY_LIMIT: usize = 4 * 1024;

pub(super) struct Member {
    pub(super) client: ClientId,
    pub(super) outbox: Arc<Outbox>,
    pub(super) render: Arc<dyn Render>,
}

/// The lines one room has broadcast since the last flush, one buffer per wire format
/// spoken in it. Sealing pushes each member one handle to its format's lines, so a
/// room of N costs about N pushes per flush round, not N per message. While a round is
/// being written the hub also freezes what has gathered so far and hands it to the
/// members whose writer is still to come in that round ([`Outbox::awaits_take`]), so a
/// line said mid-round reaches them in this round instead of the next; at most
/// [`MAX_MID_ROUND_SHARES`] times per batch (fewer in a big room:
/// [`MID_ROUND_HANDLE_BUDGET`]), so a member's queue holds a bounded number of handles
/// however many commands a long round sees.
///
/// Per-recipient order is kept by sealing before anything that could overtake or
/// outlive the batch: a delivery to one of the room's members from anywhere else, a
/// broadcast to another room, shutdown, and the flush itself. Joins and leaves do not
/// seal (a join storm would otherwise push every notice to every member on its own),
/// and they cut nothing either: each member's place is a byte offset in its format's
/// lines, so a joiner starts at the end as it comes and a leaver is given the rest as
/// it goes. Only one room has an open batch at a time, so lines of two rooms reach a
/// member of both in the order they were said.
pub(super) struct RoomBatch {
    pub(super) key: String,
    formats: Vec<BatchFormat>,
    /// One entry per room member, in member order (joins and leaves update it in step
    /// with the room's list): the member's format and how many bytes of that format's
    /// lines it has been given.
    pub(super) given: Vec<(usize, usize)>,
    /// Mid-round shares so far.
    shares: usize,
    /// Bytes rendered into the batch, largest format.
    bytes: usize,
    /// While the batch holds only joins and leaves: when it is due for sealing
    /// ([`PRESENCE_DELAY`] after it opened). `None`: due at once.
    pub(super) presence_until: Option<Instant>,
}

struct BatchFormat {
    render: Arc<dyn Render>,
    /// How many members speak this format (for the delivery counters).
    members: u64,
    /// Lines not yet frozen for anyone.
    open: BytesMut,
    /// The lines before `open`, frozen (by mid-round shares, or for a leaver), in order.
    frozen: Vec<Bytes>,
    /// Total length of `frozen`.
    frozen_len: usize,
}

impl BatchFormat {
    fn new(render: Arc<dyn Render>) -> Self {
        BatchFormat {
            render,
            members: 0,
            open: BytesMut::new(),
            frozen: Vec::new(),
            frozen_len: 0,
        }
    }

    /// Length of all the lines, frozen and open.
    fn len(&self) -> usize {
        self.frozen_len + self.open.len()
    }

    fn freeze_open(&mut self) {
        if !self.open.is_empty() {
            let part = self.open.split().freeze();
            self.frozen_len += part.len();
            self.frozen.push(part);
        }
    }

    /// Queue the frozen lines from byte `from` on: one handle per frozen part it spans.
    fn queue_frozen_from(&self, from: usize, member: &Member, outgoing: &mut Outgoing) {
        let mut start = 0;
        for part in &self.frozen {
            let end = start + part.len();
            if from < end {
                let handle = if from <= start {
                    part.clone()
                } else {
                    part.slice(from - start..)
                };
                outgoing.queue(member.client, &member.outbox, handle);
            }
            start = end;
        }
    }
    /// Queue for `member` everything from byte `given` on, now: a copy of the open
    /// lines when they are few (freezing would split every other member's coming
    /// handle, once per leaver in a leave storm), else the open lines frozen and shared.
    fn hand_owed(&mut self, given: usize, member: &Member, outgoing: &mut Outgoing) {
        let unfrozen_from = given.max(self.frozen_len);
        let open_owed = self.len() - unfrozen_from;
        if member.outbox.is_discarding() {
            // Its connection is broken (or it is a slow consumer): nothing handed
            // over could be written.
        } else if open_owed > 0 && open_owed <= LEAVER_COPY_LIMIT {
            self.queue_frozen_from(given, member, outgoing);
            let copy = Bytes::copy_from_slice(&self.open[unfrozen_from - self.frozen_len..]);
            outgoing.queue(member.client, &member.outbox, copy);
        } else {
            self.freeze_open();
            self.queue_frozen_from(given, member, outgoing);
        }
    }
}

impl RoomBatch {
    pub(super) fn open(key: &str, room: &Room) -> Self {
        let mut formats: Vec<BatchFormat> = Vec::new();
        let mut given = Vec::with_capacity(room.members.len());
        for member in &room.members {
            let index = format_index(&mut formats, &member.render);
            formats[index].members += 1;
            given.push((index, 0));
        }
        RoomBatch {
            key: key.to_owned(),
            formats,
            given,
            shares: 0,
            bytes: 0,
            presence_until: None,
        }
    }

    /// Render `event` into every format's lines; returns the deliveries it adds and
    /// whether the batch is now full.
    pub(super) fn append(&mut self, event: &Event) -> (u64, bool) {
        let mut delivered = 0;
        let mut largest = 0;
        for format in &mut self.formats {
            if let Some(bytes) = format.render.render(event) {
                format.open.extend_from_slice(&bytes);
                delivered += format.members;
                largest = largest.max(bytes.len());
            }
        }
        self.bytes += largest;
        (delivered, self.bytes >= MAX_BATCH_BYTES)
    }

    /// A member joins the room (pushed at the end of its member list): it gets the
    /// lines rendered from now on.
    pub(super) fn add_member(&mut self, render: &Arc<dyn Render>) {
        let index = format_index(&mut self.formats, render);
        let format = &mut self.formats[index];
        format.members += 1;
        self.given.push((index, format.len()));
    }

    /// The member at `position` leaves (the room swap-removes it next): give it what
    /// it has not had yet, and forget it the same way.
    pub(super) fn remove_member(
        &mut self,
        position: usize,
        member: &Member,
        outgoing: &mut Outgoing,
    ) {
        let (index, given) = self.given.swap_remove(position);
        let format = &mut self.formats[index];
        format.members -= 1;
        format.hand_owed(given, member, outgoing);
    }

    /// Render `event` for every member but the one at `position`, who said it and
    /// does not want it back. That member is first handed what it is owed so far,
    /// then its place moves past the new line: the others still share one buffer, and
    /// the skip costs one small copy per message said, none per recipient.
    pub(super) fn append_skipping(
        &mut self,
        event: &Event,
        position: usize,
        member: &Member,
        outgoing: &mut Outgoing,
    ) -> (u64, bool) {
        let index = self.given[position].0;
        let format = &mut self.formats[index];
        format.hand_owed(self.given[position].1, member, outgoing);
        let before = format.len();
        let (mut delivered, full) = self.append(event);
        let after = self.formats[index].len();
        if after > before {
            delivered -= 1;
        }
        self.given[position].1 = after;
        (delivered, full)
    }

    /// Mid-round: freeze what has gathered and queue it for the members whose writer
    /// has a take coming. False if there was nothing new or the batch has had its
    /// shares.
    pub(super) fn share(&mut self, members: &[Member], outgoing: &mut Outgoing) -> bool {
        if self.shares >= mid_round_share_limit(members.len())
            || self.formats.iter().all(|format| format.open.is_empty())
        {
            return false;
        }
        self.shares += 1;
        for format in &mut self.formats {
            format.freeze_open();
        }
        self.give(members, outgoing, true);
        true
    }

    /// Queue every member what it has not been given yet: one handle each, as the
    /// frozen parts are joined into one buffer per format first (a copy per format,
    /// not per member).
    pub(super) fn seal(&mut self, members: &[Member], outgoing: &mut Outgoing) {
        for format in &mut self.formats {
            format.freeze_open();
            if format.frozen.len() > 1 {
                let mut joined = BytesMut::with_capacity(format.frozen_len);
                for part in format.frozen.drain(..) {
                    joined.extend_from_slice(&part);
                }
                format.frozen.push(joined.freeze());
            }
        }
        self.give(members, outgoing, false);
    }

    /// Queue for each member (only those with a take coming, if asked) the frozen
    /// lines it has not been given yet.
    pub(super) fn give(
        &mut self,
        members: &[Member],
        outgoing: &mut Outgoing,
        only_awaiting: bool,
    ) {
        for (member, (index, given)) in members.iter().zip(&mut self.given) {
            let format = &self.formats[*index];
            if *given >= format.frozen_len || (only_awaiting && !member.outbox.awaits_take()) {
                continue;
            }
            format.queue_frozen_from(*given, member, outgoing);
            *given = format.frozen_len;
        }
    }
}

/// How many times a batch for a room of `members` may be shared mid-round.
pub(super) fn mid_round_share_limit(members: usize) -> usize {
    (MID_ROUND_HANDLE_BUDGET / members.max(1)).clamp(1, MAX_MID_ROUND_SHARES)
}

/// The index of `render`'s format in `formats`, added if new. Formats are told apart
/// by the identity of their shared renderer.
fn format_index(formats: &mut Vec<BatchFormat>, render: &Arc<dyn Render>) -> usize {
    match formats
        .iter()
        .position(|format| same_format(&format.render, render))
    {
        Some(index) => index,
        None => {
            formats.push(BatchFormat::new(render.clone()));
            formats.len() - 1
        }
    }
}

/// Formats are told apart by the identity of their shared renderer.
fn same_format(a: &Arc<dyn Render>, b: &Arc<dyn Render>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// What the hub's fan-outs leave to do once the current batch of commands is handled.
#[derive(Default)]
pub(super) struct Outgoing {
    /// Outboxes that went from empty to non-empty: their writers are woken at the flush.
    pub(super) wake: Vec<Arc<Outbox>>,
    /// Clients whose outbox overflowed: dropped as slow consumers after the command.
    pub(super) overflowed: Vec<ClientId>,
}

impl Outgoing {
    pub(super) fn queue(&mut self, client: ClientId, outbox: &Arc<Outbox>, bytes: Bytes) {
        let (push, owes_wake) = outbox.enqueue(bytes);
        if owes_wake {
            self.wake.push(outbox.clone());
        }
        if push == Push::Overflowed {
            self.overflowed.push(client);
        }
    }

    /// Wake up to `slice` writers owed a wake-up, oldest first; the rest wait for the
    /// next slice.
    pub(super) fn wake_writers(&mut self, round: &Arc<FlushRound>, slice: usize) {
        let count = slice.min(self.wake.len());
        for outbox in self.wake.drain(..count) {
            outbox.wake_writer_in(round);
        }
    }
}

/// Renders one event at most once per wire format. Formats are told apart by the
/// identity of their shared renderer; there are only a handful, so a short list beats a map.
#[derive(Default)]
pub(super) struct RenderOnce {
    pub(super) rendered: Vec<(*const (), Option<Bytes>)>,
}

impl RenderOnce {
    pub(super) fn get(&mut self, render: &Arc<dyn Render>, event: &Event) -> Option<Bytes> {
        let format = Arc::as_ptr(render) as *const ();
        if let Some((_, bytes)) = self.rendered.iter().find(|(key, _)| *key == format) {
            return bytes.clone();
        }
        let bytes = render.render(event);
        self.rendered.push((format, bytes.clone()));
        bytes
    }
}
