//! History glue: a message handed to history and delivered once committed (or at
//! once with `--memory`), and history pages served from the in-memory tail or asked
//! of the store's reader.

use super::commands::{Outcome, Refusal};
use super::*;

impl Hub {
    /// A message the store has committed: now everyone may see it.
    pub(super) fn deliver_committed(&mut self, pending: Pending) {
        let event = Event::Message(pending.message);
        match pending.delivery {
            Delivery::Room(key) => self.broadcast(&key, &event),
            Delivery::Private { to } => {
                self.send_to(to, &event);
                let echoes = self
                    .clients
                    .get(&pending.sender)
                    .is_some_and(|sender| sender.render.echoes_own_messages());
                if to != pending.sender && echoes {
                    self.send_to(pending.sender, &event);
                }
            }
        }
        if pending.tag.is_some() {
            self.reply(pending.sender, pending.tag, Reply::Done);
        }
    }

    /// Hand a new message to history; deliver it now (memory) or once committed.
    pub(super) fn record_and_deliver(
        &mut self,
        message: ChatMessage,
        delivery: Delivery,
        sender: ClientId,
        tag: Option<Tag>,
    ) {
        match self.history.record(message, delivery, sender, tag.clone()) {
            Recorded::Pending => {}
            Recorded::Now(pending) => self.deliver_committed(pending),
            Recorded::Busy(busy) => {
                self.error(sender, tag, ErrorCode::HistoryUnavailable, busy.describe())
            }
        }
    }

    pub(super) fn room_history(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        room: Option<String>,
        request: PageRequest,
    ) -> Outcome {
        // Any room's history may be read, also one nobody is in right now.
        let (key, name): (String, Arc<str>) = match room {
            Some(name) => match normalize_room(&name) {
                Ok(name) => (fold_case(&name), name.into()),
                Err(error) => return Err(Refusal::new(ErrorCode::RoomInvalid, error.to_string())),
            },
            None => match self.clients[&id].current_room() {
                Some(key) => (key.clone(), self.rooms[key].name.clone()),
                None => {
                    let why = "you are not in any room; name the room";
                    return Err(Refusal::new(ErrorCode::NotInRoom, why));
                }
            },
        };
        let name = self.rooms.get(&key).map_or(name, |room| room.name.clone());
        if let Some(page) = self
            .history
            .room_page_from_tail(&key, &name, request, false)
        {
            self.reply(id, tag, Reply::History(Arc::new(page)));
            return Ok(());
        }
        let query = store::Query {
            conversation: store::Conversation::Room(key),
            scope: HistoryScope::Room(name),
            before: request.before,
            after: request.after,
            limit: request.limit,
        };
        self.query_store(id, tag, query)
    }

    pub(super) fn private_history(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        with: &str,
        request: PageRequest,
    ) -> Outcome {
        let Ok(with) = validate_nick(with) else {
            let why = format!("{with:?} is not a name");
            return Err(Refusal::new(ErrorCode::NickInvalid, why));
        };
        // The conversation between the names as they are now: nicknames are not
        // accounts, so whoever holds a name reads that name's private history.
        let me = self.clients[&id].nick.clone().unwrap_or_default();
        let pair = store::private_pair(&me, with);
        let with: Arc<str> = with.into();
        if self.history.store().is_none() {
            let page = self.history.private_page_from_memory(&pair, &with, request);
            self.reply(id, tag, Reply::History(Arc::new(page)));
            return Ok(());
        }
        let query = store::Query {
            conversation: store::Conversation::Private(pair),
            scope: HistoryScope::Private(with),
            before: request.before,
            after: request.after,
            limit: request.limit,
        };
        self.query_store(id, tag, query)
    }

    /// A history page the memory tail cannot answer: the store thread answers it
    /// through the inbox ([`Command::HistoryAnswer`]).
    fn query_store(&mut self, id: ClientId, tag: Option<Tag>, query: store::Query) -> Outcome {
        let sent = match self.history.store() {
            Some(store) => store.try_query(id, tag, query).is_ok(),
            None => false,
        };
        if !sent {
            let why = "the history store is busy; try again shortly";
            return Err(Refusal::new(ErrorCode::HistoryUnavailable, why));
        }
        Ok(())
    }
}
