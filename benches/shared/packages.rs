//! Deterministic package fixtures shared by the benches that build catalogues: word tables,
//! a seeded xorshift generator, and the name and description generators. Included by
//! `benches/search.rs` and `benches/netbench.rs` with
//! `#[path = "shared/packages.rs"] mod packages;`.

/// Name syllables.
pub const SYLLABLES: &[&str] = &[
    "ka", "to", "ri", "mon", "sel", "vex", "lu", "quar", "dex", "io", "zen", "pra", "fol", "nim",
    "tor", "bel", "cy", "gra", "hum", "jet", "lor", "mip", "nex", "oct", "pul", "ryn", "sto",
    "tif", "urb", "vol", "wex", "yar",
];
/// Common words, for names, descriptions, keywords and queries.
pub const WORDS: &[&str] = &[
    "http",
    "server",
    "client",
    "async",
    "runtime",
    "parser",
    "json",
    "yaml",
    "toml",
    "database",
    "sql",
    "query",
    "cache",
    "crypto",
    "hash",
    "cipher",
    "signature",
    "tensor",
    "model",
    "neural",
    "cli",
    "terminal",
    "color",
    "logging",
    "tracing",
    "metrics",
    "test",
    "mock",
    "macro",
    "derive",
    "stream",
    "channel",
    "future",
    "buffer",
    "bytes",
    "network",
    "socket",
    "tls",
    "compression",
    "image",
    "audio",
    "video",
    "graphics",
    "math",
    "matrix",
    "random",
    "time",
    "date",
    "config",
    "env",
    "file",
    "path",
    "process",
    "thread",
    "pool",
    "queue",
    "graph",
    "tree",
    "map",
    "set",
    "string",
    "unicode",
    "regex",
    "template",
    "web",
    "framework",
    "router",
    "middleware",
    "storage",
    "kv",
    "embedded",
    "wasm",
    "gpu",
    "simd",
    "fast",
    "safe",
    "small",
    "pure",
    "rust",
    "library",
    "toolkit",
    "utilities",
    "bindings",
    "wrapper",
];
/// Package categories.
pub const CATEGORIES: &[&str] = &[
    "web", "cli", "database", "ml", "crypto", "async", "encoding", "testing", "graphics", "os",
];
/// Package tags.
pub const TAGS: &[&str] = &[
    "async", "no-std", "http", "cli", "sql", "gpu", "wasm", "serde", "macro", "ffi", "tls",
    "parser",
];

/// xorshift64: deterministic from the seed, no dependency on `rand`'s stream stability.
pub struct Rng(u64);

impl Rng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        // A zero state would stay zero.
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform-ish in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// One of `xs`.
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// A package name: one to three parts of one to three syllables, joined by `-`, `_` or
/// nothing, one part in five followed by a common word.
pub fn name(rng: &mut Rng) -> String {
    let mut name = String::new();
    for i in 0..1 + rng.below(3) {
        if i > 0 {
            name.push_str(["-", "_", "-", ""][rng.below(4)]);
        }
        for _ in 0..1 + rng.below(3) {
            name.push_str(rng.pick(SYLLABLES));
        }
        if rng.below(5) == 0 {
            name.push('-');
            name.push_str(rng.pick(WORDS));
        }
    }
    name
}

/// A description of 6 to 15 common words.
pub fn description(rng: &mut Rng) -> String {
    let mut desc: Vec<&str> = Vec::new();
    for _ in 0..6 + rng.below(10) {
        desc.push(rng.pick(WORDS));
    }
    desc.join(" ")
}

/// Misspells `s`: swaps two adjacent characters in the middle.
pub fn transpose(s: &str) -> String {
    let mut cs: Vec<char> = s.chars().collect();
    let i = cs.len() / 2;
    if i >= 1 && i < cs.len() {
        cs.swap(i - 1, i);
    }
    cs.into_iter().collect()
}
