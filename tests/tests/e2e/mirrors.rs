//! Origins as real CDNs and mirrors are: `--origin` repeated names mirrors of the same files.
//! A dead, failing or lagging mirror fails over to the next, which then keeps the requests;
//! every mirror down fails with an error naming each and leaves the install as it was. A
//! server that ignores Range headers is served from, each pack received once. Requests share
//! connections, and HTTPS mirrors with a private CA (`--ca-cert`) speak HTTP/2.
//!
//! Accounting stays exact with several mirrors: `bytes_from_origin` is the body bytes every
//! mirror's nginx logged for the run, and `requests` counts every request sent, to a dead
//! mirror included.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relsync_tests::{
    CHANNEL, Cmd, Entry, LogEntry, Nginx, NginxOptions, Report, V1, V2, World, assert_trees_equal,
    copy_tree, current, current_link, format_entries, free_port,
};

use crate::common::{assert_untouched, run_log, world_with_v1};

/// Longest an update may take when every mirror fails, retries and backoff included.
const ALL_DOWN_WITHIN: Duration = Duration::from_secs(60);

/// `relsync update --json` from `origins`, tried in that order, into `install`.
fn update_from(w: &World, origins: &[String], install: &Path) -> Cmd {
    let mut cmd = w
        .relsync()
        .arg("update")
        .args(["--channel", CHANNEL, "--trust", &w.pubkey]);
    for origin in origins {
        cmd = cmd.args(["--origin", origin]);
    }
    cmd.arg("--install").arg(install).arg("--json")
}

/// [`update_from`], which must succeed.
fn update_ok(w: &World, origins: &[String], install: &Path) -> Report {
    let out = update_from(w, origins, install).run();
    out.assert_success(&format!("update {} from {origins:?}", install.display()));
    Report::new(out)
}

/// Loopback URLs nothing listens on: ports bound a moment ago and closed.
fn dead_origins(n: usize) -> Vec<String> {
    let mut ports = BTreeSet::new();
    for _ in 0..100 {
        if ports.len() == n {
            break;
        }
        ports.insert(free_port());
    }
    assert_eq!(ports.len(), n, "no {n} distinct free ports");
    ports
        .into_iter()
        .map(|port| format!("http://127.0.0.1:{port}/"))
        .collect()
}

fn body_bytes(log: &[LogEntry]) -> u64 {
    log.iter().map(|e| e.body_bytes).sum()
}

/// v1 installed at the returned dir from `n`, then v2 pushed.
fn v1_installed_then_v2_pushed(w: &World, n: &Nginx) -> PathBuf {
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    dir
}

#[test]
fn a_dead_mirror_fails_over_to_the_next() {
    let (w, good) = world_with_v1();
    let dir = v1_installed_then_v2_pushed(&w, &good);
    let dead = dead_origins(1).remove(0);
    let mark = good.mark();
    let r = update_ok(&w, &[dead, good.url()], &dir);
    assert_eq!(r.str("version"), V2);
    assert_trees_equal(&current(&dir), &w.v2);
    let log = run_log(&good, mark);
    assert_eq!(
        r.u64("bytes_from_origin"),
        body_bytes(&log),
        "the dead mirror sent nothing: every byte counted is one the good mirror sent\n{}\n{}",
        r.out,
        format_entries(&log)
    );
    // One connection attempt to the dead mirror, then the good one keeps every request.
    assert_eq!(
        r.u64("requests"),
        log.len() as u64 + 1,
        "the dead mirror must be tried once, not again for each request\n{}\n{}",
        r.out,
        format_entries(&log)
    );
}

#[test]
fn a_mirror_failing_packs_fails_over_and_the_good_one_keeps_the_requests() {
    let (w, good) = world_with_v1();
    let failing = Nginx::start(&w.origin, &NginxOptions::failing_packs(503));
    let dir = v1_installed_then_v2_pushed(&w, &good);
    let (bad_mark, good_mark) = (failing.mark(), good.mark());
    let r = update_ok(&w, &[failing.url(), good.url()], &dir);
    assert_trees_equal(&current(&dir), &w.v2);
    let bad_log = run_log(&failing, bad_mark);
    let good_log = run_log(&good, good_mark);
    let context = format!(
        "{}\nfailing mirror:\n{}good mirror:\n{}",
        r.out,
        format_entries(&bad_log),
        format_entries(&good_log)
    );
    assert_eq!(
        body_bytes(&good_log),
        r.u64("bytes_from_origin") - body_bytes(&bad_log),
        "bytes_from_origin must be what both mirrors sent\n{context}"
    );
    assert_eq!(
        r.u64("requests"),
        (bad_log.len() + good_log.len()) as u64,
        "{context}"
    );
    // The metadata came from the first mirror; its first 503 moved the packs to the second
    // for good.
    let bad_packs: Vec<&LogEntry> = bad_log.iter().filter(|e| e.is_pack()).collect();
    assert_eq!(bad_packs.len(), 1, "{context}");
    assert_eq!(bad_packs[0].status, 503, "{context}");
    assert!(
        bad_log.iter().any(|e| e.path().contains("/channels/")),
        "{context}"
    );
    assert!(
        !good_log.is_empty() && good_log.iter().all(|e| e.is_pack() && e.status == 206),
        "only packs, as ranges, from the second mirror\n{context}"
    );
}

#[test]
fn a_lagging_mirror_without_the_new_packs_fails_over_for_them() {
    let (w, full) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&full.url(), &dir);
    // The lagging mirror holds v1, and of v2 only the metadata: it is still copying packs.
    let lagging_root = w.path().join("origin-lagging");
    copy_tree(&w.origin, &lagging_root);
    let before = w.origin_snapshot();
    w.push_ok(&w.v2, V2);
    let mut new_packs = BTreeSet::new();
    for (path, entry) in w.origin_snapshot() {
        if !matches!(entry, Entry::File { .. }) || before.get(&path) == Some(&entry) {
            continue;
        }
        if path.starts_with("packs/") {
            new_packs.insert(format!("/{path}"));
            continue;
        }
        let target = lagging_root.join(&path);
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs::copy(w.origin.join(&path), &target).expect("copy v2 metadata");
    }
    assert!(!new_packs.is_empty(), "v2's push added no pack");
    let lagging = Nginx::start(&lagging_root, &NginxOptions::default());
    let (lag_mark, full_mark) = (lagging.mark(), full.mark());
    let r = update_ok(&w, &[lagging.url(), full.url()], &dir);
    assert_trees_equal(&current(&dir), &w.v2);
    let lag_log = run_log(&lagging, lag_mark);
    let full_log = run_log(&full, full_mark);
    let context = format!(
        "{}\nlagging mirror:\n{}full mirror:\n{}",
        r.out,
        format_entries(&lag_log),
        format_entries(&full_log)
    );
    let missing: BTreeSet<&str> = lag_log
        .iter()
        .filter(|e| e.is_pack() && e.status == 404)
        .map(LogEntry::path)
        .collect();
    assert!(
        !missing.is_empty(),
        "the lagging mirror was never asked for a new pack\n{context}"
    );
    for pack in &missing {
        assert!(new_packs.contains(*pack), "{pack} is not new\n{context}");
        assert!(
            full_log
                .iter()
                .any(|e| e.path() == *pack && e.status == 206),
            "{pack}, missing on the lagging mirror, was not fetched from the full one\n{context}"
        );
    }
    assert!(
        lag_log
            .iter()
            .any(|e| e.path().contains("/manifests/") && e.status == 200),
        "the metadata should come from the first mirror\n{context}"
    );
    assert_eq!(
        r.u64("bytes_from_origin"),
        body_bytes(&lag_log) + body_bytes(&full_log),
        "{context}"
    );
    assert_eq!(
        r.u64("requests"),
        (lag_log.len() + full_log.len()) as u64,
        "{context}"
    );
}

#[test]
fn every_mirror_down_fails_naming_each_and_keeps_v1() {
    let (w, n) = world_with_v1();
    let dir = v1_installed_then_v2_pushed(&w, &n);
    let link = current_link(&dir);
    let dead = dead_origins(2);
    let out = update_from(&w, &dead, &dir)
        .timeout(ALL_DOWN_WITHIN + Duration::from_secs(30))
        .run();
    out.assert_failure("update with every mirror down");
    eprintln!("every mirror down: {}", out.stderr.trim());
    let error = out.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error\n{out}"))
        .to_owned();
    assert!(error.contains("every mirror failed"), "{error}");
    for origin in &dead {
        let url = format!("{origin}channels/{CHANNEL}: ");
        assert!(error.contains(&url), "{url} not named in {error}");
        assert!(out.stderr.contains(&url), "{url} not named in\n{out}");
    }
    assert!(out.elapsed < ALL_DOWN_WITHIN, "took {:?}", out.elapsed);
    assert_untouched(&w, &dir, &link, &out);
}

#[test]
fn packs_failing_on_every_mirror_fail_naming_each_and_keep_v1() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    w.update_ok(&n.url(), &dir);
    let lagging_root = w.path().join("origin-lagging");
    copy_tree(&w.origin, &lagging_root);
    w.push_ok(&w.v2, V2);
    // The second mirror has v2's metadata (all of it, old packs too) but not its new packs;
    // the first answers 503 for every pack.
    for item in fs::read_dir(&w.origin).expect("read origin") {
        let item = item.expect("entry");
        if item.file_name() != "packs" {
            let _ = fs::remove_dir_all(lagging_root.join(item.file_name()));
            copy_tree(&item.path(), &lagging_root.join(item.file_name()));
        }
    }
    let failing = Nginx::start(&w.origin, &NginxOptions::failing_packs(503));
    let lagging = Nginx::start(&lagging_root, &NginxOptions::default());
    let link = current_link(&dir);
    let out = update_from(&w, &[failing.url(), lagging.url()], &dir)
        .timeout(ALL_DOWN_WITHIN + Duration::from_secs(30))
        .run();
    out.assert_failure("update with the packs failing on every mirror");
    eprintln!("packs failing everywhere: {}", out.stderr.trim());
    let error = out.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error\n{out}"))
        .to_owned();
    assert!(error.contains("every mirror failed"), "{error}");
    assert!(
        error.contains(&format!("{}packs/", failing.url())) && error.contains("HTTP 503"),
        "the failing mirror and its 503 must be named: {error}"
    );
    assert!(
        error.contains(&format!("{}packs/", lagging.url())) && error.contains("not found"),
        "the lagging mirror and its 404 must be named: {error}"
    );
    assert!(out.elapsed < ALL_DOWN_WITHIN, "took {:?}", out.elapsed);
    assert_untouched(&w, &dir, &link, &out);
}

#[test]
fn a_mirror_that_ignores_ranges_sends_each_pack_once() {
    let w = World::new();
    // Packs of 1 MiB: a release spans several, and an update takes ranges of several.
    let push = |tree: &Path, version: &str| {
        w.push(tree, version, &["--max-pack-mib", "1"])
            .assert_success(&format!("push {version}"));
    };
    push(&w.v1, V1);
    let n = Nginx::start(&w.origin, &NginxOptions::ignoring_ranges());
    let dir = w.install_dir("a");
    // A first install and an update, from a server that answers ranges with 200.
    for (version, tree) in [(V1, &w.v1), (V2, &w.v2)] {
        if version == V2 {
            push(&w.v2, V2);
            // The plan asks some pack for several ranges: one request must carry them all.
            let plan = update_from(&w, &[n.url()], &dir).arg("--dry-run").run();
            plan.assert_success("dry run of the update to v2");
            let mut ranges: BTreeMap<String, usize> = BTreeMap::new();
            for request in plan.json()["requests"].as_array().expect("requests") {
                *ranges
                    .entry(request["pack"].as_str().expect("pack").to_owned())
                    .or_default() += 1;
            }
            assert!(
                ranges.values().any(|&n| n > 1),
                "no pack has several ranges, so this proves nothing: {ranges:?}"
            );
        }
        let mark = n.mark();
        let r = update_ok(&w, &[n.url()], &dir);
        assert_trees_equal(&current(&dir), tree);
        let log = run_log(&n, mark);
        eprintln!(
            "{version} from a server ignoring ranges:\n{}",
            format_entries(&log)
        );
        let context = format!("{version}: {}\n{}", r.out, format_entries(&log));
        let mut gets: BTreeMap<&str, usize> = BTreeMap::new();
        for e in log.iter().filter(|e| e.is_pack()) {
            assert_eq!(e.status, 200, "{context}");
            assert!(e.range.is_some(), "asked as a range\n{context}");
            *gets.entry(e.path()).or_default() += 1;
        }
        assert!(gets.len() > 1, "fewer than 2 packs fetched\n{context}");
        assert!(
            gets.values().all(|&n| n == 1),
            "a pack was sent more than once: {gets:?}\n{context}"
        );
        assert_eq!(
            r.u64("bytes_from_origin"),
            body_bytes(&log),
            "every byte sent, skipped ones included, is counted once\n{context}"
        );
        assert_eq!(r.u64("requests"), log.len() as u64, "{context}");
    }
}

#[test]
fn the_requests_of_an_update_share_connections() {
    let (w, n) = world_with_v1();
    let dir = w.install_dir("a");
    let mark = n.mark();
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, V2);
    let r = w.update_ok(&n.url(), &dir);
    assert_trees_equal(&current(&dir), &w.v2);
    let log = run_log(&n, mark);
    let connections: BTreeSet<u64> = log.iter().map(|e| e.connection).collect();
    eprintln!(
        "{} requests on {} connections",
        log.len(),
        connections.len()
    );
    // Each run is its own process: at most one connection per request in flight (4) each.
    assert!(
        log.len() > 8,
        "too few requests to tell\n{}",
        format_entries(&log)
    );
    assert!(
        connections.len() <= 2 * 4 && connections.len() < log.len(),
        "{} requests on {} connections\n{}\n{}",
        log.len(),
        connections.len(),
        r.out,
        format_entries(&log)
    );
}

/// A private CA and a certificate for `127.0.0.1` it signed, made with `openssl` in `dir`:
/// returns the CA certificate, the server certificate and its key.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    fs::create_dir_all(dir).expect("mkdir tls");
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        Cmd::new("openssl")
            .args(args)
            .timeout(Duration::from_secs(30))
            .run()
            .assert_success(&format!("openssl {}", args.join(" ")));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=relsync test CA",
            ][..],
            &ec,
            &["-keyout", &ca_key, "-out", &ca],
        ]
        .concat(),
    );
    let (cert, key, csr, ext) = (
        path("server.pem"),
        path("server.key"),
        path("server.csr"),
        path("server.ext"),
    );
    openssl(
        &[
            &["req", "-nodes", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    fs::write(
        &ext,
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-set_serial",
        "1",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca.into(), cert.into(), key.into())
}

#[test]
fn an_https_mirror_with_a_private_ca_speaks_http2() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let (ca, cert, key) = private_ca(&w.path().join("tls"));
    let n = Nginx::start(&w.origin, &NginxOptions::tls(&cert, &key));
    assert!(n.url().starts_with("https://127.0.0.1:"), "{}", n.url());
    let dir = w.install_dir("a");

    // Without the CA, the certificate is refused.
    let out = update_from(&w, &[n.url()], &dir).run();
    out.assert_failure("update from a mirror whose CA is not trusted");
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "the error must name the certificate problem\n{out}"
    );
    assert!(
        out.stderr.contains("does not trust") && out.stderr.contains("--ca-cert FILE"),
        "the error must say it in plain words and name the fix\n{out}"
    );

    // A file that is no certificate is refused, naming it.
    let bogus = w.path().join("bogus.pem");
    fs::write(&bogus, "not a certificate\n").expect("write bogus.pem");
    let out = update_from(&w, &[n.url()], &dir)
        .arg("--ca-cert")
        .arg(&bogus)
        .run();
    out.assert_failure("update with a bogus --ca-cert");
    let named = format!("--ca-cert {}", bogus.display());
    assert!(
        out.stderr.contains(&named) && out.stderr.contains("no PEM certificate"),
        "{named} and the problem must be named\n{out}"
    );

    // With the CA (here from the environment), HTTP/2 by ALPN: one connection carries all.
    let mark = n.mark();
    let out = update_from(&w, &[n.url()], &dir)
        .env("RELSYNC_CA_CERT", &ca)
        .run();
    out.assert_success("update over HTTPS with the private CA");
    let r = Report::new(out);
    assert_trees_equal(&current(&dir), &w.v1);
    let log = run_log(&n, mark);
    let context = format!("{}\n{}", r.out, format_entries(&log));
    assert!(log.iter().any(LogEntry::is_pack), "{context}");
    assert!(
        log.iter().all(|e| e.protocol == "HTTP/2.0"),
        "every request over HTTP/2\n{context}"
    );
    let connections: BTreeSet<u64> = log.iter().map(|e| e.connection).collect();
    assert_eq!(connections.len(), 1, "{context}");
    assert_eq!(r.u64("bytes_from_origin"), body_bytes(&log), "{context}");
    assert_eq!(r.u64("requests"), log.len() as u64, "{context}");

    // `--ca-cert` does the same, for an update.
    w.push_ok(&w.v2, V2);
    let out = update_from(&w, &[n.url()], &dir)
        .arg("--ca-cert")
        .arg(&ca)
        .run();
    out.assert_success("update over HTTPS with --ca-cert");
    assert_trees_equal(&current(&dir), &w.v2);
}

/// A server presenting a CA certificate as its own (a self-signed `openssl req -x509`) is
/// refused even with that certificate trusted; the error says so in plain words.
#[test]
fn a_ca_certificate_served_as_the_servers_own_is_explained() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let tls = w.path().join("tls");
    let (ca, _, _) = private_ca(&tls);
    let n = Nginx::start(&w.origin, &NginxOptions::tls(&ca, tls.join("ca.key")));
    let dir = w.install_dir("self-signed");
    let out = update_from(&w, &[n.url()], &dir)
        .arg("--ca-cert")
        .arg(&ca)
        .run();
    out.assert_failure("update from a server using its CA certificate");
    assert!(
        out.stderr.contains("presents a CA certificate") && out.stderr.contains("--ca-cert FILE"),
        "{out}"
    );
    assert!(!dir.join("current").exists(), "{out}");
}
