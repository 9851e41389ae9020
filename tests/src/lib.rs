//! Support for relsync's end-to-end tests: a real nginx origin on loopback, the real
//! `cdn-publisher` and `relsync` binaries run as processes, and real release trees compared
//! byte for byte.
//!
//! - [`bins()`] builds the binaries once per test process (`$CARGO build --bin relsync
//!   --bin cdn-publisher ...` in the workspace root, same profile as the test) and finds them,
//!   the example apps of `examples/` included.
//! - [`Nginx`] serves an origin folder on `127.0.0.1:<free port>` with a parseable access log
//!   (`$status $body_bytes_sent "$request" "$http_range" ...`), optionally rate limited, and is
//!   killed on drop.
//! - [`make_release`] writes v1 or v2 of a deterministic app tree, [`executable`] a synthetic
//!   x86-64 ELF executable in two versions; [`tree_digest`] and
//!   [`assert_trees_equal`] compare trees without following symlinks.
//! - [`FaultProxy`] sits between a client and an origin on loopback and faults the answers a
//!   [`Schedule`] picks: resets, truncation, 5xx with `Retry-After`, ignored ranges, slow
//!   loris, lying Content-Length, stalls.
//! - [`S3Server`] is a real S3-compatible server (`s3s-fs`) on loopback, for publishing to a
//!   bucket; [`NginxOptions::proxying`] puts nginx in front of it as its CDN.
//! - [`Cmd`] runs a process bounded in time; [`World`] bundles a key pair, both releases and
//!   an origin folder with the commands of the CLI contract.
//! - [`Forge`] edits an origin with its publisher's keys: re-sealed pointers and manifests
//!   with hostile content, unsigned damage, and a byte-exact [`Forge::restore`].
//!
//! What this crate does not do: it never reads a client's state through the engine; it sees
//! only files, processes, JSON on stdout and nginx's log. It uses the engine's types only in
//! [`Forge`], to write what a hostile origin (or a signing key gone bad) could serve.

#![deny(missing_docs)]

mod bins;
mod daemon;
mod elf;
mod faultproxy;
mod forge;
mod nginx;
mod run;
mod s3;
mod tree;
mod world;

pub use bins::{Bins, bins, workspace_root};
pub use daemon::Daemon;
pub use elf::executable;
pub use faultproxy::{
    Fault, FaultProxy, ProxyStats, Record, Schedule, Target, When, format_records,
};
pub use forge::{
    Forge, manifest_body_claiming_chunks, manifest_body_replacing, read_secret_key, varint,
    write_secret_key, zstd_zero_bomb,
};
pub use nginx::{LogEntry, LogMark, Nginx, NginxOptions, format_entries, free_port};
pub use run::{COMMAND_TIMEOUT, Cmd, Output, Spawned, available_bytes, parse_json_object};
pub use s3::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, S3Server};
pub use tree::{
    BIG_FILE, BIG_FILE_INSERT_LEN, BIG_FILE_LEN, Entry, assert_trees_equal, big_file, copy_tree,
    diff_digests, make_release, pseudo_random, pseudo_text, tree_digest,
};
pub use world::{
    CHANNEL, PRODUCT, Report, V1, V2, World, current, current_link, flip_byte, new_files,
    parse_pubkey,
};
