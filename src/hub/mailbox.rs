//! The mailbox worker: private messages kept for offline accounts and handed over at
//! their next sign-in. One task does all of it, in the order the hub asks, so kept
//! messages stay in the order they were sent, a sign-in always sees every message
//! deposited before it, and nothing is deleted from a mailbox until the hub has put it
//! in its owner's outbox. The hub never waits for the worker: it queues jobs without
//! blocking ([`MAILBOX_QUEUE`] at most) and hears back through its own inbox.

use tokio::sync::mpsc::error::TrySendError;

use super::*;
use crate::accounts::{Accounts, Kept};

/// Jobs the hub may have queued for the mailbox worker. When it is full, a message for
/// an offline account is refused (its sender is told to try again) and a sign-in's
/// mailbox waits for the next sign-in: the worker is behind the disk, nothing is lost.
pub const MAILBOX_QUEUE: usize = 1024;

/// Work for the mailbox worker.
pub(super) enum MailJob {
    /// Keep `message` for the offline account `key`, then tell the hub (and so its
    /// sender) whether it is kept.
    Deposit {
        sender: ClientId,
        tag: Option<Tag>,
        key: Arc<str>,
        message: Arc<ChatMessage>,
    },
    /// Read what is kept for `account` and offer it to `client`; delete it once the
    /// hub says the client got it.
    Fetch { client: ClientId, account: Account },
}

/// Start the worker; it runs until the hub drops the returned sender, finishing what
/// is queued.
pub(super) fn start(
    accounts: Accounts,
    hub: mpsc::WeakSender<Command>,
    tracker: &tokio_util::task::TaskTracker,
) -> mpsc::Sender<MailJob> {
    let (jobs, mut queue) = mpsc::channel(MAILBOX_QUEUE);
    tracker.spawn(async move {
        while let Some(job) = queue.recv().await {
            run(&accounts, &hub, job).await;
        }
    });
    jobs
}

async fn run(accounts: &Accounts, hub: &mpsc::WeakSender<Command>, job: MailJob) {
    // After the hub has stopped there is nobody to answer; deposits still complete.
    let tell = |command: Command| async move {
        if let Some(hub) = hub.upgrade() {
            let _ = hub.send(command).await;
        }
    };
    match job {
        MailJob::Deposit {
            sender,
            tag,
            key,
            message,
        } => {
            let result = accounts.deposit(key, message.clone()).await;
            tell(Command::Deposited {
                sender,
                tag,
                message,
                result,
            })
            .await;
        }
        MailJob::Fetch { client, account } => {
            let kept = match accounts.read_mailbox(account.key.clone()).await {
                Ok(kept) => kept,
                Err(cause) => {
                    let (delivered, _) = oneshot::channel();
                    let messages = Err(cause);
                    let mailbox = Command::Mailbox {
                        client,
                        account,
                        messages,
                        delivered,
                    };
                    tell(mailbox).await;
                    return;
                }
            };
            let Some(upto) = kept.last().map(|kept| kept.row) else {
                return;
            };
            let messages = Ok(kept.into_iter().map(|kept| kept.message).collect());
            let (delivered, answer) = oneshot::channel();
            let key = account.key.clone();
            tell(Command::Mailbox {
                client,
                account,
                messages,
                delivered,
            })
            .await;
            // Not delivered (the client left, or the hub stopped): all of it stays
            // for the next sign-in, in order.
            if answer.await == Ok(true) {
                if let Err(cause) = accounts.clear_mailbox(key, upto).await {
                    tracing::warn!("delivered mail was not cleared (it comes again): {cause}");
                }
            }
        }
    }
}

impl Hub {
    fn queue_mail(&mut self, job: MailJob) -> Result<(), &'static str> {
        let Some(mail) = self.mail.as_ref() else {
            return Err("this server keeps no messages for offline accounts");
        };
        mail.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => "the server is busy saving kept messages; try again shortly",
            TrySendError::Closed(_) => "the server has stopped keeping messages",
        })
    }

    /// Keep `message` in the mailbox of the offline account `key`.
    pub(super) fn deposit(
        &mut self,
        sender: ClientId,
        tag: Option<Tag>,
        key: Arc<str>,
        message: Arc<ChatMessage>,
    ) {
        let job = MailJob::Deposit {
            sender,
            tag: tag.clone(),
            key,
            message: message.clone(),
        };
        if let Err(why) = self.queue_mail(job) {
            self.deposited(sender, tag, message, Err(why.into()));
        }
    }

    pub(super) fn deposited(
        &mut self,
        sender: ClientId,
        tag: Option<Tag>,
        message: Arc<ChatMessage>,
        result: Result<Kept, String>,
    ) {
        let Target::Private(nick) = &message.target else {
            return;
        };
        let nick = nick.clone();
        match result {
            Ok(Kept::Yes) => {
                self.echo(sender, &Event::Message(message));
                self.reply(sender, tag, Reply::KeptFor { nick });
            }
            Ok(Kept::NoAccount) => {
                let text = format!("message not kept: {nick} no longer has an account");
                self.error(sender, tag, ErrorCode::NoSuchNick, &text);
            }
            Err(cause) => {
                let text = format!("message not kept for {nick}: {cause}");
                self.error(sender, tag, ErrorCode::HistoryUnavailable, &text);
            }
        }
    }

    /// Offer `client`, just signed in to `account`, what was kept for it.
    pub(super) fn fetch_mailbox(&mut self, client: ClientId, account: Account) {
        if let Err(why) = self.queue_mail(MailJob::Fetch { client, account }) {
            if self.mail.is_some() {
                let text = format!("{why}; messages kept for you come at your next login");
                self.error(client, None, ErrorCode::AccountsUnavailable, &text);
            }
        }
    }

    /// Deliver a mailbox to `id` if it is still signed in to `account`; tell the
    /// worker whether it was, so it deletes only what was delivered.
    pub(super) fn deliver_mailbox(
        &mut self,
        id: ClientId,
        account: Account,
        messages: Result<Vec<ChatMessage>, String>,
        delivered: oneshot::Sender<bool>,
    ) {
        let messages = match messages {
            Ok(messages) => messages,
            Err(cause) => {
                let text = format!(
                    "could not read the messages kept for you ({cause}); they are kept for \
                     your next login"
                );
                self.error(id, None, ErrorCode::AccountsUnavailable, &text);
                return;
            }
        };
        let still_there = self
            .clients
            .get(&id)
            .is_some_and(|client| client.account.as_ref() == Some(&account));
        if still_there && !messages.is_empty() {
            let page = HistoryPage {
                scope: HistoryScope::Offline,
                messages: messages.into_iter().map(Arc::new).collect(),
                more: false,
            };
            self.send_to(id, &Event::Replay(Arc::new(page)));
        }
        let _ = delivered.send(still_there);
    }
}
