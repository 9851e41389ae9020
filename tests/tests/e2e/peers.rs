//! LAN peers: real `relsync serve` and `relsync update` processes talking libp2p on loopback.

use std::path::Path;
use std::time::Duration;

use relsync_tests::{
    Cmd, Daemon, Nginx, Output, Report, V1, V2, World, assert_trees_equal, bins, current,
    current_link, format_entries,
};
use serde_json::Value;

use crate::common::{run_log, serve_only_cmd, world_with_v1};

/// Bounds every node a test starts.
const NODE_LIFETIME: &str = "180s";

/// `relsync serve` sharing `install` only (no origin), on 127.0.0.1.
fn serve_only(w: &World, install: &Path, name: &str) -> Daemon {
    let cmd = serve_only_cmd(w, install, NODE_LIFETIME);
    Daemon::start(name, &cmd, &w.path().join(format!("{name}.log")))
}

/// `evil-peer` lying about `install` in `mode`.
fn evil(w: &World, install: &Path, mode: &str) -> Daemon {
    let cmd = Cmd::new(&bins().evil_peer)
        .arg("--install")
        .arg(install)
        .args(["--mode", mode, "--stop-after", "120"]);
    Daemon::start(mode, &cmd, &w.path().join(format!("evil-{mode}.log")))
}

/// `relsync update --json` from `origin` using only `peers`.
fn update_with_peers(w: &World, origin: &str, install: &Path, peers: &[&Daemon]) -> Output {
    let mut cmd = w
        .update_cmd(origin, install)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .env("RUST_LOG", "relsync_engine=warn,relsync_peer=warn");
    for peer in peers {
        cmd = cmd.args(["--peer", peer.addr()]);
    }
    cmd.timeout(Duration::from_secs(120)).run()
}

/// A copy of `install` (hard links kept) without its peer identity.
fn copy_install(from: &Path, to: &Path) {
    Cmd::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .run()
        .assert_success("cp -a");
    let _ = std::fs::remove_file(to.join(".relsync/peer-key"));
}

fn pack_bytes(log: &[relsync_tests::LogEntry]) -> u64 {
    log.iter()
        .filter(|e| e.is_pack())
        .map(|e| e.body_bytes)
        .sum()
}

#[test]
fn two_nodes_share_with_exact_accounting() {
    let (w, n) = world_with_v1();
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    let node = serve_only(&w, &a, "a");
    assert!(
        node.addr().starts_with("/ip4/127.0.0.1/tcp/") && node.addr().contains("/p2p/12D3KooW"),
        "serve must print a full multiaddr: {}",
        node.addr()
    );

    let b = w.install_dir("b");
    let mark = n.mark();
    let out = update_with_peers(&w, &n.url(), &b, &[&node]);
    out.assert_success("update b from peer a");
    let r = Report::new(out);
    assert_trees_equal(&current(&b), &w.v1);
    let log = run_log(&n, mark);
    assert_eq!(
        pack_bytes(&log),
        0,
        "every chunk must come from the peer\n{}",
        format_entries(&log)
    );
    let origin: u64 = log.iter().map(|e| e.body_bytes).sum();
    assert_eq!(r.u64("bytes_from_origin"), origin, "{}", r.out);
    let stats = node.stop();
    assert_eq!(
        r.u64("bytes_from_peers"),
        stats["bytes_uploaded"].as_u64().unwrap(),
        "what b received from peers is what a uploaded\n{}\n{stats}",
        r.out
    );
    assert!(r.u64("bytes_from_peers") > 0, "{}", r.out);
    assert_eq!(
        r.u64("bytes_downloaded"),
        r.u64("bytes_from_origin") + r.u64("bytes_from_peers"),
        "{}",
        r.out
    );

    // v1 -> v2: a updates from the origin, b only from a.
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &a);
    let node = serve_only(&w, &a, "a2");
    let mark = n.mark();
    let out = update_with_peers(&w, &n.url(), &b, &[&node]);
    out.assert_success("update b to v2 from peer a");
    let r = Report::new(out);
    assert_trees_equal(&current(&b), &w.v2);
    let log = run_log(&n, mark);
    assert_eq!(pack_bytes(&log), 0, "{}", format_entries(&log));
    assert_eq!(
        r.u64("bytes_from_origin"),
        log.iter().map(|e| e.body_bytes).sum::<u64>(),
        "{}",
        r.out
    );
    let stats = node.stop();
    assert_eq!(
        r.u64("bytes_from_peers"),
        stats["bytes_uploaded"].as_u64().unwrap(),
        "{}\n{stats}",
        r.out
    );
}

/// The pack bytes of one v1 -> v2 update without peers: the delta a fleet should pay about
/// once.
fn origin_only_delta(w: &World, n: &Nginx, v1_install: &Path) -> u64 {
    let mark = n.mark();
    w.update_ok(&n.url(), v1_install);
    assert_trees_equal(&current(v1_install), &w.v2);
    pack_bytes(&run_log(n, mark))
}

#[test]
fn five_nodes_pull_the_delta_from_the_origin_about_once() {
    let (w, n) = world_with_v1();
    let baseline = w.install_dir("baseline");
    w.update_ok(&n.url(), &baseline);

    // Five daemons on 127.0.0.21-25, each dialing the ones started before it: a full mesh.
    let mut nodes: Vec<Daemon> = Vec::new();
    for k in 1..=5 {
        let install = w.install_dir(&format!("node{k}"));
        copy_install(&baseline, &install);
        let mut cmd = w
            .relsync()
            .arg("serve")
            .arg("--install")
            .arg(&install)
            .args(["--listen", &format!("/ip4/127.0.0.{}/tcp/0", 20 + k)])
            .args([
                "--origin",
                &n.url(),
                "--trust",
                &w.pubkey,
                "--interval",
                "1s",
            ])
            .args(["--no-mdns", "--json", "--stop-after", NODE_LIFETIME])
            .args(["--peer-wait", "1s"]);
        for node in &nodes {
            cmd = cmd.args(["--peer", node.addr()]);
        }
        nodes.push(Daemon::start(
            &format!("node{k}"),
            &cmd,
            &w.path().join(format!("node{k}.log")),
        ));
    }
    std::thread::sleep(Duration::from_secs(2));

    let mark = n.mark();
    w.push_ok(&w.v2, V2);
    let reports: Vec<Value> = nodes
        .iter_mut()
        .map(|node| node.event("update", Duration::from_secs(90))["report"].clone())
        .collect();
    let log = run_log(&n, mark);
    let stats: Vec<Value> = nodes.into_iter().map(Daemon::stop).collect();
    for k in 1..=5 {
        assert_trees_equal(&current(&w.install_dir(&format!("node{k}"))), &w.v2);
    }
    for r in &reports {
        assert_eq!(r["version"], V2, "{r}");
    }

    // Exact accounting: what the nodes say they took from the origin is what nginx sent them
    // (besides the pointer polls of up-to-date checks), and from peers what peers uploaded.
    let pointer_len = std::fs::metadata(w.origin.join("channels/stable"))
        .unwrap()
        .len();
    let not_pointer: u64 = log
        .iter()
        .filter(|e| !e.path().contains("/channels/"))
        .map(|e| e.body_bytes)
        .sum();
    let from_origin: u64 = reports
        .iter()
        .map(|r| r["bytes_from_origin"].as_u64().unwrap())
        .sum();
    assert_eq!(
        from_origin - 5 * pointer_len,
        not_pointer,
        "origin bytes in the reports vs nginx\n{reports:#?}\n{}",
        format_entries(&log)
    );
    let from_peers: u64 = reports
        .iter()
        .map(|r| r["bytes_from_peers"].as_u64().unwrap())
        .sum();
    let uploaded: u64 = stats
        .iter()
        .map(|s| s["bytes_uploaded"].as_u64().unwrap())
        .sum();
    assert_eq!(from_peers, uploaded, "{reports:#?}\n{stats:#?}");

    // Each node reads the signed metadata itself; the packs are what must not multiply.
    let delta = origin_only_delta(&w, &n, &baseline);
    let packs = pack_bytes(&log);
    eprintln!(
        "5 nodes: the origin sent {packs} pack bytes, one node alone {delta} ({:.2}x); peers \
         moved {from_peers} bytes",
        packs as f64 / delta as f64
    );
    assert!(
        packs as f64 <= 1.2 * delta as f64,
        "the fleet paid the origin {packs} pack bytes for a {delta}-byte delta\n{reports:#?}\n{}",
        format_entries(&log)
    );
}

#[test]
fn origin_down_a_peer_hands_over_the_release() {
    let (w, n) = world_with_v1();
    w.push_ok(&w.v2, V2);
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    let url = n.url();
    drop(n);
    let node = serve_only(&w, &a, "a");

    let b = w.install_dir("b");
    let out = update_with_peers(&w, &url, &b, &[&node]);
    out.assert_success("update with the origin down and a peer holding v2");
    let r = Report::new(out);
    assert_trees_equal(&current(&b), &w.v2);
    assert_eq!(r.u64("bytes_from_origin"), 0, "{}", r.out);
    assert_eq!(r.str("version"), V2, "{}", r.out);
}

#[test]
fn a_peer_with_an_older_release_downgrades_nobody() {
    let (w, n) = world_with_v1();
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    w.push_ok(&w.v2, V2);
    let node = serve_only(&w, &a, "a-at-v1");

    // The origin offers v2, the peer only v1: the peer cannot help, v2 comes from the origin.
    let b = w.install_dir("b");
    let out = update_with_peers(&w, &n.url(), &b, &[&node]);
    out.assert_success("update next to a v1 peer");
    assert_trees_equal(&current(&b), &w.v2);

    // With the origin down, the peer's signed v1 pointer is all there is: refused.
    let url = n.url();
    drop(n);
    let link = current_link(&b);
    let out = update_with_peers(&w, &url, &b, &[&node]);
    out.assert_failure("update from an older peer");
    assert!(out.stderr.contains("rollback refused"), "{out}");
    assert_eq!(current_link(&b), link, "{out}");
    assert_trees_equal(&current(&b), &w.v2);
}

/// v1 installed at `b`, v2 pushed and installed at a second install that an `evil-peer` in
/// `mode` serves; `b` then updates with only that peer. The update must succeed within
/// `within`, end at v2 exactly, and count no byte from the liar as used.
fn survives(mode: &str, within: Duration) -> Output {
    let (w, n) = world_with_v1();
    let b = w.install_dir("b");
    w.update_ok(&n.url(), &b);
    w.push_ok(&w.v2, V2);
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    let liar = evil(&w, &a, mode);
    let out = update_with_peers(&w, &n.url(), &b, &[&liar]);
    out.assert_success(&format!("update next to a `{mode}` peer"));
    assert_trees_equal(&current(&b), &w.v2);
    assert!(out.elapsed < within, "took over {within:?}\n{out}");
    let r = Report::new(out);
    assert_eq!(r.u64("bytes_from_peers"), 0, "{}", r.out);
    r.out
}

#[test]
fn a_lying_peer_is_banned_and_the_update_succeeds() {
    let out = survives("corrupt", Duration::from_secs(30));
    assert!(out.stderr.contains("banning"), "{out}");
}

#[test]
fn a_withholding_peer_costs_no_more_than_a_retry() {
    survives("withhold", Duration::from_secs(30));
}

#[test]
fn a_stalling_peer_falls_back_to_the_origin_within_its_timeout() {
    survives("stall", Duration::from_secs(40));
}

#[test]
fn a_peer_that_claims_a_share_and_never_fetches_it_is_passed_over() {
    survives("stall-wanting", Duration::from_secs(40));
}

/// Two network namespaces joined by a veth pair, deleted on drop.
struct NetnsPair {
    names: [String; 2],
}

impl NetnsPair {
    /// Namespaces `<tag>-a` (10.213.0.1) and `<tag>-b` (10.213.0.2), with multicast routed.
    fn new(tag: &str) -> Self {
        let names = [format!("{tag}-a"), format!("{tag}-b")];
        let pair = Self {
            names: names.clone(),
        };
        let ip = |args: &[&str]| {
            Cmd::new("ip")
                .args(args)
                .timeout(Duration::from_secs(20))
                .run()
                .assert_success(&format!("ip {}", args.join(" ")));
        };
        let veth = [format!("{tag}va"), format!("{tag}vb")];
        for name in &names {
            ip(&["netns", "add", name]);
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        for (k, (name, dev)) in names.iter().zip(&veth).enumerate() {
            let addr = format!("10.213.0.{}/24", k + 1);
            ip(&["link", "set", dev, "netns", name]);
            ip(&["-n", name, "addr", "add", &addr, "dev", dev]);
            ip(&["-n", name, "link", "set", dev, "up"]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
            ip(&["-n", name, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        pair
    }

    /// `cmd` run inside namespace `k`, with mDNS allowed.
    fn exec(&self, k: usize, cmd: Cmd) -> Cmd {
        cmd.wrapped(&["ip", "netns", "exec", &self.names[k]])
            .env("RELSYNC_NO_MDNS", "0")
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

/// mDNS: with no `--peer`, a node finds another by multicast and takes every chunk from it.
/// Multicast must not leave the machine, so both nodes live in network namespaces the test
/// makes; that needs root, and the test says it skipped otherwise.
#[test]
fn peers_find_each_other_by_mdns() {
    let root = Cmd::new("id").arg("-u").run();
    if root.stdout.trim() != "0" {
        eprintln!("SKIPPED peers_find_each_other_by_mdns: network namespaces need root");
        return;
    }
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let origin = w.origin.display().to_string();
    let a = w.install_dir("a");
    w.update(&origin, &a, &["--no-mdns"])
        .assert_success("install a");
    let net = NetnsPair::new(&format!("rsm{}", std::process::id() % 100_000));
    let serve = w
        .relsync()
        .arg("serve")
        .arg("--install")
        .arg(&a)
        .args(["--listen", "/ip4/10.213.0.1/tcp/0", "--json"])
        .args(["--stop-after", NODE_LIFETIME]);
    let node = Daemon::start("a", &net.exec(0, serve), &w.path().join("a.log"));
    assert!(
        node.addr().starts_with("/ip4/10.213.0.1/"),
        "{}",
        node.addr()
    );

    let b = w.install_dir("b");
    let update =
        w.update_cmd(&origin, &b)
            .args(["--listen", "/ip4/10.213.0.2/tcp/0", "--peer-wait", "15s"]);
    let out = net.exec(1, update).timeout(Duration::from_secs(60)).run();
    out.assert_success("update b next to a, found by mDNS");
    let r = Report::new(out);
    assert_trees_equal(&current(&b), &w.v1);
    assert!(r.u64("bytes_from_peers") > 0, "{}", r.out);
    assert!(
        r.u64("bytes_from_origin") < 64 * 1024,
        "only metadata from the origin\n{}",
        r.out
    );
}
