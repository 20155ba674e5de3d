//! Devices and their commands: which signed-in clients are devices, commands routed to
//! their targets and answers routed back to the sender, each bounded in time
//! (`--command-timeout`) and logged in the private history of sender and target.

use super::commands::{Outcome, Refusal};
use super::*;
use crate::chat::{CommandOutcome, CommandSent, MAX_COMMAND_NAME_BYTES};

/// The most commands one client may have waiting for answers.
pub const MAX_PENDING_PER_CLIENT: usize = 64;
/// The most commands waiting on the whole server.
pub const MAX_PENDING: usize = 4096;
/// The longest a command's `args` may be, as JSON text: a command fits one datagram
/// to a device, and a waiting command costs little memory.
pub const MAX_COMMAND_ARGS_BYTES: usize = 1024;

/// A command sent and not yet answered.
pub(super) struct PendingCommand {
    sender: ClientId,
    sender_tag: Option<Tag>,
    target: ClientId,
    target_nick: Arc<str>,
    name: Arc<str>,
    args: Option<Data>,
}

impl Hub {
    /// Whether `account` is a device's.
    pub(super) fn is_device_account(&self, account: &Account) -> bool {
        self.devices.contains_key(&*account.key)
    }

    /// [`Request::Command`]: pass it to its target, start its timer.
    pub(super) fn send_command(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        to: &str,
        name: &str,
        args: Option<Data>,
    ) -> Outcome {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_COMMAND_NAME_BYTES || name.contains(char::is_control)
        {
            let why = format!(
                "a command's name must be 1 to {MAX_COMMAND_NAME_BYTES} bytes, without control characters"
            );
            return Err(Refusal::new(ErrorCode::BadRequest, why));
        }
        if let Some(args) = &args {
            let length = args.to_string().len();
            if length > MAX_COMMAND_ARGS_BYTES {
                let why = format!(
                    "a command's args may be {MAX_COMMAND_ARGS_BYTES} bytes of JSON at most (these are {length})"
                );
                return Err(Refusal::new(ErrorCode::BadRequest, why));
            }
        }
        let target = self.owner_of(to)?;
        let client = &self.clients[&target];
        let target_nick = client.nick.clone().unwrap_or_default();
        // A device obeys its owner and the server operators only; a program on a
        // connection that is not a device decides for itself whom it answers.
        if let Some(device) = client.account.as_ref().filter(|_| client.device) {
            let sender = self.clients[&id].account.as_ref();
            let owner = self.devices.get(&*device.key);
            let allowed = sender.is_some_and(|sender| {
                owner.is_some_and(|owner| **owner == *sender.key)
                    || self.config.operators.contains(&*sender.key)
            });
            if !allowed {
                let why = format!(
                    "{target_nick} is a device: only its owner (signed in) and server operators \
                     can command it"
                );
                return Err(Refusal::new(ErrorCode::NotOperator, why));
            }
        }
        if !client.render.carries_commands() {
            let why = format!(
                "{target_nick} is on the {} door, which cannot answer commands; commands go \
                 to devices and to programs on the JSON door or a WebSocket",
                client.door
            );
            return Err(Refusal::new(ErrorCode::NotADevice, why));
        }
        let waiting = self.commands.values().filter(|c| c.sender == id).count();
        if waiting >= MAX_PENDING_PER_CLIENT || self.commands.len() >= MAX_PENDING {
            let why = format!(
                "too many commands waiting for answers (at most {MAX_PENDING_PER_CLIENT} each); \
                 wait for some to be answered or to time out"
            );
            return Err(Refusal::new(ErrorCode::Flood, why));
        }
        let command_id = self.next_command;
        self.next_command += 1;
        let from = self.clients[&id].nick.clone().unwrap_or_default();
        let name: Arc<str> = name.into();
        let sent = Event::Command(Arc::new(CommandSent {
            id: command_id,
            from,
            name: name.clone(),
            args: args.clone(),
        }));
        self.commands.insert(
            command_id,
            PendingCommand {
                sender: id,
                sender_tag: tag,
                target,
                target_nick,
                name,
                args,
            },
        );
        self.send_to(target, &sent);
        self.config.metrics.commands.outcome("sent");
        if let Some(inbox) = self.inbox.clone() {
            let timeout = self.config.command_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(inbox) = inbox.upgrade() {
                    let _ = inbox.send(Command::CommandExpired { id: command_id }).await;
                }
            });
        }
        Ok(())
    }

    /// [`Request::CommandResult`] from `id`. An answer to a command already answered
    /// (a device retrying over UDP) is acknowledged and ignored.
    pub(super) fn command_result(
        &mut self,
        id: ClientId,
        tag: Option<Tag>,
        command_id: u64,
        outcome: (bool, Option<Data>, Option<String>),
    ) -> Outcome {
        let ours = self
            .commands
            .get(&command_id)
            .is_some_and(|pending| pending.target == id);
        if !ours {
            if command_id == 0 || command_id >= self.next_command {
                let why = format!("no command has id {command_id}");
                return Err(Refusal::new(ErrorCode::BadRequest, why));
            }
            // Answered already, timed out, or not this client's: nothing to do.
            if tag.is_some() {
                self.reply(id, tag, Reply::Done);
            }
            return Ok(());
        }
        let Some(pending) = self.commands.remove(&command_id) else {
            return Ok(());
        };
        let (ok, result, error) = outcome;
        let error = error.map(|text| Arc::from(sanitize_text(&text).as_ref()));
        self.config
            .metrics
            .commands
            .outcome(if ok { "answered" } else { "failed" });
        let answer = CommandOutcome {
            from: pending.target_nick.clone(),
            name: pending.name.clone(),
            ok,
            result,
            error,
        };
        self.log_command(&pending, command_id, Some(&answer));
        let (sender, sender_tag) = (pending.sender, pending.sender_tag);
        self.reply(sender, sender_tag, Reply::CommandResult(Arc::new(answer)));
        if tag.is_some() {
            self.reply(id, tag, Reply::Done);
        }
        Ok(())
    }

    /// Command `id`'s timer: if it is still waiting, its sender is told it timed out.
    pub(super) fn command_expired(&mut self, command_id: u64) {
        let Some(pending) = self.commands.remove(&command_id) else {
            return;
        };
        self.config.metrics.commands.outcome("timed_out");
        self.log_command(&pending, command_id, None);
        let why = format!(
            "{} did not answer {} within {:?}",
            pending.target_nick, pending.name, self.config.command_timeout
        );
        self.error(
            pending.sender,
            pending.sender_tag,
            ErrorCode::CommandTimeout,
            &why,
        );
    }

    /// `id` is leaving: commands it was to answer fail now (their senders need not
    /// wait out the timeout); answers to its own commands have nobody to go to.
    pub(super) fn forget_commands_of(&mut self, id: ClientId) {
        if self.commands.is_empty() {
            return;
        }
        let ids: Vec<u64> = self
            .commands
            .iter()
            .filter(|(_, pending)| pending.target == id || pending.sender == id)
            .map(|(command_id, _)| *command_id)
            .collect();
        for command_id in ids {
            let Some(pending) = self.commands.remove(&command_id) else {
                continue;
            };
            if pending.target != id {
                // Its sender left: nobody waits for the answer.
                self.config.metrics.commands.outcome("abandoned");
                continue;
            }
            self.config.metrics.commands.outcome("timed_out");
            self.log_command(&pending, command_id, None);
            let why = format!(
                "{} left before answering {}",
                pending.target_nick, pending.name
            );
            self.error(
                pending.sender,
                pending.sender_tag,
                ErrorCode::CommandTimeout,
                &why,
            );
        }
    }

    /// Keep what a command came to (`None`: no answer) in the private history of its
    /// sender and target, when both are accounts (as private messages are): a message
    /// from the target with the outcome in `data.command`, delivered to nobody (the
    /// sender had the answer itself).
    fn log_command(
        &mut self,
        pending: &PendingCommand,
        command_id: u64,
        answer: Option<&CommandOutcome>,
    ) {
        let (Some(sender), Some(target)) = (
            self.clients
                .get(&pending.sender)
                .and_then(|c| c.account.clone()),
            self.clients
                .get(&pending.target)
                .and_then(|c| c.account.clone()),
        ) else {
            return;
        };
        let sender_nick = self.clients[&pending.sender]
            .nick
            .clone()
            .unwrap_or_default();
        let (text, outcome) = match answer {
            Some(answer) if answer.ok => (format!("{}: ok", pending.name), "ok"),
            Some(answer) => (
                format!(
                    "{}: failed: {}",
                    pending.name,
                    answer.error.as_deref().unwrap_or("no reason given")
                ),
                "failed",
            ),
            None => (format!("{}: no answer", pending.name), "no_answer"),
        };
        let mut record = serde_json::json!({
            "id": command_id,
            "name": &*pending.name,
            "from": &*sender_nick,
            "outcome": outcome,
        });
        if let Some(args) = &pending.args {
            record["args"] = (**args).clone();
        }
        if let Some(result) = answer.and_then(|answer| answer.result.as_ref()) {
            record["result"] = (**result).clone();
        }
        if let Some(error) = answer.and_then(|answer| answer.error.as_ref()) {
            record["error"] = serde_json::Value::from(&**error);
        }
        let message = ChatMessage {
            id: super::history::UNDECIDED,
            time: SystemTime::now(),
            target: Target::Private(sender_nick),
            from: pending.target_nick.clone(),
            from_client: pending.target,
            text: text.into(),
            data: Some(Arc::new(serde_json::json!({ COMMAND_DATA: record }))),
            action: true,
            notice: false,
            account: None,
        };
        let delivery = Delivery::Private {
            to: None,
            pair: Some(store::account_pair(&sender.key, &target.key)),
            mailbox: None,
        };
        // From nobody: no echo, and no error to show if history is busy (the answer
        // itself has been given).
        self.record_and_deliver(message, delivery, NOBODY, None);
    }

    /// [`Command::DeviceAdded`].
    pub(super) fn device_added(
        &mut self,
        client: ClientId,
        tag: Option<Tag>,
        device: Account,
        token: crate::chat::IssuedToken,
    ) {
        self.registered
            .insert(device.key.to_string(), device.name.clone());
        let owner = self
            .clients
            .get(&client)
            .and_then(|client| client.account.as_ref())
            .map(|owner| owner.key.to_string())
            .unwrap_or_default();
        self.devices.insert(device.key.to_string(), owner);
        // A guest holding the name gives it up, as to an account's owner.
        if let Some(&holder) = self.nicks.get(&*device.key) {
            self.disconnect(holder, CloseReason::Replaced, None);
        }
        let name = device.name;
        self.reply(client, tag, Reply::DeviceAdded { name, token });
    }

    /// A device's account is gone (removed, or its owner's dropped): its sessions are
    /// closed and what was kept under it is forgotten.
    pub(super) fn forget_device(&mut self, device: &Account) {
        self.registered.remove(&*device.key);
        self.devices.remove(&*device.key);
        self.history.forget_account(device.key.clone());
        self.forget_account_rules(&device.key);
        let sessions: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, client)| client.account.as_ref() == Some(device))
            .map(|(id, _)| *id)
            .collect();
        for session in sessions {
            self.disconnect(session, CloseReason::Revoked, None);
        }
    }
}

/// The key in a logged command's `data` ([`ChatMessage::data`]) holding its record.
pub const COMMAND_DATA: &str = "command";

/// The sender of messages nobody sent (a command's log entry): no client has id 0.
pub(super) const NOBODY: ClientId = 0;
