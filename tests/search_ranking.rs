//! Search ranking over a fixed fixture of ~250 packages: the expected orders for exact names,
//! prefixes, misspellings, filters, limits and popularity. See `src/registry/index.rs` for the
//! scoring.

use ggen_p2p::registry::{Catalogue, Package, Query, SearchResult};

const CATEGORIES: &[(&str, &[&str], &[&str])] = &[
    (
        "web",
        &[
            "route",
            "html",
            "cookie",
            "session",
            "template",
            "rest",
            "graphql",
            "websocket",
            "cors",
            "proxy",
        ],
        &["http", "async", "server", "client"],
    ),
    (
        "cli",
        &[
            "arg", "term", "color", "progress", "prompt", "shell", "tui", "table", "spinner", "cmd",
        ],
        &["terminal", "cli", "ansi"],
    ),
    (
        "database",
        &[
            "sql", "kv", "orm", "migrate", "pool", "index", "btree", "wal", "query", "schema",
        ],
        &["sql", "storage", "async"],
    ),
    (
        "ml",
        &[
            "tensor", "neural", "gradient", "model", "dataset", "vector", "embed", "cluster",
            "regress", "infer",
        ],
        &["ai", "math", "gpu"],
    ),
    (
        "crypto",
        &[
            "cipher", "hash", "sign", "keygen", "hmac", "aead", "curve", "random", "vault", "seal",
        ],
        &["security", "no-std", "crypto"],
    ),
    (
        "async",
        &[
            "future", "stream", "channel", "executor", "timer", "spawn", "select", "mutex", "pin",
            "waker",
        ],
        &["async", "concurrency", "no-std"],
    ),
    (
        "encoding",
        &[
            "base", "hex", "varint", "proto", "msgpack", "cbor", "toml", "xml", "csv", "bincode",
        ],
        &["serialization", "parser", "no-std"],
    ),
];

const SUFFIXES: &[&str] = &[
    "core", "utils", "macros", "sys", "derive", "ext", "lite", "kit",
];
const ADJECTIVES: &[&str] = &["Fast", "Small", "Safe", "Simple", "Portable", "Minimal"];

#[allow(clippy::too_many_arguments)]
fn package(
    name: &str,
    version: &str,
    description: &str,
    category: &str,
    tags: &[&str],
    keywords: &[&str],
    downloads: u64,
) -> Package {
    let mut p = Package::new(name.to_string(), version.to_string());
    p.description = description.to_string();
    p.category = category.to_string();
    p.tags = tags.iter().map(|s| s.to_string()).collect();
    p.metadata.keywords = keywords.iter().map(|s| s.to_string()).collect();
    p.downloads = downloads;
    p
}

/// Hand-written packages the assertions are about.
fn anchors() -> Vec<Package> {
    vec![
        package(
            "serde",
            "1.0.200",
            "A generic serialization framework",
            "encoding",
            &["serialization", "no-std"],
            &["serialization", "serde"],
            50_000_000,
        ),
        package(
            "serde-json",
            "1.0.120",
            "A JSON serialization file format for serde",
            "encoding",
            &["json", "serialization"],
            &["json", "serde"],
            80_000_000,
        ),
        package(
            "serde_yaml",
            "0.9.34",
            "YAML data format for serde",
            "encoding",
            &["yaml"],
            &["yaml", "serde"],
            10_000_000,
        ),
        package(
            "serdex",
            "0.1.0",
            "Experimental extras on top of serde",
            "encoding",
            &[],
            &["serde"],
            1_000,
        ),
        package(
            "simdjson",
            "0.3.0",
            "SIMD accelerated JSON parser",
            "encoding",
            &["json", "parser"],
            &["parser"],
            200_000,
        ),
        package(
            "tokio",
            "0.9.0",
            "An event-driven, non-blocking I/O platform",
            "async",
            &["async", "io", "net"],
            &["runtime", "async"],
            30_000_000,
        ),
        package(
            "tokio",
            "1.2.0",
            "An event-driven, non-blocking I/O platform",
            "async",
            &["async", "io", "net"],
            &["runtime", "async"],
            40_000_000,
        ),
        package(
            "tokio",
            "1.10.0",
            "An event-driven, non-blocking I/O platform",
            "async",
            &["async", "io", "net"],
            &["runtime", "async"],
            60_000_000,
        ),
        package(
            "tokio-util",
            "0.7.11",
            "Additional utilities for working with tokio",
            "async",
            &["async", "io"],
            &["async"],
            20_000_000,
        ),
        package(
            "tokio-stream",
            "0.1.15",
            "Utilities to work with Stream and tokio",
            "async",
            &["async", "stream"],
            &["async"],
            5_000_000,
        ),
        package(
            "async-runtime-bench",
            "0.2.0",
            "Benchmarks comparing the tokio runtime with others",
            "async",
            &["async", "benchmark"],
            &["tokio"],
            90_000_000,
        ),
        package(
            "axum",
            "0.7.5",
            "Web framework that focuses on ergonomics and modularity",
            "web",
            &["http", "async", "server"],
            &["web", "framework", "http"],
            25_000_000,
        ),
        package(
            "actix-web",
            "4.8.0",
            "Actix Web is a powerful, pragmatic, and extremely fast web framework for Rust",
            "web",
            &["http", "async", "server"],
            &["web", "framework", "actix"],
            15_000_000,
        ),
        package(
            "web-framework",
            "0.1.0",
            "A tiny toy",
            "web",
            &["http"],
            &[],
            500,
        ),
        package(
            "hyper",
            "1.4.0",
            "A protective and efficient HTTP library for all",
            "web",
            &["http", "async", "client", "server"],
            &["http", "hyper"],
            70_000_000,
        ),
        package(
            "reqwest",
            "0.12.5",
            "higher level HTTP client library",
            "web",
            &["http", "async", "client"],
            &["http", "client", "request"],
            45_000_000,
        ),
        package(
            "clap",
            "4.5.9",
            "A simple to use, efficient, and full-featured Command Line Argument Parser",
            "cli",
            &["cli", "terminal"],
            &["argument", "cli", "parser"],
            35_000_000,
        ),
        package(
            "clap-complete",
            "4.5.8",
            "Generate shell completion scripts for your clap::Command",
            "cli",
            &["cli", "terminal"],
            &["clap", "completion"],
            36_000_000,
        ),
        package(
            "sqlx",
            "0.8.0",
            "The Rust SQL Toolkit, async, pure Rust, compile-time checked queries",
            "database",
            &["sql", "async", "storage"],
            &["database", "postgres", "mysql"],
            12_000_000,
        ),
        package(
            "postgres",
            "0.19.8",
            "A native, synchronous PostgreSQL client",
            "database",
            &["sql", "storage"],
            &["database", "postgresql"],
            6_000_000,
        ),
        package(
            "rusqlite",
            "0.31.0",
            "Ergonomic wrapper for SQLite",
            "database",
            &["sql", "storage"],
            &["sqlite", "database"],
            9_000_000,
        ),
        package(
            "diesel",
            "2.2.1",
            "A safe, extensible ORM and Query Builder for PostgreSQL, SQLite, and MySQL",
            "database",
            &["sql", "orm"],
            &["orm", "database", "sql"],
            8_000_000,
        ),
        package(
            "redis",
            "0.25.4",
            "Redis driver for Rust",
            "database",
            &["storage", "async"],
            &["redis", "database"],
            7_000_000,
        ),
        package(
            "candle",
            "0.6.0",
            "Minimalist ML framework",
            "ml",
            &["ai", "gpu"],
            &["machine-learning", "tensor"],
            1_500_000,
        ),
        package(
            "tokenizers",
            "0.19.1",
            "Fast state-of-the-art tokenizers for research and production",
            "ml",
            &["ai", "nlp"],
            &["nlp", "tokenizer"],
            3_000_000,
        ),
        package(
            "ndarray",
            "0.15.6",
            "An n-dimensional array for general elements and for numerics",
            "ml",
            &["math"],
            &["array", "matrix"],
            11_000_000,
        ),
        package(
            "rustls",
            "0.23.12",
            "Modern TLS library written in Rust",
            "crypto",
            &["security", "tls"],
            &["tls", "ssl"],
            65_000_000,
        ),
        package(
            "ring",
            "0.17.8",
            "Safe, fast, small crypto using Rust",
            "crypto",
            &["security", "crypto"],
            &["crypto", "cryptography"],
            75_000_000,
        ),
        package(
            "ed25519-dalek",
            "2.1.1",
            "Fast and efficient ed25519 EdDSA key generations, signing, and verification in pure Rust",
            "crypto",
            &["security", "crypto"],
            &["cryptography", "ed25519", "signature"],
            13_000_000,
        ),
    ]
}

/// Deterministic filler: 7 categories × 10 stems × 3 suffixes = 210 packages.
fn fixture() -> Catalogue {
    let mut c = Catalogue::new();
    for p in anchors() {
        c.insert(p);
    }
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (ci, (category, stems, tags)) in CATEGORIES.iter().enumerate() {
        for (si, stem) in stems.iter().enumerate() {
            for k in 0..3 {
                let suffix = SUFFIXES[(ci + si + k * 3) % SUFFIXES.len()];
                let name = format!("{stem}-{suffix}");
                let adjective = ADJECTIVES[(ci * 7 + si + k) % ADJECTIVES.len()];
                let description =
                    format!("{adjective} {stem} {suffix} for {category} projects in Rust");
                let t1 = tags[(si + k) % tags.len()];
                let t2 = tags[(si + k + 1) % tags.len()];
                let downloads = next() % 2_000_000;
                let versions: &[&str] = if si % 4 == 0 {
                    &["0.1.0", "0.2.0"]
                } else {
                    &["0.1.0"]
                };
                for v in versions {
                    c.insert(package(
                        &name,
                        v,
                        &description,
                        category,
                        &[t1, t2],
                        &[stem, category],
                        downloads,
                    ));
                }
            }
        }
    }
    c
}

fn search(c: &Catalogue, q: &Query) -> Vec<SearchResult> {
    c.search(q, |_| 0)
}

fn kw(words: &[&str]) -> Query {
    Query::new(words.iter().map(|s| s.to_string()).collect())
}

fn names(r: &[SearchResult]) -> Vec<&str> {
    r.iter().map(|r| r.package.name.as_str()).collect()
}

fn top(c: &Catalogue, words: &[&str]) -> String {
    search(c, &kw(words))
        .first()
        .map(|r| r.package.name.clone())
        .unwrap_or_default()
}

fn assert_well_formed(r: &[SearchResult]) {
    assert!(r.iter().all(|r| r.score > 0.0), "non-positive score: {r:?}");
    assert!(
        r.windows(2).all(|w| w[0].score >= w[1].score),
        "scores not descending: {:?}",
        r.iter()
            .map(|r| (&r.package.name, r.score))
            .collect::<Vec<_>>()
    );
    let mut ns = names(r);
    ns.sort_unstable();
    let before = ns.len();
    ns.dedup();
    assert_eq!(ns.len(), before, "one result per name");
}

#[test]
fn fixture_is_large_enough() {
    let c = fixture();
    assert!(c.name_count() >= 200, "{} names", c.name_count());
    assert!(c.len() > c.name_count());
}

#[test]
fn exact_name_beats_more_popular_partial_matches() {
    let c = fixture();
    // serde-json and async-runtime-bench are more popular and also match.
    let r = search(&c, &kw(&["serde"]));
    assert_well_formed(&r);
    assert_eq!(r[0].package.name, "serde");
    assert!(names(&r).contains(&"serde-json"));
    assert_eq!(top(&c, &["tokio"]), "tokio");
    assert_eq!(top(&c, &["clap"]), "clap");
    assert_eq!(
        top(&c, &["TOKIO"]),
        "tokio",
        "keywords are case-insensitive"
    );
}

#[test]
fn name_tokens_then_mentions() {
    let c = fixture();
    let r = search(&c, &kw(&["tokio"]));
    assert_well_formed(&r);
    let n = names(&r);
    assert_eq!(n[0], "tokio");
    // Names with the token next (more popular first at equal length), then the keyword match.
    assert_eq!(&n[1..3], ["tokio-util", "tokio-stream"]);
    assert_eq!(n[3], "async-runtime-bench");
    assert_eq!(n.len(), 4);
}

#[test]
fn normalised_and_multi_word_exact_names() {
    let c = fixture();
    assert_eq!(top(&c, &["serde_yaml"]), "serde_yaml");
    assert_eq!(top(&c, &["serde", "yaml"]), "serde_yaml");
    assert_eq!(top(&c, &["serde-yaml"]), "serde_yaml");
    // A toy named exactly like the query beats popular web frameworks.
    let r = search(&c, &kw(&["web", "framework"]));
    assert_well_formed(&r);
    let n = names(&r);
    // Then a name-token match, then name prefixes (websocket-*), then axum, whose keywords
    // carry both words, above everything matching them only in keywords or descriptions.
    assert_eq!(n[..2], ["web-framework", "actix-web"]);
    let axum = n.iter().position(|&x| x == "axum").expect("axum found");
    assert!(n[2..axum].iter().all(|x| x.starts_with("web")), "{n:?}");
}

#[test]
fn prefix_ranks_above_description_mentions() {
    let c = fixture();
    // "rust" is in most descriptions; only rustls has it as a name prefix.
    let r = search(&c, &kw(&["rust"]).with_limit(1000));
    assert_well_formed(&r);
    assert_eq!(r[0].package.name, "rustls");
    assert!(r.len() > 100);
    // "tok" is a prefix of three names and nothing else.
    let r = search(&c, &kw(&["tok"]));
    let mut n = names(&r);
    n.sort_unstable();
    assert_eq!(n, ["tokenizers", "tokio", "tokio-stream", "tokio-util"]);
}

#[test]
fn name_token_above_substring_above_keyword_above_description() {
    let c = fixture();
    let r = search(&c, &kw(&["json"]));
    assert_well_formed(&r);
    assert_eq!(names(&r), ["serde-json", "simdjson"]);
    // serde has the keyword; the other encoders mention it only in descriptions... or tags.
    let r = search(&c, &kw(&["serialization"]));
    assert_well_formed(&r);
    let n = names(&r);
    // serde has it as a keyword and a tag, serde-json as a tag only.
    assert_eq!(n[..2], ["serde", "serde-json"]);
    let desc_only = n
        .iter()
        .position(|&x| {
            let p = c.latest(x).unwrap();
            !p.tags
                .iter()
                .chain(&p.metadata.keywords)
                .any(|t| t == "serialization")
        })
        .unwrap_or(n.len());
    assert!(n[desc_only..].iter().all(|&x| {
        let p = c.latest(x).unwrap();
        !p.tags
            .iter()
            .chain(&p.metadata.keywords)
            .any(|t| t == "serialization")
    }));
}

#[test]
fn misspelled_names_are_found() {
    let c = fixture();
    for (typo, want) in [
        ("tokoi", "tokio"),
        ("sered", "serde"),
        ("clpa", "clap"),
        ("postgers", "postgres"),
        ("reqwset", "reqwest"),
        ("sqlz", "sqlx"),
        ("tokenisers", "tokenizers"),
        ("tokneizres", "tokenizers"),
        ("ndarary", "ndarray"),
    ] {
        let r = search(&c, &kw(&[typo]));
        assert_well_formed(&r);
        assert_eq!(
            r.first().map(|r| r.package.name.as_str()),
            Some(want),
            "{typo}"
        );
    }
    // Too far, or too short to correct.
    assert!(search(&c, &kw(&["tkoi"])).is_empty());
    assert!(search(&c, &kw(&["zzzzqqq"])).is_empty());
}

#[test]
fn category_filter_is_honoured() {
    let c = fixture();
    let r = search(&c, &kw(&["async"]).with_category("Web".into()));
    assert!(!r.is_empty());
    assert!(r.iter().all(|r| r.package.category == "web"));
    assert!(search(&c, &kw(&["tokio"]).with_category("database".into())).is_empty());
    let r = search(&c, &kw(&["serde"]).with_category("encoding".into()));
    assert_eq!(r[0].package.name, "serde");
    assert!(r.iter().all(|r| r.package.category == "encoding"));
}

#[test]
fn tags_filter_has_and_semantics() {
    let c = fixture();
    let q = kw(&["http"]).with_tags(vec!["ASYNC".into(), "Client".into()]);
    let r = search(&c, &q);
    assert_well_formed(&r);
    let mut n = names(&r);
    n.sort_unstable();
    assert!(n.contains(&"hyper") && n.contains(&"reqwest"), "{n:?}");
    assert!(!n.contains(&"axum"));
    for r in &r {
        assert!(r.package.tags.contains(&"async".to_string()));
        assert!(r.package.tags.contains(&"client".to_string()));
    }
}

#[test]
fn min_downloads_is_honoured() {
    let c = fixture();
    let r = search(&c, &kw(&["hash"]).with_min_downloads(1_000_000));
    assert!(r.iter().all(|r| r.package.downloads >= 1_000_000));
    let all = search(&c, &kw(&["hash"]));
    assert!(all.len() > r.len());
    // Older tokio versions have fewer downloads: the newest passing one is returned.
    let r = search(&c, &kw(&["tokio"]).with_min_downloads(50_000_000));
    assert_eq!(names(&r), ["tokio", "async-runtime-bench"]);
    assert_eq!(r[0].package.version, "1.10.0");
}

#[test]
fn latest_version_is_returned() {
    let c = fixture();
    let r = search(&c, &kw(&["tokio"]));
    assert_eq!(
        r[0].package.version, "1.10.0",
        "semver order, not string order"
    );
    assert_eq!(c.latest("tokio").unwrap().version, "1.10.0");
    let r = search(&c, &kw(&["route", "core"]));
    assert!(
        r.iter()
            .all(|r| r.package.version == c.latest(&r.package.name).unwrap().version)
    );
}

#[test]
fn limit_is_honoured() {
    let c = fixture();
    assert_eq!(search(&c, &kw(&["core"]).with_limit(5)).len(), 5);
    assert_eq!(search(&c, &Query::default().with_limit(7)).len(), 7);
    assert!(search(&c, &kw(&["core"]).with_limit(0)).is_empty());
    let full = search(&c, &kw(&["rust"]).with_limit(1000));
    let first = search(&c, &kw(&["rust"]).with_limit(10));
    assert_eq!(names(&first), names(&full[..10]));
}

#[test]
fn empty_keywords_sort_by_downloads() {
    let c = fixture();
    let r = search(&c, &Query::default().with_limit(usize::MAX));
    assert_eq!(r.len(), c.name_count());
    assert!(
        r.windows(2)
            .all(|w| w[0].package.downloads >= w[1].package.downloads)
    );
    assert_eq!(r[0].package.name, "async-runtime-bench");
    let r = search(
        &c,
        &Query::default().with_category("ml".into()).with_limit(100),
    );
    assert!(r.iter().all(|r| r.package.category == "ml"));
    assert_eq!(r[0].package.name, "ndarray");
    assert!(
        r.windows(2)
            .all(|w| w[0].package.downloads >= w[1].package.downloads)
    );
}

#[test]
fn peer_count_comes_from_the_closure() {
    let c = fixture();
    let r = c.search(&kw(&["serde"]), |p| p.name.len() * 10 + p.version.len());
    assert!(!r.is_empty());
    for r in &r {
        assert_eq!(
            r.peer_count,
            r.package.name.len() * 10 + r.package.version.len()
        );
    }
}
