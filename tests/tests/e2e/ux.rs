//! What a new user meets: every error says what is wrong and what to do about it, dates are
//! dates, and scripts get exit codes (issue 21).

use relsync_tests::{CHANNEL, Output, V1, World, current_link};

/// The origin folder as `--origin` takes it.
fn folder(w: &World) -> String {
    w.origin.display().to_string()
}

/// A key signing none of the origin's documents: the error names the key seen and the keys
/// trusted, as short fingerprints, and where the trusted ones came from.
#[test]
fn a_wrong_key_names_the_key_seen_and_the_keys_trusted() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let other_pub = relsync_tests::parse_pubkey(&w.keygen(&w.path().join("other.key")));
    let dir = w.install_dir("wrong-key");
    let out = w.update_cmd_trusting(&folder(&w), &dir, &other_pub).run();
    out.assert_failure("update trusting another key");
    let short = |key: &str| format!("{}…", &key[..key.find(':').unwrap_or(0) + 9]);
    for want in [
        "bad signature on channel pointer".to_owned(),
        "unknown key".to_owned(),
        format!("signed by {}", short(&w.pubkey)),
        format!("trusted: {}", short(&other_pub)),
        "--trust".to_owned(),
    ] {
        assert!(out.stderr.contains(&want), "missing {want:?}\n{out}");
    }
}

/// An expired channel pointer says when it expired, as a UTC date, and the publisher's fix.
#[test]
fn an_expired_pointer_gives_dates_and_the_publishers_fix() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    crate::trust::expire_pointer(&w);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The publisher refuses to make such a pointer.
    for command in [&["channel", "refresh"][..], &["push"]] {
        let mut cmd = w.publisher().args(command);
        if command == ["push"] {
            cmd = cmd
                .arg(&w.v2)
                .args(["--version", "3.0.0", "--key"])
                .arg(&w.key);
        } else {
            cmd = cmd.arg("--channel-key").arg(&w.key);
        }
        let out = cmd
            .args(["--channel", CHANNEL, "--pointer-days", "0", "--origin"])
            .arg(&w.origin)
            .run();
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(out.stderr.contains("already expired"), "{out}");
    }
    let dir = w.install_dir("stale");
    let out = w.update(&folder(&w), &dir, &[]);
    out.assert_failure("install with an expired pointer");
    assert!(
        out.stderr
            .contains("stale metadata: channel pointer expired at 20"),
        "{out}"
    );
    assert!(out.stderr.contains(" UTC (now 20"), "{out}");
    assert!(
        out.stderr.contains("cdn-publisher channel refresh"),
        "{out}"
    );
    assert!(!out.stderr.contains("unix time"), "{out}");
}

/// `--key KEY.pub` is a public key where the secret key belongs: the error says so, not
/// that the file's mode is wrong.
#[test]
fn a_public_key_given_as_key_is_named_as_one() {
    let w = World::new();
    let public = w.path().join("keys/release.key.pub");
    let out = w
        .publisher()
        .arg("push")
        .arg(&w.v1)
        .args(["--version", V1, "--channel", CHANNEL, "--key"])
        .arg(&public)
        .arg("--to")
        .arg(&w.origin)
        .run();
    out.assert_failure("push --key KEY.pub");
    assert!(
        out.stderr.contains("release.key.pub is a public key"),
        "{out}"
    );
    assert!(out.stderr.contains("needs the secret key file"), "{out}");
    assert!(!out.stderr.contains("mode"), "{out}");
}

/// A publisher that forces the channel below a version installs saw: the push warns, the
/// installs refuse it naming the yank that fixes it, and after that yank they accept it.
#[test]
fn a_forced_lower_push_warns_and_the_refusal_names_the_yank() {
    let w = World::new();
    w.push_ok(&w.v2, "1.9.0");
    let dir = w.install_dir("seen-1.9");
    w.update_ok(&folder(&w), &dir);

    let refused = w.push(&w.v1, "1.8.5", &[]);
    refused.assert_failure("push of a lower version");
    assert!(
        refused
            .stderr
            .contains("cdn-publisher yank --channel stable --version 1.9.0"),
        "{refused}"
    );

    let forced = w.push(&w.v1, "1.8.5", &["--force"]);
    forced.assert_success("push --force of a lower version");
    for want in [
        "warning: channel stable offered 1.9.0",
        "refuse 1.8.5",
        "cdn-publisher yank --channel stable --version 1.9.0",
    ] {
        assert!(forced.stderr.contains(want), "missing {want:?}\n{forced}");
    }

    let link = current_link(&dir);
    let out = w.update(&folder(&w), &dir, &[]);
    out.assert_failure("update below a version seen");
    assert!(out.stderr.contains("rollback refused"), "{out}");
    assert!(
        out.stderr
            .contains("cdn-publisher yank --channel stable --version 1.9.0"),
        "{out}"
    );
    assert_eq!(current_link(&dir), link);

    w.publisher()
        .args([
            "yank",
            "--channel",
            CHANNEL,
            "--version",
            "1.9.0",
            "--origin",
        ])
        .arg(&w.origin)
        .arg("--channel-key")
        .arg(&w.key)
        .run()
        .assert_success("yank 1.9.0");
    let out = w.update(&folder(&w), &dir, &[]);
    out.assert_success("update once 1.9.0 is yanked");
}

/// `cdn-publisher show` prints times as UTC dates (with the unix time for scripts), and
/// `channel refresh` says until when the pointer is good.
#[test]
fn publisher_times_are_dates() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let out = w
        .publisher()
        .args(["channel", "refresh", "--channel", CHANNEL])
        .arg("--to")
        .arg(&w.origin)
        .arg("--channel-key")
        .arg(&w.key)
        .run();
    out.assert_success("channel refresh");
    assert_utc_date(&out, "now offers 1.0.0 until ");
    let show = w
        .publisher()
        .arg("show")
        .arg(w.origin.join("channels").join(CHANNEL))
        .run();
    show.assert_success("show the pointer");
    assert_utc_date(&show, "issued     ");
    assert_utc_date(&show, "expires    ");
    assert!(show.stdout.contains(" UTC (unix "), "{show}");
}

/// `prefix` in stdout is followed by a `YYYY-MM-DD HH:MM:SS UTC` date.
fn assert_utc_date(out: &Output, prefix: &str) {
    let at = out
        .stdout
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?}\n{out}"));
    let date: Vec<u8> = out.stdout[at + prefix.len()..].bytes().take(23).collect();
    let shape = b"dddd-dd-dd dd:dd:dd UTC";
    let ok = date.len() == shape.len()
        && date.iter().zip(shape).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        });
    assert!(ok, "{prefix:?} is not followed by a UTC date\n{out}");
}

/// `--version` names the binary, `--help` lists the exit codes, and a usage error exits 2.
#[test]
fn versions_help_and_usage_errors() {
    let w = World::new();
    let relsync = w.relsync().arg("--version").run();
    relsync.assert_success("relsync --version");
    assert_eq!(relsync.stdout, "relsync 0.1.0\n", "{relsync}");
    let publisher = w.publisher().arg("--version").run();
    publisher.assert_success("cdn-publisher --version");
    assert_eq!(publisher.stdout, "cdn-publisher 0.1.0\n", "{publisher}");
    for args in [&["--help"][..], &["check", "--help"]] {
        let help = w.relsync().args(args).run();
        help.assert_success("relsync --help");
        for want in [
            "Exit codes:",
            "\n  100  check: an update is available",
            "\n  101  check: ",
        ] {
            assert!(help.stdout.contains(want), "missing {want:?}\n{help}");
        }
    }
    let help = w.publisher().arg("--help").run();
    assert!(help.stdout.contains("Exit codes:"), "{help}");
    let usage = w.relsync().args(["update", "--no-such-flag"]).run();
    assert_eq!(usage.status.code(), Some(2), "{usage}");
}

/// `relsync check` exits 0 when up to date, 100 when an update is available and 101 when
/// one is held back (here by a rollout at 0%), text and JSON alike.
#[test]
fn check_exit_codes_say_what_it_found() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("check");
    let check = |json: bool| {
        let mut cmd = w
            .relsync()
            .args(["check", "--origin", &folder(&w), "--trust", &w.pubkey])
            .arg("--install")
            .arg(&dir);
        if json {
            cmd = cmd.arg("--json");
        }
        cmd.run()
    };
    let fresh = check(false);
    assert_eq!(
        fresh.status.code(),
        Some(100),
        "nothing installed: available\n{fresh}"
    );
    assert!(
        fresh.stdout.contains("update available: nothing -> 1.0.0"),
        "{fresh}"
    );
    w.update_ok(&folder(&w), &dir);
    for json in [false, true] {
        let out = check(json);
        assert_eq!(out.status.code(), Some(0), "up to date\n{out}");
    }
    w.push(&w.v2, relsync_tests::V2, &["--rollout-percent", "0"])
        .assert_success("push v2 to 0%");
    for json in [false, true] {
        let out = check(json);
        assert_eq!(out.status.code(), Some(101), "held back\n{out}");
        if json {
            assert_eq!(out.json()["outcome"], "held", "{out}");
        } else {
            assert!(out.stdout.contains("is offered but held"), "{out}");
        }
    }
    w.publisher()
        .args([
            "promote",
            "--channel",
            CHANNEL,
            "--version",
            relsync_tests::V2,
        ])
        .args(["--percent", "100", "--origin"])
        .arg(&w.origin)
        .arg("--channel-key")
        .arg(&w.key)
        .run()
        .assert_success("promote v2 to 100%");
    let out = check(true);
    assert_eq!(out.status.code(), Some(100), "available\n{out}");
    assert_eq!(out.json()["outcome"], "available", "{out}");
}

/// Logs: no colour on a pipe; on a terminal colour unless `NO_COLOR`; with `--json` every
/// log line is a JSON object too, so stdout and stderr together stay NDJSON.
#[test]
fn logs_are_plain_on_a_pipe_and_json_with_json() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("logs");
    let out = w
        .update_cmd(&folder(&w), &dir)
        .env("RUST_LOG", "debug")
        .run();
    out.assert_success("update --json with debug logs");
    assert!(!out.stderr.is_empty(), "debug logs expected\n{out}");
    for line in out.stderr.lines().chain(out.stdout.lines()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{out}"));
        assert!(value.is_object(), "{line}");
    }
    assert!(
        out.stderr.contains(r#""event":"log","level":"debug""#),
        "{out}"
    );
    assert_eq!(out.json()["version"], V1, "{out}");

    // `rollback` logs at debug (the audit record it appends); v2 gives it a release to go to.
    w.push_ok(&w.v2, relsync_tests::V2);
    w.update_ok(&folder(&w), &dir);
    let text = w
        .relsync()
        .args(["rollback", "--install"])
        .arg(&dir)
        .env("RUST_LOG", "debug")
        .run();
    text.assert_success("rollback");
    assert!(text.stderr.contains("DEBUG"), "{text}");
    assert!(!text.stderr.contains('\u{1b}'), "colour on a pipe\n{text}");

    // On a terminal (a pty from util-linux `script`): colour, unless NO_COLOR.
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = relsync_tests::Cmd::new("script")
            .arg("-qec")
            .arg(format!(
                "{} rollback --install {}",
                relsync_tests::bins().relsync.display(),
                dir.display()
            ))
            .arg("/dev/null")
            .env("RUST_LOG", "debug")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            cmd = cmd.env("NO_COLOR", value);
        }
        let out = cmd.run();
        out.assert_success("rollback on a pty");
        out
    };
    let coloured = on_tty(None);
    assert!(
        coloured.stdout.contains("\u{1b}[2m"),
        "colour on a terminal\n{coloured}"
    );
    let plain = on_tty(Some("1"));
    assert!(plain.stdout.contains("DEBUG"), "{plain}");
    assert!(!plain.stdout.contains('\u{1b}'), "NO_COLOR=1\n{plain}");
}

/// A transfer longer than 10 s reports itself without a terminal: a line on stderr with
/// bytes, rate and ETA, and with `--json` a progress event on stdout before the summary.
#[test]
fn long_transfers_report_progress_without_a_terminal() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    // ~8.4 MB over one connection at 640 KiB/s: about 13 s.
    let n = relsync_tests::Nginx::start(
        &w.origin,
        &relsync_tests::NginxOptions::rate_limited(640 * 1024),
    );
    let url = n.url();
    let run = |name: &str, json: bool| {
        let mut cmd = w
            .relsync()
            .args([
                "update",
                "--origin",
                &url,
                "--trust",
                &w.pubkey,
                "--parallel",
                "1",
            ])
            .arg("--install")
            .arg(w.install_dir(name));
        if json {
            cmd = cmd.arg("--json");
        }
        cmd.run()
    };
    let (text, json) = std::thread::scope(|s| {
        let text = s.spawn(|| run("text", false));
        let json = s.spawn(|| run("json", true));
        (text.join(), json.join())
    });
    let (text, json) = (text.expect("text run"), json.expect("json run"));
    text.assert_success("slow update, text");
    json.assert_success("slow update, --json");
    assert!(text.elapsed.as_secs() >= 11, "too fast to test\n{text}");

    let line = text
        .stderr
        .lines()
        .find(|l| l.starts_with("fetched ") && l.contains(" of "))
        .unwrap_or_else(|| panic!("no progress line\n{text}"));
    assert!(line.contains("/s, eta "), "{line}\n{text}");
    assert!(line.contains('%'), "{line}");

    let events: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{json}")))
        .collect();
    let progress = events
        .iter()
        .find(|e| e["event"] == "progress")
        .unwrap_or_else(|| panic!("no progress event\n{json}"));
    assert!(
        progress["bytes"].as_u64().is_some_and(|b| b > 0),
        "{progress}"
    );
    assert!(
        progress["total"].as_u64() >= progress["bytes"].as_u64(),
        "{progress}"
    );
    assert!(
        progress["bytes_per_sec"].as_u64().is_some_and(|r| r > 0),
        "{progress}"
    );
    assert!(progress["eta_secs"].is_u64(), "{progress}");
    // The summary is still the last line.
    assert_eq!(json.json()["version"], V1, "{json}");
}

/// A daemon stopped by SIGTERM in the middle of a download counts the bytes it received
/// (not 0): at least what its last progress event reported, at most what nginx sent.
#[test]
fn a_daemon_stopped_mid_download_counts_what_it_fetched() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let n = relsync_tests::Nginx::start(
        &w.origin,
        &relsync_tests::NginxOptions::rate_limited(256 * 1024),
    );
    let mark = n.mark();
    let install = w.install_dir("daemon");
    let config = w.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "install = {install:?}\norigin = {origin:?}\ntrust = [{key:?}]\nproduct = \"app\"\n",
            install = install.display().to_string(),
            origin = n.url(),
            key = w.pubkey,
        ),
    )
    .expect("write the config");
    let cmd = w
        .relsync()
        .args(["daemon", "--json", "--config"])
        .arg(&config);
    let mut daemon = relsync_tests::Daemon::start("daemon", &cmd, &w.path().join("daemon.log"));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let fetched = loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let event = daemon.event("fetched", left);
        let bytes = event["bytes"].as_u64().unwrap_or(0);
        if bytes > 512 * 1024 {
            break bytes;
        }
    };
    let stats = daemon.stop();
    assert_eq!(stats["downloads"], 0, "{stats}");
    let from_origin = stats["bytes_from_origin"].as_u64().unwrap_or(0);
    n.wait_log_quiet(
        std::time::Duration::from_millis(300),
        std::time::Duration::from_secs(10),
    );
    let sent: u64 = n.entries_since(mark).iter().map(|e| e.body_bytes).sum();
    assert!(
        from_origin >= fetched && from_origin <= sent,
        "bytes_from_origin {from_origin}: the last progress said {fetched}, nginx sent {sent}\n{stats}"
    );
}

/// A folder origin counts the chunk bytes it reads, and the summary says where every byte
/// came from: the origin, LAN peers, or this machine.
#[test]
fn a_folder_origin_counts_chunk_bytes_and_names_their_source() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("folder");
    let r = w.update_ok(&folder(&w), &dir);
    // The release holds an 8 MiB file of random bytes: no compression shrinks it.
    let downloaded = r.u64("bytes_downloaded");
    assert!(downloaded > relsync_tests::BIG_FILE_LEN as u64, "{}", r.out);
    assert_eq!(r.u64("bytes_from_origin"), downloaded, "{}", r.out);
    assert_eq!(r.u64("bytes_from_peers"), 0, "{}", r.out);

    w.push_ok(&w.v2, relsync_tests::V2);
    let text = w.update_text(&folder(&w), &dir);
    text.assert_success("text update");
    assert!(
        text.stdout.contains(" from the origin, 0 B from LAN peers"),
        "{text}"
    );
    assert!(
        text.stdout.contains(" of chunks from this machine"),
        "{text}"
    );
}

/// Completions and man pages come from the clap definitions: every subcommand and option is
/// in them, for both binaries.
#[test]
fn completions_and_man_pages_are_generated() {
    let w = World::new();
    for (cmd, name, sub, option) in [
        (w.relsync(), "relsync", "update", "--health-check"),
        (w.publisher(), "cdn-publisher", "push", "--rollout-percent"),
    ] {
        for shell in ["bash", "zsh", "fish"] {
            let out = cmd.clone().args(["completions", shell]).run();
            out.assert_success(&format!("{name} completions {shell}"));
            // fish names options without their dashes (`-l health-check`).
            let bare = option.trim_start_matches('-');
            assert!(
                out.stdout.contains(sub) && out.stdout.contains(bare),
                "{out}"
            );
        }
        let bad = cmd.clone().args(["completions", "tcsh"]).run();
        assert_eq!(bad.status.code(), Some(2), "{bad}");

        let dir = w.path().join(format!("man-{name}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("other.1"), ".TH OTHER 1\n").expect("another page");
        let out = cmd.clone().args(["man", "--out"]).arg(&dir).run();
        out.assert_success(&format!("{name} man"));
        let top = std::fs::read_to_string(dir.join(format!("{name}.1"))).expect("top page");
        assert!(
            top.starts_with(".ie \\n(.g") || top.contains(".TH"),
            "{top}"
        );
        assert!(top.contains("Exit codes:"), "{top}");
        let page = std::fs::read_to_string(dir.join(format!("{name}-{sub}.1")))
            .unwrap_or_else(|e| panic!("{name}-{sub}.1: {e}\n{out}"));
        assert!(
            page.contains(&option.replace('-', "\\-")),
            "{option} in\n{page}"
        );
        assert!(out.stdout.contains(&format!("{name}-{sub}.1")), "{out}");
        assert!(!out.stdout.contains("other.1"), "{out}");
    }
}

/// A release marked bad after a failed health check: `update` says it is held and why (as
/// `check` does), `relsync retry VERSION` clears the mark (in the audit log), and the next
/// update installs it.
#[test]
fn a_release_marked_bad_is_held_by_update_and_retry_clears_the_mark() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("bad");
    w.update_ok(&folder(&w), &dir);
    w.push_ok(&w.v2, relsync_tests::V2);
    let failed = w.update(
        &folder(&w),
        &dir,
        &["--health-check", "exit 3", "--trial-period", "20s"],
    );
    failed.assert_failure("update whose health check fails");
    assert!(failed.stderr.contains("rolled back to 1.0.0"), "{failed}");

    let text = w.update_text(&folder(&w), &dir);
    text.assert_success("update with the offered release marked bad");
    for want in [
        "already up to date at 1.0.0; 2.0.0 is offered but held: ",
        "marked bad here",
        "`relsync retry 2.0.0` clears the mark",
    ] {
        assert!(text.stdout.contains(want), "missing {want:?}\n{text}");
    }
    let json = w.update(&folder(&w), &dir, &[]);
    json.assert_success("update --json, held");
    let held = &json.json()["held"];
    assert_eq!(held["offered"], "2.0.0", "{json}");
    assert_eq!(held["reason"], "marked_bad", "{json}");

    let retry = |version: &str| {
        w.relsync()
            .args(["retry", version, "--install"])
            .arg(&dir)
            .run()
    };
    let out = retry("2.0.0");
    out.assert_success("retry 2.0.0");
    assert!(
        out.stdout.contains("cleared the bad mark of 2.0.0"),
        "{out}"
    );
    let again = retry("2.0.0");
    again.assert_failure("retry of a release not marked");
    assert!(
        again.stderr.contains("2.0.0 is not marked bad here"),
        "{again}"
    );
    let audit = w
        .relsync()
        .args(["audit", "show", "--install"])
        .arg(&dir)
        .run();
    audit.assert_success("audit show");
    assert!(audit.stdout.contains("unmarked"), "{audit}");
    assert!(
        audit.stdout.contains("cleared the bad mark of 2.0.0"),
        "{audit}"
    );

    let r = w.update_ok(&folder(&w), &dir);
    assert_eq!(r.str("version"), "2.0.0", "{}", r.out);
    assert!(!r.bool("up_to_date"), "{}", r.out);
}

/// Drift that `verify` finds (a changed byte, a wrong mode, an extra file) is repaired by
/// `relsync repair`: only the drifted files are rewritten, only the chunks no local file
/// holds are fetched, the tree is switched atomically, and the release kept for rollback
/// stays.
#[test]
fn repair_rebuilds_exactly_the_drifted_files() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let n = relsync_tests::Nginx::start(&w.origin, &relsync_tests::NginxOptions::default());
    let dir = w.install_dir("repair");
    w.update_ok(&n.url(), &dir);
    w.push_ok(&w.v2, relsync_tests::V2);
    w.update_ok(&n.url(), &dir);
    let tree = relsync_tests::current(&dir);
    // Files v2 wrote, not linked from v1 (a linked file shares its inode with the release
    // kept for rollback, which its drift then changes too). A byte in a chunk new in v2 (its
    // first edit, at 43 %), so no local file holds it.
    let edited_at = relsync_tests::BIG_FILE_LEN as u64 * 43 / 100;
    relsync_tests::flip_byte(&tree.join(relsync_tests::BIG_FILE), edited_at);
    std::fs::set_permissions(
        tree.join("share/new.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod 0777");
    std::fs::write(tree.join("intruder"), b"not signed").expect("an extra file");

    let verify = w.relsync().args(["verify", "--install"]).arg(&dir).run();
    verify.assert_failure("verify of a drifted install");
    assert!(
        verify
            .stdout
            .contains("share/new.txt: mode 0777, expected 0644"),
        "{verify}"
    );
    assert!(verify.stderr.contains("`relsync repair"), "{verify}");
    // A file others may write is refused before anything is read (the engine's safety
    // rule; its error says how to check and fix it): a mode only its owner can change is
    // drift for repair.
    std::fs::set_permissions(
        tree.join("share/new.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 0600");

    let link = current_link(&dir);
    let repair = |json: bool| {
        let mut cmd = w
            .relsync()
            .args([
                "repair",
                "--origin",
                &n.url(),
                "--trust",
                &w.pubkey,
                "--install",
            ])
            .arg(&dir);
        if json {
            cmd = cmd.arg("--json");
        }
        cmd.run()
    };
    let out = repair(true);
    out.assert_success("repair");
    let report = out.json();
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(3),
        "{out}"
    );
    let rebuilt = &report["rebuilt"];
    assert_eq!(rebuilt["version"], relsync_tests::V2, "{out}");
    assert_eq!(rebuilt["previous_version"], V1, "{out}");
    assert_eq!(rebuilt["files_written"], 2, "the two drifted files\n{out}");
    let fetched = rebuilt["bytes_from_origin"].as_u64().unwrap_or(0);
    assert!(
        fetched > 0 && fetched < 1 << 20,
        "one chunk, not the file\n{out}"
    );

    relsync_tests::assert_trees_equal(&relsync_tests::current(&dir), &w.v2);
    assert_ne!(
        current_link(&dir),
        link,
        "switched to a new directory\n{out}"
    );
    let releases = std::fs::read_dir(dir.join("releases"))
        .expect("releases")
        .count();
    assert_eq!(
        releases, 2,
        "the drifted directory is gone, v1 stays\n{out}"
    );
    w.relsync()
        .args(["verify", "--install"])
        .arg(&dir)
        .run()
        .assert_success("verify after the repair");
    let audit = w
        .relsync()
        .args(["audit", "show", "--install"])
        .arg(&dir)
        .run();
    assert!(
        audit.stdout.contains("repaired 2.0.0: 3 difference(s)"),
        "{audit}"
    );

    let again = repair(false);
    again.assert_success("repair of an exact install");
    assert!(again.stdout.contains("nothing to repair"), "{again}");
    w.rollback(&dir).assert_success("rollback after the repair");
    relsync_tests::assert_trees_equal(&relsync_tests::current(&dir), &w.v1);
}

/// Every publisher command names its origin with `--origin`, `--to` being an alias; help
/// says a bucket works.
#[test]
fn publisher_commands_take_origin_with_to_as_an_alias() {
    let w = World::new();
    w.publisher()
        .arg("push")
        .arg(&w.v1)
        .args(["--version", V1, "--channel", CHANNEL, "--key"])
        .arg(&w.key)
        .arg("--origin")
        .arg(&w.origin)
        .run()
        .assert_success("push --origin");
    for flag in ["--origin", "--to"] {
        w.publisher()
            .args(["channel", "refresh", "--channel", CHANNEL, flag])
            .arg(&w.origin)
            .arg("--channel-key")
            .arg(&w.key)
            .run()
            .assert_success(&format!("channel refresh {flag}"));
    }
    for args in [
        &["channel", "refresh", "--help"][..],
        &["root", "publish", "--help"],
    ] {
        let help = w.publisher().args(args).run();
        help.assert_success("help");
        assert!(help.stdout.contains("--origin <ORIGIN>"), "{help}");
        assert!(help.stdout.contains("s3://"), "{help}");
    }
}

/// `rollback` says which way it went: back to the older release, or forward again.
#[test]
fn a_second_rollback_says_it_went_forward() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let dir = w.install_dir("rollback");
    w.update_ok(&folder(&w), &dir);
    w.push_ok(&w.v2, relsync_tests::V2);
    w.update_ok(&folder(&w), &dir);
    let back = w.rollback(&dir);
    back.assert_success("rollback");
    assert_eq!(back.stdout.trim(), "rolled back 2.0.0 -> 1.0.0", "{back}");
    let forward = w.rollback(&dir);
    forward.assert_success("second rollback");
    assert!(
        forward.stdout.starts_with("switched 1.0.0 -> 2.0.0"),
        "{forward}"
    );
}

/// A first install that fails leaves nothing behind: no `DIR/.relsync`, and no `DIR` if it
/// made it. One that fetched chunks before failing keeps them, so the next run resumes.
#[test]
fn a_failed_first_install_leaves_nothing_behind() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let stranger = relsync_tests::parse_pubkey(&w.keygen(&w.path().join("stranger.key")));
    let made = w.install_dir("made");
    let out = w.update_cmd_trusting(&folder(&w), &made, &stranger).run();
    out.assert_failure("first install trusting the wrong key");
    assert!(
        made.symlink_metadata().is_err(),
        "{} left behind\n{out}",
        made.display()
    );

    let given = w.install_dir("given");
    std::fs::create_dir(&given).expect("mkdir");
    let out = w
        .relsync()
        .args([
            "check",
            "--origin",
            &folder(&w),
            "--trust",
            &stranger,
            "--install",
        ])
        .arg(&given)
        .run();
    out.assert_failure("first check trusting the wrong key");
    let left: Vec<_> = std::fs::read_dir(&given).expect("read").collect();
    assert!(left.is_empty(), "{left:?}\n{out}");

    // A deadline in the middle of the download: the chunks fetched are kept.
    let n = relsync_tests::Nginx::start(
        &w.origin,
        &relsync_tests::NginxOptions::rate_limited(512 * 1024),
    );
    let slow = w.install_dir("slow");
    let out = w.update(&n.url(), &slow, &["--deadline", "4s", "--parallel", "1"]);
    out.assert_failure("first install past its deadline");
    assert!(out.stderr.contains("deadline"), "{out}");
    let chunks = std::fs::read_dir(slow.join(".relsync/chunks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(chunks > 0, "fetched chunks kept for the next run\n{out}");
    assert!(out.stderr.contains("the next run resumes"), "{out}");
    w.update_ok(&n.url(), &slow);
}

/// A daemon whose staged release waits (here: `auto_install = false`) says why once, and
/// reports the offer once, not at every check.
#[test]
fn the_daemon_says_once_why_a_staged_release_waits() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let install = w.install_dir("waits");
    w.update_ok(&folder(&w), &install);
    w.push_ok(&w.v2, relsync_tests::V2);
    let config = w.path().join("waits.toml");
    std::fs::write(
        &config,
        format!(
            "install = {install:?}\norigin = {origin:?}\ntrust = [{key:?}]\nproduct = \"app\"\n\
             [policy]\ncheck_interval = \"10s\"\nauto_install = false\n",
            install = install.display().to_string(),
            origin = folder(&w),
            key = w.pubkey,
        ),
    )
    .expect("write the config");
    let cmd = w
        .relsync()
        .args(["daemon", "--json", "--config"])
        .arg(&config);
    let mut daemon = relsync_tests::Daemon::start("daemon", &cmd, &w.path().join("daemon.log"));
    // The first check downloads v2, which then waits; then two more checks.
    let second = std::time::Duration::from_secs(1);
    let mut events = daemon.events_until("downloaded", 30 * second);
    for _ in 0..2 {
        events.extend(daemon.events_until("check_started", 30 * second));
    }
    events.extend(daemon.events_until("checked", 30 * second));
    // The last check's offer and wait, were they said again, come right after it.
    std::thread::sleep(2 * second);
    let pid = daemon.pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    events.extend(daemon.events_until("stopped", 20 * second));
    let named = |name: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    };
    let all = format!("{events:#?}");
    assert_eq!(named("check_started").len(), 3, "{all}");
    assert_eq!(named("update_available").len(), 1, "said once\n{all}");
    let waiting = named("waiting");
    assert_eq!(waiting.len(), 1, "said once\n{all}");
    assert_eq!(waiting[0]["version"], relsync_tests::V2, "{all}");
    let reason = waiting[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("auto_install is off") && reason.contains("relsync apply"),
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(relsync_tests::current(&install).join("VERSION")).ok(),
        Some("1.0.0\n".to_owned()),
        "installed with auto_install off"
    );
}

/// Output into a pipe its reader closed (`| head`) ends the command quietly, exit 0, for
/// both binaries, instead of a panic with a backtrace.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let pointer = w.origin.join("channels").join(CHANNEL);
    let bins = relsync_tests::bins();
    let dir = w.install_dir("pipe");
    w.update_ok(&folder(&w), &dir);
    for (program, args) in [
        (
            &bins.publisher,
            vec!["show".to_owned(), pointer.display().to_string()],
        ),
        (
            &bins.publisher,
            vec!["ls".to_owned(), "--origin".to_owned(), folder(&w)],
        ),
        (
            &bins.relsync,
            vec![
                "status".to_owned(),
                "--install".to_owned(),
                dir.display().to_string(),
            ],
        ),
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(program)
            .args(&args)
            .env("RELSYNC_PRODUCT", relsync_tests::PRODUCT)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{program:?} {args:?}: {:?}\n{stderr}",
            out.status
        );
        assert!(
            !stderr.contains("panicked"),
            "{program:?} {args:?}\n{stderr}"
        );
    }
}
