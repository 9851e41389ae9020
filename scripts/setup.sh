#!/usr/bin/env bash
# Installs what relsync's demo and tests need on a Debian machine: nginx (the test origin
# server), zstd (for benchmark comparisons), openssl (the tests' stand-in for an HSM), e2fsprogs
# (mkfs.ext4, for the full-disk test on ext4) and s3s-fs (the tests' S3-compatible object
# store). Idempotent; a no-op when all are present.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v mkfs.ext4 >/dev/null 2>&1 || [[ -x /usr/sbin/mkfs.ext4 ]] || [[ -x /sbin/mkfs.ext4 ]] \
  || need+=(e2fsprogs)
if ((${#need[@]})); then
  echo "installing ${need[*]} ..." >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
# 0.14.1: later versions need a newer rustc than the workspace's. $RELSYNC_S3S_FS names one
# built elsewhere.
if [[ -z ${RELSYNC_S3S_FS:-} ]] && ! command -v s3s-fs >/dev/null 2>&1 \
  && [[ ! -x ${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs ]]; then
  echo "installing s3s-fs 0.14.1 (cargo install, about 2 minutes) ..." >&2
  # A test server: built unoptimized but for the hashing it does on every upload, which takes
  # less than half the CPU time of a release build (measured: 100 s instead of 244 s).
  hashing=()
  for crate in md-5 sha1 sha2 crc-fast crc32c crc32fast; do
    hashing+=(--config "profile.release.package.$crate.opt-level=3")
  done
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_LTO=false \
    cargo install --locked s3s-fs@0.14.1 --features binary "${hashing[@]}"
fi
