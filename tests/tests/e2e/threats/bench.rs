//! The bench a table runs on: a world with v1 and v2 pushed and served by nginx, a v1 template
//! install, and the runner that takes each case through the steps of the module docs and
//! prints the table.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relsync_engine::ManifestId;
use relsync_engine::SecretKey;
use relsync_engine::envelope::{self, Kind};
use relsync_engine::root::{ROOT_FORMAT, RoleKeys, Root};
use relsync_tests::{
    CHANNEL, Forge, Nginx, NginxOptions, Output, V1, V2, World, available_bytes, copy_tree,
    current, diff_digests, parse_json_object, tree_digest, write_secret_key,
};

use super::forgery::{Ctx, Facts, RootKeys, dup, now_unix};
use super::snapshot::{InstallSnapshot, digest_diff, origin_digest, strays};
use super::{Case, Category, Server, Start};

/// A failing update must give up within this (the slowest case reads a 256 MiB manifest).
const FAIL_WITHIN: Duration = Duration::from_secs(30);

/// One row of a table.
struct Row {
    name: &'static str,
    category: Category,
    expect: &'static [&'static str],
    observed: String,
    elapsed: Duration,
    problems: Vec<String>,
}

/// A world, its origin served, and the v1 template install every case copies.
pub(super) struct Bench {
    w: World,
    n: Nginx,
    ignoring_ranges: Option<Nginx>,
    template: PathBuf,
    forge: Forge,
    facts: Facts,
    trust: Vec<String>,
    baseline: BTreeMap<String, String>,
    /// Time to build the world, push v1 and v2 and install the template.
    setup: Duration,
}

/// Push options: a fast zstd level and zstd delta frames only (bsdiff encoding is slow in a
/// debug build), since these tests are about refusals, not ratios.
const FAST: &[&str] = &["--level", "3", "--no-bsdiff"];

/// Push options for releases with executables: bsdiff on, which reference projection needs.
const REFS: &[&str] = &["--level", "3"];

impl Bench {
    /// v1 pushed and installed (the template), then v2 pushed, all signed by the world's key.
    pub(super) fn new() -> Self {
        let started = Instant::now();
        let w = World::new();
        w.push(&w.v1, V1, FAST).assert_success("push v1");
        let n = Nginx::start(&w.origin, &NginxOptions::default());
        let trust = vec!["--trust".to_owned(), w.pubkey.clone()];
        let forge = Forge::with_key_file(&w.origin, CHANNEL, &w.key);
        Self::finish(started, w, n, trust, forge, None, |w| {
            w.push(&w.v2, V2, FAST).assert_success("push v2");
        })
    }

    /// Like [`Bench::new`], with releases that hold the synthetic executable
    /// ([`crate::executables::tree`]) pushed with bsdiff on, so v2 carries delta frames with
    /// projected references and their reference map against v1.
    pub(super) fn with_executables() -> Self {
        let started = Instant::now();
        let mut w = World::new();
        w.v1 = crate::executables::tree(w.path(), 1);
        w.v2 = crate::executables::tree(w.path(), 2);
        w.push(&w.v1, V1, REFS).assert_success("push v1");
        let n = Nginx::start(&w.origin, &NginxOptions::default());
        let trust = vec!["--trust".to_owned(), w.pubkey.clone()];
        let forge = Forge::with_key_file(&w.origin, CHANNEL, &w.key);
        Self::finish(started, w, n, trust, forge, None, |w| {
            w.push(&w.v2, V2, REFS).assert_success("push v2");
        })
    }

    /// A world whose trust comes from a pinned root 1: 2-of-2 root keys, 2-of-2 release keys
    /// and 2-of-2 channel keys; v1 installed with `--trust-root`, then v2 pushed.
    pub(super) fn with_root_chain() -> Self {
        let started = Instant::now();
        let w = World::new();
        let gen_keys = || [0, 1].map(|_| SecretKey::generate().expect("key"));
        let (root, release, channel) = (gen_keys(), gen_keys(), gen_keys());
        let role = |keys: &[SecretKey; 2]| RoleKeys {
            keys: keys.iter().map(SecretKey::public).collect(),
            threshold: 2,
        };
        let first = Root {
            format: ROOT_FORMAT,
            product: "app".into(),
            version: 1,
            expires_unix: now_unix() + 365 * 86_400,
            root: role(&root),
            release: role(&release),
            channel: role(&channel),
        };
        let sealed = envelope::seal(
            Kind::Root,
            &first.to_body().expect("root body"),
            &[&root[0], &root[1]],
        )
        .expect("seal root 1");
        fs::create_dir_all(w.origin.join("keys")).expect("mkdir keys");
        fs::write(w.origin.join("keys/root-1"), &sealed).expect("write root 1");
        let pinned = w.path().join("root-1.pinned");
        fs::write(&pinned, &sealed).expect("write pinned root");
        let key_dir = w.path().join("role-keys");
        let mut key_args = Vec::new();
        for (flag, name, key) in [
            ("--key", "release-0", &release[0]),
            ("--key", "release-1", &release[1]),
            ("--channel-key", "channel-0", &channel[0]),
            ("--channel-key", "channel-1", &channel[1]),
        ] {
            let path = key_dir.join(format!("{name}.key"));
            write_secret_key(key, &path);
            key_args.push(flag.to_owned());
            key_args.push(path.display().to_string());
        }
        let push = move |w: &World, tree: &Path, version: &str| {
            w.publisher()
                .arg("push")
                .arg(tree)
                .args(["--version", version, "--channel", CHANNEL, "--to"])
                .arg(&w.origin)
                .args(&key_args)
                .args(FAST)
                .run()
                .assert_success(&format!("push {version}"));
        };
        push(&w, &w.v1, V1);
        let n = Nginx::start(&w.origin, &NginxOptions::default());
        let trust = vec!["--trust-root".to_owned(), pinned.display().to_string()];
        let forge = Forge::new(
            &w.origin,
            CHANNEL,
            release.iter().map(dup).collect(),
            channel.iter().map(dup).collect(),
        );
        let roots = RootKeys {
            root,
            release,
            channel,
            first,
        };
        Self::finish(started, w, n, trust, forge, Some(roots), move |w| {
            push(w, &w.v2, V2)
        })
    }

    fn finish(
        started: Instant,
        w: World,
        n: Nginx,
        trust: Vec<String>,
        forge: Forge,
        roots: Option<RootKeys>,
        push_v2: impl FnOnce(&World),
    ) -> Self {
        let template = w.install_dir("template");
        let mut bench = Self {
            w,
            n,
            ignoring_ranges: None,
            template,
            forge,
            facts: Facts {
                v1: ManifestId([0; 32]),
                v2: ManifestId([0; 32]),
                ranges: Vec::new(),
                free_bytes: 0,
                roots,
            },
            trust,
            baseline: BTreeMap::new(),
            setup: Duration::ZERO,
        };
        let out = bench.update(&bench.n.url(), &bench.template.clone(), &[]);
        out.assert_success("install the v1 template");
        bench.facts.v1 = bench.forge.pointer().manifest;
        push_v2(&bench.w);
        bench.facts.v2 = bench.forge.pointer().manifest;
        // The pack ranges the v1 -> v2 update fetches, from a dry run on a throwaway copy.
        let probe = bench.w.install_dir("probe");
        copy_tree(&bench.template, &probe);
        let out = bench.update(&bench.n.url(), &probe, &["--dry-run"]);
        out.assert_success("dry run v1 -> v2");
        let plan = out.json();
        for r in plan["requests"].as_array().expect("requests") {
            let pack = r["pack"].as_str().expect("pack");
            bench.facts.ranges.push((
                format!("packs/{pack}"),
                r["start"].as_u64().expect("start"),
                r["len"].as_u64().expect("len"),
            ));
        }
        fs::remove_dir_all(&probe).expect("rm probe");
        bench.facts.free_bytes = available_bytes(bench.w.path());
        bench.baseline = origin_digest(&bench.w.origin, &BTreeSet::new());
        bench.setup = started.elapsed();
        bench
    }

    fn update(&self, url: &str, install: &Path, extra: &[&str]) -> Output {
        self.w
            .relsync()
            .arg("update")
            .args(["--origin", url, "--channel", CHANNEL])
            .args(&self.trust)
            .arg("--install")
            .arg(install)
            .arg("--json")
            .args(extra)
            .timeout(FAIL_WITHIN + Duration::from_secs(60))
            .run()
    }

    fn url(&mut self, server: Server) -> String {
        match server {
            Server::Normal => self.n.url(),
            Server::IgnoringRanges => self
                .ignoring_ranges
                .get_or_insert_with(|| {
                    Nginx::start(&self.w.origin, &NginxOptions::ignoring_ranges())
                })
                .url(),
        }
    }

    /// Runs every case; prints the table; fails with every problem found.
    pub(super) fn run_all(mut self, title: &str, cases: Vec<Case>) {
        let started = Instant::now();
        let rows: Vec<Row> = cases.iter().map(|c| self.run(c)).collect();
        print_table(title, &rows, self.setup, started.elapsed());
        let problems: Vec<String> = rows
            .iter()
            .filter(|r| !r.problems.is_empty())
            .map(|r| format!("{}:\n    {}", r.name, r.problems.join("\n    ")))
            .collect();
        assert!(
            problems.is_empty(),
            "{} of {} hostile inputs were not handled as required:\n  {}",
            problems.len(),
            rows.len(),
            problems.join("\n  ")
        );
    }

    /// Runs one case (see the module docs), restoring the origin whatever happens.
    fn run(&mut self, case: &Case) -> Row {
        let started = Instant::now();
        let mut row = Row {
            name: case.name,
            category: case.category,
            expect: case.expect,
            observed: String::new(),
            elapsed: Duration::ZERO,
            problems: Vec::new(),
        };
        let install = self.w.install_dir(case.name);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.attack(case, &install, &mut row)));
        if let Err(panic) = outcome {
            row.problems
                .push(format!("panicked: {}", panic_text(&panic)));
        }
        self.forge.restore();
        let restored = origin_digest(&self.w.origin, &BTreeSet::new());
        let diff = digest_diff(&self.baseline, &restored);
        assert!(
            diff.is_empty(),
            "{}: the origin was not restored, later cases would be meaningless:\n  {}",
            case.name,
            diff.join("\n  ")
        );
        // Nothing is lost: the same install updates from the honest origin.
        let outcome = catch_unwind(AssertUnwindSafe(|| self.recover(&install)));
        if let Err(panic) = outcome {
            row.problems.push(format!(
                "after the origin was restored: {}",
                panic_text(&panic)
            ));
        }
        let _ = fs::remove_dir_all(&install);
        row.elapsed = started.elapsed();
        row
    }

    fn attack(&mut self, case: &Case, install: &Path, row: &mut Row) {
        if case.start == Start::Installed {
            copy_tree(&self.template, install);
        }
        let before = InstallSnapshot::take(install);
        (case.mutate)(&mut Ctx {
            forge: &mut self.forge,
            facts: &self.facts,
        });
        let touched: BTreeSet<String> = self.forge.touched().into_iter().collect();
        let origin_before = origin_digest(&self.w.origin, &touched);

        let url = self.url(case.server);
        let out = self.update(&url, install, &[]);
        let problems = &mut row.problems;
        let json_error = parse_json_object(&out.stdout)
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        row.observed = json_error.clone().unwrap_or_else(|| {
            out.stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_owned()
        });
        if out.success() {
            problems.push(format!("ACCEPTED: the update succeeded\n{out}"));
        } else if out.status.code().is_none() {
            problems.push(format!("killed by a signal (a crash?)\n{out}"));
        }
        if out.stderr.contains("panicked") {
            problems.push(format!("the client panicked\n{out}"));
        }
        if out.elapsed > FAIL_WITHIN {
            problems.push(format!("took {:?}, over {FAIL_WITHIN:?}", out.elapsed));
        }
        let stderr = out.stderr.to_lowercase();
        let json = json_error.clone().unwrap_or_default().to_lowercase();
        let missing: Vec<&&str> = case
            .expect
            .iter()
            .filter(|w| !stderr.contains(*w) || !json.contains(*w))
            .collect();
        if json_error.is_none() {
            problems.push("no JSON object with an `error` field on stdout".to_owned());
        }
        if !missing.is_empty() {
            problems.push(format!(
                "the error does not name the problem: {missing:?} missing from stderr or the \
                 JSON error ({:?})",
                row.observed
            ));
        }

        let after = InstallSnapshot::take(install);
        if after.link != before.link {
            problems.push(format!(
                "`current` moved: {:?} -> {:?}",
                before.link, after.link
            ));
        }
        match (&before.release, &after.release) {
            (Some(b), Some(a)) => {
                let diff = diff_digests(a, b);
                if !diff.is_empty() {
                    problems.push(format!("the installed release changed: {diff:?}"));
                }
            }
            (b, a) if b.is_some() != a.is_some() => problems.push(format!(
                "the installed release {}",
                if a.is_some() { "appeared" } else { "vanished" }
            )),
            _ => {}
        }
        let strays = strays(&before.listing, &after.listing, case.start == Start::Fresh);
        if !strays.is_empty() {
            problems.push(format!("stray files in the install dir: {strays:#?}"));
        }
        let origin_after = origin_digest(&self.w.origin, &touched);
        let diff = digest_diff(&origin_before, &origin_after);
        if !diff.is_empty() {
            problems.push(format!("the origin changed during the update: {diff:?}"));
        }
    }

    fn recover(&mut self, install: &Path) {
        let out = self.update(&self.n.url(), install, &[]);
        out.assert_success("update from the restored origin");
        let report = out.json();
        assert_eq!(report["version"], V2, "{out}");
        let diff = diff_digests(&tree_digest(&current(install)), &tree_digest(&self.w.v2));
        assert!(diff.is_empty(), "the install is not v2: {diff:?}\n{out}");
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

fn print_table(title: &str, rows: &[Row], setup: Duration, elapsed: Duration) {
    let mut s = format!(
        "\n### {title}: {} hostile inputs in {:.1} s (setup {:.1} s)\n\n| case | category | expected | observed | result |\n|---|---|---|---|---|\n",
        rows.len(),
        elapsed.as_secs_f64(),
        setup.as_secs_f64()
    );
    for r in rows {
        let observed: String = r.observed.replace('|', "\\|").chars().take(220).collect();
        let result = if r.problems.is_empty() {
            format!("ok ({:.2} s)", r.elapsed.as_secs_f64())
        } else {
            format!("**FAILED** ({} problems)", r.problems.len())
        };
        s.push_str(&format!(
            "| {} | {:?} | {} | {} | {} |\n",
            r.name,
            r.category,
            r.expect
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", "),
            observed,
            result
        ));
    }
    eprintln!("{s}");
}
