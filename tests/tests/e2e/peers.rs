//! LAN peers: real `relsync serve` and `relsync update` processes talking libp2p on loopback,
//! every node of the fleet holding the world's swarm key; outsiders without it (or with
//! another) learn nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use relsync_tests::{
    Cmd, Daemon, Nginx, NginxOptions, Output, Report, V1, V2, World, assert_trees_equal, bins,
    copy_tree, current, current_link, format_entries, parse_json_object,
};
use serde_json::Value;

use crate::common::{
    new_swarm_key, require_root, run_log, serve_only_cmd, swarm_key, world_with_v1,
};

/// Bounds every node a test starts.
const NODE_LIFETIME: &str = "180s";

/// `relsync serve` sharing `install` only (no origin), on 127.0.0.1.
fn serve_only(w: &World, install: &Path, name: &str) -> Daemon {
    let cmd = serve_only_cmd(w, install, NODE_LIFETIME);
    Daemon::start(name, &cmd, &w.path().join(format!("{name}.log")))
}

/// `evil-peer` lying about `install` in `mode`, in the world's fleet.
fn evil(w: &World, install: &Path, mode: &str) -> Daemon {
    evil_with(w, install, mode, &[])
}

/// [`evil`] with more flags.
fn evil_with(w: &World, install: &Path, mode: &str, extra: &[&str]) -> Daemon {
    let cmd = Cmd::new(&bins().evil_peer)
        .arg("--install")
        .arg(install)
        .arg("--swarm-key")
        .arg(swarm_key(w))
        .args(["--mode", mode, "--stop-after", "120"])
        .args(extra);
    Daemon::start(mode, &cmd, &w.path().join(format!("evil-{mode}.log")))
}

/// `relsync update --json` from `origin` using only `peers`, in the world's fleet.
fn update_with_peers_cmd(w: &World, origin: &str, install: &Path, peers: &[&Daemon]) -> Cmd {
    let mut cmd = w
        .update_cmd(origin, install)
        .arg("--swarm-key")
        .arg(swarm_key(w))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .env("RUST_LOG", "relsync_engine=warn,relsync_peer=warn");
    for peer in peers {
        cmd = cmd.args(["--peer", peer.addr()]);
    }
    cmd.timeout(Duration::from_secs(120))
}

/// [`update_with_peers_cmd`], run.
fn update_with_peers(w: &World, origin: &str, install: &Path, peers: &[&Daemon]) -> Output {
    update_with_peers_cmd(w, origin, install, peers).run()
}

/// A copy of `install` (hard links kept) without its peer identity.
fn copy_install(from: &Path, to: &Path) {
    copy_tree(from, to);
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
            .arg("--swarm-key")
            .arg(swarm_key(&w))
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

/// `ADDR:PORT` of a `/ip4/ADDR/tcp/PORT/...` multiaddr.
fn socket_addr(multiaddr: &str) -> SocketAddr {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    assert!(
        parts.len() > 4 && parts[1] == "ip4" && parts[3] == "tcp",
        "{multiaddr}"
    );
    format!("{}:{}", parts[2], parts[4])
        .parse()
        .unwrap_or_else(|e| panic!("{multiaddr}: {e}"))
}

/// What a client that opens the way every libp2p node does (multistream-select in the clear,
/// proposing Noise) hears from `addr`, and whether the node then closed the connection (within
/// 20 s).
fn probe(addr: SocketAddr) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"\x13/multistream/1.0.0\n\x07/noise\n")
        .unwrap();
    let (mut heard, mut buf) = (Vec::new(), [0u8; 4096]);
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) if heard.len() + n > 1 << 20 => break false,
            Ok(n) => heard.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (heard, closed)
}

/// What `outsider-peer` (a plain libp2p node; with `key`, under that swarm key) got from
/// `node` when it asked META for the channel pointer and HAVE for `manifest`.
fn outsider(node: &Daemon, manifest: &str, key: Option<&Path>) -> Value {
    let mut cmd = Cmd::new(&bins().outsider_peer)
        .args(["--server", node.addr(), "--manifest", manifest])
        .args(["--path", &format!("channels/{}", relsync_tests::CHANNEL)])
        .args(["--seconds", "15"]);
    if let Some(key) = key {
        cmd = cmd.arg("--swarm-key").arg(key);
    }
    let out = cmd.timeout(Duration::from_secs(60)).run();
    out.assert_success("outsider-peer");
    parse_json_object(&out.stdout).unwrap_or_else(|| panic!("no JSON from outsider-peer\n{out}"))
}

/// Outsiders, with no swarm key or another one, cannot connect: they read no META and no HAVE
/// (so learn neither channel, version, paths nor chunks), get no chunk, and a `relsync update`
/// among them takes everything from the origin. The port tells a plain client nothing but 24
/// random bytes (the pnet nonce). Members of the fleet still share.
#[test]
fn outsiders_without_the_swarm_key_learn_nothing_and_members_still_share() {
    let (w, n) = world_with_v1();
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    let manifest = w.status(&a).str("manifest");
    let node = serve_only(&w, &a, "a");

    let (heard, closed) = probe(socket_addr(node.addr()));
    assert!(
        heard.len() <= 24,
        "a plain client heard {} bytes: {:?}",
        heard.len(),
        String::from_utf8_lossy(&heard)
    );
    for marker in ["multistream", "noise", "yamux", "relsync", "stable", V1] {
        let found = heard.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!found, "the port said {marker:?}: {heard:?}");
    }
    assert!(closed, "the node kept a failed handshake open past 20 s");

    let other = new_swarm_key(&w, "other.key");
    for (who, key) in [
        ("no swarm key", None),
        ("another swarm key", Some(other.as_path())),
    ] {
        let got = outsider(&node, &manifest, key);
        assert_eq!(got["connected"], false, "{who}: {got}");
        assert_eq!(got["meta_answered"], false, "{who}: {got}");
        assert!(got["have"].is_null(), "{who}: {got}");
        assert!(got["error"].is_string(), "{who}: {got}");
    }

    // `relsync update` with another key: no peer, every byte from the origin.
    let b = w.install_dir("b");
    let mark = n.mark();
    let out = w
        .update_cmd(&n.url(), &b)
        .arg("--swarm-key")
        .arg(&other)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--peer", node.addr(), "--peer-wait", "3s"])
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_success("update with another swarm key");
    let r = Report::new(out);
    assert_trees_equal(&current(&b), &w.v1);
    assert_eq!(r.u64("bytes_from_peers"), 0, "{}", r.out);
    assert!(pack_bytes(&run_log(&n, mark)) > 0, "{}", r.out);

    // A member takes every chunk from the node.
    let c = w.install_dir("c");
    let mark = n.mark();
    let out = update_with_peers(&w, &n.url(), &c, &[&node]);
    out.assert_success("update c, a member, from peer a");
    let r = Report::new(out);
    assert_trees_equal(&current(&c), &w.v1);
    let log = run_log(&n, mark);
    assert_eq!(pack_bytes(&log), 0, "{}", format_entries(&log));
    let stats = node.stop();
    assert_eq!(
        stats["bytes_uploaded"].as_u64().unwrap(),
        r.u64("bytes_from_peers"),
        "everything the node uploaded went to the member\n{stats}\n{}",
        r.out
    );
}

/// Inode numbers of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> std::collections::HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Default::default();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The TCP sockets in LISTEN state and the UDP sockets process `pid` holds, as its network
/// namespace's `/proc/net` lists them.
fn listening(pid: u32) -> (usize, usize) {
    let inodes = socket_inodes(pid);
    let count = |tables: &[&str], listen_only: bool| {
        tables
            .iter()
            .map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default())
            .map(|text| {
                text.lines()
                    .skip(1)
                    .filter(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields.len() > 9
                            && (!listen_only || fields[3] == "0A")
                            && fields[9].parse().is_ok_and(|i: u64| inodes.contains(&i))
                    })
                    .count()
            })
            .sum()
    };
    (
        count(&["tcp", "tcp6"], true),
        count(&["udp", "udp6"], false),
    )
}

/// What watching a process's sockets every 20 ms saw: the most TCP listeners and UDP sockets
/// at once, and how many samples.
#[derive(Debug, Default)]
struct Sockets {
    tcp_listening: usize,
    udp: usize,
    samples: usize,
}

/// Runs `cmd`, watching its sockets.
fn watch_sockets(cmd: &Cmd, limit: Duration) -> (Output, Sockets) {
    let mut child = cmd.spawn();
    let (pid, until) = (child.id(), Instant::now() + limit);
    let mut seen = Sockets::default();
    while !child.has_exited() && Instant::now() < until {
        let (tcp, udp) = listening(pid);
        seen.tcp_listening = seen.tcp_listening.max(tcp);
        seen.udp = seen.udp.max(udp);
        seen.samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait(), seen)
}

/// Without `--swarm-key`, `relsync update` has no LAN: it listens nowhere (checked in
/// /proc while it runs, next to the same update with a key, which does listen); LAN flags
/// without a key and `relsync serve` without one are refused, saying what to do. A key file
/// is a secret: made 0600, never overwritten, refused when others may read it.
#[test]
fn without_a_swarm_key_there_is_no_lan() {
    let w = World::new();
    w.push_ok(&w.v1, V1);
    // Slow enough to watch: each request at 2 MiB/s.
    let n = Nginx::start(&w.origin, &NginxOptions::rate_limited(2 << 20));
    let key = swarm_key(&w);

    let with_key = w
        .update_cmd(&n.url(), &w.install_dir("keyed"))
        .arg("--swarm-key")
        .arg(&key)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
        .args(["--peer", "/ip4/127.0.0.1/tcp/9", "--peer-wait", "1s"])
        .timeout(Duration::from_secs(120));
    let (out, seen) = watch_sockets(&with_key, Duration::from_secs(120));
    out.assert_success("update with a swarm key");
    assert!(
        seen.tcp_listening > 0,
        "the watch must see the keyed node's listener: {seen:?}"
    );

    let install = w.install_dir("plain");
    let plain = w
        .update_cmd(&n.url(), &install)
        .timeout(Duration::from_secs(120));
    let (out, seen) = watch_sockets(&plain, Duration::from_secs(120));
    out.assert_success("update without a swarm key");
    assert_trees_equal(&current(&install), &w.v1);
    assert!(seen.samples >= 10, "too short to watch: {seen:?}\n{out}");
    assert_eq!(
        (seen.tcp_listening, seen.udp),
        (0, 0),
        "without a swarm key nothing may listen"
    );

    for flags in [
        &["--peer", "/ip4/127.0.0.1/tcp/9"][..],
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &["--max-upload-rate", "1000"],
        &["--peer-wait", "1s"],
    ] {
        let out = w
            .update_cmd(&n.url(), &w.install_dir("flags"))
            .args(flags)
            .run();
        out.assert_failure(&format!("{flags:?} without --swarm-key"));
        for words in [flags[0], "without --swarm-key", "relsync swarm-key --out"] {
            assert!(out.stderr.contains(words), "{words:?} in\n{out}");
        }
    }

    let serve = w
        .relsync()
        .arg("serve")
        .arg("--install")
        .arg(&install)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--stop-after", "10s"])
        .run();
    serve.assert_failure("serve without a swarm key");
    for words in ["--swarm-key FILE", "relsync swarm-key --out"] {
        assert!(serve.stderr.contains(words), "{words:?} in\n{serve}");
    }

    // The key file: 0600, never overwritten, refused once others may read it.
    use std::os::unix::fs::PermissionsExt;
    let before = std::fs::read(&key).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let again = w.relsync().arg("swarm-key").arg("--out").arg(&key).run();
    again.assert_failure("swarm-key over an existing file");
    assert!(again.stderr.contains("already exists"), "{again}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key was overwritten"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = w
        .relsync()
        .arg("serve")
        .arg("--install")
        .arg(&install)
        .arg("--swarm-key")
        .arg(&key)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--stop-after", "10s"])
        .run();
    open.assert_failure("serve with a key others can read");
    assert!(open.stderr.contains("chmod 600"), "{open}");
}

/// A peer that claims to be fetching every chunk and flips its bitfield between nothing and
/// chunks the asker already has (so "it holds more than last time" is true every other
/// poll) holds no frame hostage: the update finishes from the origin in seconds, far below
/// `--deadline` (6 h), and within the engine's wait bound (`peer_wait_max`, 15 s).
#[test]
fn a_peer_that_churns_its_claims_holds_no_frame_hostage() {
    let (w, n) = world_with_v1();
    let b = w.install_dir("b");
    w.update_ok(&n.url(), &b);
    let known = w.status(&b).str("manifest");
    // The liar's install holds v2 and, as its previous release, v1: it can tell which chunks
    // of v2 the asker already has.
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    w.push_ok(&w.v2, V2);
    w.update_ok(&n.url(), &a);
    let liar = evil_with(&w, &a, "churn", &["--known-manifest", &known]);
    let out = update_with_peers(&w, &n.url(), &b, &[&liar]);
    out.assert_success("update next to a churning peer");
    assert_trees_equal(&current(&b), &w.v2);
    assert!(
        out.elapsed < Duration::from_secs(25),
        "took {:?}\n{out}",
        out.elapsed
    );
    let r = Report::new(out);
    assert_eq!(r.u64("bytes_from_peers"), 0, "{}", r.out);
    // It did churn: it claimed chunks, and was asked HAVE again and again.
    let log = liar.log();
    let claimed = log
        .split("evil-peer churn: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the churning peer was never asked HAVE\n{log}"));
    assert!(claimed > 0, "it claimed no chunk\n{log}");
}

/// With the origin down, peers hand over the signed metadata; one that answers META with a
/// document over the asker's limit for it (1 MiB for a 64 KiB channel pointer) is refused
/// at the length, before a byte is read, and the honest peer's copy is used.
#[test]
fn an_oversized_meta_answer_is_refused_before_it_is_read() {
    let (w, n) = world_with_v1();
    w.push_ok(&w.v2, V2);
    let a = w.install_dir("a");
    w.update_ok(&n.url(), &a);
    let url = n.url();
    drop(n);
    let bomb_install = w.install_dir("bomb");
    copy_install(&a, &bomb_install);
    let honest = serve_only(&w, &a, "a");
    let bomb = evil(&w, &bomb_install, "meta-bomb");

    let b = w.install_dir("b");
    let out = update_with_peers_cmd(&w, &url, &b, &[&honest, &bomb])
        .env("RUST_LOG", "relsync_engine=warn,relsync_peer=debug")
        .run();
    out.assert_success("update with the origin down, an honest peer and a META bomb");
    assert_trees_equal(&current(&b), &w.v2);
    // The pointer limit (64 KiB) and the answer's framing.
    let refused = format!("exceeds the {}-byte limit", 64 * 1024 + 16);
    assert!(out.stderr.contains(&refused), "{refused:?} in\n{out}");
}

/// mDNS: with no `--peer`, a member of the fleet finds a node by multicast and takes every
/// chunk from it; without a swarm key, mDNS (on by default) finds no one and nothing listens.
/// Multicast must not leave the machine, so the nodes live in network namespaces the test
/// makes; that needs root, and the test fails without it.
#[test]
fn peers_find_each_other_by_mdns_only_with_the_swarm_key() {
    require_root(
        "the network namespaces (CAP_NET_ADMIN) that keep multicast off the machine's networks",
    );
    let w = World::new();
    w.push_ok(&w.v1, V1);
    let origin = w.origin.display().to_string();
    let a = w.install_dir("a");
    w.update(&origin, &a, &["--no-mdns"])
        .assert_success("install a");
    let net = NetnsPair::new(&format!("rsk{}", std::process::id() % 100_000));
    let serve = w
        .relsync()
        .arg("serve")
        .arg("--install")
        .arg(&a)
        .arg("--swarm-key")
        .arg(swarm_key(&w))
        .args(["--listen", "/ip4/10.213.0.1/tcp/0", "--json"])
        .args(["--stop-after", NODE_LIFETIME]);
    let node = Daemon::start("a", &net.exec(0, serve), &w.path().join("a.log"));

    let plain = w.install_dir("plain");
    let cmd = net
        .exec(1, w.update_cmd(&origin, &plain))
        .timeout(Duration::from_secs(60));
    let (out, seen) = watch_sockets(&cmd, Duration::from_secs(60));
    out.assert_success("update without a swarm key, mDNS allowed");
    let r = Report::new(out);
    assert_trees_equal(&current(&plain), &w.v1);
    assert_eq!(r.u64("bytes_from_peers"), 0, "{}", r.out);
    assert!(seen.samples > 0, "{seen:?}");
    assert_eq!((seen.tcp_listening, seen.udp), (0, 0), "{seen:?}");

    let member = w.install_dir("member");
    let update = w
        .update_cmd(&origin, &member)
        .arg("--swarm-key")
        .arg(swarm_key(&w))
        .args(["--listen", "/ip4/10.213.0.2/tcp/0", "--peer-wait", "15s"]);
    let out = net.exec(1, update).timeout(Duration::from_secs(60)).run();
    out.assert_success("update a member next to a, found by mDNS");
    let r = Report::new(out);
    assert_trees_equal(&current(&member), &w.v1);
    assert!(r.u64("bytes_from_peers") > 0, "{}", r.out);
    assert!(
        r.u64("bytes_from_origin") < 64 * 1024,
        "only metadata from the origin\n{}",
        r.out
    );
    let stats = node.stop();
    assert_eq!(
        stats["bytes_uploaded"].as_u64().unwrap(),
        r.u64("bytes_from_peers"),
        "the node served the member only\n{stats}"
    );
}
