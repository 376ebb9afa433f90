//! Signed package records and the rules every node applies to them: package validity, the
//! publisher's signature, name ownership and version immutability.
//!
//! A [`SignedPackage`] is a [`Package`] (with `downloads` left out of what is signed: it is
//! a network statistic, not a publisher's statement) plus a `deprecated` flag, the
//! publisher's PeerId and an Ed25519 signature over a domain-separated encoding.
//!
//! # Ownership and immutability (the same decision on every node)
//!
//! - A name belongs to the publisher of its **first claim**: the signed record of that name
//!   with the earliest `created_at`, ties broken by the smaller publisher PeerId (bytes).
//!   Every node orders claims the same way, so concurrent first claims resolve identically
//!   wherever they meet, whatever order they arrive in. A claim dated more than
//!   [`MAX_CLOCK_SKEW`] in the future is refused, so a claim cannot be post-dated to lose a
//!   race on purpose; the known limit of the rule is the opposite case, a key that back-dates
//!   a claim for a name it did not publish first (it would win against claims it post-dates).
//!   Publishers therefore claim a name only after checking the network does not know it.
//! - Records of a name by any other key than its owner are refused with
//!   [`RegistryError::NameOwned`]. When an earlier claim displaces the known owner, that
//!   owner's records of the name are dropped.
//! - A version, once published, keeps its content: a record of the same `name@version` with
//!   a different `content_hash` or `size` is refused ([`RegistryError::VersionExists`]). The
//!   owner may re-sign a version with a newer `updated_at` to change its metadata or to
//!   deprecate it; older or identical re-signings change nothing.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::RegistryError;
use super::types::{Package, UpdateType};
use crate::identity::PEER_ID_BYTES_LEN;
use crate::identity::{Keypair, PeerId};

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
        let key = self
            .publisher
            .public_key()
            .map_err(|e| RegistryError::InvalidSignature {
                id: id.clone(),
                reason: format!("publisher key: {e}"),
            })?;
        if !key.verify(&self.signed_bytes(), &self.signature) {
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

    /// The claim order key: earlier `created_at` first, then the smaller publisher.
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

/// What accepting a record changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Store it and tell subscribers (`update` says what kind of change). `displaced`: the
    /// previous owner of the name, whose records of it must be dropped.
    Accept {
        /// The kind of change.
        update: UpdateType,
        /// The displaced owner, when this record's claim is earlier than the known one.
        displaced: Option<PeerId>,
    },
    /// Already known (same or older): nothing to do.
    Unchanged,
}

/// Decides what to do with a verified record, given what this node knows: `claim`, the
/// current first claim of the name (if any record of it is known), and `existing`, the
/// stored record of the same `name@version` (if any). Errors name the reason.
pub fn admit(
    claim: Option<&SignedPackage>,
    existing: Option<&SignedPackage>,
    new: &SignedPackage,
) -> Result<Admission, RegistryError> {
    let name = &new.package.name;
    let mut displaced = None;
    if let Some(owner) = claim {
        if owner.publisher != new.publisher {
            if new.claim_key() < owner.claim_key() {
                // An earlier claim: it owns the name, on every node.
                displaced = Some(owner.publisher);
            } else {
                return Err(RegistryError::NameOwned {
                    name: name.clone(),
                    owner: owner.publisher.to_string(),
                    publisher: new.publisher.to_string(),
                });
            }
        }
    }
    let Some(old) = existing.filter(|_| displaced.is_none()) else {
        let update = if claim.is_none() || displaced.is_some() {
            UpdateType::NewPackage
        } else {
            UpdateType::NewVersion
        };
        return Ok(Admission::Accept { update, displaced });
    };
    if old.package.content_hash != new.package.content_hash || old.package.size != new.package.size
    {
        return Err(RegistryError::VersionExists {
            id: new.package.id.clone(),
        });
    }
    if new.package.updated_at <= old.package.updated_at || new.fingerprint() == old.fingerprint() {
        return Ok(Admission::Unchanged);
    }
    let update = if new.deprecated && !old.deprecated {
        UpdateType::Deprecated
    } else {
        UpdateType::MetadataUpdate
    };
    Ok(Admission::Accept {
        update,
        displaced: None,
    })
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

    #[test]
    fn first_claims_own_names_and_versions_keep_their_content() {
        let (alice, bob) = (Keypair::generate(), Keypair::generate());
        let t0 = Utc::now() - ChronoDuration::minutes(10);
        let at = |name: &str, v: &str, mins: i64| {
            let mut p = package(name, v);
            p.created_at = t0 + ChronoDuration::minutes(mins);
            p.updated_at = p.created_at;
            p
        };
        let a1 = SignedPackage::sign(at("kit", "1.0.0", 0), false, &alice);
        assert_eq!(
            admit(None, None, &a1).unwrap(),
            Admission::Accept {
                update: UpdateType::NewPackage,
                displaced: None
            }
        );
        // Bob's later claim of the name is refused.
        let b1 = SignedPackage::sign(at("kit", "2.0.0", 1), false, &bob);
        assert!(matches!(
            admit(Some(&a1), None, &b1),
            Err(RegistryError::NameOwned { .. })
        ));
        // Alice's next version is a new version.
        let a2 = SignedPackage::sign(at("kit", "1.1.0", 2), false, &alice);
        assert!(matches!(
            admit(Some(&a1), None, &a2),
            Ok(Admission::Accept {
                update: UpdateType::NewVersion,
                ..
            })
        ));
        // An earlier claim by Bob displaces Alice, whatever order they arrive in.
        let b0 = SignedPackage::sign(at("kit", "0.1.0", -1), false, &bob);
        assert_eq!(
            admit(Some(&a1), None, &b0).unwrap(),
            Admission::Accept {
                update: UpdateType::NewPackage,
                displaced: Some(alice.peer_id())
            }
        );
        assert!(matches!(
            admit(Some(&b0), None, &a1),
            Err(RegistryError::NameOwned { .. })
        ));
        // The same version with other content is refused; newer metadata is an update;
        // the same record again changes nothing.
        let mut other = at("kit", "1.0.0", 0);
        other.content_hash = Some("ab".repeat(32));
        let changed = SignedPackage::sign(other, false, &alice);
        assert!(matches!(
            admit(Some(&a1), Some(&a1), &changed),
            Err(RegistryError::VersionExists { .. })
        ));
        assert_eq!(
            admit(Some(&a1), Some(&a1), &a1).unwrap(),
            Admission::Unchanged
        );
        let mut newer = a1.package.clone();
        newer.updated_at += ChronoDuration::minutes(5);
        let deprecated = SignedPackage::sign(newer, true, &alice);
        assert!(matches!(
            admit(Some(&a1), Some(&a1), &deprecated),
            Ok(Admission::Accept {
                update: UpdateType::Deprecated,
                ..
            })
        ));
    }
}
