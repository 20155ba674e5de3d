//! Durable chat history: a SQLite file under `--data DIR`, written by one dedicated
//! thread in batched transactions (group commit) and read for replay and paging.
//!
//! The hub never touches the database. It hands each message to the writer thread over
//! a bounded channel ([`StoreSender::try_append`], which never blocks) and fans the
//! message out only when the writer reports the batch committed
//! (`Command::Persisted`), so a message anyone has received is on disk. Deep history
//! queries go to the same thread and come back as `Command::HistoryAnswer`. At startup
//! [`Store::open`] reads every room's last id and its recent tail synchronously, so the
//! hub can seed its id counters and replay caches without ever waiting on disk.
//! `docs/history.md` states the guarantee and the fsync policy.

mod sqlite;
pub(crate) use sqlite::add_missing_columns;
pub(crate) mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chat::{ChatMessage, ClientId, Tag};
use crate::hub::Command;
use crate::metrics::HistoryMetrics;

pub use writer::StoreDone;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "history.db";
/// The lock file that keeps two servers off one data directory.
pub const LOCK_FILE: &str = "switchboard.lock";
/// Messages the hub may have handed to the writer and not yet heard back about; when
/// it is full new messages are refused with an error instead of waiting.
pub const WRITE_QUEUE: usize = 16_384;
/// Most messages committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// How long history is kept. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Most messages kept per room and per private conversation.
    pub max_messages: Option<usize>,
    /// Messages older than this are deleted.
    pub max_age: Option<Duration>,
}

/// Why history could not be opened. Every variant names the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the history data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the history data directory {dir} is in use by another switchboard server \
         (lock file {lock} is held); stop that server or pick another --data DIR"
    )]
    InUse { dir: PathBuf, lock: PathBuf },
    #[error("cannot lock {lock}: {source}")]
    Lock {
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use the history database {path}: {cause}{hint}")]
    Database {
        path: PathBuf,
        cause: String,
        hint: &'static str,
    },
}

/// What to do about an SQLite error, for people.
pub(crate) fn hint_for(error: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode as Code;
    match error.sqlite_error_code() {
        Some(Code::NotADatabase) => {
            " (the file is not a SQLite database or its header is damaged; move it aside \
             to start a new history, or restore it from a backup)"
        }
        Some(Code::DatabaseCorrupt) => {
            " (the database is corrupt; move it aside to start a new history, or try \
             `sqlite3 FILE .recover`)"
        }
        Some(Code::DatabaseBusy) | Some(Code::DatabaseLocked) => {
            " (another program holds a lock on it; stop it, or pick another --data DIR)"
        }
        Some(Code::CannotOpen) => {
            " (check that the path is a regular file that this user can read and write)"
        }
        Some(Code::PermissionDenied) | Some(Code::ReadOnly) => {
            " (this user may not write it; fix the permissions or pick another --data DIR)"
        }
        Some(Code::DiskFull) => " (the disk is full; free some space)",
        Some(Code::SystemIoFailure) => " (the operating system reported an I/O error)",
        _ => "",
    }
}

/// One room as found in the database at startup.
#[derive(Debug)]
pub struct LoadedRoom {
    /// Folded room name (the hub's room key).
    pub key: String,
    /// The highest message id ever assigned in the room (kept even when retention has
    /// deleted the message), so ids continue from it.
    pub last_id: u64,
    /// The room's most recent messages, oldest first.
    pub tail: Vec<Arc<ChatMessage>>,
}

/// Everything the hub needs from disk, read once at startup.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rooms: Vec<LoadedRoom>,
    pub last_private_id: u64,
    /// Every moderated room's rules: (folded room name, JSON).
    pub rules: Vec<(String, String)>,
}

/// An opened, locked, checked history database, not yet written to.
pub struct Store {
    path: PathBuf,
    connection: rusqlite::Connection,
    retention: Retention,
    loaded: Loaded,
    _lock: File,
}

/// Which messages a stored conversation holds.
#[derive(Debug, Clone)]
pub enum Conversation {
    /// A room, by folded key.
    Room(String),
    /// A private conversation, by [`account_pair`] key.
    Private(String),
}

/// The key of the private conversation between two accounts (by account key), the
/// same whichever of them asks. Prefixed, so no conversation kept before accounts
/// existed (keyed by bare nicknames, which anyone could take) is ever served again.
pub fn account_pair(a: &str, b: &str) -> String {
    // Account keys cannot contain a newline, so the pair is unambiguous.
    if a <= b {
        format!("account\n{a}\n{b}")
    } else {
        format!("account\n{b}\n{a}")
    }
}

/// Whether the private conversation `pair` ([`account_pair`]) is one of `key`'s.
pub fn pair_involves(pair: &str, key: &str) -> bool {
    pair.strip_prefix("account\n")
        .is_some_and(|keys| keys.split('\n').any(|part| part == key))
}

/// A page request as the store sees it.
#[derive(Debug, Clone)]
pub struct Query {
    pub conversation: Conversation,
    /// How the page is shown (room name or the other party's nickname).
    pub scope: crate::hub::HistoryScope,
    pub before: Option<crate::chat::HistoryBound>,
    pub after: Option<crate::chat::HistoryBound>,
    pub limit: usize,
    /// With `after`: the last `limit` after it, not the first.
    pub newest: bool,
}

/// Work for the store thread.
pub(crate) enum Job {
    /// Save one message; `seq` is the hub's hand-off sequence, reported back when done.
    Append {
        seq: u64,
        conversation: Conversation,
        message: Arc<ChatMessage>,
        /// When the hub handed it over, for the save-time metric.
        handed_off: Instant,
    },
    /// Delete every private conversation of the account `key` (it was dropped):
    /// after the appends queued before it, and before any queued after it.
    ForgetAccount { key: Arc<str> },
    /// Keep a room's moderation rules (JSON), or delete them (`None`).
    SaveRules { key: String, rules: Option<String> },
    /// Answer a history query to `client` through the hub.
    Query {
        client: ClientId,
        tag: Option<Tag>,
        query: Query,
    },
}

/// The hub's end of the store: hands work to the writer thread without ever blocking.
pub struct StoreSender {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// The writer cannot take more work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBusy {
    /// Its queue is full: the disk is not keeping up.
    Full,
    /// The writer thread has stopped (it panicked); nothing can be saved any more.
    Stopped,
}

impl StoreBusy {
    /// Why a message was not sent, for its sender.
    pub fn describe(self) -> &'static str {
        match self {
            StoreBusy::Full => {
                "message not sent: the history store is not keeping up; try again shortly"
            }
            StoreBusy::Stopped => {
                "message not sent: the history store has stopped; the server cannot save messages"
            }
        }
    }
}

impl StoreSender {
    pub fn try_append(
        &self,
        seq: u64,
        conversation: Conversation,
        message: Arc<ChatMessage>,
    ) -> Result<(), StoreBusy> {
        self.try_send(Job::Append {
            seq,
            conversation,
            message,
            handed_off: Instant::now(),
        })
    }

    pub fn try_query(
        &self,
        client: ClientId,
        tag: Option<Tag>,
        query: Query,
    ) -> Result<(), StoreBusy> {
        self.try_send(Job::Query { client, tag, query })
    }

    pub fn try_forget_account(&self, key: Arc<str>) -> Result<(), StoreBusy> {
        self.try_send(Job::ForgetAccount { key })
    }

    pub fn try_save_rules(&self, key: String, rules: Option<String>) -> Result<(), StoreBusy> {
        self.try_send(Job::SaveRules { key, rules })
    }

    fn try_send(&self, job: Job) -> Result<(), StoreBusy> {
        self.jobs.try_send(job).map_err(|error| match error {
            std::sync::mpsc::TrySendError::Full(_) => StoreBusy::Full,
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                tracing::error!("the history writer thread has stopped; refusing messages");
                StoreBusy::Stopped
            }
        })
    }
}

impl Store {
    /// Create `dir` if missing, take its lock, open (or create) the database in WAL
    /// mode, and read each room's last id and last `tail_per_room` messages. Any problem
    /// is an error naming the file and the cause; the caller must not serve without it.
    pub fn open(
        dir: &Path,
        retention: Retention,
        tail_per_room: usize,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.into(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let database_error = |error: rusqlite::Error| StoreError::Database {
            path: path.clone(),
            hint: hint_for(&error),
            cause: error.to_string(),
        };
        let connection = sqlite::open(&path).map_err(database_error)?;
        let loaded = sqlite::load(&connection, tail_per_room, retention).map_err(database_error)?;
        Ok(Store {
            path,
            connection,
            retention,
            loaded,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was read at startup; the hub takes it to seed ids and replay caches.
    pub fn take_loaded(&mut self) -> Loaded {
        std::mem::take(&mut self.loaded)
    }

    /// Start the writer thread. It reports to the hub through `hub_inbox` and runs until
    /// the returned sender is dropped, then commits what is queued and signals `done`.
    pub(crate) fn start(
        self,
        hub_inbox: tokio::sync::mpsc::Sender<Command>,
        done: writer::DoneSignal,
        metrics: HistoryMetrics,
    ) -> Result<StoreSender, StoreError> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer::run(self, queue, hub_inbox, done, metrics))
            .map_err(|source| StoreError::Database {
                path,
                cause: format!("cannot start the writer thread: {source}"),
                hint: "",
            })?;
        Ok(StoreSender { jobs })
    }
}

/// A pair of ends that tell the server when the writer has committed everything and
/// stopped: the hub hands `writer::DoneSignal` to the thread, the server awaits
/// [`StoreDone`].
pub fn done_pair() -> (writer::DoneSignal, StoreDone) {
    writer::done_pair()
}

#[cfg(unix)]
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    use std::os::fd::AsRawFd;
    let lock = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| StoreError::Lock {
            lock: lock.clone(),
            source,
        })?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open. The lock is
    // released when the process exits, however it exits (SIGKILL included).
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let source = std::io::Error::last_os_error();
        if source.kind() == std::io::ErrorKind::WouldBlock {
            return Err(StoreError::InUse {
                dir: dir.into(),
                lock,
            });
        }
        return Err(StoreError::Lock { lock, source });
    }
    Ok(file)
}

#[cfg(not(unix))]
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock = dir.join(LOCK_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| StoreError::Lock { lock, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{HistoryPage, HistoryScope, Target};
    use std::time::SystemTime;

    fn message(id: u64, target: Target, from: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            time: SystemTime::now(),
            target,
            from: from.into(),
            from_client: 7,
            text: text.into(),
            data: (id == 2).then(|| Arc::new(serde_json::json!({"n": 2}))),
            action: id == 3,
            notice: false,
            account: None,
        }
    }

    fn room_query(before: Option<u64>, after: Option<u64>, limit: usize) -> Query {
        Query {
            conversation: Conversation::Room("#r".into()),
            scope: HistoryScope::Room("#R".into()),
            before: before.map(crate::chat::HistoryBound::Id),
            after: after.map(crate::chat::HistoryBound::Id),
            limit,
            newest: false,
        }
    }

    #[test]
    fn appends_page_and_reload_with_ids_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Retention::default(), 3).unwrap();
        assert!(store.take_loaded().rooms.is_empty());
        let room = Conversation::Room("#r".into());
        let private = Conversation::Private(account_pair("alice", "bob"));
        let messages: Vec<ChatMessage> = (1..=5)
            .map(|id| message(id, Target::Room("#R".into()), "alice", &format!("m{id}")))
            .collect();
        let whisper = message(9, Target::Private("bob".into()), "Alice", "psst");
        let mut batch: Vec<sqlite::Append<'_>> = messages
            .iter()
            .map(|message| sqlite::Append {
                conversation: &room,
                message,
            })
            .collect();
        batch.push(sqlite::Append {
            conversation: &private,
            message: &whisper,
        });
        sqlite::append_batch(&mut store.connection, &batch, Retention::default()).unwrap();

        let ids = |page: &HistoryPage| page.messages.iter().map(|m| m.id).collect::<Vec<_>>();
        let last = sqlite::query(
            &store.connection,
            &room_query(None, None, 2),
            Retention::default(),
        )
        .unwrap();
        assert_eq!((ids(&last), last.more), (vec![4, 5], true));
        let older = sqlite::query(
            &store.connection,
            &room_query(Some(4), None, 9),
            Retention::default(),
        )
        .unwrap();
        assert_eq!((ids(&older), older.more), (vec![1, 2, 3], false));
        assert_eq!(
            older.messages[1].data.as_deref(),
            Some(&serde_json::json!({"n": 2}))
        );
        assert!(older.messages[2].action);
        let newer = sqlite::query(
            &store.connection,
            &room_query(None, Some(1), 2),
            Retention::default(),
        )
        .unwrap();
        assert_eq!((ids(&newer), newer.more), (vec![2, 3], true));
        let private_page = sqlite::query(
            &store.connection,
            &Query {
                conversation: Conversation::Private(account_pair("bob", "alice")),
                scope: HistoryScope::Private("alice".into()),
                before: None,
                after: None,
                limit: 10,
                newest: false,
            },
            Retention::default(),
        )
        .unwrap();
        assert_eq!(private_page.messages[0].text.as_ref(), "psst");
        drop(store);

        // Reopened with a count limit: the tail and ids come back; the sweep trims.
        let retention = Retention {
            max_messages: Some(2),
            max_age: None,
        };
        let mut store = Store::open(dir.path(), retention, 3).unwrap();
        let loaded = store.take_loaded();
        assert_eq!(loaded.last_private_id, 9);
        assert_eq!(loaded.rooms.len(), 1);
        assert_eq!(loaded.rooms[0].last_id, 5);
        let tail: Vec<u64> = loaded.rooms[0].tail.iter().map(|m| m.id).collect();
        assert_eq!(tail, [3, 4, 5]);
        while sqlite::retention_step(&mut store.connection, retention, 1).unwrap() > 0 {}
        let left =
            sqlite::query(&store.connection, &room_query(None, None, 10), retention).unwrap();
        assert_eq!(ids(&left), [4, 5]);
    }

    #[test]
    fn each_conversation_keeps_its_highest_id_across_interleaved_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Retention::default(), 1).unwrap();
        let (red, blue) = (
            Conversation::Room("#red".into()),
            Conversation::Room("#blue".into()),
        );
        let private = Conversation::Private(account_pair("a", "b"));
        let in_room = |id, room: &str| message(id, Target::Room(room.into()), "a", "hi");
        let whisper = |id| message(id, Target::Private("b".into()), "a", "psst");
        // Rooms and private messages interleaved in one batch (one sequence update per
        // scope), then a batch that touches only some of them.
        let first = [
            (&red, in_room(1, "#red")),
            (&blue, in_room(1, "#blue")),
            (&private, whisper(4)),
            (&red, in_room(2, "#red")),
            (&blue, in_room(2, "#blue")),
            (&red, in_room(3, "#red")),
            (&private, whisper(5)),
        ];
        let second = [(&blue, in_room(3, "#blue")), (&private, whisper(6))];
        for batch in [&first[..], &second[..]] {
            let appends: Vec<sqlite::Append<'_>> = batch
                .iter()
                .map(|(conversation, message)| sqlite::Append {
                    conversation,
                    message,
                })
                .collect();
            sqlite::append_batch(&mut store.connection, &appends, Retention::default()).unwrap();
        }
        drop(store);
        let mut store = Store::open(dir.path(), Retention::default(), 1).unwrap();
        let loaded = store.take_loaded();
        let mut last_ids: Vec<(String, u64)> = loaded
            .rooms
            .iter()
            .map(|room| (room.key.to_string(), room.last_id))
            .collect();
        last_ids.sort();
        assert_eq!(last_ids, [("#blue".to_owned(), 3), ("#red".to_owned(), 3)]);
        assert_eq!(loaded.last_private_id, 6);
    }

    /// A file written by version 3 (no `notice` or `from_account` columns) opens,
    /// keeps its messages, and stores the new fields from then on.
    #[test]
    fn a_version_3_file_gains_the_new_columns_and_keeps_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            old.execute_batch(
                "CREATE TABLE room_messages (room_key TEXT NOT NULL, id INTEGER NOT NULL,
                     room_name TEXT NOT NULL, time_ms INTEGER NOT NULL, from_nick TEXT NOT NULL,
                     from_client INTEGER NOT NULL, text TEXT NOT NULL, data TEXT,
                     action INTEGER NOT NULL, PRIMARY KEY (room_key, id)) WITHOUT ROWID;
                 CREATE TABLE private_messages (id INTEGER PRIMARY KEY, pair TEXT NOT NULL,
                     time_ms INTEGER NOT NULL, from_nick TEXT NOT NULL, to_nick TEXT NOT NULL,
                     from_client INTEGER NOT NULL, text TEXT NOT NULL, data TEXT,
                     action INTEGER NOT NULL);
                 CREATE TABLE sequences (scope TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO room_messages VALUES ('#r', 1, '#R', 1000, 'alice', 7, 'old', NULL, 0);
                 INSERT INTO sequences VALUES ('#r', 1);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let mut store = Store::open(dir.path(), Retention::default(), 5).unwrap();
        let loaded = store.take_loaded();
        let old = &loaded.rooms[0].tail[0];
        assert_eq!(
            (&*old.text, old.notice, old.account.as_deref()),
            ("old", false, None)
        );
        let room = Conversation::Room("#r".into());
        let mut notice = message(2, Target::Room("#R".into()), "alice", "new");
        notice.notice = true;
        notice.account = Some("Alice".into());
        let batch = [sqlite::Append {
            conversation: &room,
            message: &notice,
        }];
        sqlite::append_batch(&mut store.connection, &batch, Retention::default()).unwrap();
        let page = sqlite::query(
            &store.connection,
            &room_query(None, None, 5),
            Retention::default(),
        )
        .unwrap();
        let kept = &page.messages[1];
        assert_eq!(
            (kept.notice, kept.account.as_deref()),
            (true, Some("Alice"))
        );
    }

    /// Pages bounded by time (IRC's `timestamp=` references), forwards, backwards
    /// and newest-first, exclusive at both ends.
    #[test]
    fn pages_by_time() {
        use crate::chat::HistoryBound::{Id, Millis};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Retention::default(), 1).unwrap();
        let room = Conversation::Room("#r".into());
        let messages: Vec<ChatMessage> = (1..=6)
            .map(|id| {
                let mut said = message(id, Target::Room("#R".into()), "a", "x");
                said.time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1000 * id);
                said
            })
            .collect();
        let batch: Vec<sqlite::Append<'_>> = messages
            .iter()
            .map(|message| sqlite::Append {
                conversation: &room,
                message,
            })
            .collect();
        sqlite::append_batch(&mut store.connection, &batch, Retention::default()).unwrap();
        let page = |before, after, limit, newest| {
            let mut query = room_query(None, None, limit);
            query.before = before;
            query.after = after;
            query.newest = newest;
            let page = sqlite::query(&store.connection, &query, Retention::default()).unwrap();
            (
                page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
                page.more,
            )
        };
        assert_eq!(
            page(Some(Millis(3000)), None, 9, false),
            (vec![1, 2], false)
        );
        assert_eq!(page(None, Some(Millis(3000)), 2, false), (vec![4, 5], true));
        assert_eq!(page(None, Some(Millis(3000)), 2, true), (vec![5, 6], true));
        assert_eq!(
            page(Some(Millis(6000)), Some(Id(2)), 9, false),
            (vec![3, 4, 5], false)
        );
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), Retention::default(), 1).unwrap();
        let error = Store::open(dir.path(), Retention::default(), 1)
            .err()
            .expect("refused");
        assert!(matches!(error, StoreError::InUse { .. }), "{error}");
    }
}
