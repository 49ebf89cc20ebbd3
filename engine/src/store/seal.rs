//! Encryption at rest: message bodies (`raw`) and rendered payloads (outbox and dead-letter
//! bodies) sealed with ChaCha20-Poly1305, optional per engine (`[encryption]` in
//! `switchboard.toml`, off by default). The rest of the engine never sees a sealed value:
//! the store seals on write and opens on read, here.
//!
//! A sealed value is `MAGIC | key id length | key id | nonce (12) | ciphertext + tag`, with a
//! fresh random nonce per value and the value's purpose (`raw`, `payload`) as associated
//! data, so a body cannot be passed off as another kind. Each value names its key, so keys
//! rotate: new values are sealed under the first configured key, older ones open with any
//! key still listed. A value without the magic prefix is plaintext written before
//! encryption was turned on, and is read as it is.
//!
//! Business identifiers (MRNs, visit, appointment and order numbers) cannot be sealed in the
//! search index, which must find them by value: with encryption on they are written as keyed
//! hashes instead ([`Seal::index_tag`], HMAC-SHA256 under a key derived from the store key),
//! so a search computes the same tag and no identifier is in clear on disk.
//!
//! `meta` holds a check value per key id (`seal_check/<id>`, a known text sealed under that
//! key). At open, every check must open with the configured key of its id: a wrong key, a
//! key removed while values sealed under it remain, or an encrypted store opened without
//! keys all refuse to start with an error that names `encryption.keys`.

use super::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;

/// Marks a sealed value (a raw HL7 message cannot start with NUL 'S' 'B' 0x01 and be valid).
const MAGIC: &[u8; 4] = b"\x00SB\x01";
/// The text sealed as each key's check value.
const CHECK_TEXT: &[u8] = b"switchboard store seal check v1";
/// Prefix of the check values in `meta`.
const CHECK_PREFIX: &str = "seal_check/";
const NONCE_LEN: usize = 12;
/// What the index key of each store key is derived from (HMAC-SHA256 of this under the key).
const INDEX_KEY_LABEL: &[u8] = b"switchboard business-key index v1";
/// Marks an index value that is a keyed hash, not the identifier itself.
pub(crate) const TAG_PREFIX: &str = "hmac:";
/// Bytes of the HMAC kept in a tag: 128 bits, plenty against collisions in one store.
const TAG_BYTES: usize = 16;

/// One key: its id (stored with each value) and its 32 bytes.
#[derive(Clone)]
pub struct StoreKey {
    /// Short name stored with every value sealed under the key.
    pub id: String,
    /// The key itself.
    pub key: [u8; 32],
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({})", self.id)
    }
}

/// Seals and opens store values; plaintext when no key is configured.
pub struct Seal {
    /// Newest first; empty means encryption is off.
    keys: Vec<(String, ChaCha20Poly1305)>,
    /// The index key derived from each store key, in the same order.
    index_keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Seal({ids:?})")
    }
}

impl Seal {
    /// No encryption: values are written and read as they are.
    pub fn plain() -> Seal {
        Seal {
            keys: Vec::new(),
            index_keys: Vec::new(),
        }
    }

    /// Encryption under `keys`, newest first (an empty list is [`Seal::plain`]).
    pub fn new(keys: &[StoreKey]) -> Seal {
        Seal {
            keys: keys
                .iter()
                .map(|k| (k.id.clone(), ChaCha20Poly1305::new(Key::from_slice(&k.key))))
                .collect(),
            index_keys: keys
                .iter()
                .map(|k| hmac_sha256(&k.key, INDEX_KEY_LABEL))
                .collect(),
        }
    }

    /// The keyed hash written to the search index in place of the identifier `value`,
    /// under the newest key; `None` when encryption is off (the value itself is indexed).
    pub fn index_tag(&self, value: &str) -> Option<String> {
        self.index_keys.first().map(|k| tag(k, value))
    }

    /// The tags `value` may have been indexed under: one per configured key, newest first
    /// (entries written before a rotation are found with the older keys).
    pub fn index_tags(&self, value: &str) -> Vec<String> {
        self.index_keys.iter().map(|k| tag(k, value)).collect()
    }

    /// True when values are sealed.
    pub fn is_on(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Seals `plain` for `purpose` under the newest key (or returns it as is when off).
    ///
    /// # Errors
    ///
    /// [`StoreError::Seal`] when the cipher fails (it does not for valid input).
    pub fn seal<'a>(&self, purpose: &[u8], plain: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
        let Some((id, cipher)) = self.keys.first() else {
            return Ok(Cow::Borrowed(plain));
        };
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: purpose,
                },
            )
            .map_err(|_| StoreError::Seal("sealing a value failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 1 + id.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Cow::Owned(out))
    }

    /// Opens a value written by [`Seal::seal`] (or plaintext written without a key).
    ///
    /// # Errors
    ///
    /// [`StoreError::Seal`] when the value is sealed under a key that is not configured, or
    /// does not open (wrong key, damaged value).
    pub fn open<'a>(&self, purpose: &[u8], stored: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
        let Some(rest) = stored.strip_prefix(MAGIC) else {
            return Ok(Cow::Borrowed(stored));
        };
        let damaged = || StoreError::Seal("a sealed value is damaged".into());
        let id_len = *rest.first().ok_or_else(damaged)? as usize;
        let id = rest.get(1..1 + id_len).ok_or_else(damaged)?;
        let nonce = rest
            .get(1 + id_len..1 + id_len + NONCE_LEN)
            .ok_or_else(damaged)?;
        let sealed = &rest[1 + id_len + NONCE_LEN..];
        let id = String::from_utf8_lossy(id);
        let Some((_, cipher)) = self.keys.iter().find(|(k, _)| *k == id) else {
            return Err(StoreError::Seal(format!(
                "a value is sealed under key id '{id}', which encryption.keys does not list"
            )));
        };
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: purpose,
                },
            )
            .map(Cow::Owned)
            .map_err(|_| {
                StoreError::Seal(format!(
                    "a value sealed under key id '{id}' does not open (wrong key or damaged)"
                ))
            })
    }

    /// Checks the configured keys against the check values in `meta` and writes the check
    /// value of the newest key when it has none yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::Seal`] naming `encryption.keys` when a key is wrong or missing, or the
    /// store is encrypted and no key is configured.
    pub(crate) fn verify(&self, meta: &sled::Tree) -> Result<(), StoreError> {
        let mut found = Vec::new();
        for item in meta.scan_prefix(CHECK_PREFIX) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[CHECK_PREFIX.len()..]).into_owned();
            found.push((id, v));
        }
        if !self.is_on() {
            if found.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
            return Err(StoreError::Seal(format!(
                "the store is encrypted (key ids {}); set encryption.keys in switchboard.toml",
                ids.join(", ")
            )));
        }
        for (id, check) in &found {
            let Some(index) = self.keys.iter().position(|(k, _)| k == id) else {
                return Err(StoreError::Seal(format!(
                    "the store holds values sealed under key id '{id}', which encryption.keys \
                     does not list; keep that key in the list (after the newest) to read them"
                )));
            };
            match self.open(b"check", check) {
                Ok(text) if text.as_ref() == CHECK_TEXT => {}
                _ => {
                    return Err(StoreError::Seal(format!(
                        "encryption.keys[{index}] (id '{id}') is not the key this store was \
                         sealed with"
                    )))
                }
            }
        }
        let (newest, _) = &self.keys[0];
        if !found.iter().any(|(id, _)| id == newest) {
            let check = self.seal(b"check", CHECK_TEXT)?;
            meta.insert(format!("{CHECK_PREFIX}{newest}"), check.as_ref())?;
        }
        Ok(())
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn tag(index_key: &[u8; 32], value: &str) -> String {
    let mac = hmac_sha256(index_key, value.as_bytes());
    format!("{TAG_PREFIX}{}", hex::encode(&mac[..TAG_BYTES]))
}

/// Reads a key given as 64 hex digits.
///
/// # Errors
///
/// A sentence for the operator (never the value).
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "the key is not hex".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "the key must be 64 hex digits (32 bytes)".to_string())
}

#[cfg(test)]
impl StoreKey {
    /// A key named `id` whose 32 bytes are all `byte`, for tests.
    pub(crate) fn sample(id: &str, byte: u8) -> StoreKey {
        StoreKey {
            id: id.into(),
            key: [byte; 32],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> StoreKey {
        StoreKey::sample(id, byte)
    }

    #[test]
    fn round_trip_and_purpose_is_bound() {
        let s = Seal::new(&[key("k1", 1)]);
        let sealed = s
            .seal(b"raw", b"MSH|^~\\&|secret")
            .expect("seal")
            .into_owned();
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            s.open(b"raw", &sealed).expect("open").as_ref(),
            b"MSH|^~\\&|secret"
        );
        assert!(
            s.open(b"payload", &sealed).is_err(),
            "purpose is associated data"
        );
        // Two seals of the same text differ (fresh nonce).
        let again = s.seal(b"raw", b"MSH|^~\\&|secret").expect("seal");
        assert_ne!(sealed, again.as_ref());
    }

    #[test]
    fn rotation_reads_old_values_and_writes_under_the_newest() {
        let old = Seal::new(&[key("k1", 1)]);
        let v1 = old.seal(b"raw", b"one").expect("seal").into_owned();
        let rotated = Seal::new(&[key("k2", 2), key("k1", 1)]);
        assert_eq!(rotated.open(b"raw", &v1).expect("open").as_ref(), b"one");
        let v2 = rotated.seal(b"raw", b"two").expect("seal").into_owned();
        assert_eq!(&v2[5..7], b"k2");
        assert!(
            old.open(b"raw", &v2).is_err(),
            "k1 alone cannot read k2 values"
        );
        let wrong = Seal::new(&[key("k1", 9)]);
        assert!(wrong.open(b"raw", &v1).is_err());
    }

    #[test]
    fn plaintext_values_pass_through() {
        let s = Seal::new(&[key("k1", 1)]);
        assert_eq!(
            s.open(b"raw", b"MSH|plain").expect("open").as_ref(),
            b"MSH|plain"
        );
        let p = Seal::plain();
        assert_eq!(p.seal(b"raw", b"x").expect("seal").as_ref(), b"x");
    }

    #[test]
    fn verify_refuses_wrong_missing_and_absent_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .temporary(true)
            .open()
            .expect("sled");
        let meta = db.open_tree("meta").expect("meta");
        Seal::new(&[key("k1", 1)])
            .verify(&meta)
            .expect("first open writes the check");
        Seal::new(&[key("k1", 1)])
            .verify(&meta)
            .expect("same key opens");
        let e = Seal::new(&[key("k1", 7)])
            .verify(&meta)
            .expect_err("wrong key");
        assert!(
            e.to_string().contains("encryption.keys[0] (id 'k1')"),
            "{e}"
        );
        let e = Seal::plain().verify(&meta).expect_err("no key");
        assert!(e.to_string().contains("set encryption.keys"), "{e}");
        let e = Seal::new(&[key("k2", 2)])
            .verify(&meta)
            .expect_err("k1 dropped");
        assert!(e.to_string().contains("'k1'"), "{e}");
        Seal::new(&[key("k2", 2), key("k1", 1)])
            .verify(&meta)
            .expect("rotation opens");
        let e = Seal::new(&[key("k2", 3), key("k1", 1)])
            .verify(&meta)
            .expect_err("wrong new key");
        assert!(
            e.to_string().contains("encryption.keys[0] (id 'k2')"),
            "{e}"
        );
    }

    #[test]
    fn index_tags_are_keyed_stable_and_hide_the_value() {
        let s = Seal::new(&[key("k1", 1)]);
        let t = s.index_tag("MRN-4711").expect("on");
        assert!(t.starts_with(TAG_PREFIX) && !t.contains("4711"), "{t}");
        assert_eq!(s.index_tag("MRN-4711"), Some(t.clone()), "stable");
        assert_ne!(s.index_tag("MRN-4712"), Some(t.clone()));
        assert_ne!(
            Seal::new(&[key("k1", 2)]).index_tag("MRN-4711"),
            Some(t.clone()),
            "another key, another tag"
        );
        let rotated = Seal::new(&[key("k2", 2), key("k1", 1)]);
        assert_eq!(rotated.index_tags("MRN-4711")[1], t, "old tags still found");
        assert_eq!(Seal::plain().index_tag("MRN-4711"), None);
    }

    #[test]
    fn keys_are_64_hex_digits() {
        assert_eq!(parse_key(&"ab".repeat(32)), Ok([0xab; 32]));
        assert!(parse_key("abcd").is_err());
        assert!(parse_key(&"zz".repeat(32)).is_err());
    }
}
