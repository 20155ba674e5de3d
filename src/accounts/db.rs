//! The accounts' SQL: accounts, sign-in tokens (hashed) and the mailbox of messages
//! kept for accounts that were offline. Tables live in the history database (created
//! by its schema migration, or here for an in-memory database); only the accounts
//! service's own connection runs these, always off the async threads.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::chat::{ChatMessage, Target};
use crate::text::nick_key;

/// Tables and indexes, all `IF NOT EXISTS`: run by the history store's migration to
/// schema 2 and by an in-memory accounts database.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    key           TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_tokens (
    token_hash  BLOB    PRIMARY KEY,
    account_key TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS account_tokens_by_account ON account_tokens (account_key);
CREATE TABLE IF NOT EXISTS mailbox (
    id          INTEGER PRIMARY KEY,
    account_key TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL,
    from_nick   TEXT    NOT NULL,
    to_nick     TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    data        TEXT,
    action      INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    notice      INTEGER NOT NULL DEFAULT 0,
    from_account TEXT
);
CREATE INDEX IF NOT EXISTS mailbox_by_account ON mailbox (account_key, id);
CREATE TABLE IF NOT EXISTS devices (
    key        TEXT    PRIMARY KEY,
    owner_key  TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_owner ON devices (owner_key);
";

/// Create the tables, and add to a mailbox made by an older version the columns it
/// lacks (a NOTICE kept as one, the sender's account), in place.
pub fn create(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(SCHEMA)?;
    crate::store::add_missing_columns(
        db,
        &[
            ("mailbox", "notice", "INTEGER NOT NULL DEFAULT 0"),
            ("mailbox", "from_account", "TEXT"),
        ],
    )
}

/// What a device account has instead of a password hash: no password matches it, so
/// a device signs in with its token only.
pub const DEVICE_PASSWORD: &str = "!device";

/// A device's token never expires; removing the device revokes it.
const NEVER_MS: i64 = i64::MAX;

/// Bring stored keys up to the current [`nick_key`] (it changed when marks began to
/// be dropped and the key to be repeated to its fixpoint): accounts, their tokens,
/// their mailboxes and, when the history lives in this database, their private
/// conversations. One transaction; a key already taken by another account is left as
/// it was, with a warning (both owners keep their passwords; the later one should pick
/// a new name). Returns how many accounts were re-keyed.
pub fn rekey(db: &mut Connection) -> rusqlite::Result<usize> {
    let stale: Vec<(String, String)> = all_accounts(db)?
        .into_iter()
        .filter_map(|(key, name)| {
            let current = nick_key(&name);
            (current != key).then_some((key, current))
        })
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let transaction = db.transaction()?;
    let mut moved = std::collections::HashMap::new();
    for (old, new) in stale {
        let taken: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE key = ?1)",
            [&new],
            |row| row.get(0),
        )?;
        if taken {
            tracing::warn!(old = %old, new = %new, "an account's name now looks like another's; left under its old key");
            continue;
        }
        transaction.execute("UPDATE accounts SET key = ?2 WHERE key = ?1", [&old, &new])?;
        transaction.execute(
            "UPDATE account_tokens SET account_key = ?2 WHERE account_key = ?1",
            [&old, &new],
        )?;
        transaction.execute(
            "UPDATE mailbox SET account_key = ?2 WHERE account_key = ?1",
            [&old, &new],
        )?;
        moved.insert(old, new);
    }
    let has_history: bool = transaction.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'private_messages')",
        [],
        |row| row.get(0),
    )?;
    if has_history && !moved.is_empty() {
        let pairs: Vec<String> = {
            let mut statement = transaction
                .prepare("SELECT DISTINCT pair FROM private_messages WHERE pair LIKE 'account' || char(10) || '%'")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for pair in pairs {
            let mut keys = pair.splitn(3, '\n').skip(1);
            let (Some(a), Some(b)) = (keys.next(), keys.next()) else {
                continue;
            };
            let map = |key: &str| moved.get(key).cloned().unwrap_or_else(|| key.to_owned());
            let new_pair = crate::store::account_pair(&map(a), &map(b));
            if new_pair != pair {
                transaction.execute(
                    "UPDATE private_messages SET pair = ?2 WHERE pair = ?1",
                    [&pair, &new_pair],
                )?;
            }
        }
    }
    transaction.commit()?;
    Ok(moved.len())
}

/// Most messages kept for one offline account; older ones make way (a full mailbox
/// never refuses a sender, and never grows without bound).
pub const MAILBOX_LIMIT: usize = 500;

pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// One stored account.
pub struct StoredAccount {
    pub name: String,
    pub password_hash: String,
}

pub fn all_accounts(db: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = db.prepare("SELECT key, name FROM accounts")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

pub fn find(db: &Connection, key: &str) -> rusqlite::Result<Option<StoredAccount>> {
    db.query_row(
        "SELECT name, password_hash FROM accounts WHERE key = ?1",
        [key],
        |row| {
            Ok(StoredAccount {
                name: row.get(0)?,
                password_hash: row.get(1)?,
            })
        },
    )
    .optional()
}

/// `false`: the key is taken.
pub fn insert(db: &Connection, key: &str, name: &str, hash: &str) -> rusqlite::Result<bool> {
    let changed = db.execute(
        "INSERT OR IGNORE INTO accounts (key, name, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![key, name, hash, unix_ms(SystemTime::now())],
    )?;
    Ok(changed == 1)
}

pub fn set_password(db: &Connection, key: &str, hash: &str) -> rusqlite::Result<()> {
    db.execute(
        "UPDATE accounts SET password_hash = ?2 WHERE key = ?1",
        params![key, hash],
    )?;
    Ok(())
}

/// The account, its tokens and its mailbox, and the devices it owns (each with its
/// own), in one transaction. Returns the devices' `(key, name)`.
pub fn delete(db: &mut Connection, key: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let transaction = db.transaction()?;
    let devices = devices_of(&transaction, key)?;
    for account in devices.iter().map(|(key, _)| key.as_str()).chain([key]) {
        transaction.execute("DELETE FROM accounts WHERE key = ?1", [account])?;
        transaction.execute(
            "DELETE FROM account_tokens WHERE account_key = ?1",
            [account],
        )?;
        transaction.execute("DELETE FROM mailbox WHERE account_key = ?1", [account])?;
        transaction.execute("DELETE FROM devices WHERE key = ?1", [account])?;
    }
    transaction.commit()?;
    Ok(devices)
}

/// The devices `owner` has, `(key, name)`, by name.
pub fn devices_of(db: &Connection, owner: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = db.prepare(
        "SELECT a.key, a.name FROM devices d JOIN accounts a ON a.key = d.key \
         WHERE d.owner_key = ?1 ORDER BY a.name",
    )?;
    let rows = statement.query_map([owner], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Every device's key and its owner's key.
pub fn device_owners(
    db: &Connection,
) -> rusqlite::Result<std::collections::HashMap<String, String>> {
    let mut statement = db.prepare("SELECT key, owner_key FROM devices")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// The owner of device `key` (`None`: no such device).
pub fn device_owner(db: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    db.query_row(
        "SELECT owner_key FROM devices WHERE key = ?1",
        [key],
        |row| row.get(0),
    )
    .optional()
}

/// Add device `name` (key `key`) for `owner`, with a token that never expires, in one
/// transaction. `false`: the name is an account or a device already.
pub fn insert_device(
    db: &mut Connection,
    owner: &str,
    key: &str,
    name: &str,
    token_hash: &[u8],
) -> rusqlite::Result<bool> {
    let transaction = db.transaction()?;
    // The owner must be a person's account that still exists (a device owns nothing;
    // an account dropped a moment ago owns nothing either).
    let owner_is_a_person =
        find(&transaction, owner)?.is_some() && device_owner(&transaction, owner)?.is_none();
    if !owner_is_a_person || !insert(&transaction, key, name, DEVICE_PASSWORD)? {
        return Ok(false);
    }
    let now = unix_ms(SystemTime::now());
    transaction.execute(
        "INSERT INTO devices (key, owner_key, created_ms) VALUES (?1, ?2, ?3)",
        params![key, owner, now],
    )?;
    transaction.execute(
        "INSERT INTO account_tokens (token_hash, account_key, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash, key, now, NEVER_MS],
    )?;
    transaction.commit()?;
    Ok(true)
}

/// The device a live token belongs to: `(key, name)`; `None` for an unknown token or
/// one that signs in a person's account.
pub fn token_device(
    db: &Connection,
    token_hash: &[u8],
) -> rusqlite::Result<Option<(String, String)>> {
    db.query_row(
        "SELECT a.key, a.name FROM account_tokens t JOIN accounts a ON a.key = t.account_key \
         JOIN devices d ON d.key = a.key WHERE t.token_hash = ?1 AND t.expires_ms > ?2",
        params![token_hash, unix_ms(SystemTime::now())],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

/// Every token of the account (a password change signs out other sessions' tokens).
pub fn delete_tokens(db: &Connection, key: &str) -> rusqlite::Result<()> {
    db.execute("DELETE FROM account_tokens WHERE account_key = ?1", [key])?;
    Ok(())
}

pub fn insert_token(
    db: &Connection,
    token_hash: &[u8],
    key: &str,
    expires: SystemTime,
) -> rusqlite::Result<()> {
    let now = unix_ms(SystemTime::now());
    // Expired tokens go whenever a new one is made: the table stays small.
    db.execute("DELETE FROM account_tokens WHERE expires_ms <= ?1", [now])?;
    db.execute(
        "INSERT INTO account_tokens (token_hash, account_key, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash, key, now, unix_ms(expires)],
    )?;
    Ok(())
}

/// The account a live token belongs to, with its name.
pub fn token_account(
    db: &Connection,
    token_hash: &[u8],
) -> rusqlite::Result<Option<(String, String)>> {
    db.query_row(
        "SELECT a.key, a.name FROM account_tokens t JOIN accounts a ON a.key = t.account_key \
         WHERE t.token_hash = ?1 AND t.expires_ms > ?2",
        params![token_hash, unix_ms(SystemTime::now())],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

pub fn delete_token(db: &Connection, token_hash: &[u8]) -> rusqlite::Result<bool> {
    let changed = db.execute(
        "DELETE FROM account_tokens WHERE token_hash = ?1",
        [token_hash],
    )?;
    Ok(changed == 1)
}

/// Keep `message` for the offline account `key`, dropping its oldest beyond the limit.
/// `false`: no such account, or it was created after the message was sent.
pub fn deposit(db: &mut Connection, key: &str, message: &ChatMessage) -> rusqlite::Result<bool> {
    let (Target::Private(to) | Target::Room(to)) = &message.target;
    let data = message.data.as_ref().map(|data| data.to_string());
    let transaction = db.transaction()?;
    let kept = transaction.execute(
        "INSERT INTO mailbox (account_key, time_ms, from_nick, to_nick, text, data, action, message_id, \
         notice, from_account) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 \
         WHERE EXISTS (SELECT 1 FROM accounts WHERE key = ?1 AND created_ms <= ?2)",
        params![
            key,
            unix_ms(message.time),
            &*message.from,
            &**to,
            &*message.text,
            data,
            message.action,
            i64::try_from(message.id).unwrap_or(i64::MAX),
            message.notice,
            message.account.as_deref(),
        ],
    )? == 1;
    if kept {
        transaction.execute(
            "DELETE FROM mailbox WHERE account_key = ?1 AND id NOT IN \
             (SELECT id FROM mailbox WHERE account_key = ?1 ORDER BY id DESC LIMIT ?2)",
            params![key, MAILBOX_LIMIT as i64],
        )?;
    }
    transaction.commit()?;
    Ok(kept)
}

/// One kept message and its row (what [`clear_mailbox`] deletes up to).
#[derive(Debug)]
pub struct KeptMessage {
    pub row: i64,
    pub message: ChatMessage,
}

/// Everything kept for `key`, oldest first. Nothing is deleted.
pub fn read_mailbox(db: &mut Connection, key: &str) -> rusqlite::Result<Vec<KeptMessage>> {
    let mut statement = db.prepare(
        "SELECT id, time_ms, from_nick, to_nick, text, data, action, message_id, notice, \
         from_account FROM mailbox \
         WHERE account_key = ?1 ORDER BY id",
    )?;
    let rows = statement.query_map([key], |row| {
        let data: Option<String> = row.get(5)?;
        let id: i64 = row.get(7)?;
        let message = ChatMessage {
            id: u64::try_from(id).unwrap_or(0),
            time: from_unix_ms(row.get(1)?),
            target: Target::Private(Arc::from(row.get::<_, String>(3)?)),
            from: Arc::from(row.get::<_, String>(2)?),
            from_client: 0,
            text: Arc::from(row.get::<_, String>(4)?),
            data: data
                .and_then(|text| serde_json::from_str(&text).ok())
                .map(Arc::new),
            action: row.get(6)?,
            notice: row.get(8)?,
            account: row.get::<_, Option<String>>(9)?.map(Arc::from),
        };
        Ok(KeptMessage {
            row: row.get(0)?,
            message,
        })
    })?;
    rows.collect()
}

/// Delete `key`'s kept messages up to row `upto` (they were delivered).
pub fn clear_mailbox(db: &mut Connection, key: &str, upto: i64) -> rusqlite::Result<()> {
    db.execute(
        "DELETE FROM mailbox WHERE account_key = ?1 AND id <= ?2",
        params![key, upto],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_mailbox_gains_its_new_columns_in_place() {
        let db = Connection::open_in_memory().unwrap();
        // The mailbox as schema 3 made it, with a message in it.
        db.execute_batch(
            "CREATE TABLE mailbox (id INTEGER PRIMARY KEY, account_key TEXT NOT NULL, \
             time_ms INTEGER NOT NULL, from_nick TEXT NOT NULL, to_nick TEXT NOT NULL, \
             text TEXT NOT NULL, data TEXT, action INTEGER NOT NULL, message_id INTEGER NOT NULL); \
             INSERT INTO mailbox VALUES (1, 'frank', 0, 'gina', 'frank', 'old note', NULL, 0, 9);",
        )
        .unwrap();
        create(&db).unwrap();
        create(&db).unwrap();
        let mut db = db;
        let kept = read_mailbox(&mut db, "frank").unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(&*kept[0].message.text, "old note");
        assert!(!kept[0].message.notice);
        assert_eq!(kept[0].message.account, None);
    }

    #[test]
    fn keys_made_by_an_older_nick_key_are_brought_up_to_date() {
        let mut db = Connection::open_in_memory().unwrap();
        db.execute_batch(SCHEMA).unwrap();
        db.execute_batch(
            "CREATE TABLE private_messages (id INTEGER PRIMARY KEY, pair TEXT NOT NULL);",
        )
        .unwrap();
        // The old key of `José` kept its accent; `Bob`'s was already current.
        let old = "jose\u{301}";
        assert!(insert(&db, old, "José", "hash").unwrap());
        assert!(insert(&db, &nick_key("Bob"), "Bob", "hash").unwrap());
        insert_token(&db, b"t", old, SystemTime::now() + Duration::from_secs(60)).unwrap();
        let pair = crate::store::account_pair(old, &nick_key("Bob"));
        db.execute("INSERT INTO private_messages (pair) VALUES (?1)", [&pair])
            .unwrap();
        assert_eq!(rekey(&mut db).unwrap(), 1);
        let new = nick_key("José");
        assert!(find(&db, &new).unwrap().is_some());
        assert!(find(&db, old).unwrap().is_none());
        assert_eq!(token_account(&db, b"t").unwrap().unwrap().0, new);
        let stored: String = db
            .query_row("SELECT pair FROM private_messages", [], |row| row.get(0))
            .unwrap();
        assert_eq!(stored, crate::store::account_pair(&new, &nick_key("Bob")));
        // Once is enough.
        assert_eq!(rekey(&mut db).unwrap(), 0);
    }
}
