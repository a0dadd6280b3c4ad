//! Signed plugins: publisher keys (ed25519) and the detached signature of a
//! component.
//!
//! A signature binds the sha256 digest of a component to the key that
//! signed it, so whoever holds the publisher's public key can check, from
//! the digest alone, that these are the bytes the publisher signed; the
//! bytes themselves are checked against the digest wherever they are loaded
//! ([`crate::Runtime::load`]). The controller checks a signature at
//! `sluice plugin push` against its trusted publishers; an agent checks it
//! again against the keys of its own policy, before it compiles anything,
//! because it must not take the controller's word for who signed.
//!
//! The signature file (`PLUGIN.wasm.sig`) is a small versioned JSON
//! document:
//!
//! ```json
//! {"format": "sluice-plugin-signature/1", "algorithm": "ed25519",
//!  "digest": "sha256:<64 hex>", "keyId": "<32 hex>", "signature": "<128 hex>"}
//! ```
//!
//! The signed message is the format, the digest and the key id, one per
//! line, so a signature can be neither moved to another component nor
//! presented as another key's. Keys are PEM files as OpenSSL writes them
//! (`openssl genpkey -algorithm ed25519`): PKCS#8 `PRIVATE KEY` and SPKI
//! `PUBLIC KEY`; a public key may also be given as the one base64 line of
//! its PEM body. Pure: no files, no clock.

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The version of the signature document this host writes and reads.
pub const FORMAT: &str = "sluice-plugin-signature/1";
/// The only algorithm of [`FORMAT`].
pub const ALGORITHM: &str = "ed25519";
/// Largest signature document read: a real one is about 330 bytes.
pub const MAX_SIGNATURE_BYTES: usize = 4096;

/// The DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): the
/// algorithm identifier 1.3.101.112 and the bit string header of the 32
/// bytes of key that follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("malformed key: {0}")]
    Key(String),
    #[error("the signature is for component sha256:{signed}, not for this component (sha256:{component})")]
    DigestMismatch { signed: String, component: String },
    #[error("the signature was made by key {key_id}, which is not a trusted publisher's")]
    UnknownKey { key_id: String },
    #[error("the signature does not verify with the key of publisher {publisher} ({key_id})")]
    BadSignature { publisher: String, key_id: String },
}

/// A publisher's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
}

impl PublicKey {
    /// A `PUBLIC KEY` PEM, or the base64 of the same DER on one line.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let text = text.trim();
        let der = if text.starts_with("-----BEGIN") {
            pem_body(text, "PUBLIC KEY").map_err(SignatureError::Key)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| SignatureError::Key("not a PEM public key nor the base64 of one".into()))?
        };
        let raw = der
            .strip_prefix(&SPKI_PREFIX[..])
            .and_then(|rest| <[u8; 32]>::try_from(rest).ok())
            .ok_or_else(|| SignatureError::Key("not an ed25519 public key".into()))?;
        Ok(Self { raw })
    }

    /// Names the key in signatures and listings: the first 16 bytes of the
    /// sha256 of the key, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.raw)[..16])
    }

    /// The base64 of the key's DER on one line (what [`PublicKey::parse`]
    /// and an agent's policy take).
    pub fn to_line(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    /// The key as a `PUBLIC KEY` PEM file.
    pub fn to_pem(&self) -> String {
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", self.to_line())
    }
}

/// A publisher's private key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A new key and its PKCS#8 `PRIVATE KEY` PEM, to be kept private.
    pub fn generate() -> Result<(Self, String), SignatureError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| SignatureError::Key("the system's random source failed".into()))?;
        let pem = pem_encode("PRIVATE KEY", pkcs8.as_ref());
        Ok((Self::parse(&pem)?, pem))
    }

    /// A PKCS#8 `PRIVATE KEY` PEM (version 1 as OpenSSL writes it, or 2).
    pub fn parse(pem: &str) -> Result<Self, SignatureError> {
        let der = pem_body(pem.trim(), "PRIVATE KEY").map_err(SignatureError::Key)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| SignatureError::Key(format!("not an ed25519 private key: {e}")))?;
        Ok(Self { pair })
    }

    pub fn public_key(&self) -> PublicKey {
        let raw = <[u8; 32]>::try_from(self.pair.public_key().as_ref()).expect("ed25519 public keys are 32 bytes");
        PublicKey { raw }
    }

    /// Signs the component whose hex sha256 is `digest`.
    pub fn sign(&self, digest: &str) -> Result<Signature, SignatureError> {
        check_hex("digest", digest, 64)?;
        let key_id = self.public_key().key_id();
        let signature = self.pair.sign(&message(digest, &key_id));
        Ok(Signature {
            format: FORMAT.into(),
            algorithm: ALGORITHM.into(),
            digest: format!("sha256:{digest}"),
            key_id,
            signature: hex::encode(signature.as_ref()),
        })
    }
}

/// A detached signature of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    format: String,
    algorithm: String,
    digest: String,
    key_id: String,
    signature: String,
}

impl Signature {
    /// Reads a signature document, checking its shape (not yet its key).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        if text.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::Malformed(format!(
                "{} bytes, more than the {MAX_SIGNATURE_BYTES} a signature may have",
                text.len()
            )));
        }
        let s: Signature = serde_json::from_str(text).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if s.format != FORMAT {
            return Err(SignatureError::Malformed(format!("format {:?} is not {FORMAT:?}", s.format)));
        }
        if s.algorithm != ALGORITHM {
            return Err(SignatureError::Malformed(format!("algorithm {:?} is not {ALGORITHM:?}", s.algorithm)));
        }
        let digest = s
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| SignatureError::Malformed(format!("digest {:?} must start with sha256:", s.digest)))?;
        check_hex("digest", digest, 64)?;
        check_hex("keyId", &s.key_id, 32)?;
        check_hex("signature", &s.signature, 128)?;
        Ok(s)
    }

    /// The document as written to a `.sig` file.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("a signature serializes") + "\n"
    }

    /// The hex sha256 of the component it signs.
    pub fn digest(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// The [`PublicKey::key_id`] of the key that made it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Checks the signature against the component's digest and the trusted
    /// keys (by name); the name of the publisher whose key made it.
    pub fn verify<'a>(&self, digest: &str, trusted: &'a [(String, PublicKey)]) -> Result<&'a str, SignatureError> {
        if self.digest() != digest {
            return Err(SignatureError::DigestMismatch { signed: self.digest().into(), component: digest.into() });
        }
        let (name, key) = trusted
            .iter()
            .find(|(_, key)| key.key_id() == self.key_id)
            .ok_or_else(|| SignatureError::UnknownKey { key_id: self.key_id.clone() })?;
        let signature = hex::decode(&self.signature).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        UnparsedPublicKey::new(&ED25519, key.raw)
            .verify(&message(digest, &self.key_id), &signature)
            .map_err(|_| SignatureError::BadSignature { publisher: name.clone(), key_id: self.key_id.clone() })?;
        Ok(name)
    }
}

/// What is signed: the format, the component's digest and the signing key,
/// one per line.
fn message(digest: &str, key_id: &str) -> Vec<u8> {
    format!("{FORMAT}\nsha256:{digest}\n{key_id}\n").into_bytes()
}

fn check_hex(field: &str, value: &str, len: usize) -> Result<(), SignatureError> {
    if value.len() == len && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(SignatureError::Malformed(format!("{field} must be {len} lower-case hex digits")))
    }
}

/// The DER inside a PEM block with this label.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let start = text.find(&begin).ok_or_else(|| format!("no {begin} line"))? + begin.len();
    let stop = text[start..].find(&end).ok_or_else(|| format!("no {end} line"))? + start;
    let body: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| format!("the {label} block is not base64"))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(name: &str) -> (SigningKey, (String, PublicKey)) {
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public_key();
        (key, (name.to_string(), public))
    }

    #[test]
    fn a_good_signature_names_its_publisher() {
        let (acme, trusted) = publisher("acme");
        let digest = crate::digest(b"component");
        let text = acme.sign(&digest).unwrap().to_text();
        let signature = Signature::parse(&text).unwrap();
        assert_eq!(signature.digest(), digest);
        let (_, other) = publisher("other");
        assert_eq!(signature.verify(&digest, &[other, trusted]).unwrap(), "acme");
    }

    #[test]
    fn tampered_bytes_a_wrong_digest_or_key_or_an_unknown_publisher_are_refused() {
        let (acme, trusted) = publisher("acme");
        let digest = crate::digest(b"component");
        let signature = acme.sign(&digest).unwrap();
        // The component's bytes changed: its digest is not the signed one.
        let tampered = crate::digest(b"component!");
        assert!(matches!(
            signature.verify(&tampered, std::slice::from_ref(&trusted)),
            Err(SignatureError::DigestMismatch { .. })
        ));
        // The document names another digest than the one signed.
        let mut moved = signature.clone();
        moved.digest = format!("sha256:{tampered}");
        let e = moved.verify(&tampered, std::slice::from_ref(&trusted)).unwrap_err();
        assert!(matches!(e, SignatureError::BadSignature { ref publisher, .. } if publisher == "acme"), "{e}");
        // The signature itself altered.
        let mut flipped = signature.clone();
        let last = if flipped.signature.ends_with('0') { "1" } else { "0" };
        flipped.signature.replace_range(127.., last);
        assert!(matches!(flipped.verify(&digest, std::slice::from_ref(&trusted)), Err(SignatureError::BadSignature { .. })));
        // Made by a key nobody trusts.
        let (mallory, _) = publisher("mallory");
        let forged = mallory.sign(&digest).unwrap();
        let e = forged.verify(&digest, std::slice::from_ref(&trusted)).unwrap_err();
        assert_eq!(e, SignatureError::UnknownKey { key_id: mallory.public_key().key_id() });
        // Claiming the trusted key's id does not help the wrong key.
        let mut claimed = forged.clone();
        claimed.key_id = acme.public_key().key_id();
        assert!(matches!(claimed.verify(&digest, &[trusted]), Err(SignatureError::BadSignature { .. })));
        // Nobody trusted at all.
        assert!(matches!(signature.verify(&digest, &[]), Err(SignatureError::UnknownKey { .. })));
    }

    #[test]
    fn malformed_documents_are_refused_with_the_reason() {
        let (acme, _) = publisher("acme");
        let good: serde_json::Value = serde_json::from_str(&acme.sign(&"a".repeat(64)).unwrap().to_text()).unwrap();
        let with = |field: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[field] = value;
            Signature::parse(&v.to_string()).unwrap_err().to_string()
        };
        assert!(with("format", "sluice-plugin-signature/9".into()).contains("format"));
        assert!(with("algorithm", "rsa".into()).contains("algorithm"));
        assert!(with("digest", "a".repeat(64).into()).contains("sha256:"));
        assert!(with("digest", format!("sha256:{}", "A".repeat(64)).into()).contains("hex"));
        assert!(with("keyId", "xyz".into()).contains("keyId"));
        assert!(with("signature", "00".into()).contains("signature"));
        assert!(with("extra", 1.into()).contains("unknown field"));
        for text in ["", "not json", "{}", "[1, 2]", "\u{0}"] {
            assert!(matches!(Signature::parse(text), Err(SignatureError::Malformed(_))), "{text:?}");
        }
        assert!(Signature::parse(&" ".repeat(MAX_SIGNATURE_BYTES + 1)).unwrap_err().to_string().contains("more than"));
        assert!(acme.sign("not a digest").is_err());
    }

    #[test]
    fn keys_round_trip_through_their_files_and_openssl_keys_are_read() {
        let (key, pem) = SigningKey::generate().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let again = SigningKey::parse(&pem).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = key.public_key();
        assert_eq!(PublicKey::parse(&public.to_pem()).unwrap(), public);
        assert_eq!(PublicKey::parse(&public.to_line()).unwrap(), public);
        assert_eq!(public.key_id().len(), 32);
        // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`
        // (RFC 8410's example key).
        let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert_eq!(SigningKey::parse(openssl).unwrap().public_key(), PublicKey::parse(public).unwrap());
        for bad in ["", "hello", "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----", &"QUFB".repeat(11)] {
            assert!(matches!(PublicKey::parse(bad), Err(SignatureError::Key(_))), "{bad:?}");
        }
        assert!(SigningKey::parse(public).is_err(), "a public key is not a private key");
    }
}
