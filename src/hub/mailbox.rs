//! Accounts' background work for the hub: private messages kept for offline accounts
//! (handed to the accounts service, acknowledged when it has them) and the mailbox
//! delivered at the next sign-in. The hub never waits for it: the work runs in a task
//! of its own and answers through the hub's inbox.

use std::future::Future;

use super::*;

impl Hub {
    /// Run `work` off the hub and hand its answer to the hub's inbox. Without an inbox
    /// (a hub built by hand in a test) or after shutdown, nothing runs.
    fn in_background(&self, work: impl Future<Output = Command> + Send + 'static) {
        let Some(inbox) = self.inbox.as_ref().and_then(|inbox| inbox.upgrade()) else {
            return;
        };
        tokio::spawn(async move {
            let command = work.await;
            let _ = inbox.send(command).await;
        });
    }

    /// Keep `message` in the mailbox of the offline account `key`.
    pub(super) fn deposit(
        &mut self,
        sender: ClientId,
        tag: Option<Tag>,
        key: Arc<str>,
        message: Arc<ChatMessage>,
    ) {
        let Some(accounts) = self.config.accounts.clone() else {
            return;
        };
        self.in_background(async move {
            let result = accounts.deposit(key, message.clone()).await;
            Command::Deposited {
                sender,
                tag,
                message,
                result,
            }
        });
    }

    pub(super) fn deposited(
        &mut self,
        sender: ClientId,
        tag: Option<Tag>,
        message: Arc<ChatMessage>,
        result: Result<(), String>,
    ) {
        let Target::Private(nick) = &message.target else {
            return;
        };
        let nick = nick.clone();
        match result {
            Ok(()) => {
                self.echo(sender, &Event::Message(message));
                self.reply(sender, tag, Reply::KeptFor { nick });
            }
            Err(cause) => {
                let text =
                    format!("message not kept for {nick}: the server could not save it ({cause})");
                self.error(sender, tag, ErrorCode::HistoryUnavailable, &text);
            }
        }
    }

    /// Take what was kept for `account` and give it to `client`.
    pub(super) fn fetch_mailbox(&mut self, client: ClientId, account: Account) {
        let Some(accounts) = self.config.accounts.clone() else {
            return;
        };
        self.in_background(async move {
            let messages = accounts.take_mailbox(account.key.clone()).await;
            Command::Mailbox {
                client,
                account,
                messages,
            }
        });
    }

    pub(super) fn deliver_mailbox(
        &mut self,
        id: ClientId,
        account: Account,
        messages: Result<Vec<ChatMessage>, String>,
    ) {
        let messages = match messages {
            Ok(messages) => messages,
            Err(cause) => {
                let text = format!("could not read the messages kept for you: {cause}");
                self.error(id, None, ErrorCode::AccountsUnavailable, &text);
                return;
            }
        };
        if messages.is_empty() {
            return;
        }
        let messages: Vec<Arc<ChatMessage>> = messages.into_iter().map(Arc::new).collect();
        let still_there = self
            .clients
            .get(&id)
            .is_some_and(|client| client.account.as_ref() == Some(&account));
        if still_there {
            let page = HistoryPage {
                scope: HistoryScope::Offline,
                messages,
                more: false,
            };
            self.send_to(id, &Event::Replay(Arc::new(page)));
            return;
        }
        // Gone before they arrived: back in the mailbox for next time.
        if let Some(accounts) = self.config.accounts.clone() {
            tokio::spawn(async move {
                for message in messages {
                    if let Err(cause) = accounts.deposit(account.key.clone(), message).await {
                        tracing::error!(account = %account.name, "a kept message was lost: {cause}");
                    }
                }
            });
        }
    }
}
