//! Local search latency over a 10 000-package catalogue (`ggen_p2p::registry::Catalogue`).
//!
//! `cargo bench --bench search [-- FILTER]` runs a few criterion groups (one per query kind),
//! then a timing pass over every query of the mix (≥ 50: exact, prefix, multi-word,
//! misspelled, filtered, empty) that prints per-query latency to stderr and a one-line JSON
//! summary last on stdout. `GGEN_BENCH_JSON_ONLY=1` skips criterion. See `benches/README.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ggen_p2p::registry::{Catalogue, Package, Query};
use packages::{CATEGORIES, Rng, TAGS, WORDS, transpose};

#[path = "shared/packages.rs"]
mod packages;

const PACKAGES: usize = 10_000;
const ITERATIONS: usize = 200;

fn catalogue() -> (Catalogue, Vec<String>) {
    // Seed 0 is the state this fixture has always started from.
    let mut rng = Rng::new(0);
    let mut c = Catalogue::new();
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while names.len() < PACKAGES {
        let name = packages::name(&mut rng);
        if !seen.insert(name.clone()) {
            continue;
        }
        let versions = if rng.next() % 5 == 0 { 3 } else { 1 };
        let category = rng.pick(CATEGORIES);
        let downloads = rng.next() % 10_000_000;
        let description = packages::description(&mut rng);
        let tags: Vec<String> = (0..1 + rng.next() % 3)
            .map(|_| rng.pick(TAGS).to_string())
            .collect();
        let keywords: Vec<String> = (0..rng.next() % 4)
            .map(|_| rng.pick(WORDS).to_string())
            .collect();
        for v in 0..versions {
            let mut p = Package::new(name.clone(), format!("0.{v}.0"));
            p.description = description.clone();
            p.category = category.to_string();
            p.tags = tags.clone();
            p.metadata.keywords = keywords.clone();
            p.downloads = downloads / (versions - v);
            c.insert(p);
        }
        names.push(name);
    }
    (c, names)
}

fn queries(names: &[String]) -> Vec<(String, Query)> {
    let kw = |ws: &[&str]| Query::new(ws.iter().map(|s| s.to_string()).collect());
    let mut qs: Vec<(String, Query)> = Vec::new();
    let long: Vec<&String> = names.iter().filter(|n| n.len() >= 6).collect();
    for i in 0..12 {
        let n = long[i * 37 % long.len()];
        qs.push((format!("exact/{n}"), kw(&[n])));
    }
    for i in 0..10 {
        let n = long[(i * 53 + 11) % long.len()];
        let p: String = n.chars().take(3 + i % 3).collect();
        qs.push((format!("prefix/{p}"), kw(&[&p])));
    }
    for i in 0..10 {
        let n = long[(i * 71 + 5) % long.len()];
        let first = n.split(['-', '_']).next().unwrap_or(n);
        let t = transpose(first);
        let t = if t.len() >= 4 { t } else { transpose(n) };
        qs.push((format!("typo/{t}"), kw(&[&t])));
    }
    for ws in [
        ["async", "http"],
        ["json", "parser"],
        ["sql", "database"],
        ["fast", "hash"],
        ["web", "framework"],
        ["neural", "tensor"],
        ["rust", "library"],
        ["terminal", "color"],
        ["tls", "socket"],
        ["config", "file"],
    ] {
        qs.push((format!("multi/{}", ws.join("+")), kw(&ws)));
    }
    for (i, (word, cat)) in [
        ("http", "web"),
        ("parser", "encoding"),
        ("query", "database"),
        ("model", "ml"),
        ("cipher", "crypto"),
    ]
    .iter()
    .enumerate()
    {
        qs.push((
            format!("filter/{word}+category={cat}"),
            kw(&[word]).with_category(cat.to_string()),
        ));
        qs.push((
            format!("filter/{word}+tags+min"),
            kw(&[word])
                .with_tags(vec![TAGS[i].to_string()])
                .with_min_downloads(1_000_000),
        ));
    }
    qs.push(("empty/all".into(), Query::default()));
    qs.push((
        "empty/category=ml".into(),
        Query::default().with_category("ml".into()),
    ));
    qs.push((
        "empty/tag=async+min".into(),
        Query::default()
            .with_tags(vec!["async".into()])
            .with_min_downloads(5_000_000),
    ));
    qs
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let mut bench_mode = false;
    let mut filter = None;
    for a in std::env::args().skip(1) {
        if a == "--bench" {
            bench_mode = true;
        } else if !a.starts_with('-') && filter.is_none() {
            filter = Some(a);
        }
    }
    let json_only = std::env::var_os("GGEN_BENCH_JSON_ONLY").is_some();

    let t = Instant::now();
    let (cat, names) = catalogue();
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "search: {} names, {} versions, built in {build_ms:.0} ms",
        cat.name_count(),
        cat.len()
    );
    let qs = queries(&names);

    if !json_only {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .configure_from_args();
        let mut g = c.benchmark_group("search");
        for kind in ["exact", "prefix", "typo", "multi", "filter", "empty"] {
            let mix: Vec<&Query> = qs
                .iter()
                .filter(|(id, _)| id.starts_with(kind))
                .map(|(_, q)| q)
                .collect();
            g.bench_function(kind, |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % mix.len();
                    black_box(cat.search(mix[i], |_| 1))
                })
            });
        }
        g.finish();
        c.final_summary();
    }
    if !(bench_mode || json_only) {
        return;
    }

    let mut all: Vec<Duration> = Vec::new();
    for (id, q) in &qs {
        if filter.as_deref().is_some_and(|f| !id.contains(f)) {
            continue;
        }
        for _ in 0..10 {
            black_box(cat.search(q, |_| 1));
        }
        let mut ts = Vec::with_capacity(ITERATIONS);
        let mut hits = 0;
        for _ in 0..ITERATIONS {
            let t = Instant::now();
            let r = black_box(cat.search(q, |_| 1));
            ts.push(t.elapsed());
            hits = r.len();
        }
        ts.sort_unstable();
        eprintln!(
            "  {id:<40} p50 {:>7.1} µs  p99 {:>7.1} µs  results {hits}",
            percentile(&ts, 0.5),
            percentile(&ts, 0.99)
        );
        all.extend(ts);
    }
    if all.is_empty() {
        return;
    }
    all.sort_unstable();
    println!(
        "{{\"packages\":{},\"versions\":{},\"queries\":{},\"samples\":{},\"build_ms\":{build_ms:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"target_p99_us\":1000}}",
        cat.name_count(),
        cat.len(),
        all.len() / ITERATIONS,
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
    );
}
