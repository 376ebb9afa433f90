//! `gpack.toml`, the manifest at the root of every gpack, as ggen writes it.
//!
//! The format follows ggen's own parser (`ggen-core`'s `GpackManifest`): package
//! metadata in a `[gpack]` table, dependencies on other gpacks in `[dependencies]`
//! (`"io.ggen.macros.std" = "^0.1"`), and the content sections ggen reads when it
//! generates (`[templates]`, `[macros]`, `[rdf]`, `[queries]`, `[shapes]`, `[preset]`).
//! The metadata may also sit in a `[package]` table (as ggen's format reference writes
//! it) or at the top level of the file, for small manifests:
//!
//! ```toml
//! [gpack]
//! id = "io.ggen.rust.cli-subcommand"   # the registry name (or `name` when there is no `id`)
//! name = "Rust CLI subcommand"         # with `id`: a display name
//! version = "0.1.0"                    # semantic version, required
//! description = "Generate clap subcommands"
//! category = "cli"
//! tags = ["rust", "cli"]
//! keywords = ["clap"]
//! license = "MIT"
//! authors = ["Jane <jane@example.com>"]
//! repository = "https://github.com/example/cli"
//! homepage = "https://example.com/cli"
//! ggen_compat = ">=0.1 <0.2"
//!
//! [dependencies]
//! "io.ggen.macros.std" = "^0.1"
//!
//! [templates]
//! patterns = ["cli/subcommand/*.tmpl"]
//! ```
//!
//! Any other key, in the metadata or at the top level, is refused with an error naming
//! it: a misspelt `licence` must not silently publish a package without its license.
//! [`Manifest::parse`] also checks the result against the registry's own rules
//! ([`validate_package`]: name syntax, field lengths, tag counts) and record size, so a
//! publish the network would refuse fails here, before anything is sent.

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};

use super::GpackError;
use crate::registry::Package;
use crate::registry::signed::{MAX_RECORD_SIZE, validate_package};

/// The manifest's file name, at the root of a gpack directory.
pub const MANIFEST_FILE: &str = "gpack.toml";

/// The metadata keys, in `[gpack]`, `[package]` or at the top level.
const META_KEYS: [&str; 12] = [
    "id",
    "name",
    "version",
    "description",
    "category",
    "tags",
    "keywords",
    "license",
    "authors",
    "repository",
    "homepage",
    "ggen_compat",
];

/// ggen's content sections: accepted (each must be a table) and kept verbatim in
/// [`Manifest::sections`]; the registry does not interpret them.
const CONTENT_SECTIONS: [&str; 6] = ["templates", "macros", "rdf", "queries", "shapes", "preset"];

/// Room left in a signed record for what publishing adds to the package (signature,
/// publisher key, content hash and size).
const RECORD_HEADROOM: usize = 1024;

/// A parsed and checked `gpack.toml`.
///
/// Built by [`Manifest::parse`] or [`Manifest::load`], which guarantee that
/// [`Manifest::to_package`] gives a package the registry accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The registry name: `id` when present, else `name`.
    pub name: String,
    /// `name` when `id` is also present (ggen's human-readable pack name). The registry's
    /// [`Package`] has no display name, so this is not published.
    pub display_name: Option<String>,
    /// `version`.
    pub version: semver::Version,
    /// `description`.
    pub description: Option<String>,
    /// `category`.
    pub category: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// `keywords`.
    pub keywords: Vec<String>,
    /// `license` (an SPDX expression by convention; not checked).
    pub license: Option<String>,
    /// `authors`.
    pub authors: Vec<String>,
    /// `repository`.
    pub repository: Option<String>,
    /// `homepage`.
    pub homepage: Option<String>,
    /// `ggen_compat`: the ggen versions the pack works with, as ggen writes it (e.g.
    /// `">=0.1 <0.2"`). Not checked here and not published: [`Package`] has no field for it.
    pub ggen_compat: Option<String>,
    /// `[dependencies]`: other gpacks by registry name, each with a semver requirement.
    pub dependencies: BTreeMap<String, String>,
    /// ggen's content sections (`[templates]`, `[macros]`, `[rdf]`, `[queries]`,
    /// `[shapes]`, `[preset]`) that are present, verbatim. Not published: they describe
    /// the archive's content, which ships with it.
    pub sections: Table,
}

impl Manifest {
    /// Parses and checks the text of a `gpack.toml`.
    pub fn parse(text: &str) -> Result<Self, GpackError> {
        let mut root: Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|s| {
                    let before = text.get(..s.start).unwrap_or("");
                    let line = before.matches('\n').count() + 1;
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            bad(format!("invalid TOML{at}: {}", e.message().trim()))
        })?;
        let mut unknown = Vec::new();

        let (mut meta, prefix) = match (root.remove("gpack"), root.remove("package")) {
            (Some(_), Some(_)) => {
                return Err(bad("has both [gpack] and [package]: use one".into()));
            }
            (Some(Value::Table(t)), None) => (t, "gpack."),
            (None, Some(Value::Table(t))) => (t, "package."),
            (Some(_), None) => return Err(bad("gpack must be a table".into())),
            (None, Some(_)) => return Err(bad("package must be a table".into())),
            (None, None) => {
                let mut t = Table::new();
                for key in META_KEYS {
                    if let Some(v) = root.remove(key) {
                        t.insert(key.to_string(), v);
                    }
                }
                (t, "")
            }
        };

        let id = take_str(&mut meta, prefix, "id")?;
        let plain_name = take_str(&mut meta, prefix, "name")?;
        let (name, display_name) = match (id, plain_name) {
            (Some(id), display) => (id, display),
            (None, Some(name)) => (name, None),
            (None, None) => {
                return Err(bad(format!(
                    "missing {prefix}id or {prefix}name (the package's registry name)"
                )));
            }
        };
        let version_text = take_str(&mut meta, prefix, "version")?
            .ok_or_else(|| bad(format!("missing {prefix}version")))?;
        let version = semver::Version::parse(&version_text).map_err(|e| {
            bad(format!(
                "{prefix}version {version_text:?} is not a semantic version ({e})"
            ))
        })?;
        let mut m = Manifest {
            name,
            display_name,
            version,
            description: take_str(&mut meta, prefix, "description")?,
            category: take_str(&mut meta, prefix, "category")?,
            tags: take_list(&mut meta, prefix, "tags")?,
            keywords: take_list(&mut meta, prefix, "keywords")?,
            license: take_str(&mut meta, prefix, "license")?,
            authors: take_list(&mut meta, prefix, "authors")?,
            repository: take_str(&mut meta, prefix, "repository")?,
            homepage: take_str(&mut meta, prefix, "homepage")?,
            ggen_compat: take_str(&mut meta, prefix, "ggen_compat")?,
            dependencies: BTreeMap::new(),
            sections: Table::new(),
        };
        unknown.extend(meta.keys().map(|k| format!("{prefix}{k}")));

        match root.remove("dependencies") {
            None => {}
            Some(Value::Table(deps)) => {
                for (dep, req) in deps {
                    let Value::String(req) = req else {
                        return Err(bad(format!(
                            "dependencies.{dep} must be a version requirement string"
                        )));
                    };
                    check_dependency(&dep, &req)?;
                    m.dependencies.insert(dep, req);
                }
            }
            Some(_) => return Err(bad("dependencies must be a table".into())),
        }
        for section in CONTENT_SECTIONS {
            match root.remove(section) {
                None => {}
                Some(v @ Value::Table(_)) => {
                    m.sections.insert(section.to_string(), v);
                }
                Some(_) => return Err(bad(format!("{section} must be a table"))),
            }
        }
        unknown.extend(root.keys().cloned());
        if !unknown.is_empty() {
            unknown.sort();
            return Err(GpackError::UnknownKeys { keys: unknown });
        }

        let package = m.to_package();
        validate_package(&package)
            .map_err(|e| bad(format!("the registry would refuse this package: {e}")))?;
        let encoded = postcard::to_allocvec(&package).map_err(|e| bad(e.to_string()))?;
        let max = MAX_RECORD_SIZE - RECORD_HEADROOM;
        if encoded.len() > max {
            return Err(bad(format!(
                "the package record would be {} bytes, over the registry's limit of {max}",
                encoded.len()
            )));
        }
        Ok(m)
    }

    /// Reads and parses `dir/gpack.toml`.
    pub fn load(dir: &Path) -> Result<Self, GpackError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| GpackError::io(&path, e))?;
        Self::parse(&text)
    }

    /// The registry package this manifest describes: name, version, description,
    /// category (default `uncategorized`), tags, keywords (in `metadata.keywords`),
    /// license (empty when the manifest has none: nothing is assumed), authors (joined
    /// with `", "` into the single `author` field), repository, homepage and dependencies
    /// (`name@requirement`, or `name` for `*`). [`Package`] has no field for
    /// `display_name`, `ggen_compat` or the content sections, so they are not published.
    /// Content hash and size are left empty: publishing the archive fills them.
    pub fn to_package(&self) -> Package {
        let mut p = Package::new(self.name.clone(), self.version.to_string());
        p.description = self.description.clone().unwrap_or_default();
        if let Some(c) = &self.category {
            p.category = c.clone();
        }
        p.tags = self.tags.clone();
        p.metadata.keywords = self.keywords.clone();
        p.license = self.license.clone().unwrap_or_default();
        p.author = self.authors.join(", ");
        p.repository = self.repository.clone();
        p.homepage = self.homepage.clone();
        p.dependencies = self
            .dependencies
            .iter()
            .map(|(name, req)| {
                if req.trim() == "*" {
                    name.clone()
                } else {
                    format!("{name}@{req}")
                }
            })
            .collect();
        p
    }
}

/// A manifest error.
fn bad(msg: String) -> GpackError {
    GpackError::Manifest(msg)
}

/// Removes `key` from `t`: a string, or absent.
fn take_str(t: &mut Table, prefix: &str, key: &str) -> Result<Option<String>, GpackError> {
    match t.remove(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(format!(
            "{prefix}{key} must be a string, not {}",
            v.type_str()
        ))),
    }
}

/// Removes `key` from `t`: an array of strings, or absent (empty).
fn take_list(t: &mut Table, prefix: &str, key: &str) -> Result<Vec<String>, GpackError> {
    match t.remove(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                v => Err(bad(format!(
                    "{prefix}{key} must hold strings, not {}",
                    v.type_str()
                ))),
            })
            .collect(),
        Some(v) => Err(bad(format!(
            "{prefix}{key} must be an array of strings, not {}",
            v.type_str()
        ))),
    }
}

/// A dependency must name a valid registry package and give a semver requirement.
fn check_dependency(dep: &str, req: &str) -> Result<(), GpackError> {
    // The registry's name rules, applied through its own validator.
    let probe = Package::new(dep.to_string(), "0.0.0".to_string());
    validate_package(&probe).map_err(|e| {
        bad(format!(
            "dependencies.{dep:?} is not a valid package name ({e})"
        ))
    })?;
    semver::VersionReq::parse(req).map_err(|e| {
        bad(format!(
            "dependencies.{dep} = {req:?} is not a semver requirement ({e})"
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        match Manifest::parse(text) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_documented_field_under_gpack() {
        let m = Manifest::parse(
            r#"
[gpack]
id = "io.ggen.rust.cli-subcommand"
name = "Rust CLI subcommand"
version = "0.1.0"
description = "Generate clap subcommands"
category = "cli"
tags = ["rust", "cli"]
keywords = ["clap", "codegen"]
license = "MIT OR Apache-2.0"
authors = ["Jane <jane@example.com>", "Joe"]
repository = "https://github.com/example/cli"
homepage = "https://example.com/cli"
ggen_compat = ">=0.1 <0.2"

[dependencies]
"io.ggen.macros.std" = "^0.1"
anything = "*"

[templates]
patterns = ["cli/subcommand/*.tmpl"]

[rdf]
base = "http://example.org/"
"#,
        )
        .expect("valid manifest");
        assert_eq!(m.name, "io.ggen.rust.cli-subcommand");
        assert_eq!(m.display_name.as_deref(), Some("Rust CLI subcommand"));
        assert_eq!(m.version, semver::Version::new(0, 1, 0));
        assert_eq!(m.ggen_compat.as_deref(), Some(">=0.1 <0.2"));
        assert_eq!(
            m.sections.keys().collect::<Vec<_>>(),
            vec!["rdf", "templates"]
        );

        let p = m.to_package();
        assert_eq!(p.name, "io.ggen.rust.cli-subcommand");
        assert_eq!(p.version, "0.1.0");
        assert_eq!(p.id, "io.ggen.rust.cli-subcommand@0.1.0");
        assert_eq!(p.description, "Generate clap subcommands");
        assert_eq!(p.category, "cli");
        assert_eq!(p.tags, vec!["rust", "cli"]);
        assert_eq!(p.metadata.keywords, vec!["clap", "codegen"]);
        assert_eq!(p.license, "MIT OR Apache-2.0");
        assert_eq!(p.author, "Jane <jane@example.com>, Joe");
        assert_eq!(
            p.repository.as_deref(),
            Some("https://github.com/example/cli")
        );
        assert_eq!(p.homepage.as_deref(), Some("https://example.com/cli"));
        assert_eq!(
            p.dependencies,
            vec![
                "anything".to_string(),
                "io.ggen.macros.std@^0.1".to_string()
            ]
        );
        assert_eq!(p.content_hash, None);
        validate_package(&p).expect("the registry accepts it");
    }

    #[test]
    fn accepts_package_table_and_top_level_fields() {
        let under_package = Manifest::parse(
            "[package]\nname = \"my-gen\"\nversion = \"2.1.0-rc.1\"\nauthors = [\"A\"]\n",
        )
        .expect("[package] form");
        assert_eq!(under_package.name, "my-gen");
        assert_eq!(under_package.display_name, None);
        assert_eq!(under_package.to_package().version, "2.1.0-rc.1");
        assert_eq!(under_package.to_package().license, "");
        assert_eq!(under_package.to_package().category, "uncategorized");

        let top = Manifest::parse("id = \"tiny\"\nversion = \"1.0.0\"\ntags = [\"x\"]\n")
            .expect("top-level form");
        assert_eq!(top.name, "tiny");
        assert_eq!(top.tags, vec!["x"]);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse_err(
            "[gpack]\nid = \"a\"\nversion = \"1.0.0\"\nlicence = \"MIT\"\n[scripts]\nx = \"y\"\n",
        );
        assert!(e.contains("gpack.licence") && e.contains("scripts"), "{e}");
        let e = parse_err("name = \"a\"\nversion = \"1.0.0\"\nautor = \"me\"\n");
        assert!(e.contains("unknown key autor"), "{e}");
        // With a metadata table, metadata at the top level is misplaced, hence unknown.
        let e = parse_err("version = \"1.0.0\"\n[package]\nname = \"a\"\n");
        assert!(e.contains("missing package.version"), "{e}");
    }

    #[test]
    fn missing_or_invalid_version_is_refused() {
        let e = parse_err("[gpack]\nid = \"a\"\ndescription = \"x\"\n");
        assert!(e.contains("missing gpack.version"), "{e}");
        for v in ["1.0", "v1.0.0", "1.0.0.0", "latest", ""] {
            let e = parse_err(&format!("[gpack]\nid = \"a\"\nversion = \"{v}\"\n"));
            assert!(e.contains("is not a semantic version"), "{v}: {e}");
        }
        let e = parse_err("[gpack]\nid = \"a\"\nversion = 1\n");
        assert!(e.contains("gpack.version must be a string"), "{e}");
    }

    #[test]
    fn registry_rules_are_checked_before_publishing() {
        // ggen's display names are not registry names.
        let e = parse_err("[gpack]\nname = \"Rust CLI\"\nversion = \"1.0.0\"\n");
        assert!(e.contains("registry would refuse"), "{e}");
        let e = parse_err("[gpack]\nversion = \"1.0.0\"\n");
        assert!(e.contains("missing gpack.id or gpack.name"), "{e}");
        let tags: Vec<String> = (0..33).map(|i| format!("\"t{i}\"")).collect();
        let e = parse_err(&format!(
            "id = \"a\"\nversion = \"1.0.0\"\ntags = [{}]\n",
            tags.join(",")
        ));
        assert!(e.contains("tags is over its limit"), "{e}");
        let e = parse_err(&format!(
            "id = \"a\"\nversion = \"1.0.0\"\nhomepage = \"{}\"\n",
            "x".repeat(300 * 1024)
        ));
        assert!(e.contains("over the registry's limit"), "{e}");
        let e = parse_err("id = \"a\"\nversion = \"1.0.0\"\n[dependencies]\nb = \"not a req\"\n");
        assert!(e.contains("dependencies.b"), "{e}");
        let e = parse_err("id = \"a\"\nversion = \"1.0.0\"\n[dependencies]\nBad = \"1\"\n");
        assert!(e.contains("\"Bad\" is not a valid package name"), "{e}");
        let e = parse_err("id = \"a\"\nversion = \"1.0.0\"\ntags = \"x\"\n");
        assert!(e.contains("tags must be an array"), "{e}");
        let e = parse_err("id = \"a\"\nversion = \"1.0.0\"\n[x\n");
        assert!(e.contains("invalid TOML at line 3"), "{e}");
    }

    #[test]
    fn load_reads_gpack_toml_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Manifest::load(dir.path()).expect_err("no manifest yet");
        assert!(e.to_string().contains("gpack.toml"), "{e}");
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "[gpack]\nid = \"x\"\nversion = \"0.0.1\"\n",
        )
        .expect("write");
        assert_eq!(Manifest::load(dir.path()).expect("load").name, "x");
    }
}
