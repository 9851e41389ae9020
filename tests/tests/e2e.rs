//! End-to-end tests of relsync: the real `cdn-publisher` pushes to an origin folder, a real
//! nginx serves it on loopback, and the real `relsync` installs from it. One module per theme.
//!
//! Run with `cargo test -p relsync-tests --test e2e` (the first test builds both binaries).

#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/common.rs"]
mod common;
#[path = "e2e/concurrency.rs"]
mod concurrency;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/crash_points.rs"]
mod crash_points;
#[path = "e2e/daemon.rs"]
mod daemon;
#[path = "e2e/disk.rs"]
mod disk;
#[path = "e2e/drift.rs"]
mod drift;
#[path = "e2e/examples.rs"]
mod examples;
#[path = "e2e/executables.rs"]
mod executables;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/local.rs"]
mod local;
#[path = "e2e/mirrors.rs"]
mod mirrors;
#[path = "e2e/network_faults.rs"]
mod network_faults;
#[path = "e2e/object_store.rs"]
mod object_store;
#[path = "e2e/operate.rs"]
mod operate;
#[path = "e2e/origin_errors.rs"]
mod origin_errors;
#[path = "e2e/peers.rs"]
mod peers;
#[path = "e2e/publish.rs"]
mod publish;
#[path = "e2e/threats.rs"]
mod threats;
#[path = "e2e/trust.rs"]
mod trust;
#[path = "e2e/update.rs"]
mod update;
#[path = "e2e/ux.rs"]
mod ux;
