//! The audit log: `relsync audit verify` passes an intact log and fails an edited one, naming
//! the line where the chain breaks; `relsync audit show` prints the records. The log is
//! written through the engine (as an updater would), then checked only through the CLI.

use std::fs;
use std::path::Path;

use relsync_engine::{AuditEvent, AuditLog, InstallLayout};
use relsync_tests::{Cmd, Output, bins, parse_json_object};
use semver::Version;

fn relsync(args: &[&str], install: &Path) -> Output {
    Cmd::new(&bins().relsync)
        .args(args)
        .arg("--install")
        .arg(install)
        .run()
}

fn write_log(install: &Path) {
    // An install's state folder, as relsync makes it (appends never create it).
    fs::create_dir_all(install.join(".relsync")).expect("mkdir .relsync");
    let log = AuditLog::open(&InstallLayout::new(install)).expect("open the audit log");
    let v = |s: &str| Version::parse(s).expect("version");
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        log.append(AuditEvent::Checked {
            channel: "stable".into(),
            offered: Some(v(version)),
            installed: None,
            outcome: "update available".into(),
        })
        .expect("append");
        log.append(AuditEvent::Installed {
            version: v(version),
            previous: None,
            manifest: "ab".repeat(32),
        })
        .expect("append");
    }
}

#[test]
fn verify_passes_an_intact_log_and_names_the_line_of_an_edit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let install = tmp.path().join("install");
    fs::create_dir_all(&install).expect("mkdir");

    // No log yet: an empty, intact log.
    let out = relsync(&["audit", "verify"], &install);
    out.assert_success("verify with no log");
    assert!(out.stdout.contains("audit log OK: no records"), "{out}");

    write_log(&install);
    let out = relsync(&["audit", "verify"], &install);
    out.assert_success("verify an intact log");
    assert!(out.stdout.contains("audit log OK: 6 records"), "{out}");
    let json = relsync(&["audit", "verify", "--json"], &install);
    json.assert_success("verify --json an intact log");
    let v = json.json();
    assert_eq!(v["ok"], true, "{json}");
    assert_eq!(v["records"], 6, "{json}");

    let show = relsync(&["audit", "show"], &install);
    show.assert_success("show");
    assert_eq!(show.stdout.lines().count(), 6, "{show}");
    assert!(show.stdout.contains("installed 1.2.0"), "{show}");

    // Edit line 4 (seq 3: installed 1.1.0): the break shows at line 5, whose prev no longer
    // matches.
    let path = install.join(".relsync/audit.log");
    let text = fs::read_to_string(&path).expect("read the log");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[3].contains(r#""version":"1.1.0""#), "{}", lines[3]);
    lines[3] = lines[3].replace(r#""version":"1.1.0""#, r#""version":"1.1.9""#);
    fs::write(&path, lines.join("\n") + "\n").expect("write the log");

    let out = relsync(&["audit", "verify"], &install);
    out.assert_failure("verify an edited log");
    assert!(
        out.stderr.contains("audit log BROKEN at line 5")
            && out.stderr.contains("line 4 was changed"),
        "{out}"
    );
    let json = relsync(&["audit", "verify", "--json"], &install);
    json.assert_failure("verify --json an edited log");
    let v = parse_json_object(&json.stdout).unwrap_or_else(|| panic!("no JSON\n{json}"));
    assert_eq!(v["ok"], false, "{json}");
    assert_eq!(v["line"], 5, "{json}");

    // Show still prints what it can read, the edit included.
    let show = relsync(&["audit", "show"], &install);
    show.assert_success("show an edited log");
    assert!(show.stdout.contains("installed 1.1.9"), "{show}");
}
