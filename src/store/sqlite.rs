//! The SQL: schema, pragmas (WAL, `synchronous=FULL`), the startup load, batched
//! appends, page queries and retention deletes. Only the store's thread calls these.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Conversation, Loaded, LoadedRoom, Query, Retention};
use crate::chat::{ChatMessage, HistoryBound, HistoryPage, Target};

/// Bumped when the schema changes. 2 added the accounts' tables
/// ([`crate::accounts::db::SCHEMA`]), 3 the rooms' moderation rules (`room_rules`),
/// 4 the `notice` and `from_account` columns of both message tables; an older file
/// is migrated in place (new tables are created, new columns added with their
/// defaults, nothing else changes).
const SCHEMA_VERSION: i64 = 4;
/// The `sequences` row that holds the last private message id.
const PRIVATE_SEQUENCE: &str = "@private";
/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS room_messages (
    room_key    TEXT    NOT NULL,
    id          INTEGER NOT NULL,
    room_name   TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL,
    from_nick   TEXT    NOT NULL,
    from_client INTEGER NOT NULL,
    text        TEXT    NOT NULL,
    data        TEXT,
    action      INTEGER NOT NULL,
    notice      INTEGER NOT NULL DEFAULT 0,
    from_account TEXT,
    PRIMARY KEY (room_key, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS room_messages_by_time ON room_messages (time_ms);
CREATE TABLE IF NOT EXISTS private_messages (
    id          INTEGER PRIMARY KEY,
    pair        TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL,
    from_nick   TEXT    NOT NULL,
    to_nick     TEXT    NOT NULL,
    from_client INTEGER NOT NULL,
    text        TEXT    NOT NULL,
    data        TEXT,
    action      INTEGER NOT NULL,
    notice      INTEGER NOT NULL DEFAULT 0,
    from_account TEXT
);
CREATE INDEX IF NOT EXISTS private_messages_by_pair ON private_messages (pair, id);
CREATE INDEX IF NOT EXISTS private_messages_by_time ON private_messages (time_ms);
-- Each moderated room's rules (owner, operators, bans, mutes, modes) as JSON.
CREATE TABLE IF NOT EXISTS room_rules (
    room_key TEXT PRIMARY KEY,
    rules    TEXT NOT NULL
) WITHOUT ROWID;
-- The highest id ever assigned per room (and for private messages), kept when
-- retention deletes the messages themselves so ids never go backwards.
CREATE TABLE IF NOT EXISTS sequences (
    scope   TEXT    PRIMARY KEY,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Open (or create) the database: WAL, full fsync on commit, schema in place.
pub(super) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // Reading the journal mode touches the file header: a file that is not a database
    // fails here, before anything is written.
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot switch to WAL mode (journal mode is {mode})"
            )),
        ));
    }
    // FULL: every commit fsyncs the WAL, so a committed batch survives power loss as
    // well as a crash of the process. Group commit keeps that to one fsync per batch.
    connection.pragma_update(None, "synchronous", "FULL")?;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {version} is newer than this switchboard understands ({SCHEMA_VERSION})"
            )),
        ));
    }
    connection.execute_batch(SCHEMA)?;
    add_missing_columns(&connection, &ADDED_COLUMNS)?;
    connection.execute_batch(crate::accounts::db::SCHEMA)?;
    if version != SCHEMA_VERSION {
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    // Take the write lock once now: a database another program keeps locked is a
    // startup error, not a surprise at the first message.
    connection.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
    Ok(connection)
}

/// Columns added to the history's tables after they were first made.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("room_messages", "notice", "INTEGER NOT NULL DEFAULT 0"),
    ("room_messages", "from_account", "TEXT"),
    ("private_messages", "notice", "INTEGER NOT NULL DEFAULT 0"),
    ("private_messages", "from_account", "TEXT"),
];

/// Columns `(table, column, definition)` added after a table was first made: a file
/// from an older version gets them (with their defaults) when it is opened. The
/// accounts' mailbox uses it too.
pub(crate) fn add_missing_columns(
    connection: &Connection,
    added: &[(&str, &str, &str)],
) -> rusqlite::Result<()> {
    for &(table, column, definition) in added {
        let present: bool = connection.query_row(
            "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
            params![table, column],
            |row| row.get::<_, i64>(0).map(|count| count > 0),
        )?;
        if !present {
            connection.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

pub(super) fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Oldest `time_ms` still kept under the age limit, or `None` when ages are unlimited.
pub(super) fn age_cutoff(retention: Retention) -> Option<i64> {
    retention
        .max_age
        .map(|age| unix_ms(SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH)))
}

fn data_text(message: &ChatMessage) -> Option<String> {
    message.data.as_ref().map(|data| data.to_string())
}

fn parse_data(text: Option<String>) -> Option<crate::hub::Data> {
    // Written by us from a JSON value; unreadable data is dropped, not fatal.
    text.and_then(|text| serde_json::from_str(&text).ok().map(Arc::new))
}

const ROOM_COLUMNS: &str =
    "id, room_name, time_ms, from_nick, from_client, text, data, action, notice, from_account";
const PRIVATE_COLUMNS: &str =
    "id, to_nick, time_ms, from_nick, from_client, text, data, action, notice, from_account";

/// Rows selected with `ROOM_COLUMNS` or `PRIVATE_COLUMNS`.
fn row_message(row: &rusqlite::Row<'_>, private: bool) -> rusqlite::Result<ChatMessage> {
    let id: i64 = row.get(0)?;
    let target: String = row.get(1)?;
    let from: String = row.get(3)?;
    let text: String = row.get(5)?;
    Ok(ChatMessage {
        id: u64::try_from(id).unwrap_or(0),
        time: from_unix_ms(row.get(2)?),
        target: if private {
            Target::Private(target.into())
        } else {
            Target::Room(target.into())
        },
        from: from.into(),
        from_client: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        text: text.into(),
        data: parse_data(row.get(6)?),
        action: row.get::<_, i64>(7)? != 0,
        notice: row.get::<_, i64>(8)? != 0,
        account: row.get::<_, Option<String>>(9)?.map(Arc::from),
    })
}

fn id_param(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Each room's last id and last `tail` messages (not older than the age limit).
pub(super) fn load(
    connection: &Connection,
    tail: usize,
    retention: Retention,
) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut sequences = connection.prepare("SELECT scope, last_id FROM sequences")?;
    let rows = sequences.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut rooms = Vec::new();
    for row in rows {
        let (scope, last_id) = row?;
        let last_id = u64::try_from(last_id).unwrap_or(0);
        if scope == PRIVATE_SEQUENCE {
            loaded.last_private_id = last_id;
        } else {
            rooms.push((scope, last_id));
        }
    }
    let cutoff = age_cutoff(retention).unwrap_or(i64::MIN);
    let mut recent = connection.prepare(&format!(
        "SELECT {ROOM_COLUMNS} FROM room_messages
         WHERE room_key = ?1 AND time_ms >= ?2 ORDER BY id DESC LIMIT ?3"
    ))?;
    for (key, last_id) in rooms {
        let mut messages = recent
            .query_map(params![key, cutoff, tail as i64], |row| {
                row_message(row, false)
            })?
            .map(|message| message.map(Arc::new))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        messages.reverse();
        loaded.rooms.push(LoadedRoom {
            key,
            last_id,
            tail: messages,
        });
    }
    let mut rules = connection.prepare("SELECT room_key, rules FROM room_rules")?;
    loaded.rules = rules
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(loaded)
}

/// One message to append.
pub(super) struct Append<'a> {
    pub conversation: &'a Conversation,
    pub message: &'a ChatMessage,
}

/// Write a batch in one transaction, advance the sequences, and trim by count the
/// conversations it touched. Nothing of the batch is kept if any part fails.
pub(super) fn append_batch(
    connection: &mut Connection,
    batch: &[Append<'_>],
    retention: Retention,
) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut room_insert = transaction.prepare_cached(
            "INSERT INTO room_messages (room_key, id, room_name, time_ms, from_nick, from_client, text, data, action, notice, from_account)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut private_insert = transaction.prepare_cached(
            "INSERT INTO private_messages (id, pair, time_ms, from_nick, to_nick, from_client, text, data, action, notice, from_account)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut sequence = transaction.prepare_cached(
            "INSERT INTO sequences (scope, last_id) VALUES (?1, ?2)
             ON CONFLICT (scope) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
        )?;
        // One sequence update per conversation per batch, not one per message.
        let mut last_ids: HashMap<&str, i64> = HashMap::new();
        for append in batch {
            let message = append.message;
            let id = id_param(message.id);
            let time = unix_ms(message.time);
            let from_client = id_param(message.from_client);
            match (append.conversation, &message.target) {
                (Conversation::Room(key), Target::Room(name)) => {
                    room_insert.execute(params![
                        key,
                        id,
                        name.as_ref(),
                        time,
                        message.from.as_ref(),
                        from_client,
                        message.text.as_ref(),
                        data_text(message),
                        message.action as i64,
                        message.notice as i64,
                        message.account.as_deref()
                    ])?;
                    raise_last_id(&mut last_ids, key.as_ref(), id);
                }
                (Conversation::Private(pair), Target::Private(to)) => {
                    private_insert.execute(params![
                        id,
                        pair,
                        time,
                        message.from.as_ref(),
                        to.as_ref(),
                        from_client,
                        message.text.as_ref(),
                        data_text(message),
                        message.action as i64,
                        message.notice as i64,
                        message.account.as_deref()
                    ])?;
                    raise_last_id(&mut last_ids, PRIVATE_SEQUENCE, id);
                }
                _ => {
                    return Err(rusqlite::Error::InvalidParameterName(
                        "message target does not match its conversation".into(),
                    ))
                }
            }
        }
        for (scope, last_id) in last_ids {
            sequence.execute(params![scope, last_id])?;
        }
    }
    if let Some(keep) = retention.max_messages {
        let mut touched: Vec<&Conversation> = Vec::new();
        for append in batch {
            let already = touched.iter().any(|c| same(c, append.conversation));
            if !already {
                touched.push(append.conversation);
            }
        }
        for conversation in touched {
            trim_count(&transaction, conversation, keep, usize::MAX)?;
        }
    }
    transaction.commit()
}

/// Note `id` as the highest of `scope` in this batch so far.
fn raise_last_id<'a>(last_ids: &mut HashMap<&'a str, i64>, scope: &'a str, id: i64) {
    let last = last_ids.entry(scope).or_insert(id);
    *last = (*last).max(id);
}

fn same(a: &Conversation, b: &Conversation) -> bool {
    match (a, b) {
        (Conversation::Room(a), Conversation::Room(b)) => a == b,
        (Conversation::Private(a), Conversation::Private(b)) => a == b,
        _ => false,
    }
}

/// Keep room `key`'s rules, or delete them (`None`).
pub(super) fn save_rules(db: &Connection, key: &str, rules: Option<&str>) -> rusqlite::Result<()> {
    match rules {
        Some(rules) => db.execute(
            "INSERT INTO room_rules (room_key, rules) VALUES (?1, ?2) \
             ON CONFLICT (room_key) DO UPDATE SET rules = excluded.rules",
            params![key, rules],
        ),
        None => db.execute("DELETE FROM room_rules WHERE room_key = ?1", [key]),
    }?;
    Ok(())
}

/// Delete every private conversation of the account `key` ([`super::account_pair`]
/// keys name it first or last). Returns how many messages went.
pub(super) fn forget_account(db: &Connection, key: &str) -> rusqlite::Result<usize> {
    let first = format!("account\n{key}\n");
    let last = format!("\n{key}");
    db.execute(
        "DELETE FROM private_messages WHERE substr(pair, 1, ?2) = ?1 OR substr(pair, -?4) = ?3",
        rusqlite::params![
            first,
            first.chars().count() as i64,
            last,
            last.chars().count() as i64
        ],
    )
}

/// Delete all but the newest `keep` messages of one conversation, at most `chunk` rows.
/// Returns how many rows went.
fn trim_count(
    connection: &Connection,
    conversation: &Conversation,
    keep: usize,
    chunk: usize,
) -> rusqlite::Result<usize> {
    let keep = keep.max(1) as i64;
    let chunk = i64::try_from(chunk).unwrap_or(i64::MAX);
    let (table, column, key) = match conversation {
        Conversation::Room(key) => ("room_messages", "room_key", key),
        Conversation::Private(pair) => ("private_messages", "pair", pair),
    };
    // The id of the oldest message to keep; everything below it goes.
    let oldest_kept: Option<i64> = connection
        .query_row(
            &format!(
                "SELECT id FROM {table} WHERE {column} = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2"
            ),
            params![key, keep - 1],
            |row| row.get(0),
        )
        .optional()?;
    let Some(oldest_kept) = oldest_kept else {
        return Ok(0);
    };
    connection.execute(
        &format!(
            "DELETE FROM {table} WHERE {column} = ?1 AND id IN
             (SELECT id FROM {table} WHERE {column} = ?1 AND id < ?2 ORDER BY id LIMIT ?3)"
        ),
        params![key, oldest_kept, chunk],
    )
}

/// One bounded step of background retention: delete at most `chunk` rows that are over
/// the age limit, then at most `chunk` over the count limit. Returns rows deleted, so
/// the caller repeats (between batches of new messages) until it returns 0.
pub(super) fn retention_step(
    connection: &mut Connection,
    retention: Retention,
    chunk: usize,
) -> rusqlite::Result<usize> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut deleted = 0;
    let limit = i64::try_from(chunk).unwrap_or(i64::MAX);
    if let Some(cutoff) = age_cutoff(retention) {
        deleted += transaction.execute(
            "DELETE FROM room_messages WHERE (room_key, id) IN
             (SELECT room_key, id FROM room_messages WHERE time_ms < ?1 LIMIT ?2)",
            params![cutoff, limit],
        )?;
        deleted += transaction.execute(
            "DELETE FROM private_messages WHERE id IN
             (SELECT id FROM private_messages WHERE time_ms < ?1 LIMIT ?2)",
            params![cutoff, limit],
        )?;
    }
    if let Some(keep) = retention.max_messages {
        // Conversations over the limit (after a restart with a lower limit, say).
        let over: Vec<Conversation> = {
            let mut rooms = transaction.prepare(
                "SELECT room_key FROM room_messages GROUP BY room_key HAVING count(*) > ?1 LIMIT 16",
            )?;
            let mut pairs = transaction.prepare(
                "SELECT pair FROM private_messages GROUP BY pair HAVING count(*) > ?1 LIMIT 16",
            )?;
            let keep = keep as i64;
            let rooms = rooms
                .query_map([keep], |row| {
                    row.get::<_, String>(0).map(Conversation::Room)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let pairs = pairs
                .query_map([keep], |row| {
                    row.get::<_, String>(0).map(Conversation::Private)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rooms.into_iter().chain(pairs).collect()
        };
        for conversation in &over {
            if deleted >= chunk {
                break;
            }
            deleted += trim_count(&transaction, conversation, keep, chunk - deleted)?;
        }
    }
    transaction.commit()?;
    Ok(deleted)
}

/// One page of history, oldest first, honouring the age limit.
pub(super) fn query(
    connection: &Connection,
    query: &Query,
    retention: Retention,
) -> rusqlite::Result<HistoryPage> {
    let cutoff = age_cutoff(retention).unwrap_or(i64::MIN);
    let (table, column, key, columns, private) = match &query.conversation {
        Conversation::Room(key) => ("room_messages", "room_key", key, ROOM_COLUMNS, false),
        Conversation::Private(pair) => ("private_messages", "pair", pair, PRIVATE_COLUMNS, true),
    };
    // Each bound is on the id or on the time; the other column is left open.
    let (mut after_id, mut after_ms, mut before_id, mut before_ms) =
        (i64::MIN, i64::MIN, i64::MAX, i64::MAX);
    match query.after {
        Some(HistoryBound::Id(id)) => after_id = id_param(id),
        Some(HistoryBound::Millis(ms)) => after_ms = id_param(ms),
        None => {}
    }
    match query.before {
        Some(HistoryBound::Id(id)) => before_id = id_param(id),
        Some(HistoryBound::Millis(ms)) => before_ms = id_param(ms),
        None => {}
    }
    // With `after` the page reads forwards from it; otherwise backwards from `before`
    // (or the newest). One extra row tells whether there is more that way.
    let forwards = query.after.is_some() && !query.newest;
    let order = if forwards { "ASC" } else { "DESC" };
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {columns} FROM {table}
         WHERE {column} = ?1 AND id > ?2 AND id < ?3 AND time_ms >= ?4
           AND time_ms > ?6 AND time_ms < ?7
         ORDER BY id {order} LIMIT ?5"
    ))?;
    let mut messages = statement
        .query_map(
            params![
                key,
                after_id,
                before_id,
                cutoff,
                query.limit as i64 + 1,
                after_ms,
                before_ms
            ],
            |row| row_message(row, private),
        )?
        .map(|message| message.map(Arc::new))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = messages.len() > query.limit;
    messages.truncate(query.limit);
    if !forwards {
        messages.reverse();
    }
    Ok(HistoryPage {
        scope: query.scope.clone(),
        messages,
        more,
    })
}
