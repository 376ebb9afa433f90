//! The local catalogue of package metadata, and search over it.
//!
//! Every full node keeps the catalogue of package *metadata* (not content). [`Catalogue`] is a
//! sans-IO data structure: it holds package versions keyed by id (`name@version`), answers
//! [`Catalogue::search`] from in-memory indexes, and summarises itself as digests for
//! anti-entropy ([`Catalogue::digest`], [`Catalogue::bucket_digests`],
//! [`Catalogue::ids_in_bucket`]).
//!
//! # Versions
//!
//! Versions of a name are ordered by semver ([`semver::Version`]'s order: pre-releases below
//! the release of the same numbers). Versions that are not valid semver sort below every valid
//! one, by string. [`Catalogue::latest`] is the highest.
//!
//! # Digests
//!
//! Each record has a 32-byte fingerprint: the caller's (e.g. the signed record's hash, with
//! [`Catalogue::insert_with_fingerprint`]) or SHA-256 of the package's postcard encoding
//! ([`Catalogue::insert`]). [`Catalogue::digest`] is SHA-256 over every record in id order, each
//! as `u32 BE length of id ‖ id ‖ fingerprint`. A record's bucket is the first 8 bytes of
//! SHA-256(id), big-endian, modulo the bucket count; [`Catalogue::bucket_digests`] is the same
//! digest per bucket. Two nodes compare bucket digests and exchange only the ids of differing
//! buckets ([`Catalogue::ids_in_bucket`]).
//!
//! # Search
//!
//! [`Catalogue::search`] returns at most `limit` results, **one per package name**: the latest
//! version of the name that passes the filters (category equal ignoring case; every query tag
//! among the version's tags, ignoring case; `downloads >= min_downloads`). Results are sorted
//! by score (descending), then by name.
//!
//! Without keywords, every name passing the filters is a result, with
//! `score = ln(1 + downloads)`: most downloaded first.
//!
//! With keywords, the query is tokenized (lower-case, split on non-alphanumeric characters,
//! duplicates dropped, at most [`MAX_QUERY_TERMS`] terms). Names, `metadata.keywords` + `tags`
//! and descriptions are tokenized the same way into three fields. The score of the chosen
//! version `d` of a name is
//!
//! ```text
//! score(d) = exact(d) + Σ_t [ name_t(d) + keyword_t(d) + description_t(d) ] + 0.03·ln(1 + downloads)
//! ```
//!
//! where, with BM25 (`k1 = 1.2`, `b = 0.75`) of term `t` in field `f`:
//!
//! ```text
//! bm25_f(t, d) = idf'(t) · tf·(k1 + 1) / (tf + k1·(1 − b + b·len_f(d) / avglen_f))
//! idf(t)       = ln(1 + (N − df + 0.5) / (df + 0.5))        N: versions, df: versions with t
//! idf'(t)      = idf(t) / idf(df = 1)                        normalised to (0, 1]
//! ```
//!
//! so that each `bm25_f` lies in `[0, 2.2)`, and:
//!
//! - `exact(d)`: the strongest of **1000** if the keywords (lower-cased, joined by `-`) equal
//!   the name; **950** if the name's tokens joined by `-` equal the query's terms joined by `-`
//!   (`serde yaml` and `serde-yaml` find `serde_yaml`); with several keywords, **900** if one
//!   keyword equals the name and **850** if its tokens do; else 0.
//! - `name_t(d)`: the strongest of
//!   - `t` is a token of the name: **12 + 4·bm25_name**;
//!   - the name starts with `t` (`t` of 2 characters or more): **11**;
//!   - the name contains `t` (3 characters or more): **9**;
//!   - typo: `t` has no exact name-token match anywhere in the catalogue, and is within
//!     Damerau-Levenshtein distance 1 (`t` of 4 characters or more) or 2 (8 or more) of a
//!     token of the name: distance 1 **9.5** (10 if that token is the whole name), distance 2
//!     **8** (8.5 for the whole name); all ×0.25 if `t` occurs in some other field of the
//!     catalogue (a real word, likely not a misspelt name);
//! - `keyword_t(d)`: `t` among the keyword/tag tokens: **3 + 2·bm25_keywords**;
//! - `description_t(d)`: **bm25_description**.
//!
//! Per term, so at equal idf: an exact name (≥ 850) beats everything else (≤ 16 terms ×
//! 30.4); a name match (≥ 8) beats a keyword or tag (< 7.4), which beats a description (< 2.2).
//! The popularity term is below 0.03·ln(1 + 10¹²) ≈ 0.83: it orders ties and weak matches.
//! Versions whose text score (all but popularity) is 0 are not results. Popularity uses the
//! downloads of the version returned.
//!
//! # Indexes
//!
//! Maintained on every insert and remove, so a search touches only candidates:
//! an inverted index (term → postings with per-field term frequencies), per-version field
//! lengths, a trigram index over names (substring and prefix candidates), the sorted name list
//! (prefixes of 2 characters), and a symmetric-deletion index over distinct name tokens (all
//! deletions of up to 1 character for tokens of 3+ characters, up to 2 for 6+) for typos.
//! What a search reads per candidate (name, category id, tag bitmask, field lengths,
//! downloads, latest version per name) sits in compact arrays apart from the packages, so
//! filters and scoring of thousands of candidates stay in cache.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::signed::SignedPackage;
use super::types::{Package, Query, SearchResult};

/// Query terms beyond this many are ignored (keeps `exact` dominant, see the module docs).
pub const MAX_QUERY_TERMS: usize = 16;

const K1: f64 = 1.2;
const B: f64 = 0.75;
const EXACT: f64 = 1000.0;
const EXACT_NORMALISED: f64 = 950.0;
const EXACT_KEYWORD: f64 = 900.0;
const EXACT_KEYWORD_NORMALISED: f64 = 850.0;
const NAME_TOKEN: f64 = 12.0;
const NAME_TOKEN_BM25: f64 = 4.0;
const NAME_PREFIX: f64 = 11.0;
const NAME_SUBSTRING: f64 = 9.0;
const TYPO1_WHOLE: f64 = 10.0;
const TYPO1_TOKEN: f64 = 9.5;
const TYPO2_WHOLE: f64 = 8.5;
const TYPO2_TOKEN: f64 = 8.0;
const TYPO_KNOWN_WORD: f64 = 0.25;
const KEYWORD: f64 = 3.0;
const KEYWORD_BM25: f64 = 2.0;
const DESCRIPTION_BM25: f64 = 1.0;
const POPULARITY: f64 = 0.03;

const NONE: u32 = u32::MAX;
const F_NAME: usize = 0;
const F_KEYWORDS: usize = 1;
const F_DESCRIPTION: usize = 2;

/// What [`Catalogue::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InsertOutcome {
    /// The first version of a name.
    NewName,
    /// Another version of a known name.
    NewVersion,
    /// A known version whose record (fingerprint or contents) changed.
    Replaced,
    /// A known version, identical record.
    Unchanged,
}

/// Version order key: invalid semver below valid, by string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionKey {
    Invalid(String),
    Valid(semver::Version),
}

impl VersionKey {
    fn of(v: &str) -> Self {
        match semver::Version::parse(v) {
            Ok(v) => Self::Valid(v),
            Err(_) => Self::Invalid(v.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Posting {
    doc: u32,
    tf: [u16; 3],
}

/// One version. What else is known of it is derived, not stored twice: its terms (the keys
/// of its postings) by tokenizing the package again ([`fields`]), as [`Catalogue::remove`]
/// does; its name slot, field lengths and tags below [`TAG_MASK_BITS`] are in its [`Hot`]
/// entry; its version order key is parsed from `package.version` when versions are sorted.
#[derive(Debug)]
struct Doc<E> {
    entry: E,
    fingerprint: [u8; 32],
    /// Ids of its (lower-cased) tags from [`TAG_MASK_BITS`] on, ascending: empty (no
    /// allocation) unless the catalogue knows more tags than the mask holds.
    extra_tags: Box<[u32]>,
    bucket_hash: u64,
}

impl<E: CatalogueEntry> Doc<E> {
    fn package(&self) -> &Package {
        self.entry.package()
    }
}

/// What the catalogue keeps of a version: the package itself, or a record that holds it
/// and that its owner shares with the catalogue (so that a full node keeps one copy).
pub trait CatalogueEntry {
    /// The package this entry describes.
    fn package(&self) -> &Package;
}

impl CatalogueEntry for Package {
    fn package(&self) -> &Package {
        self
    }
}

impl CatalogueEntry for std::sync::Arc<SignedPackage> {
    fn package(&self) -> &Package {
        &self.package
    }
}

/// Tags with ids below this are in [`Hot::tag_mask`].
const TAG_MASK_BITS: u32 = 64;

/// Name-level scores of one search, dense by name slot.
struct NameScores {
    score: Vec<f64>,
    touched: Vec<u32>,
}

impl NameScores {
    /// Applies `f` to name `n`'s score (an unknown slot, never the case, is ignored).
    fn update(&mut self, n: u32, f: impl FnOnce(&mut f64)) {
        if let Some(e) = self.score.get_mut(n as usize) {
            if *e == 0.0 {
                self.touched.push(n);
            }
            f(e);
        }
    }

    fn raise(&mut self, n: u32, w: f64) {
        self.update(n, |e| {
            if *e < w {
                *e = w;
            }
        });
    }

    fn add(&mut self, n: u32, w: f64) {
        self.update(n, |e| *e += w);
    }

    fn get(&self, n: u32) -> f64 {
        self.score.get(n as usize).copied().unwrap_or(0.0)
    }
}

/// The per-version data a search reads for every candidate, kept compact and apart from the
/// (large) package so that scanning thousands of candidates stays in cache.
#[derive(Clone, Copy, Debug, Default)]
struct Hot {
    name_id: u32,
    category: u32,
    lens: [u32; 3],
    downloads: u64,
    /// Bit `i` set: the version has the tag whose id is `i` (ids below 64 only).
    tag_mask: u64,
}

#[derive(Debug)]
struct NameEntry {
    /// The name, lower-cased (what prefix and substring matches read). The name itself is
    /// every version's `package.name`, and its normalised form is derived from it.
    lname: Box<str>,
    /// Ids of its distinct tokens (slots of `token_slots`).
    tokens: Box<[u32]>,
    /// Doc slots, ascending by version.
    versions: Vec<u32>,
}

#[derive(Debug)]
struct TokenEntry {
    text: Box<str>,
    names: Vec<u32>,
}

/// The local catalogue of package versions, with search and anti-entropy digests.
/// See the [module docs](self) for the scoring.
///
/// `E` is what it keeps per version: a [`Package`] by default, or a shared record (see
/// [`CatalogueEntry`]).
#[derive(Debug)]
pub struct Catalogue<E = Package> {
    docs: Vec<Option<Doc<E>>>,
    hot: Vec<Hot>,
    free_docs: Vec<u32>,
    categories: HashMap<String, u32>,
    tag_ids: HashMap<String, u32>,
    ids: BTreeMap<String, u32>,
    names: BTreeMap<String, u32>,
    name_slots: Vec<Option<NameEntry>>,
    /// Per name slot: its latest version's doc slot (`NONE` for a free slot).
    name_latest: Vec<u32>,
    free_names: Vec<u32>,
    by_norm: HashMap<String, Vec<u32>>,
    postings: HashMap<Box<str>, Vec<Posting>>,
    len_sums: [u64; 3],
    trigrams: HashMap<[u8; 3], Vec<u32>>,
    tokens: HashMap<Box<str>, u32>,
    token_slots: Vec<Option<TokenEntry>>,
    free_tokens: Vec<u32>,
    deletions: Deletions,
}

impl<E> Default for Catalogue<E> {
    fn default() -> Self {
        Catalogue {
            docs: Vec::new(),
            hot: Vec::new(),
            free_docs: Vec::new(),
            categories: HashMap::new(),
            tag_ids: HashMap::new(),
            ids: BTreeMap::new(),
            names: BTreeMap::new(),
            name_slots: Vec::new(),
            name_latest: Vec::new(),
            free_names: Vec::new(),
            by_norm: HashMap::new(),
            postings: HashMap::new(),
            len_sums: [0; 3],
            trigrams: HashMap::new(),
            tokens: HashMap::new(),
            token_slots: Vec::new(),
            free_tokens: Vec::new(),
            deletions: Deletions::default(),
        }
    }
}

/// The symmetric-deletion index: deletion hash → the name tokens (ids) having it. Most
/// hashes belong to one token, so the map holds that token's id inline; a hash shared by
/// several tokens holds [`Deletions::SHARED`] there and its list in `shared`. (A map of
/// `Vec`s costs a 24-byte `Vec` per entry and an allocation per hash: ~80 hashes per long
/// token.) Keys are [`DeletionKey`]s, so that an entry takes 12 bytes rather than 16.
#[derive(Debug, Default)]
struct Deletions {
    one: HashMap<DeletionKey, u32>,
    shared: HashMap<DeletionKey, Vec<u32>>,
}

/// A 64-bit deletion hash stored as two `u32`s: aligned to 4, so that with a `u32` value
/// a map entry is 12 bytes instead of the 16 (8 of key, 4 of value, 4 of padding) of a
/// `u64` key. It hashes exactly as the `u64` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeletionKey([u32; 2]);

impl From<u64> for DeletionKey {
    fn from(h: u64) -> Self {
        Self([(h >> 32) as u32, h as u32])
    }
}

impl std::hash::Hash for DeletionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [hi, lo] = self.0;
        state.write_u64((u64::from(hi) << 32) | u64::from(lo));
    }
}

impl Deletions {
    /// The marker of a shared hash in `one` (token ids are slot indices, far below it).
    const SHARED: u32 = u32::MAX;

    /// Token `tid` has deletion hash `h`.
    fn add(&mut self, h: u64, tid: u32) {
        let h = DeletionKey::from(h);
        match self.one.get_mut(&h) {
            None => {
                self.one.insert(h, tid);
            }
            Some(&mut Self::SHARED) => self.shared.entry(h).or_default().push(tid),
            Some(first) => {
                let first = std::mem::replace(first, Self::SHARED);
                self.shared.insert(h, vec![first, tid]);
            }
        }
    }

    /// Token `tid` no longer has deletion hash `h`.
    fn remove(&mut self, h: u64, tid: u32) {
        let h = DeletionKey::from(h);
        match self.one.get(&h).copied() {
            Some(Self::SHARED) => {
                let Some(v) = self.shared.get_mut(&h) else {
                    // A marker without a list (never the case): nothing left under it.
                    self.one.remove(&h);
                    return;
                };
                remove_from(v, &tid);
                match v.as_slice() {
                    [] => {
                        self.shared.remove(&h);
                        self.one.remove(&h);
                    }
                    [last] => {
                        let last = *last;
                        self.shared.remove(&h);
                        self.one.insert(h, last);
                    }
                    _ => {}
                }
            }
            Some(t) if t == tid => {
                self.one.remove(&h);
            }
            _ => {}
        }
    }

    /// The tokens having deletion hash `h`.
    fn get(&self, h: u64) -> &[u32] {
        let h = DeletionKey::from(h);
        match self.one.get(&h) {
            None => &[],
            Some(&Self::SHARED) => self.shared.get(&h).map_or(&[][..], Vec::as_slice),
            Some(t) => std::slice::from_ref(t),
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.one.is_empty() && self.shared.is_empty()
    }
}

/// Lower-case tokens: maximal runs of alphanumeric characters.
pub fn tokenize(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The searchable fields of a package, tokenized: name, keywords + tags, description.
fn fields(package: &Package) -> [Vec<String>; 3] {
    [
        tokenize(&package.name),
        package
            .metadata
            .keywords
            .iter()
            .chain(&package.tags)
            .flat_map(|s| tokenize(s))
            .collect(),
        tokenize(&package.description),
    ]
}

/// Term frequencies per field of a package, by term.
fn term_frequencies(fields: [Vec<String>; 3]) -> HashMap<String, [u16; 3]> {
    let mut tfs: HashMap<String, [u16; 3]> = HashMap::new();
    for (f, toks) in fields.into_iter().enumerate() {
        for t in toks {
            let e = tfs.entry(t).or_default();
            e[f] = e[f].saturating_add(1);
        }
    }
    tfs
}

fn normalise(s: &str) -> String {
    tokenize(s).join("-")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn bucket_hash(id: &str) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = sha256(id.as_bytes());
    u64::from_be_bytes([a, b, c, d, e, f, g, h])
}

fn fnv(chars: impl Iterator<Item = char>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in chars {
        h ^= c as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hashes of `s` and of every string made by deleting up to `depth` (≤ 2) characters.
fn deletion_hashes(s: &str, depth: usize) -> Vec<u64> {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let mut out = vec![fnv(chars.iter().copied())];
    if depth >= 1 {
        for i in 0..n {
            out.push(fnv(chars
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != i)
                .map(|(_, &c)| c)));
        }
    }
    if depth >= 2 {
        for i in 0..n {
            for j in i + 1..n {
                out.push(fnv(chars
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != i && k != j)
                    .map(|(_, &c)| c)));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn token_depth(len: usize) -> usize {
    match len {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

fn query_typo_distance(len: usize) -> usize {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

fn trigrams_of(s: &str) -> Vec<[u8; 3]> {
    let mut v: Vec<[u8; 3]> = s
        .as_bytes()
        .windows(3)
        .map(|w| [w[0], w[1], w[2]])
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn bm25(idf: f64, tf: u16, len: u32, avg: f64) -> f64 {
    if tf == 0 {
        return 0.0;
    }
    let tf = f64::from(tf);
    let norm = if avg > 0.0 {
        1.0 - B + B * f64::from(len) / avg
    } else {
        1.0
    };
    idf * tf * (K1 + 1.0) / (tf + K1 * norm)
}

fn remove_from<T: PartialEq>(v: &mut Vec<T>, x: &T) {
    if let Some(i) = v.iter().position(|y| y == x) {
        v.swap_remove(i);
    }
}

impl Catalogue {
    /// An empty catalogue of packages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a version with the fingerprint SHA-256(postcard(package)). See
    /// [`Catalogue::insert_with_fingerprint`].
    pub fn insert(&mut self, package: Package) -> InsertOutcome {
        let mut package = package;
        package.id = package.canonical_id();
        // Encoding into a `Vec` cannot fail for a `Package`; should it ever, the fingerprint
        // still follows every field (through their debug form).
        let fp = match postcard::to_allocvec(&package) {
            Ok(bytes) => sha256(&bytes),
            Err(_) => sha256(format!("{package:?}").as_bytes()),
        };
        self.insert_with_fingerprint(package, fp)
    }

    /// Inserts (or replaces) the version `name@version` of `package`, whose record has this
    /// fingerprint. `package.id` is set to its canonical `name@version`.
    pub fn insert_with_fingerprint(
        &mut self,
        mut package: Package,
        fingerprint: [u8; 32],
    ) -> InsertOutcome {
        package.id = package.canonical_id();
        self.insert_entry(package, fingerprint)
    }

    /// The digest of a bucket that holds nothing (what [`Catalogue::bucket_digests`] gives
    /// an empty bucket): a peer reporting it for a bucket has nothing there for us.
    pub fn empty_bucket_digest() -> [u8; 32] {
        Sha256::new().finalize().into()
    }

    /// The bucket (of `buckets`) that holds `id`. `buckets` must be non-zero.
    pub fn bucket_of(id: &str, buckets: u16) -> u16 {
        (bucket_hash(id) % u64::from(buckets.max(1))) as u16
    }
}

impl<E: CatalogueEntry> Catalogue<E> {
    /// Package versions held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no version is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Distinct package names held.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Inserts (or replaces) a version under its package's id (`name@version`, which the
    /// caller keeps canonical, see [`Package::canonical_id`]), whose record has this
    /// fingerprint.
    pub fn insert_entry(&mut self, entry: E, fingerprint: [u8; 32]) -> InsertOutcome {
        let package = entry.package();
        let mut outcome = if self.names.contains_key(&package.name) {
            InsertOutcome::NewVersion
        } else {
            InsertOutcome::NewName
        };
        if let Some(&slot) = self.ids.get(&package.id) {
            if self
                .doc(slot)
                .is_some_and(|d| d.fingerprint == fingerprint && d.package() == package)
            {
                return InsertOutcome::Unchanged;
            }
            let id = package.id.clone();
            self.remove(&id);
            outcome = InsertOutcome::Replaced;
        }
        self.add_doc(entry, fingerprint);
        outcome
    }

    fn add_doc(&mut self, entry: E, fingerprint: [u8; 32]) {
        let package = entry.package();
        let name_id = self.name_id_or_insert(&package.name);
        let slot = match self.free_docs.pop() {
            Some(s) => s,
            None => {
                self.docs.push(None);
                self.hot.push(Hot::default());
                (self.docs.len() - 1) as u32
            }
        };
        let fields = fields(package);
        let lens = [
            fields[0].len() as u32,
            fields[1].len() as u32,
            fields[2].len() as u32,
        ];
        for (t, tf) in term_frequencies(fields) {
            let p = Posting { doc: slot, tf };
            match self.postings.get_mut(t.as_str()) {
                Some(list) => list.push(p),
                None => {
                    self.postings.insert(t.into_boxed_str(), vec![p]);
                }
            }
        }
        for (f, l) in lens.iter().enumerate() {
            self.len_sums[f] += u64::from(*l);
        }
        let mut tags: Vec<String> = package.tags.iter().map(|t| t.to_lowercase()).collect();
        tags.sort_unstable();
        tags.dedup();
        let next_category = self.categories.len() as u32;
        let category = *self
            .categories
            .entry(package.category.to_lowercase())
            .or_insert(next_category);
        let mut tag_mask = 0u64;
        let mut extra_tags = Vec::new();
        for t in tags {
            let next = self.tag_ids.len() as u32;
            let id = *self.tag_ids.entry(t).or_insert(next);
            if id < TAG_MASK_BITS {
                tag_mask |= 1 << id;
            } else {
                extra_tags.push(id);
            }
        }
        extra_tags.sort_unstable();
        if let Some(h) = self.hot.get_mut(slot as usize) {
            *h = Hot {
                name_id,
                category,
                lens,
                downloads: package.downloads,
                tag_mask,
            };
        }
        let bucket_hash = bucket_hash(&package.id);
        let doc = Doc {
            fingerprint,
            extra_tags: extra_tags.into_boxed_slice(),
            bucket_hash,
            entry,
        };
        self.ids.insert(doc.package().id.clone(), slot);
        // `name_id_or_insert` has just made the name's slot live; versions are ordered by
        // (version, id), and a slot without a doc (none is ever listed) would sort first.
        let version = VersionKey::of(&doc.package().version);
        let key = (&version, &doc.package().id);
        let docs = &self.docs;
        if let Some(entry) = self
            .name_slots
            .get_mut(name_id as usize)
            .and_then(Option::as_mut)
        {
            let pos = entry.versions.partition_point(|&s| {
                docs.get(s as usize)
                    .and_then(Option::as_ref)
                    .is_none_or(|d| (&VersionKey::of(&d.package().version), &d.package().id) < key)
            });
            entry.versions.insert(pos, slot);
            if let (Some(&last), Some(latest)) = (
                entry.versions.last(),
                self.name_latest.get_mut(name_id as usize),
            ) {
                *latest = last;
            }
        }
        if let Some(d) = self.docs.get_mut(slot as usize) {
            *d = Some(doc);
        }
    }

    fn name_id_or_insert(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = match self.free_names.pop() {
            Some(s) => s,
            None => {
                self.name_slots.push(None);
                self.name_latest.push(NONE);
                (self.name_slots.len() - 1) as u32
            }
        };
        let lname = name.to_lowercase();
        let mut tokens = tokenize(name);
        tokens.sort_unstable();
        tokens.dedup();
        self.by_norm.entry(normalise(name)).or_default().push(id);
        for tri in trigrams_of(&lname) {
            self.trigrams.entry(tri).or_default().push(id);
        }
        let tokens: Box<[u32]> = tokens.iter().map(|t| self.add_name_token(t, id)).collect();
        self.names.insert(name.to_string(), id);
        if let Some(e) = self.name_slots.get_mut(id as usize) {
            *e = Some(NameEntry {
                lname: lname.into_boxed_str(),
                tokens,
                versions: Vec::new(),
            });
        }
        id
    }

    /// Adds `name_id` to the names having `token`; returns the token's id.
    fn add_name_token(&mut self, token: &str, name_id: u32) -> u32 {
        // A token id whose slot is not live (never the case) is replaced by a new one below.
        if let Some(&tid) = self.tokens.get(token) {
            if let Some(entry) = self
                .token_slots
                .get_mut(tid as usize)
                .and_then(Option::as_mut)
            {
                entry.names.push(name_id);
                return tid;
            }
        }
        let tid = match self.free_tokens.pop() {
            Some(s) => s,
            None => {
                self.token_slots.push(None);
                (self.token_slots.len() - 1) as u32
            }
        };
        let text: Box<str> = token.into();
        let depth = token_depth(token.chars().count());
        if depth > 0 {
            for h in deletion_hashes(token, depth) {
                self.deletions.add(h, tid);
            }
        }
        self.tokens.insert(text.clone(), tid);
        if let Some(e) = self.token_slots.get_mut(tid as usize) {
            *e = Some(TokenEntry {
                text,
                names: vec![name_id],
            });
        }
        tid
    }

    /// Removes `name_id` from the names having token `tid`; the token goes when none has it.
    fn remove_name_token(&mut self, tid: u32, name_id: u32) {
        let Some(slot) = self.token_slots.get_mut(tid as usize) else {
            return;
        };
        let Some(entry) = slot.as_mut() else {
            // A stale id (never the case): forget it, without freeing a slot twice.
            self.tokens.retain(|_, t| *t != tid);
            return;
        };
        remove_from(&mut entry.names, &name_id);
        if !entry.names.is_empty() {
            return;
        }
        let Some(TokenEntry { text, .. }) = slot.take() else {
            return;
        };
        let depth = token_depth(text.chars().count());
        if depth > 0 {
            for h in deletion_hashes(&text, depth) {
                self.deletions.remove(h, tid);
            }
        }
        self.tokens.remove(&text);
        self.free_tokens.push(tid);
    }

    /// Removes name slot `name_id`, whose name is `name`, from every name index.
    fn remove_name(&mut self, name_id: u32, name: &str) {
        let Some(entry) = self
            .name_slots
            .get_mut(name_id as usize)
            .and_then(Option::take)
        else {
            return;
        };
        if let Some(latest) = self.name_latest.get_mut(name_id as usize) {
            *latest = NONE;
        }
        self.names.remove(name);
        let norm = normalise(name);
        if let Some(v) = self.by_norm.get_mut(&norm) {
            remove_from(v, &name_id);
            if v.is_empty() {
                self.by_norm.remove(&norm);
            }
        }
        for tri in trigrams_of(&entry.lname) {
            if let Some(v) = self.trigrams.get_mut(&tri) {
                remove_from(v, &name_id);
                if v.is_empty() {
                    self.trigrams.remove(&tri);
                }
            }
        }
        for &t in &entry.tokens {
            self.remove_name_token(t, name_id);
        }
        self.free_names.push(name_id);
    }

    /// Removes the version with this id (`name@version`), returning it.
    pub fn remove(&mut self, id: &str) -> Option<E> {
        let slot = self.ids.remove(id)?;
        let doc = self.docs.get_mut(slot as usize).and_then(Option::take)?;
        self.free_docs.push(slot);
        // A live doc's hot entry is its own (written with it, left as is until reused).
        let hot = self.hot.get(slot as usize).copied().unwrap_or_default();
        for t in term_frequencies(fields(doc.package())).keys() {
            if let Some(p) = self.postings.get_mut(t.as_str()) {
                if let Some(i) = p.iter().position(|p| p.doc == slot) {
                    p.swap_remove(i);
                }
                if p.is_empty() {
                    self.postings.remove(t.as_str());
                }
            }
        }
        for (sum, l) in self.len_sums.iter_mut().zip(hot.lens) {
            *sum = sum.saturating_sub(u64::from(l));
        }
        let n = hot.name_id;
        let last = self
            .name_slots
            .get_mut(n as usize)
            .and_then(Option::as_mut)
            .map(|entry| {
                if let Some(i) = entry.versions.iter().position(|&s| s == slot) {
                    entry.versions.remove(i);
                }
                entry.versions.last().copied()
            });
        match (last, self.name_latest.get_mut(n as usize)) {
            (Some(Some(l)), Some(latest)) => *latest = l,
            (Some(None), _) => self.remove_name(n, &doc.package().name),
            _ => {}
        }
        Some(doc.entry)
    }

    /// The doc in `slot`. Every slot listed by `ids`, a name's `versions`, `name_latest` or
    /// the postings is live: `None` only for a free or unknown slot, which callers skip.
    fn doc(&self, slot: u32) -> Option<&Doc<E>> {
        self.docs.get(slot as usize)?.as_ref()
    }

    /// The name in slot `n` (`None` for a free or unknown slot, see [`Catalogue::doc`]).
    fn name_entry(&self, n: u32) -> Option<&NameEntry> {
        self.name_slots.get(n as usize)?.as_ref()
    }

    /// The version with this id (`name@version`).
    pub fn get(&self, id: &str) -> Option<&Package> {
        self.ids
            .get(id)
            .and_then(|&s| self.doc(s))
            .map(|d| d.package())
    }

    /// The entry kept for the version with this id.
    pub fn get_entry(&self, id: &str) -> Option<&E> {
        self.ids
            .get(id)
            .and_then(|&s| self.doc(s))
            .map(|d| &d.entry)
    }

    /// The fingerprint of the record with this id.
    pub fn fingerprint(&self, id: &str) -> Option<[u8; 32]> {
        self.ids
            .get(id)
            .and_then(|&s| self.doc(s))
            .map(|d| d.fingerprint)
    }

    /// Every version of `name`, lowest first (semver order; invalid versions first, by
    /// string).
    pub fn versions(&self, name: &str) -> Vec<&Package> {
        self.names
            .get(name)
            .and_then(|&n| self.name_entry(n))
            .map(|e| {
                e.versions
                    .iter()
                    .filter_map(|&s| self.doc(s))
                    .map(|d| d.package())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The highest version of `name`.
    pub fn latest(&self, name: &str) -> Option<&Package> {
        let &n = self.names.get(name)?;
        let entry = self.name_entry(n)?;
        entry
            .versions
            .iter()
            .rev()
            .find_map(|&s| self.doc(s))
            .map(|d| d.package())
    }

    /// Every version, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Package> + '_ {
        self.ids
            .values()
            .filter_map(|&s| self.doc(s))
            .map(|d| d.package())
    }

    /// SHA-256 over every record (id and fingerprint) in id order.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (id, &s) in &self.ids {
            if let Some(d) = self.doc(s) {
                Self::feed(&mut h, id, &d.fingerprint);
            }
        }
        h.finalize().into()
    }

    fn feed(h: &mut Sha256, id: &str, fp: &[u8; 32]) {
        h.update((id.len() as u32).to_be_bytes());
        h.update(id.as_bytes());
        h.update(fp);
    }

    /// [`Catalogue::digest`] of each bucket's records. Empty if `buckets` is 0.
    pub fn bucket_digests(&self, buckets: u16) -> Vec<[u8; 32]> {
        if buckets == 0 {
            return Vec::new();
        }
        let mut hs = vec![Sha256::new(); usize::from(buckets)];
        for (id, &s) in &self.ids {
            let Some(d) = self.doc(s) else { continue };
            let b = (d.bucket_hash % u64::from(buckets)) as usize;
            if let Some(h) = hs.get_mut(b) {
                Self::feed(h, id, &d.fingerprint);
            }
        }
        hs.into_iter().map(|h| h.finalize().into()).collect()
    }

    /// Ids of the records in `bucket` (of `buckets`), in id order.
    pub fn ids_in_bucket(&self, bucket: u16, buckets: u16) -> Vec<String> {
        if buckets == 0 {
            return Vec::new();
        }
        self.ids
            .iter()
            .filter(|&(_, &s)| {
                self.doc(s)
                    .is_some_and(|d| d.bucket_hash % u64::from(buckets) == u64::from(bucket))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Searches the catalogue (see the [module docs](self) for filters and scoring).
    /// `peer_counts` gives the known providers of a result's package.
    pub fn search(&self, q: &Query, peer_counts: impl Fn(&Package) -> usize) -> Vec<SearchResult> {
        if q.limit == 0 || self.ids.is_empty() {
            return Vec::new();
        }
        let category = match &q.category {
            None => None,
            Some(c) => match self.categories.get(&c.to_lowercase()) {
                Some(&id) => Some(id),
                None => return Vec::new(),
            },
        };
        let mut tags: Vec<String> = q.tags.iter().map(|t| t.to_lowercase()).collect();
        tags.sort_unstable();
        tags.dedup();
        // Tags by interned id: a mask check for ids below TAG_MASK_BITS, the version's
        // sorted `extra_tags` for the others.
        let mut tag_query_mask = 0u64;
        let mut extra_query_tags = Vec::new();
        for t in &tags {
            match self.tag_ids.get(t) {
                None => return Vec::new(),
                Some(&id) if id < TAG_MASK_BITS => tag_query_mask |= 1 << id,
                Some(&id) => extra_query_tags.push(id),
            }
        }
        let min_downloads = q.min_downloads.unwrap_or(0);
        let unfiltered = category.is_none() && tags.is_empty() && min_downloads == 0;
        let passes = |s: u32| {
            let Some(h) = self.hot.get(s as usize) else {
                return false;
            };
            h.downloads >= min_downloads
                && category.is_none_or(|c| c == h.category)
                && (h.tag_mask & tag_query_mask) == tag_query_mask
                && (extra_query_tags.is_empty()
                    || self.doc(s).is_some_and(|d| {
                        extra_query_tags
                            .iter()
                            .all(|id| d.extra_tags.binary_search(id).is_ok())
                    }))
        };
        let pick = |name_id: u32| -> Option<u32> {
            let latest = self
                .name_latest
                .get(name_id as usize)
                .copied()
                .unwrap_or(NONE);
            if latest == NONE || unfiltered || passes(latest) {
                return (latest != NONE).then_some(latest);
            }
            let entry = self.name_entry(name_id)?;
            entry
                .versions
                .iter()
                .rev()
                .skip(1)
                .copied()
                .find(|&s| passes(s))
        };

        let mut terms: Vec<String> = Vec::new();
        for t in q.keywords.iter().flat_map(|k| tokenize(k)) {
            if !terms.contains(&t) {
                terms.push(t);
            }
        }
        terms.truncate(MAX_QUERY_TERMS);

        // (score, name_id, doc slot)
        let mut hits: Vec<(f64, u32, u32)> = Vec::new();
        // Without keywords, rank by downloads (as f64: exact below 2^53) and take the logarithm
        // of the few results only.
        let by_downloads = terms.is_empty();
        if by_downloads {
            for n in 0..self.name_latest.len() as u32 {
                if let Some(h) = pick(n).and_then(|s| Some((self.hot.get(s as usize)?, s))) {
                    hits.push((h.0.downloads as f64, n, h.1));
                }
            }
        } else {
            self.score_keywords(q, &terms, &pick, &mut hits);
        }

        let name_of = |s: u32| self.doc(s).map(|d| d.package().name.as_str());
        let cmp = |a: &(f64, u32, u32), b: &(f64, u32, u32)| {
            b.0.total_cmp(&a.0)
                .then_with(|| name_of(a.2).cmp(&name_of(b.2)))
        };
        if hits.len() > q.limit {
            hits.select_nth_unstable_by(q.limit - 1, cmp);
            hits.truncate(q.limit);
        }
        hits.sort_unstable_by(cmp);
        hits.into_iter()
            .filter_map(|(score, _, s)| {
                let score = if by_downloads { score.ln_1p() } else { score };
                let package = self.doc(s)?.package().clone();
                let peer_count = peer_counts(&package);
                Some(SearchResult {
                    package,
                    score,
                    peer_count,
                })
            })
            .collect()
    }

    fn score_keywords(
        &self,
        q: &Query,
        terms: &[String],
        pick: &dyn Fn(u32) -> Option<u32>,
        hits: &mut Vec<(f64, u32, u32)>,
    ) {
        let n_docs = self.ids.len() as f64;
        let idf = |df: usize| (1.0 + (n_docs - df as f64 + 0.5) / (df as f64 + 0.5)).ln();
        let idf_max = idf(1);
        let avg = self.len_sums.map(|s| s as f64 / n_docs);

        // Per-version text score from the inverted index (name tokens, keywords, description).
        let mut doc_score = vec![0.0f64; self.docs.len()];
        let mut touched: Vec<u32> = Vec::new();
        // Per-name structural score (exact, prefix, substring, typo).
        let mut name_score = NameScores {
            score: vec![0.0; self.name_slots.len()],
            touched: Vec::new(),
        };

        // Exact names.
        let exact = |ids: &[u32], w: f64, name_score: &mut NameScores| {
            for &n in ids {
                name_score.raise(n, w);
            }
        };
        let by_norm = |k: &str| self.by_norm.get(k).map_or(&[][..], Vec::as_slice);
        let by_name = |k: &str| self.names.get(k).map_or(&[][..], std::slice::from_ref);
        let whole: Vec<String> = q.keywords.iter().map(|k| k.trim().to_lowercase()).collect();
        exact(by_name(&whole.join("-")), EXACT, &mut name_score);
        exact(by_norm(&terms.join("-")), EXACT_NORMALISED, &mut name_score);
        if whole.len() > 1 {
            for k in &whole {
                exact(by_name(k), EXACT_KEYWORD, &mut name_score);
                exact(
                    by_norm(&normalise(k)),
                    EXACT_KEYWORD_NORMALISED,
                    &mut name_score,
                );
            }
        }

        let mut best: HashMap<u32, f64> = HashMap::new();
        for t in terms {
            let postings = self.postings.get(t.as_str());
            if let Some(ps) = postings {
                let w = idf(ps.len()) / idf_max;
                for p in ps {
                    let Some(d) = self.hot.get(p.doc as usize) else {
                        continue;
                    };
                    let mut s = 0.0;
                    if p.tf[F_NAME] > 0 {
                        s += NAME_TOKEN
                            + NAME_TOKEN_BM25 * bm25(w, p.tf[F_NAME], d.lens[F_NAME], avg[F_NAME]);
                    }
                    if p.tf[F_KEYWORDS] > 0 {
                        s += KEYWORD
                            + KEYWORD_BM25
                                * bm25(w, p.tf[F_KEYWORDS], d.lens[F_KEYWORDS], avg[F_KEYWORDS]);
                    }
                    if p.tf[F_DESCRIPTION] > 0 {
                        s += DESCRIPTION_BM25
                            * bm25(
                                w,
                                p.tf[F_DESCRIPTION],
                                d.lens[F_DESCRIPTION],
                                avg[F_DESCRIPTION],
                            );
                    }
                    if let Some(acc) = doc_score.get_mut(p.doc as usize) {
                        if *acc == 0.0 {
                            touched.push(p.doc);
                        }
                        *acc += s;
                    }
                }
            }

            // Name-level matches for names that do not have `t` as a token.
            best.clear();
            let offer = |n: u32, w: f64, best: &mut HashMap<u32, f64>| {
                let e = best.entry(n).or_insert(0.0);
                if *e < w {
                    *e = w;
                }
            };
            let tlen = t.chars().count();
            if tlen >= 3 {
                let tris = trigrams_of(t);
                let smallest = tris
                    .iter()
                    .map(|tri| self.trigrams.get(tri).map_or(&[][..], |v| v.as_slice()))
                    .min_by_key(|v| v.len())
                    .unwrap_or(&[]);
                for &n in smallest {
                    let Some(e) = self.name_entry(n) else {
                        continue;
                    };
                    if e.lname.starts_with(t.as_str()) {
                        offer(n, NAME_PREFIX, &mut best);
                    } else if e.lname.contains(t.as_str()) {
                        offer(n, NAME_SUBSTRING, &mut best);
                    }
                }
            } else if tlen == 2 {
                for (name, &n) in self.names.range(t.clone()..) {
                    if !name.starts_with(t.as_str()) {
                        break;
                    }
                    offer(n, NAME_PREFIX, &mut best);
                }
            }
            let maxd = query_typo_distance(tlen);
            if maxd > 0 && !self.tokens.contains_key(t.as_str()) {
                let discount = if postings.is_some() {
                    TYPO_KNOWN_WORD
                } else {
                    1.0
                };
                let mut seen: Vec<u32> = Vec::new();
                for h in deletion_hashes(t, maxd) {
                    for &tid in self.deletions.get(h) {
                        if seen.contains(&tid) {
                            continue;
                        }
                        seen.push(tid);
                        let Some(tok) = self.token_slots.get(tid as usize).and_then(Option::as_ref)
                        else {
                            continue;
                        };
                        let d = strsim::damerau_levenshtein(t, &tok.text);
                        if d == 0 || d > maxd {
                            continue;
                        }
                        for &n in &tok.names {
                            let Some(e) = self.name_entry(n) else {
                                continue;
                            };
                            let whole = e.tokens.len() == 1;
                            let w = match (d, whole) {
                                (1, true) => TYPO1_WHOLE,
                                (1, false) => TYPO1_TOKEN,
                                (_, true) => TYPO2_WHOLE,
                                (_, false) => TYPO2_TOKEN,
                            };
                            offer(n, w * discount, &mut best);
                        }
                    }
                }
            }
            // Names with `t` among their tokens have their (stronger) token score already.
            let tid = self.tokens.get(t.as_str()).copied();
            for (&n, &w) in &best {
                let Some(e) = self.name_entry(n) else {
                    continue;
                };
                if !tid.is_some_and(|tid| e.tokens.contains(&tid)) {
                    name_score.add(n, w);
                }
            }
        }

        let mut seen = vec![false; self.name_slots.len()];
        let mut consider = |n: u32, hits: &mut Vec<(f64, u32, u32)>| {
            match seen.get_mut(n as usize) {
                Some(seen) if !*seen => *seen = true,
                _ => return,
            }
            let Some(s) = pick(n) else { return };
            let (Some(d), Some(h)) = (doc_score.get(s as usize), self.hot.get(s as usize)) else {
                return;
            };
            let text = d + name_score.get(n);
            if text > 0.0 {
                let pop = POPULARITY * (h.downloads as f64).ln_1p();
                hits.push((text + pop, n, s));
            }
        };
        for &d in &touched {
            if let Some(h) = self.hot.get(d as usize) {
                consider(h.name_id, hits);
            }
        }
        for &n in &name_score.touched {
            consider(n, hits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> Package {
        Package::new(name.to_string(), version.to_string())
    }

    fn rich(name: &str, desc: &str, cat: &str, tags: &[&str], kw: &[&str], dl: u64) -> Package {
        let mut p = pkg(name, "1.0.0");
        p.description = desc.to_string();
        p.category = cat.to_string();
        p.tags = tags.iter().map(|s| s.to_string()).collect();
        p.metadata.keywords = kw.iter().map(|s| s.to_string()).collect();
        p.downloads = dl;
        p
    }

    fn names(r: &[SearchResult]) -> Vec<&str> {
        r.iter().map(|r| r.package.name.as_str()).collect()
    }

    /// Every index is empty once every version is removed, whatever the order, with terms,
    /// tokens and deletion hashes shared among versions and names.
    #[test]
    fn removing_every_version_empties_every_index() {
        let words = [
            "Async", "http", "tokio", "tokoi", "serde", "json", "json-rpc", "x",
        ];
        let mut c = Catalogue::new();
        let mut ids = Vec::new();
        for i in 0..60usize {
            let w = |k: usize| words[(i * 7 + k * 3) % words.len()];
            let name = format!("{}-{}{}", w(0).to_lowercase(), w(1), i % 9);
            let mut p = rich(
                &name,
                &format!("{} {} {} {}", w(2), w(3), w(2), w(4)),
                w(5),
                &[w(6), w(1)],
                &[w(7), w(0)],
                i as u64,
            );
            p.version = format!("0.{}.0", i % 3);
            ids.push(p.canonical_id());
            c.insert(p);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(c.len(), ids.len());
        // A fixed shuffle.
        for i in (1..ids.len()).rev() {
            ids.swap(i, i * 31 % (i + 1));
        }
        for id in &ids {
            assert!(c.remove(id).is_some(), "{id}");
        }
        assert!(c.is_empty() && c.names.is_empty() && c.by_norm.is_empty());
        assert!(c.postings.is_empty() && c.tokens.is_empty() && c.trigrams.is_empty());
        assert!(c.deletions.is_empty());
        assert_eq!(c.len_sums, [0, 0, 0]);
    }

    #[test]
    fn deletion_index_shares_and_unshares_hashes() {
        let mut d = Deletions::default();
        d.add(1, 7);
        d.add(2, 7);
        assert_eq!((d.get(1), d.get(3)), (&[7][..], &[][..]));
        d.add(1, 8);
        d.add(1, 9);
        let mut shared = d.get(1).to_vec();
        shared.sort_unstable();
        assert_eq!(shared, [7, 8, 9]);
        d.remove(1, 8);
        d.remove(1, 8);
        d.remove(1, 7);
        assert_eq!(d.get(1), &[9]);
        assert!(d.shared.is_empty(), "one token left: back inline");
        d.remove(1, 3);
        assert_eq!(d.get(1), &[9]);
        d.remove(1, 9);
        d.remove(2, 7);
        assert!(d.is_empty());
        // Keys far apart in their high and low halves stay distinct.
        d.add(1 << 32, 4);
        d.add(1, 5);
        assert_eq!((d.get(1 << 32), d.get(1)), (&[4][..], &[5][..]));
        assert_eq!(std::mem::size_of::<(DeletionKey, u32)>(), 12);
    }

    #[test]
    fn an_empty_bucket_has_the_empty_digest_and_a_filled_one_does_not() {
        let mut c = Catalogue::new();
        let empty = Catalogue::empty_bucket_digest();
        assert!(c.bucket_digests(16).iter().all(|d| *d == empty));
        c.insert(pkg("a", "1.0.0"));
        let b = usize::from(Catalogue::bucket_of("a@1.0.0", 16));
        let digests = c.bucket_digests(16);
        assert_ne!(digests[b], empty);
        assert_eq!(digests.iter().filter(|d| **d == empty).count(), 15);
    }

    #[test]
    fn insert_outcomes_and_versions() {
        let mut c = Catalogue::new();
        let first = pkg("a", "1.0.0");
        assert_eq!(c.insert(first.clone()), InsertOutcome::NewName);
        assert_eq!(c.insert(first), InsertOutcome::Unchanged);
        assert_eq!(c.insert(pkg("a", "1.10.0")), InsertOutcome::NewVersion);
        assert_eq!(c.insert(pkg("a", "1.2.0")), InsertOutcome::NewVersion);
        assert_eq!(c.insert(pkg("a", "2.0.0-rc.1")), InsertOutcome::NewVersion);
        assert_eq!(c.insert(pkg("a", "garbage")), InsertOutcome::NewVersion);
        let mut changed = c.get("a@1.2.0").unwrap().clone();
        changed.description = "new".into();
        assert_eq!(c.insert(changed), InsertOutcome::Replaced);
        assert_eq!(c.get("a@1.2.0").unwrap().description, "new");
        let vs: Vec<&str> = c.versions("a").iter().map(|p| p.version.as_str()).collect();
        assert_eq!(vs, ["garbage", "1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1"]);
        assert_eq!(c.latest("a").unwrap().version, "2.0.0-rc.1");
        c.insert(pkg("a", "2.0.0"));
        assert_eq!(c.latest("a").unwrap().version, "2.0.0");
        assert_eq!(c.len(), 6);
        assert_eq!(c.name_count(), 1);
        assert!(c.latest("b").is_none());
        assert!(c.versions("b").is_empty());
    }

    #[test]
    fn id_is_canonical() {
        let mut c = Catalogue::new();
        let mut p = pkg("x", "1.0.0");
        p.id = "stale".into();
        c.insert(p);
        assert_eq!(c.get("x@1.0.0").unwrap().id, "x@1.0.0");
        assert!(c.get("stale").is_none());
    }

    #[test]
    fn remove_clears_indexes() {
        let mut c = Catalogue::new();
        c.insert(rich(
            "tokio",
            "async runtime",
            "net",
            &["async"],
            &["io"],
            10,
        ));
        c.insert(rich("serde", "serialization", "enc", &[], &[], 10));
        assert_eq!(c.remove("tokio@1.0.0").unwrap().name, "tokio");
        assert!(c.remove("tokio@1.0.0").is_none());
        assert_eq!(c.len(), 1);
        assert!(
            c.search(&Query::new(vec!["tokio".into()]), |_| 0)
                .is_empty()
        );
        assert!(
            c.search(&Query::new(vec!["async".into()]), |_| 0)
                .is_empty()
        );
        assert!(
            c.search(&Query::new(vec!["tokoi".into()]), |_| 0)
                .is_empty()
        );
        assert!(!c.postings.contains_key("async"));
        assert!(!c.tokens.contains_key("tokio"));
        // Slots are reused.
        c.insert(rich(
            "tokio",
            "async runtime",
            "net",
            &["async"],
            &["io"],
            10,
        ));
        assert_eq!(c.docs.len(), 2);
        assert_eq!(
            names(&c.search(&Query::new(vec!["tokoi".into()]), |_| 0)),
            ["tokio"]
        );
        c.remove("tokio@1.0.0");
        c.remove("serde@1.0.0");
        assert!(c.is_empty());
        assert!(c.deletions.is_empty() && c.trigrams.is_empty() && c.postings.is_empty());
        assert_eq!(c.len_sums, [0, 0, 0]);
    }

    #[test]
    fn digests_track_content_and_buckets() {
        let mut a = Catalogue::new();
        let mut b = Catalogue::new();
        assert_eq!(a.digest(), b.digest());
        for i in 0..50 {
            a.insert_with_fingerprint(pkg(&format!("p{i}"), "1.0.0"), [i as u8; 32]);
        }
        for i in (0..50).rev() {
            b.insert_with_fingerprint(pkg(&format!("p{i}"), "1.0.0"), [i as u8; 32]);
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.bucket_digests(16), b.bucket_digests(16));
        b.insert_with_fingerprint(pkg("p7", "1.0.0"), [99; 32]);
        assert_ne!(a.digest(), b.digest());
        let (da, db) = (a.bucket_digests(16), b.bucket_digests(16));
        let differing: Vec<u16> = (0..16u16)
            .filter(|&i| da[i as usize] != db[i as usize])
            .collect();
        assert_eq!(differing, [Catalogue::bucket_of("p7@1.0.0", 16)]);
        assert!(
            a.ids_in_bucket(differing[0], 16)
                .contains(&"p7@1.0.0".to_string())
        );
        let total: usize = (0..16).map(|i| a.ids_in_bucket(i, 16).len()).sum();
        assert_eq!(total, 50);
        assert!(a.bucket_digests(0).is_empty());
        assert_eq!(a.fingerprint("p7@1.0.0"), Some([7; 32]));
    }

    #[test]
    fn insert_fingerprint_is_postcard_hash() {
        let mut c = Catalogue::new();
        let p = pkg("x", "1.0.0");
        let fp = sha256(&postcard::to_allocvec(&p).unwrap());
        c.insert(p);
        assert_eq!(c.fingerprint("x@1.0.0"), Some(fp));
    }

    fn small() -> Catalogue {
        let mut c = Catalogue::new();
        c.insert(rich(
            "serde",
            "A serialization framework",
            "encoding",
            &["serde"],
            &["serialization"],
            1000,
        ));
        c.insert(rich(
            "serde-json",
            "JSON support for serde",
            "encoding",
            &["json"],
            &["serde", "json"],
            5000,
        ));
        c.insert(rich(
            "serde_yaml",
            "YAML support for serde",
            "encoding",
            &["yaml"],
            &["serde"],
            800,
        ));
        c.insert(rich("serdex", "Extras for serde", "encoding", &[], &[], 10));
        c.insert(rich(
            "tokio",
            "An async runtime",
            "async",
            &["async", "net"],
            &["runtime"],
            9000,
        ));
        c.insert(rich(
            "tokio-util",
            "Utilities for tokio",
            "async",
            &["async"],
            &[],
            4000,
        ));
        c.insert(rich(
            "simdjson",
            "Fast parser",
            "encoding",
            &["json"],
            &[],
            300,
        ));
        c.insert(rich("mytool", "works with tokio", "cli", &[], &[], 100_000));
        c
    }

    #[test]
    fn exact_name_first() {
        let c = small();
        let r = c.search(&Query::new(vec!["serde".into()]), |_| 3);
        assert_eq!(r[0].package.name, "serde");
        assert!(r.iter().all(|r| r.peer_count == 3 && r.score > 0.0));
        assert!(r.windows(2).all(|w| w[0].score >= w[1].score));
        let r = c.search(&Query::new(vec!["tokio".into()]), |_| 0);
        assert_eq!(names(&r), ["tokio", "tokio-util", "mytool"]);
    }

    #[test]
    fn normalised_exact_and_joined() {
        let c = small();
        let r = c.search(&Query::new(vec!["serde".into(), "yaml".into()]), |_| 0);
        assert_eq!(r[0].package.name, "serde_yaml");
        let r = c.search(&Query::new(vec!["serde-yaml".into()]), |_| 0);
        assert_eq!(r[0].package.name, "serde_yaml");
    }

    #[test]
    fn prefix_substring_and_typos() {
        let c = small();
        let r = c.search(&Query::new(vec!["tok".into()]), |_| 0);
        assert_eq!(names(&r), ["tokio", "tokio-util"]);
        let r = c.search(&Query::new(vec!["json".into()]), |_| 0);
        assert_eq!(names(&r), ["serde-json", "simdjson"]);
        let r = c.search(&Query::new(vec!["tokoi".into()]), |_| 0);
        assert_eq!(names(&r), ["tokio", "tokio-util"]);
        let r = c.search(&Query::new(vec!["sered".into()]), |_| 0);
        assert_eq!(r[0].package.name, "serde");
        // Too short for typos.
        assert!(c.search(&Query::new(vec!["tko".into()]), |_| 0).is_empty());
    }

    #[test]
    fn filters() {
        let c = small();
        let q = Query::new(vec!["serde".into()]).with_category("ENCODING".into());
        assert!(
            c.search(&q, |_| 0)
                .iter()
                .all(|r| r.package.category == "encoding")
        );
        let q = Query::default().with_tags(vec!["Async".into(), "net".into()]);
        assert_eq!(names(&c.search(&q, |_| 0)), ["tokio"]);
        let q = Query::default().with_min_downloads(4000);
        assert_eq!(
            names(&c.search(&q, |_| 0)),
            ["mytool", "tokio", "serde-json", "tokio-util"]
        );
        let q = Query::default().with_limit(2);
        assert_eq!(names(&c.search(&q, |_| 0)), ["mytool", "tokio"]);
        assert!(c.search(&Query::default().with_limit(0), |_| 0).is_empty());
    }

    #[test]
    fn latest_passing_version_per_name() {
        let mut c = Catalogue::new();
        let mut old = rich("lib", "old", "x", &[], &[], 500);
        old.version = "1.0.0".into();
        let mut new = rich("lib", "new", "x", &[], &[], 5);
        new.version = "2.0.0".into();
        c.insert(old);
        c.insert(new);
        let r = c.search(&Query::new(vec!["lib".into()]), |_| 0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].package.version, "2.0.0");
        let r = c.search(
            &Query::new(vec!["lib".into()]).with_min_downloads(100),
            |_| 0,
        );
        assert_eq!(r[0].package.version, "1.0.0");
    }

    #[test]
    fn stale_slots_are_skipped_not_panicked_on() {
        // The tables never disagree, but if they did, reads skip the stale entry and writes
        // carry on.
        let mut c = small();
        let slot = c.ids["tokio@1.0.0"];
        let name = c.names["serde"];
        c.docs[slot as usize] = None;
        c.name_slots[name as usize] = None;
        let tok = c.tokens["json"];
        c.token_slots[tok as usize] = None;
        assert!(c.get("tokio@1.0.0").is_none());
        assert!(c.latest("tokio").is_none());
        assert!(c.versions("serde").is_empty());
        assert_eq!(c.iter().count(), c.len() - 1);
        for q in ["tokio", "serde", "tokoi", "sered", "json", "ser", "to", ""] {
            let kw = if q.is_empty() { vec![] } else { vec![q.into()] };
            let r = c.search(&Query::new(kw), |_| 0);
            assert!(r.iter().all(|r| r.package.name != "tokio"), "{q}");
        }
        let _ = (c.digest(), c.bucket_digests(8), c.ids_in_bucket(0, 8));
        assert!(c.remove("tokio@1.0.0").is_none());
        assert!(c.remove("serde@1.0.0").is_some());
        c.insert(rich("tokio", "again", "async", &[], &[], 1));
        c.insert(rich("json", "a json", "encoding", &["json"], &[], 1));
        assert_eq!(c.get("tokio@1.0.0").unwrap().description, "again");
        assert_eq!(
            names(&c.search(&Query::new(vec!["tokio".into()]), |_| 0))[0],
            "tokio"
        );
        assert_eq!(
            names(&c.search(&Query::new(vec!["json".into()]), |_| 0))[0],
            "json"
        );
    }

    #[test]
    fn tag_filter_beyond_the_mask() {
        let mut c = Catalogue::new();
        for i in 0..70 {
            let t = format!("t{i}");
            c.insert(rich(&format!("p{i}"), "d", "x", &[&t, "common"], &[], i));
        }
        let q = Query::default().with_tags(vec!["T69".into(), "common".into()]);
        assert_eq!(names(&c.search(&q, |_| 0)), ["p69"]);
        let q = Query::default().with_tags(vec!["t3".into(), "COMMON".into()]);
        assert_eq!(names(&c.search(&q, |_| 0)), ["p3"]);
        let q = Query::default().with_tags(vec!["t3".into(), "t4".into()]);
        assert!(c.search(&q, |_| 0).is_empty());
        let q = Query::default().with_tags(vec!["unknown".into()]);
        assert!(c.search(&q, |_| 0).is_empty());
        let q = Query::default().with_category("nope".into());
        assert!(c.search(&q, |_| 0).is_empty());
    }
}
