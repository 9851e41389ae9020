//! `relsync daemon`: the policy loop as a service, its JSON events, its Prometheus endpoint,
//! its clean stop and its config errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relsync_tests::{Daemon, PRODUCT, V1, V2, World, assert_trees_equal, current, free_port};
use serde_json::Value;

use crate::common::{swarm_key, world_with_v1};

/// Writes a daemon config for `install` (following this world's channel from `origin`) with
/// `extra` appended, and returns its path.
fn write_config(w: &World, name: &str, origin: &str, install: &Path, extra: &str) -> PathBuf {
    let path = w.path().join(format!("{name}.toml"));
    let text = format!(
        "install = {install:?}\norigin = {origin:?}\ntrust = [{key:?}]\nproduct = {PRODUCT:?}\n{extra}",
        install = install.display().to_string(),
        key = w.pubkey,
    );
    std::fs::write(&path, text).expect("writing the daemon config");
    path
}

/// An HTTP/1.0 GET on loopback: the whole response, headers included.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the response");
    response
}

/// The value of the sample named exactly `series` (name and labels) in an exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// The next `applied` event, which must be for `version`.
fn applied(daemon: &mut Daemon, version: &str, timeout: Duration) {
    let event = daemon.event("applied", timeout);
    assert_eq!(event["version"], version, "{event}\n{}", daemon.log());
}

#[test]
fn daemon_installs_each_release_serves_metrics_and_stops_cleanly() {
    let (w, n) = world_with_v1();
    // A LAN peer holding v1, so the daemon's [lan] node has someone to fetch from.
    let seed = w.install_dir("seed");
    w.update_ok(&n.url(), &seed);
    let seed_cmd = w
        .relsync()
        .arg("serve")
        .arg("--install")
        .arg(&seed)
        .arg("--swarm-key")
        .arg(swarm_key(&w))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--json"])
        .args(["--stop-after", "120s"]);
    let seed_node = Daemon::start("seed", &seed_cmd, &w.path().join("seed.log"));

    let install = w.install_dir("daemon");
    let extra = format!(
        r#"health_check = "test -d \"$RELSYNC_CURRENT\""
[policy]
check_interval = "10s"  # the shortest the policy accepts
[lan]
swarm_key = {key:?}
peers = [{peer:?}]
mdns = false
listen = "/ip4/127.0.0.1/tcp/0"
peer_wait = "5s"
"#,
        peer = seed_node.addr(),
        key = swarm_key(&w),
    );
    let config = write_config(&w, "daemon", &n.url(), &install, &extra);
    let cmd = w
        .relsync()
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .args(["--json", "--metrics-listen", "127.0.0.1:0"])
        .args(["--stop-after", "120s"])
        .env("RUST_LOG", "relsync_engine=warn");
    let mut daemon = Daemon::start("daemon", &cmd, &w.path().join("daemon.log"));
    let started: Value = serde_json::from_str(&daemon.addrs[0]).unwrap_or_else(|e| {
        panic!(
            "the first line is the started event: {e}\n{}",
            daemon.addrs[0]
        )
    });
    assert_eq!(started["event"], "started", "{started}");
    assert_eq!(started["version"], Value::Null, "{started}");
    assert_eq!(started["check_interval_secs"], 10, "{started}");
    let metrics = started["metrics"]
        .as_str()
        .unwrap_or_else(|| panic!("the started event names the metrics address: {started}"))
        .to_owned();
    assert!(metrics.starts_with("127.0.0.1:"), "{started}");
    let peers = started["peers"].as_array().expect("peers");
    assert!(
        !peers.is_empty()
            && peers.iter().all(|p| p
                .as_str()
                .is_some_and(|p| p.starts_with("/ip4/127.0.0.1/tcp/"))),
        "the [lan] node listens where it was told: {started}"
    );

    // The first check runs at once and installs v1; the next one, 10 s later, finds v2.
    applied(&mut daemon, V1, Duration::from_secs(30));
    assert_trees_equal(&current(&install), &w.v1);
    w.push_ok(&w.v2, V2);
    applied(&mut daemon, V2, Duration::from_secs(30));
    // The health check runs after the switch; the release is kept once it passes.
    let kept = daemon.event("restart_required", Duration::from_secs(30));
    assert_eq!(kept["version"], V2, "{kept}");
    assert_trees_equal(&current(&install), &w.v2);

    let response = http_get(&metrics, "/metrics");
    assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let installed = format!("relsync_installed_version_info{{version=\"{V2}\"}}");
    assert_eq!(sample(body, &installed), Some(1.0), "{body}");
    assert!(!body.contains(&format!("version=\"{V1}\"")), "{body}");
    // v1 came from the seed peer, v2's delta from the origin.
    let from_origin = sample(body, "relsync_bytes_from_origin_total").unwrap_or(0.0);
    let from_peers = sample(body, "relsync_bytes_from_peers_total").unwrap_or(0.0);
    assert!(from_origin > 0.0 && from_peers > 0.0, "{body}");
    let installs = "relsync_update_outcomes_total{operation=\"install\",outcome=\"ok\"}";
    assert_eq!(sample(body, installs), Some(2.0), "{body}");
    assert_eq!(sample(body, "relsync_rollbacks_total"), Some(0.0), "{body}");
    let last_check = sample(body, "relsync_last_check_timestamp_seconds").unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    assert!(now - last_check < 120.0, "{body}");
    let missing = http_get(&metrics, "/");
    assert!(missing.starts_with("HTTP/1.0 404 "), "{missing}");

    let stats = daemon.stop();
    assert_eq!(stats["installs"], 2, "{stats}");
    assert_eq!(stats["downloads"], 2, "{stats}");
    assert_eq!(stats["rollbacks"], 0, "{stats}");
    assert_eq!(
        stats["bytes_from_origin"].as_f64(),
        Some(from_origin),
        "{stats}"
    );
    assert_eq!(
        stats["bytes_from_peers"].as_f64(),
        Some(from_peers),
        "{stats}"
    );
    let served = seed_node.stop();
    assert_eq!(
        served["bytes_uploaded"].as_f64(),
        Some(from_peers),
        "what the daemon took from its peer is what the peer sent\n{served}"
    );
    // Gone with the daemon: the endpoint and the install's lock.
    assert!(
        TcpStream::connect(&metrics).is_err(),
        "{metrics} still open"
    );
    let status = w.status(&install);
    assert_eq!(status.json["version"], V2, "{}", status.out);
    w.relsync()
        .args(["audit", "verify", "--install"])
        .arg(&install)
        .run()
        .assert_success("audit verify after the daemon");
}

#[test]
fn daemon_exits_zero_on_sigterm_even_while_the_origin_fails() {
    let w = World::new();
    // An origin with nothing published: every check fails and is retried.
    let origin = w.origin.display().to_string();
    let install = w.install_dir("failing");
    let port = free_port();
    let config = write_config(
        &w,
        "failing",
        &origin,
        &install,
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n[policy]\ncheck_interval = \"10s\"\n"),
    );
    let running = w
        .relsync()
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .arg("--json")
        .timeout(Duration::from_secs(60))
        .spawn();
    // The endpoint is bound once the signal handlers are in place; wait until it counts
    // the first failed check.
    let addr = format!("127.0.0.1:{port}");
    let failed = "relsync_update_outcomes_total{operation=\"check\",outcome=\"failed\"}";
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(&addr).is_ok()
            && sample(&http_get(&addr, "/metrics"), failed) >= Some(1.0)
        {
            break;
        }
        assert!(Instant::now() < until, "no failed check counted at {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let out = running.wait();
    out.assert_success("relsync daemon after SIGTERM");
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{out}")))
        .collect();
    assert_eq!(lines[0]["event"], "started", "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "failed" && l["operation"] == "check"),
        "the failed check is reported\n{out}"
    );
    let stopped = lines.last().unwrap();
    assert_eq!(stopped["event"], "stopped", "{out}");
    assert_eq!(stopped["reason"], "SIGTERM", "{out}");
    assert!(stopped["stats"]["failures"].as_u64() >= Some(1), "{out}");
}

#[test]
fn daemon_refuses_a_bad_config_before_starting() {
    let w = World::new();
    let install = w.install_dir("never");
    for (name, extra, key) in [
        ("unknown-key", "colour = \"red\"\n", "colour"),
        (
            "unknown-policy-key",
            "[policy]\ncheck_interval = \"10s\"\nfrequency = \"often\"\n",
            "frequency",
        ),
        (
            "short-interval",
            "[policy]\ncheck_interval = \"1s\"\n",
            "check_interval",
        ),
    ] {
        let config = write_config(&w, name, "http://127.0.0.1:9/", &install, extra);
        let out = w
            .relsync()
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .args(["--metrics-listen", "127.0.0.1:0"])
            .timeout(Duration::from_secs(30))
            .run();
        out.assert_failure(name);
        assert!(out.stderr.contains(key), "{name}: names `{key}`\n{out}");
        assert!(
            out.stderr.contains(&config.display().to_string()),
            "{name}: names the file\n{out}"
        );
        assert!(out.stdout.is_empty(), "{name}: started nothing\n{out}");
        assert!(!install.exists(), "{name}: created the install\n{out}");
    }
}
