//! Environment variables (the secrets of a function's configuration) encrypted at rest.
//!
//! A function's configuration is stored as JSON; with a key installed, its `env` map is
//! replaced by `env_sealed`: AES-256-GCM over the map's JSON, a fresh 96-bit nonce per write,
//! stored as `v1:` + base64(nonce ‖ ciphertext). Both backends store what [`seal_spec`] makes
//! and read through [`open_spec`], so PostgreSQL holds only ciphertext too. Configurations
//! written before a key was installed (plain `env`) still read, and are sealed on their next
//! write.
//!
//! The key is process-wide: the binary installs it once at start ([`install`]) from
//! `--secrets-key-file` or a key generated into the data directory ([`load_or_create_key`]);
//! every server of a cluster needs the same key. Without one (library use and tests) specs are
//! stored as they are.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use gust_core::FunctionSpec;

use crate::{Result, StoreError};

/// Bytes in a key (AES-256).
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const PREFIX: &str = "v1:";

static CIPHER: OnceLock<Aes256Gcm> = OnceLock::new();

/// Installs the process's key; a second, different key is refused.
pub fn install(key: &[u8; KEY_BYTES]) -> std::result::Result<(), String> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    CIPHER.set(cipher).map_err(|_| "a secrets key is installed already".to_string())
}

/// Reads a key file (64 hex digits), or creates one (0600) with a random key when it does not
/// exist yet.
pub fn load_or_create_key(path: &Path) -> std::io::Result<[u8; KEY_BYTES]> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key(text.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: a secrets key is 64 hex digits", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; KEY_BYTES] = Aes256Gcm::generate_key(OsRng).into();
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(hex::encode(key).as_bytes())?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

fn parse_key(hex_text: &str) -> Option<[u8; KEY_BYTES]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

fn crypto(what: &str) -> StoreError {
    StoreError::Backend(format!("secrets: {what}"))
}

/// The stored form of a configuration: its JSON, with `env` sealed when a key is installed.
pub fn seal_spec(spec: &FunctionSpec) -> Result<String> {
    let mut v = serde_json::to_value(spec).map_err(|e| crypto(&e.to_string()))?;
    if let (Some(cipher), Some(obj)) = (CIPHER.get(), v.as_object_mut()) {
        let env = obj.remove("env").unwrap_or_default();
        let plain = serde_json::to_vec(&env).map_err(|e| crypto(&e.to_string()))?;
        obj.insert("env_sealed".into(), serde_json::Value::String(seal_bytes(cipher, &plain)?));
    }
    serde_json::to_string(&v).map_err(|e| crypto(&e.to_string()))
}

/// A configuration from its stored form (sealed or not).
pub fn open_spec(stored: &str) -> Result<FunctionSpec> {
    let mut v: serde_json::Value = serde_json::from_str(stored).map_err(|e| crypto(&e.to_string()))?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(sealed) = obj.remove("env_sealed") {
            let cipher = CIPHER
                .get()
                .ok_or_else(|| crypto("a sealed configuration and no key (--secrets-key-file)"))?;
            let text = sealed.as_str().ok_or_else(|| crypto("unknown seal"))?;
            let plain = open_bytes(cipher, text, "the configuration")?;
            let env: serde_json::Value =
                serde_json::from_slice(&plain).map_err(|e| crypto(&e.to_string()))?;
            obj.insert("env".into(), env);
        }
    }
    serde_json::from_value(v).map_err(|e| crypto(&e.to_string()))
}

/// `v1:` + base64(nonce ‖ AES-256-GCM ciphertext).
fn seal_bytes(cipher: &Aes256Gcm, plain: &[u8]) -> Result<String> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher.encrypt(&nonce, plain).map_err(|_| crypto("cannot encrypt"))?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&sealed);
    Ok(format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(blob)))
}

fn open_bytes(cipher: &Aes256Gcm, text: &str, what: &str) -> Result<Vec<u8>> {
    let text = text.strip_prefix(PREFIX).ok_or_else(|| crypto("unknown seal"))?;
    let blob =
        base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| crypto("a damaged seal"))?;
    if blob.len() < NONCE_BYTES {
        return Err(crypto("a damaged seal"));
    }
    let (nonce, sealed) = blob.split_at(NONCE_BYTES);
    cipher
        .decrypt(Nonce::from_slice(nonce), sealed)
        .map_err(|_| crypto(&format!("{what} does not open with this key")))
}

/// Marks a short secret stored without a key installed.
const PLAIN_PREFIX: &str = "plain:";

/// The stored form of a short secret (an API key's SigV4 secret, which the server must read
/// back to check signatures): sealed like environment variables when a key is installed,
/// otherwise `plain:` and the text (the same caveat as unsealed environment variables).
pub fn seal_text(text: &str) -> Result<String> {
    match CIPHER.get() {
        Some(cipher) => seal_bytes(cipher, text.as_bytes()),
        None => Ok(format!("{PLAIN_PREFIX}{text}")),
    }
}

/// A short secret from its stored form (sealed or plain).
pub fn open_text(stored: &str) -> Result<String> {
    if let Some(plain) = stored.strip_prefix(PLAIN_PREFIX) {
        return Ok(plain.to_string());
    }
    let cipher = CIPHER.get().ok_or_else(|| crypto("a sealed secret and no key (--secrets-key-file)"))?;
    String::from_utf8(open_bytes(cipher, stored, "an API key's secret")?)
        .map_err(|_| crypto("a damaged seal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_configurations_hold_no_plain_values_and_open_again() {
        let _ = install(&[7u8; KEY_BYTES]);
        let mut spec = FunctionSpec::default();
        spec.env.insert("DB_PASSWORD".into(), "hunter2-very-secret".into());
        let stored = seal_spec(&spec).unwrap();
        assert!(!stored.contains("hunter2") && !stored.contains("DB_PASSWORD"), "{stored}");
        assert!(stored.contains("env_sealed"));
        assert_ne!(seal_spec(&spec).unwrap(), stored, "a fresh nonce per write");
        assert_eq!(open_spec(&stored).unwrap(), spec);
        // Written before a key existed: still reads.
        let plain = serde_json::to_string(&spec).unwrap();
        assert_eq!(open_spec(&plain).unwrap(), spec);
        // Tampered: refused, not misread.
        let mut v: serde_json::Value = serde_json::from_str(&stored).unwrap();
        let s = v["env_sealed"].as_str().unwrap().to_string();
        let flipped = format!("{}{}", &s[..s.len() - 2], if s.ends_with("A=") { "B=" } else { "A=" });
        v["env_sealed"] = flipped.into();
        assert!(open_spec(&v.to_string()).is_err());
    }

    #[test]
    fn short_secrets_are_sealed_and_open_again() {
        let _ = install(&[7u8; KEY_BYTES]);
        let stored = seal_text("sigv4-secret-0123").unwrap();
        assert!(stored.starts_with(PREFIX) && !stored.contains("sigv4-secret"), "{stored}");
        assert_ne!(seal_text("sigv4-secret-0123").unwrap(), stored, "a fresh nonce per write");
        assert_eq!(open_text(&stored).unwrap(), "sigv4-secret-0123");
        assert_eq!(open_text("plain:written-without-a-key").unwrap(), "written-without-a-key");
        assert!(open_text("v1:AAAA").is_err() && open_text("garbage").is_err());
    }

    #[test]
    fn a_key_file_is_created_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let key = load_or_create_key(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap(), key);
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_or_create_key(&path).is_err());
    }
}
