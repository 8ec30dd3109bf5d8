//! Who is asking, and what they may see: API tokens and the principals they speak for.
//!
//! A token reads `weft_<id>_<secret>`. The id (16 hex digits) finds the token's row;
//! only the SHA-256 of the secret (64 hex digits, 256 random bits) is stored, and it is
//! compared in constant time, so neither a lookup nor a comparison tells an attacker
//! how close a guess came. A token speaks for the principal named by its `name`: every
//! graph and run records the principal that created it, and a principal sees only its
//! own unless it is an admin. A read-only principal may read but not create or run.
//!
//! Weft runs open (everyone is [`Principal::open`], who sees everything) until the first
//! token is created; from then on every request needs one. This module knows no HTTP:
//! `api::auth` reads the credentials off requests and asks [`Tokens`].

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{now_millis, Store, StoreError, StoredToken};

/// How long a token read from the store is trusted before it is read again: a revoke
/// (or a first token, created by the CLI while the server runs) takes effect within it.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);

/// Whom a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name; `None` while Weft runs open.
    pub name: Option<Arc<str>>,
    /// Sees everything.
    pub admin: bool,
    /// May read, but not create, run, cancel or delete.
    pub read_only: bool,
}

impl Principal {
    /// Everyone, while no token exists: sees and may do everything, and owns nothing.
    pub fn open() -> Self {
        Self {
            name: None,
            admin: true,
            read_only: false,
        }
    }

    /// No one: what a request that proved nothing sees (nothing at all).
    pub fn nobody() -> Self {
        Self {
            name: None,
            admin: false,
            read_only: true,
        }
    }

    /// What it may see.
    pub fn access(&self) -> Access {
        match (&self.name, self.admin) {
            (_, true) => Access::All,
            (Some(name), false) => Access::Own(Arc::clone(name)),
            (None, false) => Access::Nothing,
        }
    }

    /// The name recorded on what it creates.
    pub fn created_by(&self) -> Option<String> {
        self.name.as_deref().map(str::to_owned)
    }
}

/// Which graphs and runs a principal may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every one (admins, and everyone while Weft runs open).
    All,
    /// Those this principal created.
    Own(Arc<str>),
    /// None.
    Nothing,
}

impl Access {
    /// Whether what `created_by` created is visible.
    pub fn sees(&self, created_by: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Own(name) => created_by == Some(&**name),
            Self::Nothing => false,
        }
    }

    /// The creator to list by (`None`: everyone's).
    pub fn creator_filter(&self) -> Option<String> {
        match self {
            Self::All => None,
            Self::Own(name) => Some(name.to_string()),
            // No token is named so: a listing comes back empty.
            Self::Nothing => Some(String::new()),
        }
    }
}

/// A token just made: its text, shown once, and its record, which keeps only a hash.
#[derive(Debug)]
pub struct NewToken {
    /// `weft_<id>_<secret>`: what clients send.
    pub text: String,
    /// What the store keeps.
    pub record: StoredToken,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Makes a token for the principal `name`.
pub fn new_token(name: &str, admin: bool, read_only: bool) -> NewToken {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    NewToken {
        text: format!("weft_{id}_{secret}"),
        record: StoredToken {
            id,
            name: name.to_owned(),
            secret_hash: hash(&secret),
            admin,
            read_only,
            created_at: now_millis(),
            revoked_at: None,
        },
    }
}

/// The id and secret of a token's text, if it has a token's shape.
fn split(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix("weft_")?.split_once('_')?;
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

/// Whether a token name is acceptable: 1 to 64 letters, digits, `-`, `_`, `.` or `@`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Checks tokens against the store, remembering each for [`TOKEN_CACHE_TTL`].
pub struct Tokens {
    store: Arc<dyn Store>,
    cache: moka::sync::Cache<String, Option<StoredToken>>,
    /// Once a token exists, for good (revoking every token does not reopen Weft).
    required: AtomicBool,
    /// When the store last said there was none.
    checked: Mutex<Option<Instant>>,
}

impl Tokens {
    /// Tokens kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TOKEN_CACHE_TTL)
                .build(),
            required: AtomicBool::new(false),
            checked: Mutex::new(None),
        }
    }

    /// Whether requests need a token: whether one was ever created.
    pub async fn required(&self) -> Result<bool, StoreError> {
        if self.required.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let fresh = |checked: &Option<Instant>| checked.is_some_and(|at| at.elapsed() < TOKEN_CACHE_TTL);
        if fresh(&self.checked.lock().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(false);
        }
        let required = self.store.has_tokens().await?;
        if required {
            self.required.store(true, Ordering::Relaxed);
        } else {
            *self.checked.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        Ok(required)
    }

    /// The principal `text` speaks for; `None` when it is no live token.
    pub async fn verify(&self, text: &str) -> Result<Option<Principal>, StoreError> {
        let Some((id, secret)) = split(text) else {
            return Ok(None);
        };
        let record = match self.cache.get(id) {
            Some(record) => record,
            None => {
                let record = self.store.token(id).await?;
                self.cache.insert(id.to_owned(), record.clone());
                record
            }
        };
        let Some(record) = record else {
            return Ok(None);
        };
        // Constant time: how much of a guessed secret matched never shows in the timing.
        let matches: bool = hash(secret).as_bytes().ct_eq(record.secret_hash.as_bytes()).into();
        if !matches || record.revoked_at.is_some() {
            return Ok(None);
        }
        Ok(Some(Principal {
            name: Some(record.name.into()),
            admin: record.admin,
            read_only: record.read_only,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_keeps_only_the_hash_of_its_secret() {
        let token = new_token("alice", false, true);
        let (id, secret) = split(&token.text).expect("a token has a token's shape");
        assert_eq!(id, token.record.id);
        assert_eq!(token.record.secret_hash, hash(secret));
        assert!(!token.record.secret_hash.contains(secret));
        assert_eq!(token.record.name, "alice");
        assert!(token.record.read_only && !token.record.admin);
        assert_ne!(new_token("alice", false, false).text, token.text);
    }

    #[test]
    fn only_token_shaped_text_is_looked_up() {
        assert_eq!(split("weft_0123456789abcdef_"), None);
        assert_eq!(split("Bearer weft_x"), None);
        let secret = "a".repeat(64);
        assert_eq!(
            split(&format!("weft_0123456789abcdef_{secret}")),
            Some(("0123456789abcdef", secret.as_str()))
        );
        assert_eq!(split(&format!("weft_0123456789abcdeg_{secret}")), None);
    }

    #[test]
    fn access_follows_the_principal() {
        let alice = Principal {
            name: Some("alice".into()),
            admin: false,
            read_only: false,
        };
        assert!(alice.access().sees(Some("alice")));
        assert!(!alice.access().sees(Some("bob")));
        assert!(!alice.access().sees(None));
        assert_eq!(alice.access().creator_filter().as_deref(), Some("alice"));
        let admin = Principal {
            admin: true,
            ..alice.clone()
        };
        assert!(admin.access().sees(Some("bob")) && admin.access().sees(None));
        assert_eq!(admin.access().creator_filter(), None);
        assert!(Principal::open().access().sees(None));
        assert!(!Principal::nobody().access().sees(None));
        assert!(valid_name("ci-bot@team.example") && !valid_name("") && !valid_name("a b"));
    }
}
