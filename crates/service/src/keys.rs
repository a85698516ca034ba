//! Named API keys: issuing, listing and revoking them, and finding the key behind a request.
//!
//! A key is usable two ways: as a bearer token `gust_<id>_<secret>` and as a SigV4 key pair
//! (`GK<id>`, a secret). Both are found by the id, never by a scan. The store keeps the
//! bearer secret only as its SHA-256 (the secret is 256 random bits, so a plain hash is
//! enough; comparison is constant-time) and the SigV4 secret sealed with the secrets key,
//! since a server must know it to check a signature.
//!
//! Cost per authenticated request: while a key's cache entry is fresh, none beyond a hash
//! and a map lookup; otherwise one primary-key read of the store. An entry (found or not)
//! lives at most [`KEY_CACHE_TTL`], so a key revoked on any server of a cluster is refused by
//! every other server within that bound, and by the revoking server at once (its cache is
//! cleared). Last use is written behind, at most once per [`LAST_USED_RESOLUTION`] per key
//! and server, never on the request's path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gust_core::access::{self, ApiKey, FunctionGlob, Role};
use gust_core::Millis;
use gust_store::{Kind, Store};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::ServiceError;

/// How long a looked-up key (or its absence) is trusted before the store is asked again:
/// the longest a revoked key still works on a server other than the one that revoked it.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Keys (or absent ids) cached at most; beyond it, stale entries are dropped and absent ids
/// are no longer remembered, so random ids cannot grow memory.
pub const KEY_CACHE_CAPACITY: usize = 4096;
/// How precisely a key's last use is kept (it is written at most this often per server).
pub const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Bytes of randomness in a bearer secret and a SigV4 secret.
const SECRET_BYTES: usize = 32;
/// An id is [`access::KEY_ID_LEN`] characters of this alphabet (5 bits each, 100 in all).
const ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A key as just created: the only time its secrets are shown.
pub struct IssuedKey {
    pub key: ApiKey,
    /// `gust_<id>_<secret>`.
    pub bearer_token: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

struct Cached {
    at: Instant,
    key: Option<Arc<ApiKey>>,
}

/// The keys of a store, with a short-lived cache of lookups. One per server process.
pub struct ApiKeys {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Bumped (under the cache's lock) by every revocation: a lookup that read the store
    /// before a revocation must not cache what it read after the revocation cleared the cache.
    revocations: std::sync::atomic::AtomicU64,
    /// When this process last recorded each key's use.
    recorded_use: Mutex<HashMap<String, Instant>>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut buf = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        ApiKeys {
            store,
            cache: Mutex::default(),
            revocations: Default::default(),
            recorded_use: Mutex::default(),
        }
    }

    /// Creates a key named `name`. An admin key covers every function: a scoped admin could
    /// create an unscoped key, so the scope would mean nothing.
    pub async fn create(
        &self, name: &str, role: Role, functions: Option<&str>, now: Millis,
    ) -> Result<IssuedKey, ServiceError> {
        access::validate_key_name(name).map_err(ServiceError::InvalidRequest)?;
        let functions =
            functions.map(FunctionGlob::parse).transpose().map_err(ServiceError::InvalidRequest)?;
        if role == Role::Admin && functions.is_some() {
            return Err(ServiceError::InvalidRequest(
                "an admin key cannot be limited to some functions (it could create an unlimited key); use --role deployer".into(),
            ));
        }
        let id: String = random_bytes::<{ access::KEY_ID_LEN }>()
            .iter()
            .map(|b| ID_ALPHABET[usize::from(b % 32)] as char)
            .collect();
        let bearer_secret = hex::encode(random_bytes::<SECRET_BYTES>());
        let key = ApiKey {
            name: name.to_string(),
            id,
            role,
            functions,
            bearer_sha256: sha256_hex(&bearer_secret),
            sigv4_secret: hex::encode(random_bytes::<SECRET_BYTES>()),
            created_at: now,
            last_used_at: None,
        };
        self.store.create_api_key(key.clone()).await?;
        Ok(IssuedKey {
            bearer_token: format!("{}{}_{bearer_secret}", access::BEARER_PREFIX, key.id),
            access_key_id: key.access_key_id(),
            secret_access_key: key.sigv4_secret.clone(),
            key,
        })
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, ServiceError> {
        Ok(self.store.list_api_keys().await?)
    }

    /// Revokes the key named `name`: refused here at once, on other servers within
    /// [`KEY_CACHE_TTL`].
    pub async fn revoke(&self, name: &str) -> Result<(), ServiceError> {
        let revoked = self.store.revoke_api_key(name).await?;
        {
            let mut cache = self.cache.lock();
            cache.clear();
            self.revocations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if revoked {
            Ok(())
        } else {
            Err(ServiceError::NotFound { kind: Kind::ApiKey, name: name.chars().take(80).collect() })
        }
    }

    /// The key a bearer token belongs to, if it is a live key's token with the right secret.
    pub async fn by_bearer(&self, token: &str, now: Millis) -> Result<Option<Arc<ApiKey>>, ServiceError> {
        let Some((id, secret)) = access::split_bearer(token) else { return Ok(None) };
        let Some(key) = self.lookup(id).await? else { return Ok(None) };
        if !constant_time_eq(sha256_hex(secret).as_bytes(), key.bearer_sha256.as_bytes()) {
            return Ok(None);
        }
        self.record_use(&key, now);
        Ok(Some(key))
    }

    /// The live key with this SigV4 access key id. The caller checks the signature with its
    /// secret and then reports the use ([`ApiKeys::record_use`]).
    pub async fn by_access_key_id(&self, access_key_id: &str) -> Result<Option<Arc<ApiKey>>, ServiceError> {
        match access::key_id_of_access_key(access_key_id) {
            Some(id) => self.lookup(id).await,
            None => Ok(None),
        }
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<ApiKey>>, ServiceError> {
        if let Some(c) = self.cache.lock().get(id) {
            if c.at.elapsed() < KEY_CACHE_TTL {
                return Ok(c.key.clone());
            }
        }
        let generation = self.revocations.load(std::sync::atomic::Ordering::SeqCst);
        let key = self.store.get_api_key(id).await?.map(Arc::new);
        let mut cache = self.cache.lock();
        if self.revocations.load(std::sync::atomic::Ordering::SeqCst) != generation {
            // A revocation ran meanwhile: what was read may be the revoked key. Not cached, and
            // read again, so this request sees the revocation too.
            drop(cache);
            return Ok(self.store.get_api_key(id).await?.map(Arc::new));
        }
        if cache.len() >= KEY_CACHE_CAPACITY {
            cache.retain(|_, c| c.at.elapsed() < KEY_CACHE_TTL);
        }
        if cache.len() < KEY_CACHE_CAPACITY || key.is_some() {
            cache.insert(id.to_string(), Cached { at: Instant::now(), key: key.clone() });
        }
        Ok(key)
    }

    /// Records that `key` authenticated a request, in the background and at most once per
    /// [`LAST_USED_RESOLUTION`] per key on this server.
    pub fn record_use(&self, key: &ApiKey, now: Millis) {
        {
            let mut recorded = self.recorded_use.lock();
            if recorded.get(&key.id).is_some_and(|at| at.elapsed() < LAST_USED_RESOLUTION) {
                return;
            }
            if recorded.len() >= KEY_CACHE_CAPACITY {
                recorded.retain(|_, at| at.elapsed() < LAST_USED_RESOLUTION);
            }
            recorded.insert(key.id.clone(), Instant::now());
        }
        let (store, id) = (self.store.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&id, now).await {
                tracing::warn!(error = %e, "could not record an API key's last use");
            }
        });
    }
}
