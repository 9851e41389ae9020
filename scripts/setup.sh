#!/usr/bin/env bash
# Installs what relsync's demo and tests need on a Debian machine: nginx (the test origin
# server), zstd (for benchmark comparisons) and openssl (the tests' stand-in for an HSM).
# Idempotent; a no-op when all are present.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
  echo "installing ${need[*]} ..." >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
