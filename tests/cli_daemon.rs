//! `ggen p2p start` as a daemon and the CLI verbs that talk to it, as real processes over
//! loopback: publish a directory on one daemon, search and install it through another
//! (the installed tree is identical), a hostile archive refused at install, every verb
//! without a daemon (exit 2), and the API's token check (401).
//!
//! Everything listens on 127.0.0.1 with mDNS off; every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const GGEN: &str = env!("CARGO_BIN_EXE_ggen");
const STEP: Duration = Duration::from_secs(30);

/// A running daemon; killed when dropped.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    /// Its first listen address, with `/p2p/<PeerId>`.
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(bootstrap: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(GGEN);
        cmd.args([
            "p2p",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .args(["--api", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().expect("ggen runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STEP;
        let mut addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the daemon printed its addresses and api in time");
            if let Some(a) = line.strip_prefix("listening on ") {
                addr.get_or_insert_with(|| a.trim().to_string());
            }
            if line.starts_with("api: ") {
                break;
            }
        }
        assert!(dir.path().join("api.addr").exists());
        Daemon {
            child,
            addr: addr.expect("a listen address"),
            dir,
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn api(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.addr"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs `ggen p2p VERB ARGS… --data-dir <ours>`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.data_dir().to_str().unwrap().to_string();
        all.push("--data-dir");
        all.push(&dir);
        ggen(&all)
    }
}

fn ggen(args: &[&str]) -> Output {
    let mut full = vec!["p2p"];
    full.extend_from_slice(args);
    Command::new(GGEN).args(&full).output().expect("ggen runs")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Repeats `f` until it returns `Some`, or panics with `what` at the deadline.
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under `root`, relative path → (contents, executable).
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>, bool)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>, bool)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                use std::os::unix::fs::PermissionsExt;
                let exec = std::fs::metadata(&p).unwrap().permissions().mode() & 0o111 != 0;
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                    exec,
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn write_package(dir: &Path, id: &str) {
    std::fs::create_dir_all(dir.join("templates/nested")).unwrap();
    std::fs::write(
        dir.join("gpack.toml"),
        format!(
            "[gpack]\nid = \"{id}\"\nversion = \"1.0.0\"\ndescription = \"Templates for web \
             services\"\ncategory = \"web\"\ntags = [\"web\", \"http\"]\nlicense = \"MIT\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("templates/main.tmpl"), "hello {{ name }}\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("templates/nested/data.bin"), big).unwrap();
    let script = dir.join("gen.sh");
    std::fs::write(&script, "#!/bin/sh\necho gen\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn publish_on_one_daemon_install_through_another_gives_the_same_tree() {
    let a = Daemon::start(None);
    let b = Daemon::start(Some(&a.addr));
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("web-kit");
    write_package(&pkg, "web-kit");

    let dry = ok(&a.run(&[
        "publish",
        pkg.to_str().unwrap(),
        "--dry-run",
        "--format",
        "json",
    ]));
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let published = ok(&a.run(&["publish", pkg.to_str().unwrap(), "--format", "json"]));
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(published["id"], "web-kit@1.0.0");
    // The same tree gives the same archive: the dry run's hash is the published one.
    assert_eq!(published["content_hash"], dry["content_hash"]);

    // The publishing CLI has exited; the second daemon finds the package and installs it
    // from the first daemon, which keeps serving the content.
    let hits = until("the package to be searchable on the second daemon", || {
        let out = ok(&b.run(&["search", "web", "--format", "json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .filter(|a| a.iter().any(|h| h["package"]["name"] == "web-kit"))
            .cloned()
    });
    assert!(!hits.is_empty());
    let info = ok(&b.run(&["info", "web-kit@1.0.0", "--format", "json"]));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        info["versions"][0]["content_hash"],
        published["content_hash"]
    );
    assert_eq!(
        info["versions"][0]["providers"][0],
        a.addr.rsplit('/').next().unwrap()
    );

    let into = work.path().join("installed");
    let out = ok(&b.run(&[
        "install",
        "web-kit",
        "--into",
        into.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["content_hash"], published["content_hash"]);
    assert_eq!(
        tree(&pkg),
        tree(&into),
        "the installed tree differs from the original"
    );

    // Status of both daemons reflects it.
    let st: serde_json::Value =
        serde_json::from_str(&ok(&a.run(&["status", "--format", "json"]))).unwrap();
    assert!(st["content_held"].as_u64().unwrap() >= 1);
    assert!(st["peers"].as_u64().unwrap() >= 1);
    let peers: serde_json::Value =
        serde_json::from_str(&ok(&b.run(&["peers", "--format", "json"]))).unwrap();
    assert_eq!(peers[0]["peer"].as_str(), a.addr.rsplit('/').next());

    // The daemon's /metrics after that traffic: real values, and promtool accepts it.
    let text = ureq::get(format!("http://{}/metrics", a.api()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let served = text
        .lines()
        .find(|l| l.starts_with("ggen_p2p_content_served_bytes_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("content served is exported");
    let size = published["size"].as_f64().unwrap();
    assert!(
        served >= size,
        "content served {served}, archive {size} bytes"
    );
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; .ci/run installs it)");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tar.gz with the entry `name` (written through the raw header, so that it really is
/// in the archive) holding `body`.
fn hostile_archive(name: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut b = tar::Builder::new(&mut raw);
        b.append(&header, body).unwrap();
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_hostile_archive_is_refused_at_install_and_nothing_is_written_outside() {
    let a = Daemon::start(None);
    let work = tempfile::tempdir().unwrap();
    // Published straight through the API (the CLI would refuse to pack it): the attack is
    // a publisher who uploads a crafted archive.
    let bytes = hostile_archive("../escaped.txt", b"owned");
    let token = std::fs::read_to_string(a.data_dir().join("api.token")).unwrap();
    let mut package = ggen_p2p::Package::new("evil-kit".into(), "1.0.0".into());
    package.description = "looks harmless".into();
    let manifest = serde_json::to_string(&package).unwrap();
    let agent = ureq::Agent::new_with_defaults();
    let resp = agent
        .post(format!("http://{}/api/v0/publish", a.api()))
        .query("manifest", &manifest)
        .header("authorization", format!("Bearer {}", token.trim()))
        .send(&bytes[..])
        .unwrap();
    assert_eq!(resp.status(), 200);

    let into = work.path().join("inner").join("target");
    std::fs::create_dir_all(into.parent().unwrap()).unwrap();
    let before = tree(work.path());
    let out = a.run(&["install", "evil-kit", "--into", into.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("../escaped.txt"), "{err}");
    assert!(!into.exists(), "the target was created");
    assert!(!work.path().join("inner/escaped.txt").exists());
    assert!(!work.path().join("escaped.txt").exists());
    assert_eq!(before, tree(work.path()), "something was written");
}

#[test]
fn every_verb_without_a_daemon_says_how_to_start_one_and_exits_2() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let pkg = empty.path().join("pkg");
    write_package(&pkg, "lonely-kit");
    let verbs: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["stats"],
        vec!["peers"],
        vec![
            "peer-info",
            "12D3KooWGTgx127qcchgrcaADD2q4TobtWGiUWrKh8P3br7qWKa9",
        ],
        vec![
            "bootstrap",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGTgx127qcchgrcaADD2q4TobtWGiUWrKh8P3br7qWKa9",
        ],
        vec!["search", "web"],
        vec!["info", "web-kit"],
        vec!["install", "web-kit"],
        vec!["deprecate", "web-kit@1.0.0"],
        vec!["publish", pkg.to_str().unwrap()],
    ];
    for v in verbs {
        for format in ["table", "json"] {
            let mut args = v.clone();
            args.extend(["--data-dir", dir, "--format", format]);
            let out = ggen(&args);
            assert_eq!(out.status.code(), Some(2), "{v:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{v:?}: {err}");
            assert!(err.contains("ggen p2p start --data-dir"), "{v:?}: {err}");
        }
    }
    // An address given with --api where nothing listens: the same.
    let out = ggen(&["status", "--data-dir", dir, "--api", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_mutating_call_without_the_token_gets_401() {
    let a = Daemon::start(None);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://{}", a.api());
    let r = agent
        .post(format!("{base}/api/v0/deprecate"))
        .send_json(serde_json::json!({"id": "x@1.0.0"}))
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = agent
        .post(format!("{base}/api/v0/publish"))
        .query("manifest", "{}")
        .header("authorization", "Bearer not-the-token")
        .send(&b"x"[..])
        .unwrap();
    assert_eq!(r.status(), 401);
    // Reads are open by default; health always.
    assert_eq!(
        agent
            .get(format!("{base}/healthz"))
            .call()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        agent
            .get(format!("{base}/api/v0/status"))
            .call()
            .unwrap()
            .status(),
        200
    );
    // The token file is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a.data_dir().join("api.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
