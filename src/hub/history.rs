//! The hub's side of history: per-room id counters, a bounded tail of recent messages
//! per room (replay on join and shallow paging without touching disk), the queue of
//! messages handed to the store and not yet committed, and (with `--memory`) the
//! in-RAM history itself. Pure bookkeeping: it never blocks and never renders.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use super::{ChatMessage, ClientId, HistoryBound, HistoryPage, HistoryScope, Tag};
use crate::store::{Conversation, Loaded, Retention, StoreBusy, StoreSender};

/// Recent messages kept per room in memory when history is on disk (at least the
/// replay count): joins and shallow paging are served from here.
pub const STORED_TAIL_PER_ROOM: usize = 200;
/// With `--memory` the tail is all the history there is: this much per room.
pub const MEMORY_TAIL_PER_ROOM: usize = 1000;
/// With `--memory`: private messages kept, over all conversations.
pub const MEMORY_PRIVATE_MESSAGES: usize = 10_000;

/// How many recent messages per room the hub keeps in memory (and the store loads at
/// startup) for a given replay count.
pub fn tail_per_room(replay: usize, stored: bool) -> usize {
    let base = if stored {
        STORED_TAIL_PER_ROOM
    } else {
        MEMORY_TAIL_PER_ROOM
    };
    base.max(replay)
}

/// The id of a message the hub has built and [`History::record`] has not yet placed.
pub(super) const UNDECIDED: u64 = 0;

/// Where a committed message goes.
pub(super) enum Delivery {
    /// Everyone in the room (folded key) at the time it is committed.
    Room(String),
    /// The recipient (when online) and the sender.
    Private {
        to: Option<ClientId>,
        /// The stored conversation ([`store::account_pair`]) when both ends are
        /// accounts; `None`: delivered, never written down.
        pair: Option<String>,
        /// The recipient is an offline account (this key): kept in its mailbox.
        mailbox: Option<std::sync::Arc<str>>,
    },
}

/// A message handed to the store and not yet reported committed.
pub(super) struct Pending {
    seq: u64,
    pub message: Arc<ChatMessage>,
    pub delivery: Delivery,
    pub sender: ClientId,
    pub tag: Option<Tag>,
}

/// What became of a message handed to [`History::record`].
pub(super) enum Recorded {
    /// Kept in memory (`--memory`): deliver it now.
    Now(Pending),
    /// Handed to the store: it is delivered when the store reports it committed.
    Pending,
    /// The store could not take the message (full queue, or stopped).
    Busy(StoreBusy),
}

struct RoomHistory {
    /// The highest id handed out in this room (committed or pending).
    last_id: u64,
    /// Committed messages, oldest first, at most `History::tail_cap`.
    tail: VecDeque<Arc<ChatMessage>>,
    /// The tail holds every stored message of the room (nothing older on disk).
    complete: bool,
}

pub(super) struct History {
    store: Option<StoreSender>,
    replay: usize,
    tail_cap: usize,
    retention: Retention,
    /// Keyed by folded room name; outlives the room so ids never repeat in a run.
    rooms: HashMap<String, RoomHistory>,
    /// `--memory` only: recent private messages between accounts, with their pair.
    private: VecDeque<(String, Arc<ChatMessage>)>,
    last_private_id: u64,
    pending: VecDeque<Pending>,
    next_seq: u64,
    /// Deletions of dropped accounts' conversations and saves of room rules the
    /// writer has not yet been handed (its queue was full), in order; retried as it
    /// catches up.
    side_jobs: VecDeque<SideJob>,
    /// Room rules read at startup, until the hub takes them.
    loaded_rules: Vec<(String, String)>,
}

/// Work for the store besides appends, kept in order until it is handed over.
enum SideJob {
    Forget(Arc<str>),
    SaveRules { key: String, rules: Option<String> },
}

/// Which part of a conversation a page request wants.
#[derive(Debug, Clone, Copy)]
pub(super) struct PageRequest {
    pub before: Option<HistoryBound>,
    pub after: Option<HistoryBound>,
    pub limit: usize,
    /// With `after`: the last `limit` after it, not the first.
    pub newest: bool,
}

impl PageRequest {
    /// Fill the default limit and clamp it to the maximum.
    pub fn new(
        before: Option<HistoryBound>,
        after: Option<HistoryBound>,
        limit: Option<usize>,
        newest: bool,
    ) -> Self {
        PageRequest {
            before,
            after,
            newest,
            limit: limit
                .unwrap_or(super::DEFAULT_HISTORY_LIMIT)
                .clamp(1, super::MAX_HISTORY_LIMIT),
        }
    }
}

impl History {
    pub fn new(
        store: Option<StoreSender>,
        loaded: Loaded,
        replay: usize,
        retention: Retention,
    ) -> Self {
        let tail_cap = tail_per_room(replay, store.is_some())
            .min(retention.max_messages.unwrap_or(usize::MAX))
            .max(1);
        let rooms = loaded
            .rooms
            .into_iter()
            .map(|room| {
                let complete = room.tail.len() < tail_cap;
                let history = RoomHistory {
                    last_id: room.last_id,
                    tail: room.tail.into(),
                    complete,
                };
                (room.key, history)
            })
            .collect();
        History {
            store,
            replay,
            tail_cap,
            retention,
            rooms,
            private: VecDeque::new(),
            last_private_id: loaded.last_private_id,
            pending: VecDeque::new(),
            next_seq: 1,
            side_jobs: VecDeque::new(),
            loaded_rules: loaded.rules,
        }
    }

    /// The id the next message for `delivery` will get: the room's next, or the next
    /// of the one sequence of private messages.
    fn next_id(&self, delivery: &Delivery) -> u64 {
        match delivery {
            Delivery::Room(key) => self.rooms.get(key).map_or(0, |room| room.last_id) + 1,
            Delivery::Private { .. } => self.last_private_id + 1,
        }
    }

    /// Decide a drafted message's place: give it its id (the hub builds it with
    /// [`UNDECIDED`]) and take it toward commit. With a store it is handed to the
    /// writer and [`Recorded::Pending`]; in memory it is kept and returned for
    /// delivery now. Deciding here, and applying only what comes back committed
    /// (`Hub::deliver_committed`), is the seam where another sequencer (a replicated
    /// log's acknowledgements, for several nodes) would take this one's place.
    pub fn record(
        &mut self,
        mut message: ChatMessage,
        delivery: Delivery,
        sender: ClientId,
        tag: Option<Tag>,
    ) -> Recorded {
        debug_assert_eq!(message.id, UNDECIDED, "ids are decided here");
        message.id = self.next_id(&delivery);
        let message = Arc::new(message);
        let conversation = match &delivery {
            Delivery::Room(key) => Some(Conversation::Room(key.clone())),
            Delivery::Private { pair, .. } => pair.clone().map(Conversation::Private),
        };
        let Some(conversation) = conversation else {
            // Not written down. It still waits behind what is pending, so the
            // recipient sees the sender's messages in the order they were sent.
            self.take_id(&delivery, message.id);
            let pending = Pending {
                seq: self.next_seq.saturating_sub(1),
                message,
                delivery,
                sender,
                tag,
            };
            if self.pending.is_empty() {
                return Recorded::Now(pending);
            }
            self.pending.push_back(pending);
            return Recorded::Pending;
        };
        if !self.side_jobs.is_empty() {
            // A deletion or a rules save waits for room in the writer's queue: nothing
            // may overtake it (a new owner's messages must land after its
            // predecessor's are deleted), so this message is refused like any other
            // when the queue is full.
            self.hand_over_side_jobs();
            if !self.side_jobs.is_empty() {
                return Recorded::Busy(crate::store::StoreBusy::Full);
            }
        }
        if let Some(store) = &self.store {
            if let Err(busy) = store.try_append(self.next_seq, conversation, message.clone()) {
                return Recorded::Busy(busy);
            }
            self.take_id(&delivery, message.id);
            self.pending.push_back(Pending {
                seq: self.next_seq,
                message,
                delivery,
                sender,
                tag,
            });
            self.next_seq += 1;
            return Recorded::Pending;
        }
        self.take_id(&delivery, message.id);
        self.keep(&delivery, message.clone());
        Recorded::Now(Pending {
            seq: 0,
            message,
            delivery,
            sender,
            tag,
        })
    }

    fn take_id(&mut self, delivery: &Delivery, id: u64) {
        match delivery {
            Delivery::Room(key) => {
                let tail_cap = self.tail_cap;
                let room = self
                    .rooms
                    .entry(key.clone())
                    .or_insert_with(|| RoomHistory {
                        last_id: 0,
                        tail: VecDeque::with_capacity(tail_cap.min(64)),
                        complete: true,
                    });
                room.last_id = room.last_id.max(id);
            }
            Delivery::Private { .. } => self.last_private_id = self.last_private_id.max(id),
        }
    }

    /// Add a committed message to the in-memory tail.
    fn keep(&mut self, delivery: &Delivery, message: Arc<ChatMessage>) {
        match delivery {
            Delivery::Room(key) => {
                let Some(room) = self.rooms.get_mut(key) else {
                    return;
                };
                room.tail.push_back(message);
                if room.tail.len() > self.tail_cap {
                    room.tail.pop_front();
                    // On disk there is now more than the tail holds, unless retention
                    // deletes exactly what falls off it.
                    let retained_all = self
                        .retention
                        .max_messages
                        .is_some_and(|keep| keep <= self.tail_cap);
                    if self.store.is_some() && !retained_all {
                        room.complete = false;
                    }
                }
            }
            Delivery::Private { pair, .. } => {
                if let (None, Some(pair)) = (&self.store, pair) {
                    self.private.push_back((pair.clone(), message));
                    if self.private.len() > MEMORY_PRIVATE_MESSAGES {
                        self.private.pop_front();
                    }
                }
            }
        }
    }

    /// The account `key` was dropped: its private conversations are deleted (the
    /// next owner of the name must not read them), in memory now and on disk by the
    /// writer, after whatever it was handed before.
    pub fn forget_account(&mut self, key: Arc<str>) {
        self.private
            .retain(|(pair, _)| !crate::store::pair_involves(pair, &key));
        self.side_jobs.push_back(SideJob::Forget(key));
        self.hand_over_side_jobs();
    }

    /// Messages and room settings go to a store on disk (not `--memory`).
    pub fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Keep room `key`'s stored settings (JSON; `None`: delete them) on disk.
    pub fn save_rules(&mut self, key: String, rules: Option<String>) {
        self.side_jobs.push_back(SideJob::SaveRules { key, rules });
        self.hand_over_side_jobs();
    }

    /// The room rules read at startup (once).
    pub fn take_loaded_rules(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.loaded_rules)
    }

    fn hand_over_side_jobs(&mut self) {
        let Some(store) = &self.store else {
            self.side_jobs.clear();
            return;
        };
        while let Some(job) = self.side_jobs.front() {
            let handed = match job {
                SideJob::Forget(key) => store.try_forget_account(key.clone()),
                SideJob::SaveRules { key, rules } => {
                    store.try_save_rules(key.clone(), rules.clone())
                }
            };
            if handed.is_err() {
                return;
            }
            self.side_jobs.pop_front();
        }
    }

    /// The store committed everything up to `upto`: those messages, in order, ready to
    /// deliver (already added to the tails).
    pub fn committed(&mut self, upto: u64) -> Vec<Pending> {
        if !self.side_jobs.is_empty() {
            self.hand_over_side_jobs();
        }
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|p| p.seq <= upto) {
            if let Some(pending) = self.pending.pop_front() {
                self.keep(&pending.delivery, pending.message.clone());
                done.push(pending);
            }
        }
        done
    }

    /// The store failed to commit everything up to `upto`: those messages, to refuse.
    pub fn failed(&mut self, upto: u64) -> Vec<Pending> {
        let mut failed = Vec::new();
        while self.pending.front().is_some_and(|p| p.seq <= upto) {
            failed.extend(self.pending.pop_front());
        }
        failed
    }

    fn age_cutoff(&self) -> Option<SystemTime> {
        self.retention.max_age.map(|age| {
            SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        })
    }

    /// The replay for a client joining room `key`, or `None` when there is nothing to show.
    pub fn replay(&self, key: &str, name: &Arc<str>) -> Option<HistoryPage> {
        if self.replay == 0 {
            return None;
        }
        let page = self.room_page_from_tail(
            key,
            name,
            PageRequest {
                before: None,
                after: None,
                limit: self.replay,
                newest: false,
            },
            true,
        )?;
        (!page.messages.is_empty()).then_some(page)
    }

    /// A page of room history from memory when the tail can answer it exactly; `None`
    /// when it needs the store. `partial_ok` accepts the tail's best effort (replay).
    pub fn room_page_from_tail(
        &self,
        key: &str,
        name: &Arc<str>,
        request: PageRequest,
        partial_ok: bool,
    ) -> Option<HistoryPage> {
        let scope = HistoryScope::Room(name.clone());
        let Some(room) = self.rooms.get(key) else {
            // No message was ever stored or said here.
            return Some(HistoryPage {
                scope,
                messages: Vec::new(),
                more: false,
            });
        };
        let complete = room.complete || self.store.is_none() || partial_ok;
        let cutoff = self.age_cutoff();
        let in_range = |message: &&Arc<ChatMessage>| {
            request.before.is_none_or(|before| before.is_above(message))
                && request.after.is_none_or(|after| after.is_below(message))
                && cutoff.is_none_or(|cutoff| message.time >= cutoff)
        };
        page_of(room.tail.iter(), in_range, request, complete, scope)
    }

    /// `--memory` only: a page of the private conversation `pair`.
    pub fn private_page_from_memory(
        &self,
        pair: &str,
        with: &Arc<str>,
        request: PageRequest,
    ) -> HistoryPage {
        let cutoff = self.age_cutoff();
        let in_range = |message: &&Arc<ChatMessage>| {
            request.before.is_none_or(|before| before.is_above(message))
                && request.after.is_none_or(|after| after.is_below(message))
                && cutoff.is_none_or(|cutoff| message.time >= cutoff)
        };
        let scope = HistoryScope::Private(with.clone());
        let messages = self
            .private
            .iter()
            .filter(|(of, _)| of == pair)
            .map(|(_, message)| message);
        page_of(messages, in_range, request, true, scope).unwrap_or(HistoryPage {
            scope: HistoryScope::Private(with.clone()),
            messages: Vec::new(),
            more: false,
        })
    }

    pub fn store(&self) -> Option<&StoreSender> {
        self.store.as_ref()
    }
}

/// Cut a page out of `messages` (oldest first). With `after`, the first `limit` matches
/// after it; otherwise the last `limit` matches. `complete`: `messages` holds everything
/// there is, so a short page is the whole answer; otherwise a page that cannot be filled
/// (or might miss older messages) is `None`.
fn page_of<'a>(
    messages: impl DoubleEndedIterator<Item = &'a Arc<ChatMessage>> + Clone,
    in_range: impl Fn(&&'a Arc<ChatMessage>) -> bool + Copy,
    request: PageRequest,
    complete: bool,
    scope: HistoryScope,
) -> Option<HistoryPage> {
    let limit = request.limit;
    if let Some(after) = request.after.filter(|_| !request.newest) {
        // Everything after `after` is here if the oldest message held is at most the
        // next id (ids are integers) or nothing older exists.
        let oldest = messages.clone().next();
        let reaches = |oldest: &Arc<ChatMessage>| match after {
            HistoryBound::Id(after) => oldest.id <= after.saturating_add(1),
            // Ids are not times: the tail has all after a time only if it holds an
            // older message.
            HistoryBound::Millis(after) => oldest.millis() <= after,
        };
        if !complete && !oldest.is_some_and(reaches) {
            return None;
        }
        let mut page: Vec<_> = messages.filter(in_range).take(limit + 1).cloned().collect();
        let more = page.len() > limit;
        page.truncate(limit);
        return Some(HistoryPage {
            scope,
            messages: page,
            more,
        });
    }
    let mut page: Vec<_> = messages
        .rev()
        .filter(in_range)
        .take(limit + 1)
        .cloned()
        .collect();
    let more = page.len() > limit;
    if !more && !complete {
        return None;
    }
    page.truncate(limit);
    page.reverse();
    Some(HistoryPage {
        scope,
        messages: page,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Target;

    fn message(id: u64) -> Arc<ChatMessage> {
        Arc::new(ChatMessage {
            id,
            time: SystemTime::now(),
            target: Target::Room("#r".into()),
            from: "a".into(),
            from_client: 1,
            text: format!("m{id}").into(),
            data: None,
            action: false,
            notice: false,
            account: None,
        })
    }

    fn ids(page: &HistoryPage) -> Vec<u64> {
        page.messages.iter().map(|m| m.id).collect()
    }

    fn page(
        tail: &[Arc<ChatMessage>],
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
        complete: bool,
    ) -> Option<HistoryPage> {
        let request = PageRequest {
            before: before.map(HistoryBound::Id),
            after: after.map(HistoryBound::Id),
            limit,
            newest: false,
        };
        let in_range = move |m: &&Arc<ChatMessage>| {
            before.is_none_or(|b| m.id < b) && after.is_none_or(|a| m.id > a)
        };
        page_of(
            tail.iter(),
            in_range,
            request,
            complete,
            HistoryScope::Room("#r".into()),
        )
    }

    #[test]
    fn pages_backwards_and_forwards_within_the_tail() {
        let tail: Vec<_> = (11..=20).map(message).collect();
        let last = page(&tail, None, None, 3, false).unwrap();
        assert_eq!(ids(&last), vec![18, 19, 20]);
        assert!(last.more);
        let older = page(&tail, Some(18), None, 3, false).unwrap();
        assert_eq!(ids(&older), vec![15, 16, 17]);
        let newer = page(&tail, None, Some(15), 3, false).unwrap();
        assert_eq!(ids(&newer), vec![16, 17, 18]);
        assert!(newer.more);
        let end = page(&tail, None, Some(18), 3, false).unwrap();
        assert_eq!(ids(&end), vec![19, 20]);
        assert!(!end.more);
    }

    #[test]
    fn an_incomplete_tail_sends_deep_pages_to_the_store() {
        let tail: Vec<_> = (11..=20).map(message).collect();
        assert!(page(&tail, Some(13), None, 5, false).is_none());
        assert!(page(&tail, None, Some(5), 5, false).is_none());
        // The same pages from a complete tail are just short.
        assert_eq!(
            ids(&page(&tail, Some(13), None, 5, true).unwrap()),
            vec![11, 12]
        );
        assert_eq!(
            ids(&page(&tail, None, Some(5), 3, true).unwrap()),
            vec![11, 12, 13]
        );
        // After the message just before the tail: the tail has all of it.
        assert_eq!(
            ids(&page(&tail, None, Some(10), 2, false).unwrap()),
            vec![11, 12]
        );
    }
}
