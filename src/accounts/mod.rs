//! Accounts: registered names with Argon2id password hashes, sign-in tokens for the
//! web page (random, stored hashed, with an expiry, revocable), the mailbox of private
//! messages kept for accounts while they are offline, and failed-login limits per
//! address and per account.
//!
//! The service is shared by every door's connections. Its SQLite connection (to the
//! history database, or an in-memory one with `--memory`) and every password hash run
//! on tokio's blocking threads, at most [`HASHING_AT_ONCE`] hashes at a time, so a
//! login never stalls another connection and a login flood queues (for at most
//! [`HASHING_WAIT`], then is told the server is busy) instead of starving the machine.
//! Every attempt is charged to its limits before anything is hashed (see
//! [`limit`]), and each address has a budget of hashes, spent by registrations and
//! password changes as well as logins.

pub(crate) mod db;
pub(crate) mod limit;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use blake2::{Blake2s256, Digest};
use tokio::sync::Semaphore;

use crate::chat::{Account, ChatMessage, ErrorCode, IssuedToken};
use crate::metrics::AccountMetrics;
use crate::text::{nick_key, validate_nick};
use limit::{FailureLimiter, FailureRule};

/// Password hashes computed at once (each takes ~19 MiB and tens of milliseconds).
pub const HASHING_AT_ONCE: usize = 2;
/// Longest an attempt waits for a hashing slot before it is told the server is busy.
pub const HASHING_WAIT: Duration = Duration::from_secs(10);
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (bounds the work one attempt can cause).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// How long a sign-in token stays valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Failed logins (and unknown tokens) one address may make in a burst, then one more
/// per minute. An address is an IPv4 address or an IPv6 /64 (one host's usual share).
pub const ADDRESS_RULE: FailureRule = FailureRule {
    burst: 10,
    forgive_every: Duration::from_secs(60),
};
/// Failed logins against one account from one address in a burst, then one more every
/// 30 seconds: slow enough to stop guessing, and it never locks the owner out from
/// anywhere else.
pub const PAIR_RULE: FailureRule = FailureRule {
    burst: 5,
    forgive_every: Duration::from_secs(30),
};
/// Failed logins against one account from everywhere together: guessing spread over
/// many addresses is held to one try every 3 seconds once the burst is spent. A
/// remembered sign-in token is not held by it, so the owner still gets in.
pub const ACCOUNT_RULE: FailureRule = FailureRule {
    burst: 100,
    forgive_every: Duration::from_secs(3),
};
/// Password hashes one address may cause, successful or not (logins, registrations,
/// password changes), in a burst, then one more every 2 seconds.
pub const HASH_RULE: FailureRule = FailureRule {
    burst: 30,
    forgive_every: Duration::from_secs(2),
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
    #[error("too many {scope}; try again in {} s", .retry_after.as_secs().max(1))]
    Limited {
        scope: &'static str,
        retry_after: Duration,
    },
    #[error("the server is busy checking passwords; try again in a few seconds")]
    Busy,
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
    #[error("{0} is not one of your devices (/devices lists them)")]
    NotYourDevice(String),
    #[error("you have {MAX_DEVICES_PER_ACCOUNT} devices already; remove one first (/device remove NAME)")]
    TooManyDevices,
}

/// The most devices one account may own.
pub const MAX_DEVICES_PER_ACCOUNT: usize = 100;

impl AuthError {
    /// The error code clients get for it.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Failed | AuthError::NoAccount(_) => ErrorCode::AuthFailed,
            AuthError::Limited { .. } | AuthError::Busy => ErrorCode::AuthLimited,
            AuthError::Exists(_) => ErrorCode::AccountExists,
            AuthError::BadPassword(_) => ErrorCode::BadPassword,
            AuthError::BadToken => ErrorCode::BadToken,
            AuthError::BadName(_) => ErrorCode::NickInvalid,
            AuthError::Unavailable(_) => ErrorCode::AccountsUnavailable,
            AuthError::NotYourDevice(_) => ErrorCode::NoSuchNick,
            AuthError::TooManyDevices => ErrorCode::BadRequest,
        }
    }

    /// The stable name of this failure (the metrics label).
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}

/// Where an attempt comes from, for its limits: an IPv4 address, or the /64 an IPv6
/// address is in (a host usually has a whole /64, so counting single IPv6 addresses
/// would let one host make endless fresh starts). IPv4-mapped IPv6 is IPv4.
pub fn address_group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

struct Limits {
    /// Failed logins and unknown tokens per address group.
    addresses: FailureLimiter<IpAddr>,
    /// Failed logins per account per address group.
    pairs: FailureLimiter<(Arc<str>, IpAddr)>,
    /// Failed logins per account from everywhere.
    accounts: FailureLimiter<Arc<str>>,
    /// Every hash per address group, never refunded.
    hashes: FailureLimiter<IpAddr>,
}

/// A login attempt charged to its limits; `succeeded` or `no_account` takes back what
/// should not count against anyone.
struct Attempt {
    key: Arc<str>,
    group: IpAddr,
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
                    db::create(&db)?;
                    let mut db = db;
                    let rekeyed = db::rekey(&mut db)?;
                    if rekeyed > 0 {
                        tracing::info!(
                            rekeyed,
                            "account keys brought up to the current name rules"
                        );
                    }
                    Ok(db)
                })
                .map_err(|error| format!("cannot open accounts in {}: {error}", path.display()))?,
            None => rusqlite::Connection::open_in_memory()
                .and_then(|db| {
                    db::create(&db)?;
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
                    pairs: FailureLimiter::new(PAIR_RULE),
                    accounts: FailureLimiter::new(ACCOUNT_RULE),
                    hashes: FailureLimiter::new(HASH_RULE),
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

    /// Every device's account key, with its owner's.
    pub fn device_owners(&self) -> Result<std::collections::HashMap<String, String>, String> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        db::device_owners(&db).map_err(|error| format!("cannot read the devices: {error}"))
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
        let _permit = tokio::time::timeout(HASHING_WAIT, self.inner.hashing.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(unavailable)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || job(&inner))
            .await
            .map_err(unavailable)?
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.inner.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Charge one password hash to `from`'s budget.
    fn charge_hash(&self, from: IpAddr) -> Result<(), AuthError> {
        let (group, now) = (address_group(from), Instant::now());
        let mut limits = self.limits();
        limits
            .hashes
            .check(&group, now)
            .map_err(|retry_after| AuthError::Limited {
                scope: "password checks from your address",
                retry_after,
            })?;
        limits.hashes.fail(group, now);
        Ok(())
    }

    /// Check every limit a login against `key` from `from` is under and, if none is
    /// spent, charge them all at once (one lock: parallel attempts each pay).
    fn charge_login(&self, key: &Arc<str>, from: IpAddr) -> Result<Attempt, AuthError> {
        let (group, now) = (address_group(from), Instant::now());
        let mut limits = self.limits();
        let pair = (key.clone(), group);
        let limited = |scope, retry_after| AuthError::Limited { scope, retry_after };
        limits
            .addresses
            .check(&group, now)
            .map_err(|wait| limited("failed logins from your address", wait))?;
        limits
            .pairs
            .check(&pair, now)
            .map_err(|wait| limited("failed logins for that account", wait))?;
        limits
            .accounts
            .check(key, now)
            .map_err(|wait| limited("failed logins for that account", wait))?;
        limits
            .hashes
            .check(&group, now)
            .map_err(|wait| limited("password checks from your address", wait))?;
        limits.addresses.fail(group, now);
        limits.pairs.fail(pair, now);
        limits.accounts.fail(key.clone(), now);
        limits.hashes.fail(group, now);
        Ok(Attempt {
            key: key.clone(),
            group,
        })
    }

    /// The password was right: the attempt counts against nobody (its hash still
    /// counts against the address's budget).
    fn login_succeeded(&self, attempt: Attempt) {
        let now = Instant::now();
        let mut limits = self.limits();
        limits.addresses.refund(&attempt.group, now);
        limits
            .pairs
            .refund(&(attempt.key.clone(), attempt.group), now);
        limits.accounts.refund(&attempt.key, now);
    }

    /// No such account: the address tried a name that does not exist (that counts),
    /// but there is no account to protect, so nothing is remembered for one.
    fn login_found_no_account(&self, attempt: Attempt) {
        let now = Instant::now();
        let mut limits = self.limits();
        limits
            .pairs
            .refund(&(attempt.key.clone(), attempt.group), now);
        limits.accounts.refund(&attempt.key, now);
        limits.hashes.refund(&attempt.group, now);
    }

    /// Register `name` with `password`, for a client at `from`. The caller has checked
    /// that the name is the client's own right now.
    pub async fn create(
        &self,
        name: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<Account, AuthError> {
        let name = validate_nick(name)
            .map_err(|error| AuthError::BadName(error.to_string()))?
            .to_owned();
        check_password(password)?;
        self.charge_hash(from)?;
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
        let attempt = self.charge_login(&key, from)?;
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            // Not hashed: no password of ours is empty or this long. It stays charged.
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
                    // Not hashed either: see `AuthError::NoAccount`.
                    None => Err(AuthError::NoAccount(String::new())),
                })
            })
            .await;
        match found {
            Ok(Ok(name)) => {
                self.login_succeeded(attempt);
                Ok(Account {
                    key,
                    name: name.into(),
                })
            }
            Ok(Err(AuthError::NoAccount(name))) => {
                self.login_found_no_account(attempt);
                Err(AuthError::NoAccount(name))
            }
            // A wrong password stays charged; so does one the server could not check
            // (busy or failing), or a flood would be free while the server struggles.
            Ok(Err(error)) | Err(error) => Err(error),
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
        self.charge_hash(from)?;
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

    /// Delete `account` (its password confirms it), its tokens, its mailbox and its
    /// devices; returns the devices, which are gone too.
    pub async fn delete(
        &self,
        account: &Account,
        password: &str,
        from: IpAddr,
    ) -> Result<Vec<Account>, AuthError> {
        self.verify(account.key.clone(), password, from).await?;
        let key = account.key.clone();
        let devices = self.with_db(move |db| db::delete(db, &key)).await?;
        self.inner.metrics.dropped();
        Ok(devices
            .into_iter()
            .map(|(key, name)| Account {
                key: key.into(),
                name: name.into(),
            })
            .collect())
    }

    /// Add device `name`, owned by `owner`: an account of its own that signs in with
    /// the token returned (shown once; only its hash is kept), never with a password.
    pub async fn add_device(
        &self,
        owner: &Account,
        name: &str,
    ) -> Result<(Account, IssuedToken), AuthError> {
        let name = validate_nick(name)
            .map_err(|error| AuthError::BadName(error.to_string()))?
            .to_owned();
        let token = new_token()?;
        let (hash, key, owner) = (token_hash(&token), nick_key(&name), owner.key.clone());
        let device = Account {
            key: key.clone().into(),
            name: name.clone().into(),
        };
        self.with_db(move |db| {
            if db::devices_of(db, &owner)?.len() >= MAX_DEVICES_PER_ACCOUNT {
                return Ok(Err(AuthError::TooManyDevices));
            }
            if db::insert_device(db, &owner, &key, &name, &hash)? {
                return Ok(Ok(()));
            }
            let existing = db::find(db, &key)?.map_or(name, |account| account.name);
            Ok(Err(AuthError::Exists(existing)))
        })
        .await??;
        let token = IssuedToken {
            secret: token.into(),
            expires: SystemTime::UNIX_EPOCH + Duration::from_millis(i64::MAX as u64),
        };
        Ok((device, token))
    }

    /// Remove device `name`: `owner` must own it, unless `any_owner` (a server
    /// operator). Its token stops working; returns the device.
    pub async fn remove_device(
        &self,
        owner: &Account,
        name: &str,
        any_owner: bool,
    ) -> Result<Account, AuthError> {
        let (key, owner_key, asked) = (nick_key(name), owner.key.clone(), name.to_owned());
        self.with_db(move |db| {
            let owned = match db::device_owner(db, &key)? {
                Some(found) => any_owner || found == *owner_key,
                None => false,
            };
            if !owned {
                return Ok(Err(AuthError::NotYourDevice(asked)));
            }
            let name = db::find(db, &key)?.map_or(asked, |account| account.name);
            db::delete(db, &key)?;
            Ok(Ok(Account {
                key: key.into(),
                name: name.into(),
            }))
        })
        .await?
    }

    /// The names of the devices `owner` has.
    pub async fn devices(&self, owner: &Account) -> Result<Vec<Arc<str>>, AuthError> {
        let owner = owner.key.clone();
        let devices = self.with_db(move |db| db::devices_of(db, &owner)).await?;
        Ok(devices.into_iter().map(|(_, name)| name.into()).collect())
    }

    /// The device `token` signs in (`None`: unknown, or a person's token). No failure
    /// limit here: the UDP door limits unknown senders before it asks.
    pub async fn device_for_token(&self, token: &str) -> Result<Option<Account>, AuthError> {
        let hash = token_hash(token);
        let found = self.with_db(move |db| db::token_device(db, &hash)).await?;
        Ok(found.map(|(key, name)| Account {
            key: key.into(),
            name: name.into(),
        }))
    }

    /// A new sign-in token for `account`, valid for [`TOKEN_LIFETIME`].
    pub async fn issue_token(&self, account: &Account) -> Result<IssuedToken, AuthError> {
        let token = new_token()?;
        let expires = SystemTime::now() + TOKEN_LIFETIME;
        let (hash, key) = (token_hash(&token), account.key.clone());
        self.with_db(move |db| db::insert_token(db, &hash, &key, expires))
            .await?;
        Ok(IssuedToken {
            secret: token.into(),
            expires,
        })
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
        let (group, now) = (address_group(from), Instant::now());
        {
            let mut limits = self.limits();
            if let Err(retry_after) = limits.addresses.check(&group, now) {
                return Err(AuthError::Limited {
                    scope: "failed logins from your address",
                    retry_after,
                });
            }
            limits.addresses.fail(group, now);
        }
        let hash = token_hash(token);
        let found = self.with_db(move |db| db::token_account(db, &hash)).await?;
        match found {
            Some((key, name)) => {
                self.limits().addresses.refund(&group, Instant::now());
                Ok(Account {
                    key: key.into(),
                    name: name.into(),
                })
            }
            None => Err(AuthError::BadToken),
        }
    }

    /// Forget `token` (logging out on the web page). `false`: it was not known.
    pub async fn revoke_token(&self, token: &str) -> Result<bool, AuthError> {
        let hash = token_hash(token);
        self.with_db(move |db| db::delete_token(db, &hash)).await
    }

    /// Keep a private message for the offline account `key` (committed when this
    /// returns `Ok(Kept::Yes)`). An account created after the message was sent, or
    /// none, gets nothing: a message is for the account it was sent to.
    pub async fn deposit(&self, key: Arc<str>, message: Arc<ChatMessage>) -> Result<Kept, String> {
        self.with_db(move |db| db::deposit(db, &key, &message))
            .await
            .map(|kept| if kept { Kept::Yes } else { Kept::NoAccount })
            .map_err(|error| error.to_string())
    }

    /// The messages kept for `key` while it was offline, oldest first. They stay
    /// until [`Accounts::clear_mailbox`] says they were delivered.
    pub async fn read_mailbox(&self, key: Arc<str>) -> Result<Vec<KeptMessage>, String> {
        self.with_db(move |db| db::read_mailbox(db, &key))
            .await
            .map_err(|error| error.to_string())
    }

    /// Delete what was delivered from `key`'s mailbox: every row up to `upto`.
    pub async fn clear_mailbox(&self, key: Arc<str>, upto: i64) -> Result<(), String> {
        self.with_db(move |db| db::clear_mailbox(db, &key, upto))
            .await
            .map_err(|error| error.to_string())
    }
}

/// Whether a deposited message is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Yes,
    /// The account is gone (dropped while the message was on its way).
    NoAccount,
}

pub use db::KeptMessage;

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
        let alice = accounts
            .create("Alice", "correct horse", HOME)
            .await
            .unwrap();
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
            accounts.create("ALICE", "another one", HOME).await,
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
            let error = accounts.create("bob", password, HOME).await.unwrap_err();
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
        accounts
            .create("carol", "the right one", HOME)
            .await
            .unwrap();
        // Sent all at once: each attempt is charged before it is hashed, so no more
        // than the burst get a hash, however many race the check.
        let attempts = (0..PAIR_RULE.burst * 3).map(|_| accounts.login("carol", "guess", HOME));
        let results = futures_util::future::join_all(attempts).await;
        let hashed = results
            .iter()
            .filter(|r| **r == Err(AuthError::Failed))
            .count();
        assert_eq!(hashed, PAIR_RULE.burst as usize, "{results:?}");
        // Even the right password waits now, from this address: it is guessing.
        let limited = accounts.login("carol", "the right one", HOME).await;
        assert!(
            matches!(
                limited,
                Err(AuthError::Limited {
                    scope: "failed logins for that account",
                    ..
                })
            ),
            "{limited:?}"
        );
        // The owner, somewhere else, is not locked out by someone else's guessing.
        let elsewhere = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        assert!(accounts
            .login("carol", "the right one", elsewhere)
            .await
            .is_ok());
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
                    scope: "failed logins from your address",
                    ..
                })
            ),
            "{limited:?}"
        );
        // Names that do not exist leave nothing remembered for them.
        assert_eq!(accounts.limits().accounts.tracked(), 1);
    }

    #[tokio::test]
    async fn successful_logins_cost_nothing_but_hashes_are_budgeted() {
        let accounts = accounts();
        accounts
            .create("hank", "the right one", HOME)
            .await
            .unwrap();
        // Right passwords are refunded: many logins never reach a failure limit...
        for _ in 0..HASH_RULE.burst - 1 {
            assert!(accounts.login("hank", "the right one", HOME).await.is_ok());
        }
        // ...but every hash spends the address's budget, registering included.
        let limited = accounts.create("ivy", "a new password", HOME).await;
        assert!(
            matches!(
                limited,
                Err(AuthError::Limited {
                    scope: "password checks from your address",
                    ..
                })
            ),
            "{limited:?}"
        );
        let limits = accounts.limits();
        assert_eq!(
            limits.addresses.tracked() + limits.pairs.tracked() + limits.accounts.tracked(),
            0
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_group(one), address_group(same_host));
        assert_ne!(address_group(one), address_group(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            address_group(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(address_group(HOME), HOME);
    }

    #[tokio::test]
    async fn tokens_sign_in_until_revoked_or_the_password_changes() {
        let accounts = accounts();
        let erin = accounts
            .create("erin", "first password", HOME)
            .await
            .unwrap();
        let token = accounts.issue_token(&erin).await.unwrap();
        assert_eq!(token.secret.len(), 64);
        assert!(!format!("{token:?}").contains(&*token.secret));
        assert_eq!(
            accounts.token_login(&token.secret, HOME).await,
            Ok(erin.clone())
        );
        assert_eq!(
            accounts.token_login("not a token", HOME).await,
            Err(AuthError::BadToken)
        );
        assert!(accounts.revoke_token(&token.secret).await.unwrap());
        assert_eq!(
            accounts.token_login(&token.secret, HOME).await,
            Err(AuthError::BadToken)
        );
        let second = accounts.issue_token(&erin).await.unwrap();
        accounts
            .change_password(&erin, "first password", "second password", HOME)
            .await
            .unwrap();
        assert_eq!(
            accounts.token_login(&second.secret, HOME).await,
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
    async fn the_mailbox_keeps_messages_until_delivered() {
        let accounts = accounts();
        let frank = accounts
            .create("frank", "frank's password", HOME)
            .await
            .unwrap();
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
                // A NOTICE stays one, and the sender's account is kept with it.
                notice: n == 2,
                account: (n == 3).then(|| "gina".into()),
            })
        };
        for n in 1..=3 {
            assert_eq!(
                accounts.deposit(frank.key.clone(), message(n)).await,
                Ok(Kept::Yes)
            );
        }
        let kept = accounts.read_mailbox(frank.key.clone()).await.unwrap();
        let texts: Vec<&str> = kept.iter().map(|kept| &*kept.message.text).collect();
        assert_eq!(texts, ["note 1", "note 2", "note 3"]);
        assert_eq!(
            kept[2].message.data.as_deref(),
            Some(&serde_json::json!({"n": 3}))
        );
        let notices: Vec<bool> = kept.iter().map(|kept| kept.message.notice).collect();
        assert_eq!(notices, [false, true, false]);
        let accounts_kept: Vec<Option<&str>> = kept
            .iter()
            .map(|kept| kept.message.account.as_deref())
            .collect();
        assert_eq!(accounts_kept, [None, None, Some("gina")]);
        // Reading takes nothing; clearing takes only what was read.
        accounts
            .deposit(frank.key.clone(), message(4))
            .await
            .unwrap();
        accounts
            .clear_mailbox(frank.key.clone(), kept[2].row)
            .await
            .unwrap();
        let left = accounts.read_mailbox(frank.key.clone()).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(&*left[0].message.text, "note 4");
        accounts
            .clear_mailbox(frank.key.clone(), left[0].row)
            .await
            .unwrap();
        // Bounded: the oldest make way.
        for n in 0..(db::MAILBOX_LIMIT as u64 + 5) {
            accounts
                .deposit(frank.key.clone(), message(n))
                .await
                .unwrap();
        }
        let kept = accounts.read_mailbox(frank.key.clone()).await.unwrap();
        assert_eq!(kept.len(), db::MAILBOX_LIMIT);
        assert_eq!(&*kept[0].message.text, "note 5");
        // Nothing is kept for a name without an account, nor for an account made
        // after the message was sent (it is somebody else's).
        assert_eq!(
            accounts.deposit("nobody".into(), message(1)).await,
            Ok(Kept::NoAccount)
        );
        let early = message(9);
        accounts
            .delete(&frank, "frank's password", HOME)
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let again = accounts
            .create("frank", "new owner's pw", HOME)
            .await
            .unwrap();
        assert_eq!(
            accounts
                .read_mailbox(again.key.clone())
                .await
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            accounts.deposit(again.key.clone(), early).await,
            Ok(Kept::NoAccount)
        );
        assert_eq!(
            accounts.deposit(again.key.clone(), message(10)).await,
            Ok(Kept::Yes)
        );
    }
}
