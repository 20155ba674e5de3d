//! History glue: a message handed to history and delivered once committed (or at
//! once with `--memory`), and history pages served from the in-memory tail or asked
//! of the store's reader.

use super::commands::{Outcome, Refusal};
use super::*;

impl Hub {
    /// A message the store has committed: now everyone may see it.
    pub(super) fn deliver_committed(&mut self, pending: Pending) {
        let event = Event::Message(pending.message.clone());
        match pending.delivery {
            Delivery::Room(key) => self.broadcast(&key, &event),
            Delivery::Private {
                to: None,
                mailbox: Some(key),
                ..
            } => {
                // Shown to the sender, and acknowledged, once the mailbox has it.
                self.deposit(pending.sender, pending.tag, key, pending.message);
                return;
            }
            Delivery::Private { to, .. } => {
                if let Some(to) = to {
                    self.send_to(to, &event);
                }
                if to != Some(pending.sender) {
                    self.echo(pending.sender, &event);
                }
            }
        }
        if pending.tag.is_some() {
            self.reply(pending.sender, pending.tag, Reply::Done);
        }
    }

    /// Show a sender its own private message, if its door shows senders theirs.
    pub(super) fn echo(&mut self, sender: ClientId, event: &Event) {
        let echoes = self
            .clients
            .get(&sender)
            .is_some_and(|sender| sender.render.echoes_own_messages());
        if echoes {
            self.send_to(sender, event);
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
        // Any room's history may be read that the client may join, also one nobody
        // is in right now.
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
        // A moderated room's history is for those who may join it: a ban, an
        // invite-only, keyed or accounts-only room keeps its past from outsiders
        // too (a keyed room's from all but its members, operators and invitees).
        if !self.clients[&id].in_room(&key) {
            self.may_join(id, &key, &name, None)?;
        }
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
            newest: request.newest,
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
        // Kept between accounts only, and read only by them: a nickname is anyone's
        // once its holder leaves, an account is its owner's.
        let Some(me) = self.clients[&id].account.clone() else {
            let why = "private history is kept only between accounts: register your name \
                       (or log in) to keep yours";
            return Err(Refusal::new(ErrorCode::NotSignedIn, why));
        };
        let key = nick_key(with);
        let pair = store::account_pair(&me.key, &key);
        let with: Arc<str> = self.registered.get(&key).cloned().unwrap_or(with.into());
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
            newest: request.newest,
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
