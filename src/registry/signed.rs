//! Signed package records and the rules every node applies to them: package validity, the
//! publisher's signature, name ownership and version immutability.
//!
//! A [`SignedPackage`] is a [`Package`] (with `downloads` left out of what is signed: it is
//! a network statistic, not a publisher's statement) plus a `deprecated` flag, the
//! publisher's PeerId and an Ed25519 signature over a domain-separated encoding.
//!
//! [`NameStatement`]s are the other signed thing: entries of a name's log by which its owner
//! adds and removes maintainers and transfers the name.
//!
//! This module checks what a record or statement says about itself (fields, dates,
//! signature). Who may publish a name, and which of two conflicting claims stands, is the
//! registry core's decision ([`super::core`]), made the same way on every node.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::RegistryError;
use super::types::Package;
use crate::identity::PEER_ID_BYTES_LEN;
use crate::identity::{Keypair, PeerId, PublicKey};

/// Domain separation of package signatures.
const SIGNATURE_DOMAIN: &[u8] = b"ggen-p2p/package-record/v1";
/// How far in the future a record's timestamps may be.
pub const MAX_CLOCK_SKEW: ChronoDuration = ChronoDuration::minutes(5);
/// Longest name.
pub const MAX_NAME_LEN: usize = 128;
/// Largest encoded record accepted from the network.
pub const MAX_RECORD_SIZE: usize = 256 * 1024;

/// A package record signed by its publisher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPackage {
    /// The package (its `downloads` is not covered by the signature).
    pub package: Package,
    /// Whether the publisher deprecated this version.
    pub deprecated: bool,
    /// Who signed.
    pub publisher: PeerId,
    /// Ed25519 signature over [`SignedPackage::signed_bytes`].
    pub signature: Vec<u8>,
}

/// The signed part: everything but `downloads`, in a fixed encoding.
#[derive(Serialize)]
struct SignedBody<'a> {
    package: &'a Package,
    deprecated: bool,
    publisher: &'a PeerId,
}

impl SignedPackage {
    /// Signs `package` as `keypair`'s. Sets `id` to `name@version` first.
    pub fn sign(mut package: Package, deprecated: bool, keypair: &Keypair) -> Self {
        package.id = package.canonical_id();
        let publisher = keypair.peer_id();
        let mut s = Self {
            package,
            deprecated,
            publisher,
            signature: Vec::new(),
        };
        s.signature = keypair.sign(&s.signed_bytes()).to_vec();
        s
    }

    /// The bytes the signature covers: a domain tag, then the postcard encoding of the
    /// package with `downloads` zeroed, the flag and the publisher.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut package = self.package.clone();
        package.downloads = 0;
        let body = SignedBody {
            package: &package,
            deprecated: self.deprecated,
            publisher: &self.publisher,
        };
        let mut out = SIGNATURE_DOMAIN.to_vec();
        out.extend_from_slice(&postcard::to_stdvec(&body).unwrap_or_default());
        out
    }

    /// Checks the package's fields, the timestamps against `now` and the signature.
    pub fn verify(&self, now: DateTime<Utc>) -> Result<(), RegistryError> {
        let key = self
            .publisher
            .public_key()
            .map_err(|e| RegistryError::InvalidSignature {
                id: self.package.id.clone(),
                reason: format!("publisher key: {e}"),
            })?;
        self.verify_with(now, &key)
    }

    /// [`SignedPackage::verify`] with the publisher's key already decoded (a caller that
    /// sees many records of one key keeps it: decoding costs a third of a verification).
    /// A key that is not the publisher's fails.
    pub fn verify_with(&self, now: DateTime<Utc>, key: &PublicKey) -> Result<(), RegistryError> {
        validate_package(&self.package)?;
        let id = self.package.id.clone();
        if self.package.created_at > now + MAX_CLOCK_SKEW
            || self.package.updated_at > now + MAX_CLOCK_SKEW
        {
            return Err(RegistryError::InvalidPackage(format!(
                "{id} is dated in the future"
            )));
        }
        if self.package.updated_at < self.package.created_at {
            return Err(RegistryError::InvalidPackage(format!(
                "{id} was updated before it was created"
            )));
        }
        if key.to_bytes() != *self.publisher.public_key_bytes()
            || !key.verify(&self.signed_bytes(), &self.signature)
        {
            return Err(RegistryError::InvalidSignature {
                id,
                reason: format!("not signed by {}", self.publisher),
            });
        }
        Ok(())
    }

    /// A digest identifying this exact record (what anti-entropy compares).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.signed_bytes());
        h.update(&self.signature);
        h.finalize().into()
    }

    /// The encoding stored and sent.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a record of at most [`MAX_RECORD_SIZE`] bytes (unverified: call
    /// [`SignedPackage::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, RegistryError> {
        crate::wire::decode_bounded(bytes, MAX_RECORD_SIZE, "package record")
            .map_err(|e| RegistryError::InvalidPackage(format!("undecodable record: {e}")))
    }

    /// An order of records by age: earlier `created_at` first, then the smaller publisher
    /// (how a store without name states is loaded). It decides no ownership.
    pub fn claim_key(&self) -> (DateTime<Utc>, [u8; PEER_ID_BYTES_LEN]) {
        (self.package.created_at, peer_bytes(&self.publisher))
    }
}

fn peer_bytes(p: &PeerId) -> [u8; PEER_ID_BYTES_LEN] {
    p.to_bytes()
}

/// Checks a package's fields: a valid name, a semantic version, `id` = `name@version`, and
/// bounded sizes (so records stay small on the network).
pub fn validate_package(p: &Package) -> Result<(), RegistryError> {
    let bad = |why: String| Err(RegistryError::InvalidPackage(why));
    if p.name.is_empty() || p.name.len() > MAX_NAME_LEN {
        return bad(format!("name must have 1 to {MAX_NAME_LEN} characters"));
    }
    if !p
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        || !p.name.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return bad(format!(
            "name {:?} may hold lower-case letters, digits, '-', '_' and '.', starting with a letter or digit",
            p.name
        ));
    }
    if semver::Version::parse(&p.version).is_err() {
        return bad(format!("version {:?} is not a semantic version", p.version));
    }
    if p.id != p.canonical_id() {
        return bad(format!("id {:?} is not {}", p.id, p.canonical_id()));
    }
    let limits: [(&str, usize, usize); 8] = [
        ("description", p.description.len(), 4096),
        ("category", p.category.len(), 64),
        ("author", p.author.len(), 256),
        ("license", p.license.len(), 128),
        ("tags", p.tags.len(), 32),
        ("dependencies", p.dependencies.len(), 256),
        (
            "readme",
            p.metadata.readme.as_ref().map_or(0, |r| r.len()),
            64 * 1024,
        ),
        ("keywords", p.metadata.keywords.len(), 32),
    ];
    for (what, len, max) in limits {
        if len > max {
            return bad(format!("{what} is over its limit ({len} > {max})"));
        }
    }
    if p.tags
        .iter()
        .chain(&p.metadata.keywords)
        .any(|t| t.len() > 64)
    {
        return bad("tags and keywords have at most 64 characters".into());
    }
    if let Some(h) = &p.content_hash {
        if h.len() != 64
            || !h
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return bad("content_hash must be 64 lower-case hex characters".into());
        }
    }
    Ok(())
}

/// Domain separation of name statements.
const STATEMENT_DOMAIN: &[u8] = b"ggen-p2p/name-statement/v1";
/// Most statements in one name's log.
pub const MAX_NAME_LOG: usize = 1024;
/// Most record fingerprints a statement keeps for a key it retires.
pub const MAX_KEPT: usize = 4096;
/// Largest encoded statement accepted from the network.
pub const MAX_STATEMENT_SIZE: usize = 160 * 1024;

/// What an owner's statement about its name does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameAction {
    /// `key` may publish versions of the name (and re-sign any of its versions).
    AddMaintainer(PeerId),
    /// `key` may no longer publish. The records it signed whose fingerprints are in `keep`
    /// (what the owner's node held when it signed the removal) stay valid; every other
    /// record of `key` for this name, however it is dated, is refused.
    RemoveMaintainer {
        /// The maintainer removed.
        key: PeerId,
        /// Fingerprints ([`SignedPackage::fingerprint`]) of its records that stay.
        keep: Vec<[u8; 32]>,
    },
    /// `to` owns the name from now on; the old owner keeps no rights. Its records whose
    /// fingerprints are in `keep` stay valid, as with a removal.
    Transfer {
        /// The new owner.
        to: PeerId,
        /// Fingerprints of the old owner's records that stay.
        keep: Vec<[u8; 32]>,
    },
}

/// A signed statement by a name's owner: entry `seq` (from 1) of the name's log. Entry `n`
/// is valid only if signed by the owner that entries `1..n` leave in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStatement {
    /// The package name.
    pub name: String,
    /// Its position in the name's log (1 for the first statement).
    pub seq: u64,
    /// What it does.
    pub action: NameAction,
    /// When the owner's node signed it (stamped by that node, informational).
    pub issued_at: DateTime<Utc>,
    /// Who signed (must be the owner at `seq - 1`).
    pub signer: PeerId,
    /// Ed25519 signature over [`NameStatement::signed_bytes`].
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct StatementBody<'a> {
    name: &'a str,
    seq: u64,
    action: &'a NameAction,
    issued_at: &'a DateTime<Utc>,
    signer: &'a PeerId,
}

impl NameStatement {
    /// Signs entry `seq` of `name`'s log as `keypair`'s.
    pub fn sign(
        name: String,
        seq: u64,
        action: NameAction,
        issued_at: DateTime<Utc>,
        keypair: &Keypair,
    ) -> Self {
        let mut s = Self {
            name,
            seq,
            action,
            issued_at,
            signer: keypair.peer_id(),
            signature: Vec::new(),
        };
        s.signature = keypair.sign(&s.signed_bytes()).to_vec();
        s
    }

    /// The bytes the signature covers: a domain tag and the postcard encoding of every
    /// field but the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let body = StatementBody {
            name: &self.name,
            seq: self.seq,
            action: &self.action,
            issued_at: &self.issued_at,
            signer: &self.signer,
        };
        let mut out = STATEMENT_DOMAIN.to_vec();
        out.extend_from_slice(&postcard::to_stdvec(&body).unwrap_or_default());
        out
    }

    /// Checks the fields, the date against `now` and the signature (not who may sign:
    /// that depends on the log before it).
    pub fn verify(&self, now: DateTime<Utc>) -> Result<(), RegistryError> {
        let bad = |why: String| Err(RegistryError::InvalidStatement(why));
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return bad("name out of bounds".into());
        }
        if self.seq == 0 || self.seq > MAX_NAME_LOG as u64 {
            return bad(format!("sequence {} out of 1..={MAX_NAME_LOG}", self.seq));
        }
        if self.issued_at > now + MAX_CLOCK_SKEW {
            return bad(format!(
                "statement {} of {} is dated in the future",
                self.seq, self.name
            ));
        }
        let kept = match &self.action {
            NameAction::AddMaintainer(_) => 0,
            NameAction::RemoveMaintainer { keep, .. } | NameAction::Transfer { keep, .. } => {
                keep.len()
            }
        };
        if kept > MAX_KEPT {
            return bad(format!("keeps {kept} records, more than {MAX_KEPT}"));
        }
        let key = self
            .signer
            .public_key()
            .map_err(|e| RegistryError::InvalidStatement(format!("signer key: {e}")))?;
        if !key.verify(&self.signed_bytes(), &self.signature) {
            return bad(format!(
                "statement {} of {} is not signed by {}",
                self.seq, self.name, self.signer
            ));
        }
        Ok(())
    }

    /// A digest identifying this exact statement.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.signed_bytes());
        h.update(&self.signature);
        h.finalize().into()
    }

    /// The encoding stored and sent.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a statement of at most [`MAX_STATEMENT_SIZE`] bytes (unverified).
    pub fn decode(bytes: &[u8]) -> Result<Self, RegistryError> {
        crate::wire::decode_bounded(bytes, MAX_STATEMENT_SIZE, "name statement")
            .map_err(|e| RegistryError::InvalidStatement(format!("undecodable statement: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str) -> Package {
        let mut p = Package::new(name.into(), version.into());
        p.description = "a test package".into();
        p
    }

    #[test]
    fn verify_with_takes_only_the_publishers_key() {
        let (k, other) = (Keypair::generate(), Keypair::generate());
        let now = Utc::now();
        let s = SignedPackage::sign(package("web-kit", "1.0.0"), false, &k);
        s.verify_with(now, &k.public()).unwrap();
        // Signed by `other` but naming `k` as its publisher: `other`'s key does not pass it.
        let mut forged = SignedPackage::sign(package("web-kit", "1.0.0"), false, &other);
        forged.publisher = k.peer_id();
        assert!(forged.verify_with(now, &other.public()).is_err());
        assert!(forged.verify(now).is_err());
    }

    #[test]
    fn signatures_verify_and_tampering_breaks_them() {
        let k = Keypair::generate();
        let now = Utc::now();
        let s = SignedPackage::sign(package("web-kit", "1.0.0"), false, &k);
        s.verify(now).unwrap();
        assert_eq!(SignedPackage::decode(&s.encode()).unwrap(), s);
        // Downloads are not signed: counting them does not break the record.
        let mut counted = s.clone();
        counted.package.downloads = 42;
        counted.verify(now).unwrap();
        for tamper in [
            |s: &mut SignedPackage| s.package.description.push('!'),
            |s: &mut SignedPackage| s.deprecated = true,
            |s: &mut SignedPackage| s.publisher = Keypair::generate().peer_id(),
            |s: &mut SignedPackage| s.signature[0] ^= 1,
        ] {
            let mut t = s.clone();
            tamper(&mut t);
            assert!(matches!(
                t.verify(now),
                Err(RegistryError::InvalidSignature { .. })
            ));
        }
    }

    #[test]
    fn invalid_packages_are_refused() {
        let k = Keypair::generate();
        let now = Utc::now();
        for (name, version) in [
            ("Web", "1.0.0"),
            ("-x", "1.0.0"),
            ("ok", "1.0"),
            ("", "1.0.0"),
        ] {
            let s = SignedPackage::sign(package(name, version), false, &k);
            assert!(
                matches!(s.verify(now), Err(RegistryError::InvalidPackage(_))),
                "{name}@{version}"
            );
        }
        let mut future = package("later", "1.0.0");
        future.created_at = now + ChronoDuration::hours(1);
        future.updated_at = future.created_at;
        let s = SignedPackage::sign(future, false, &k);
        assert!(s.verify(now).is_err());
    }
}
