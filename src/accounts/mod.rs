//! Accounts: registered names with Argon2id password hashes, sign-in tokens for the
//! web page (random, stored hashed, with an expiry, revocable), the mailbox of private
//! messages kept for accounts while they are offline, and failed-login limits per
//! address and per account.
//!
//! The service is shared by every door's connections. Its SQLite connection (to the
//! history database, or an in-memory one with `--memory`) and every password hash run
//! on tokio's blocking threads, at most [`HASHING_AT_ONCE`] hashes at a time, so a
//! login never stalls another connection and a login flood queues instead of
//! starving the machine. Limits are checked before anything is hashed.

pub mod db;
pub mod limit;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use blake2::{Blake2s256, Digest};
use tokio::sync::Semaphore;

use crate::chat::{Account, ChatMessage, ErrorCode};
use crate::metrics::AccountMetrics;
use crate::text::{nick_key, validate_nick};
use limit::{FailureLimiter, FailureRule};

/// Password hashes computed at once (each takes ~19 MiB and tens of milliseconds).
pub const HASHING_AT_ONCE: usize = 2;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (bounds the work one attempt can cause).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// How long a sign-in token stays valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Failed logins one address may make in a burst, then one more per minute.
pub const ADDRESS_RULE: FailureRule = FailureRule {
    burst: 10,
    forgive_every: Duration::from_secs(60),
};
/// Failed logins against one account in a burst (from anywhere), then one more every
/// 30 seconds: slow enough to stop guessing, quick enough that its owner gets in.
pub const ACCOUNT_RULE: FailureRule = FailureRule {
    burst: 5,
    forgive_every: Duration::from_secs(30),
};

/// Why an account operation did not happen. Each says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The password is wrong.
    #[error("wrong password")]
    Failed,
    /// No account has that name. Registered names are public (a guest who picks one
    /// is told it is registered), so saying so gives nothing away.
    #[error("no account is called {0}; to log in send NAME PASSWORD, to choose a name send it alone (names have no spaces)")]
    NoAccount(String),
    #[error("too many failed logins {scope}; try again in {} s", .retry_after.as_secs().max(1))]
    Limited {
        scope: &'static str,
        retry_after: Duration,
    },
    #[error("{0} is already registered; log in with its password, or choose another name")]
    Exists(String),
    #[error("{0}")]
    BadPassword(String),
    #[error("that sign-in token is unknown or expired; log in with your password")]
    BadToken,
    #[error("cannot use that name: {0}")]
    BadName(String),
    #[error("accounts are unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The error code clients get for it.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Failed | AuthError::NoAccount(_) => ErrorCode::AuthFailed,
            AuthError::Limited { .. } => ErrorCode::AuthLimited,
            AuthError::Exists(_) => ErrorCode::AccountExists,
            AuthError::BadPassword(_) => ErrorCode::BadPassword,
            AuthError::BadToken => ErrorCode::BadToken,
            AuthError::BadName(_) => ErrorCode::NickInvalid,
            AuthError::Unavailable(_) => ErrorCode::AccountsUnavailable,
        }
    }

    /// The stable name of this failure (the metrics label).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}

/// A freshly issued sign-in token: shown to its owner once, kept only hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires: SystemTime,
}

struct Limits {
    addresses: FailureLimiter<IpAddr>,
    accounts: FailureLimiter<Arc<str>>,
}

struct Inner {
    db: Mutex<rusqlite::Connection>,
    hashing: Semaphore,
    limits: Mutex<Limits>,
    metrics: AccountMetrics,
}

/// The accounts service. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> AuthError {
    AuthError::Unavailable(error.to_string())
}

/// Check a new password against the rules, with the reason in words.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadPassword(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::BadPassword(format!(
            "the password is shorter than {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(AuthError::BadPassword(
            "the password contains control characters".into(),
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(unavailable)?;
    let salt = SaltString::encode_b64(&salt).map_err(unavailable)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(unavailable)
}

/// Constant-time inside (the hash comparison is `subtle`'s, in `password-hash`).
fn password_matches(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Blake2s256::digest(token.as_bytes()).to_vec()
}

fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(unavailable)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Accounts {
    /// Open the accounts in the history database at `path` (its schema is already
    /// migrated by the store), or in memory (`None`: lost at exit, like `--memory`
    /// history).
    pub fn open(path: Option<&Path>, metrics: AccountMetrics) -> Result<Accounts, String> {
        let connection = match path {
            Some(path) => rusqlite::Connection::open(path)
                .and_then(|db| {
                    db.busy_timeout(Duration::from_secs(5))?;
                    // As the history's: a registration or a kept message is on disk
                    // once its answer is sent.
                    db.pragma_update(None, "synchronous", "FULL")?;
                    db.execute_batch(db::SCHEMA)?;
                    Ok(db)
                })
                .map_err(|error| format!("cannot open accounts in {}: {error}", path.display()))?,
            None => rusqlite::Connection::open_in_memory()
                .and_then(|db| {
                    db.execute_batch(db::SCHEMA)?;
                    Ok(db)
                })
                .map_err(|error| format!("cannot create the in-memory accounts: {error}"))?,
        };
        Ok(Accounts {
            inner: Arc::new(Inner {
                db: Mutex::new(connection),
                hashing: Semaphore::new(HASHING_AT_ONCE),
                limits: Mutex::new(Limits {
                    addresses: FailureLimiter::new(ADDRESS_RULE),
                    accounts: FailureLimiter::new(ACCOUNT_RULE),
                }),
                metrics,
            }),
        })
    }

    /// Every registered name, `(key, name)`: the hub's list of protected names.
    pub fn registered(&self) -> Result<Vec<(String, String)>, String> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        db::all_accounts(&db).map_err(|error| format!("cannot read the accounts: {error}"))
    }

    pub fn metrics(&self) -> &AccountMetrics {
        &self.inner.metrics
    }

    /// Run `job` with the database on a blocking thread.
    async fn with_db<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AuthError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            job(&mut db)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    /// Run `job` (which hashes) on a blocking thread, after a hashing permit.
    async fn hashing<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Inner) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self.inner.hashing.acquire().await.map_err(unavailable)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || job(&inner))
            .await
            .map_err(unavailable)?
    }

    fn check_limits(&self, key: &Arc<str>, from: IpAddr) -> Result<(), AuthError> {
        let now = Instant::now();
        let limits = self.inner.limits.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(retry_after) = limits.addresses.check(&from, now) {
            return Err(AuthError::Limited {
                scope: "from your address",
                retry_after,
            });
        }
        if let Err(retry_after) = limits.accounts.check(key, now) {
            return Err(AuthError::Limited {
                scope: "for that account",
                retry_after,
            });
        }
        Ok(())
    }

    fn record_failure(&self, key: Arc<str>, from: IpAddr) {
        let now = Instant::now();
        let mut limits = self.inner.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits.addresses.fail(from, now);
        limits.accounts.fail(key, now);
    }

    /// Register `name` with `password`. The caller has checked that the name is the
    /// client's own right now.
    pub async fn create(&self, name: &str, password: &str) -> Result<Account, AuthError> {
        let name = validate_nick(name)
            .map_err(|error| AuthError::BadName(error.to_string()))?
            .to_owned();
        check_password(password)?;
        let password = password.to_owned();
        let key = nick_key(&name);
        let result = self
            .hashing(move |inner| {
                let hash = hash_password(&password)?;
                let db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
                if !db::insert(&db, &key, &name, &hash).map_err(unavailable)? {
                    let existing = db::find(&db, &key).map_err(unavailable)?;
                    return Err(AuthError::Exists(existing.map_or(name, |a| a.name)));
                }
                Ok(Account {
                    key: key.into(),
                    name: name.into(),
                })
            })
            .await;
        if result.is_ok() {
            self.inner.metrics.registered();
        }
        result
    }

    /// Check `name`'s password, under the failure limits for `from` and the account.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<Account, AuthError> {
        let key: Arc<str> = nick_key(name).into();
        let result = self.verify(key.clone(), password, from).await;
        let result = match result {
            Err(AuthError::NoAccount(_)) => Err(AuthError::NoAccount(name.to_owned())),
            other => other,
        };
        match &result {
            Ok(_) => self.inner.metrics.login("password"),
            Err(error) => self.inner.metrics.login_failed(error.code()),
        }
        result
    }

    async fn verify(
        &self,
        key: Arc<str>,
        password: &str,
        from: IpAddr,
    ) -> Result<Account, AuthError> {
        self.check_limits(&key, from)?;
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            // Not hashed: no password of ours is empty or this long (unknown accounts
            // are not hashed either; see `AuthError::NoAccount`).
            self.record_failure(key, from);
            return Err(AuthError::Failed);
        }
        let password = password.to_owned();
        let lookup = key.clone();
        let found = self
            .hashing(move |inner| {
                let stored = {
                    let db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
                    db::find(&db, &lookup).map_err(unavailable)?
                };
                Ok(match stored {
                    Some(account) if password_matches(&password, &account.password_hash) => {
                        Ok(account.name)
                    }
                    Some(_) => Err(AuthError::Failed),
                    None => Err(AuthError::NoAccount(String::new())),
                })
            })
            .await?;
        match found {
            Ok(name) => Ok(Account {
                key,
                name: name.into(),
            }),
            Err(error) => {
                self.record_failure(key, from);
                Err(error)
            }
        }
    }

    /// Change `account`'s password; its sign-in tokens stop working.
    pub async fn change_password(
        &self,
        account: &Account,
        old: &str,
        new: &str,
        from: IpAddr,
    ) -> Result<(), AuthError> {
        check_password(new)?;
        self.verify(account.key.clone(), old, from).await?;
        let (key, new) = (account.key.clone(), new.to_owned());
        self.hashing(move |inner| {
            let hash = hash_password(&new)?;
            let db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            db::set_password(&db, &key, &hash).map_err(unavailable)?;
            db::delete_tokens(&db, &key).map_err(unavailable)
        })
        .await?;
        self.inner.metrics.password_changed();
        Ok(())
    }

    /// Delete `account` (its password confirms it), its tokens and its mailbox.
    pub async fn delete(
        &self,
        account: &Account,
        password: &str,
        from: IpAddr,
    ) -> Result<(), AuthError> {
        self.verify(account.key.clone(), password, from).await?;
        let key = account.key.clone();
        self.with_db(move |db| db::delete(db, &key)).await?;
        self.inner.metrics.dropped();
        Ok(())
    }

    /// A new sign-in token for `account`, valid for [`TOKEN_LIFETIME`].
    pub async fn issue_token(&self, account: &Account) -> Result<Token, AuthError> {
        let token = new_token()?;
        let expires = SystemTime::now() + TOKEN_LIFETIME;
        let (hash, key) = (token_hash(&token), account.key.clone());
        self.with_db(move |db| db::insert_token(db, &hash, &key, expires))
            .await?;
        Ok(Token { token, expires })
    }

    /// The account a token signs in, under the failure limit for `from`.
    pub async fn token_login(&self, token: &str, from: IpAddr) -> Result<Account, AuthError> {
        let result = self.check_token(token, from).await;
        match &result {
            Ok(_) => self.inner.metrics.login("token"),
            Err(error) => self.inner.metrics.login_failed(error.code()),
        }
        result
    }

    async fn check_token(&self, token: &str, from: IpAddr) -> Result<Account, AuthError> {
        {
            let limits = self.inner.limits.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(retry_after) = limits.addresses.check(&from, Instant::now()) {
                return Err(AuthError::Limited {
                    scope: "from your address",
                    retry_after,
                });
            }
        }
        let hash = token_hash(token);
        let found = self.with_db(move |db| db::token_account(db, &hash)).await?;
        match found {
            Some((key, name)) => Ok(Account {
                key: key.into(),
                name: name.into(),
            }),
            None => {
                let mut limits = self.inner.limits.lock().unwrap_or_else(|p| p.into_inner());
                limits.addresses.fail(from, Instant::now());
                Err(AuthError::BadToken)
            }
        }
    }

    /// Forget `token` (logging out on the web page). `false`: it was not known.
    pub async fn revoke_token(&self, token: &str) -> Result<bool, AuthError> {
        let hash = token_hash(token);
        self.with_db(move |db| db::delete_token(db, &hash)).await
    }

    /// Keep a private message for the offline account `key` (committed when this
    /// returns `Ok`).
    pub async fn deposit(&self, key: Arc<str>, message: Arc<ChatMessage>) -> Result<(), String> {
        self.with_db(move |db| db::deposit(db, &key, &message))
            .await
            .map_err(|error| error.to_string())
    }

    /// The messages kept for `key` while it was offline, oldest first; the mailbox is
    /// emptied.
    pub async fn take_mailbox(&self, key: Arc<str>) -> Result<Vec<ChatMessage>, String> {
        self.with_db(move |db| db::take_mailbox(db, &key))
            .await
            .map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn accounts() -> Accounts {
        Accounts::open(None, AccountMetrics::default()).unwrap()
    }

    #[tokio::test]
    async fn registers_logs_in_and_refuses_wrong_passwords() {
        let accounts = accounts();
        let alice = accounts.create("Alice", "correct horse").await.unwrap();
        assert_eq!(&*alice.name, "Alice");
        assert_eq!(&*alice.key, nick_key("alice"));
        // The stored hash is Argon2id, never the password.
        let stored = {
            let db = accounts.inner.db.lock().unwrap();
            db::find(&db, &alice.key).unwrap().unwrap()
        };
        assert!(stored.password_hash.starts_with("$argon2id$"));
        assert!(!stored.password_hash.contains("correct horse"));
        // Any spelling that looks the same logs in to the same account.
        let again = accounts
            .login("\u{0430}lice", "correct horse", HOME)
            .await
            .unwrap();
        assert_eq!(again, alice);
        assert_eq!(
            accounts.login("alice", "wrong horse", HOME).await,
            Err(AuthError::Failed)
        );
        assert_eq!(
            accounts.login("nobody", "correct horse", HOME).await,
            Err(AuthError::NoAccount("nobody".into()))
        );
        // A look-alike cannot be registered beside it.
        assert_eq!(
            accounts.create("ALICE", "another one").await,
            Err(AuthError::Exists("Alice".into()))
        );
        assert_eq!(accounts.registered().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn bad_passwords_are_refused_with_the_reason() {
        let accounts = accounts();
        for (password, why) in [
            ("", "shorter than 8"),
            ("short", "shorter than 8"),
            (&"x".repeat(MAX_PASSWORD_BYTES + 1)[..], "longer than 256"),
            ("tab\tinside it", "control characters"),
        ] {
            let error = accounts.create("bob", password).await.unwrap_err();
            assert!(error.to_string().contains(why), "{password:?}: {error}");
        }
        assert!(accounts.registered().unwrap().is_empty());
        // An oversized login attempt is refused without hashing it.
        let long = "y".repeat(100_000);
        assert_eq!(
            accounts.login("bob", &long, HOME).await,
            Err(AuthError::Failed)
        );
    }

    #[tokio::test]
    async fn failed_logins_are_limited_per_account_and_per_address() {
        let accounts = accounts();
        accounts.create("carol", "the right one").await.unwrap();
        for _ in 0..ACCOUNT_RULE.burst {
            assert_eq!(
                accounts.login("carol", "guess", HOME).await,
                Err(AuthError::Failed)
            );
        }
        // Even the right password waits now: the account is being guessed at.
        let limited = accounts.login("carol", "the right one", HOME).await;
        assert!(
            matches!(
                limited,
                Err(AuthError::Limited {
                    scope: "for that account",
                    ..
                })
            ),
            "{limited:?}"
        );
        // Another address hitting other accounts is limited on its own count.
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        for n in 0..ADDRESS_RULE.burst {
            let _ = accounts.login(&format!("user{n}"), "guess", other).await;
        }
        let limited = accounts.login("dave", "anything", other).await;
        assert!(
            matches!(
                limited,
                Err(AuthError::Limited {
                    scope: "from your address",
                    ..
                })
            ),
            "{limited:?}"
        );
    }

    #[tokio::test]
    async fn tokens_sign_in_until_revoked_or_the_password_changes() {
        let accounts = accounts();
        let erin = accounts.create("erin", "first password").await.unwrap();
        let token = accounts.issue_token(&erin).await.unwrap();
        assert_eq!(token.token.len(), 64);
        assert_eq!(
            accounts.token_login(&token.token, HOME).await,
            Ok(erin.clone())
        );
        assert_eq!(
            accounts.token_login("not a token", HOME).await,
            Err(AuthError::BadToken)
        );
        assert!(accounts.revoke_token(&token.token).await.unwrap());
        assert_eq!(
            accounts.token_login(&token.token, HOME).await,
            Err(AuthError::BadToken)
        );
        let second = accounts.issue_token(&erin).await.unwrap();
        accounts
            .change_password(&erin, "first password", "second password", HOME)
            .await
            .unwrap();
        assert_eq!(
            accounts.token_login(&second.token, HOME).await,
            Err(AuthError::BadToken)
        );
        assert_eq!(
            accounts.login("erin", "first password", HOME).await,
            Err(AuthError::Failed)
        );
        assert!(accounts
            .login("erin", "second password", HOME)
            .await
            .is_ok());
        // Dropping needs the password, and takes the name off the list.
        assert_eq!(
            accounts.delete(&erin, "first password", HOME).await,
            Err(AuthError::Failed)
        );
        accounts
            .delete(&erin, "second password", HOME)
            .await
            .unwrap();
        assert!(accounts.registered().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_mailbox_keeps_messages_until_taken() {
        let accounts = accounts();
        let message = |n: u64| {
            Arc::new(ChatMessage {
                id: n,
                time: SystemTime::now(),
                target: crate::chat::Target::Private("frank".into()),
                from: "gina".into(),
                from_client: 7,
                text: format!("note {n}").into(),
                data: Some(Arc::new(serde_json::json!({"n": n}))),
                action: false,
            })
        };
        for n in 1..=3 {
            accounts.deposit("frank".into(), message(n)).await.unwrap();
        }
        let taken = accounts.take_mailbox("frank".into()).await.unwrap();
        let texts: Vec<&str> = taken.iter().map(|m| &*m.text).collect();
        assert_eq!(texts, ["note 1", "note 2", "note 3"]);
        assert_eq!(taken[2].data.as_deref(), Some(&serde_json::json!({"n": 3})));
        assert!(accounts
            .take_mailbox("frank".into())
            .await
            .unwrap()
            .is_empty());
        // Bounded: the oldest make way.
        for n in 0..(db::MAILBOX_LIMIT as u64 + 5) {
            accounts.deposit("frank".into(), message(n)).await.unwrap();
        }
        let taken = accounts.take_mailbox("frank".into()).await.unwrap();
        assert_eq!(taken.len(), db::MAILBOX_LIMIT);
        assert_eq!(&*taken[0].text, "note 5");
    }
}
