//! ed25519 signatures over a bundle's canonical listing.
//!
//! Key files are hex text: `NAME.key` holds the 32-byte secret seed, `NAME.pub` the public
//! key. The signature file `bundle.sig` is TOML with one `[[signature]]` per signer:
//! `key` (public key, hex) and `sig` (signature, hex).

use super::source::BundleSource;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A signing or verification problem.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The bundle has no `bundle.sig`.
    #[error("the bundle is not signed (no bundle.sig)")]
    Unsigned,
    /// A signature is required but no key is trusted.
    #[error("signatures are required but no key is trusted: pass the signers' public keys")]
    NoTrustedKey,
    /// Every signature is by a key the host does not trust.
    #[error("signed by an untrusted key ({})", keys.join(", "))]
    UntrustedKey {
        /// The signers' keys, shortened.
        keys: Vec<String>,
    },
    /// A trusted key signed, but not this content.
    #[error("the signature does not match the bundle's content: it was altered after signing")]
    Mismatch,
    /// `bundle.sig` or a key is malformed.
    #[error("{0}")]
    Malformed(String),
    /// A key file or `bundle.sig` could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// Why.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// `bundle.sig` could not be read from the bundle.
    #[error("{0}")]
    Source(#[from] super::source::SourceError),
    /// No randomness for a new key.
    #[error("no randomness: {0}")]
    Random(String),
}

fn read_key(path: &Path) -> Result<String, SignatureError> {
    std::fs::read_to_string(path).map_err(|e| SignatureError::Io {
        context: format!("cannot read key {}", path.display()),
        source: std::sync::Arc::new(e),
    })
}

/// A public key the host trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey(VerifyingKey);

impl TrustedKey {
    /// Parses a public key from hex (the content of a `.pub` file).
    pub fn from_hex(text: &str) -> Result<TrustedKey, SignatureError> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                SignatureError::Malformed("a public key must be 64 hex digits".into())
            })?;
        VerifyingKey::from_bytes(&bytes)
            .map(TrustedKey)
            .map_err(|e| SignatureError::Malformed(format!("not an ed25519 public key: {e}")))
    }

    /// Reads a `.pub` file.
    pub fn from_file(path: &Path) -> Result<TrustedKey, SignatureError> {
        let text = read_key(path)?;
        Self::from_hex(&text)
            .map_err(|e| SignatureError::Malformed(format!("{}: {e}", path.display())))
    }

    /// The key as hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
}

/// A secret key for signing bundles.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<SecretKey, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignatureError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// Reads a `.key` file.
    pub fn from_file(path: &Path) -> Result<SecretKey, SignatureError> {
        let text = read_key(path)?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                SignatureError::Malformed(format!(
                    "{}: a secret key must be 64 hex digits",
                    path.display()
                ))
            })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// The secret seed as hex (the `.key` file's content).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> TrustedKey {
        TrustedKey(self.0.verifying_key())
    }

    /// Signs a bundle's listing.
    pub fn sign(&self, source: &BundleSource) -> SignatureEntry {
        let sig = self.0.sign(source.canonical_listing().as_bytes());
        SignatureEntry {
            key: self.public().to_hex(),
            sig: hex::encode(sig.to_bytes()),
        }
    }
}

/// The content of `bundle.sig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// One entry per signer.
    #[serde(default)]
    pub signature: Vec<SignatureEntry>,
}

/// One signer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// The signer's public key, hex.
    pub key: String,
    /// The signature over the canonical listing, hex.
    pub sig: String,
}

impl SignatureFile {
    /// Parses `bundle.sig`.
    pub fn parse(text: &str) -> Result<SignatureFile, SignatureError> {
        toml::from_str(text).map_err(|e| SignatureError::Malformed(format!("bundle.sig: {e}")))
    }

    /// As TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Checks that `source` carries a valid signature by one of `trusted`. Returns the key that
/// signed it. A malformed entry is named for what is wrong with it, never taken for an
/// altered bundle.
pub fn verify(source: &BundleSource, trusted: &[TrustedKey]) -> Result<TrustedKey, SignatureError> {
    if !source.files().contains_key(super::source::SIGNATURE_FILE) {
        return Err(SignatureError::Unsigned);
    }
    if trusted.is_empty() {
        return Err(SignatureError::NoTrustedKey);
    }
    let text = source.read(super::source::SIGNATURE_FILE)?;
    let text = String::from_utf8(text)
        .map_err(|_| SignatureError::Malformed("bundle.sig is not UTF-8".into()))?;
    let file = SignatureFile::parse(&text)?;
    if file.signature.is_empty() {
        return Err(SignatureError::Malformed(
            "bundle.sig holds no signature".into(),
        ));
    }
    let listing = source.canonical_listing();
    let mut known_key_failed = false;
    for (n, entry) in file.signature.iter().enumerate() {
        let at = format!("bundle.sig: signature #{}", n + 1);
        let key: [u8; 32] = decode_hex(&entry.key).map_err(|why| {
            SignatureError::Malformed(format!("{at}: `key` {why}, not 64 hex digits"))
        })?;
        let sig: [u8; 64] = decode_hex(&entry.sig).map_err(|why| {
            SignatureError::Malformed(format!("{at}: `sig` {why}, not 128 hex digits"))
        })?;
        let Some(key) = trusted.iter().find(|k| k.0.as_bytes() == &key) else {
            continue;
        };
        if key
            .0
            .verify(listing.as_bytes(), &Signature::from_bytes(&sig))
            .is_ok()
        {
            return Ok(key.clone());
        }
        known_key_failed = true;
    }
    Err(if known_key_failed {
        SignatureError::Mismatch
    } else {
        SignatureError::UntrustedKey {
            keys: file.signature.iter().map(|e| short(&e.key)).collect(),
        }
    })
}

/// Exactly `N` bytes of hex, or what is wrong with the text.
fn decode_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    if let Some(c) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("holds {c:?}"));
    }
    if text.len() != 2 * N {
        return Err(format!("has {} digits", text.len()));
    }
    let bytes = hex::decode(text).map_err(|e| e.to_string())?;
    bytes
        .try_into()
        .map_err(|_| "has the wrong length".to_owned())
}

fn short(key: &str) -> String {
    key.chars().take(16).collect::<String>() + "…"
}
