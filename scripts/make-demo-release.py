#!/usr/bin/env python3
"""Writes version N (1, 2, ...) of a small demo app tree into DIR, deterministically.

Each version has an 8 MiB binary-like file with scattered edits from the previous one, a few
config files, an executable launcher, a symlink and an empty directory.
"""
import hashlib
import os
import sys


def stream(seed: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.blake2b(seed + counter.to_bytes(8, "little"), digest_size=64).digest()
        counter += 1
    return bytes(out[:n])


def main() -> None:
    out, version = sys.argv[1], int(sys.argv[2])
    os.makedirs(os.path.join(out, "bin"), exist_ok=True)
    os.makedirs(os.path.join(out, "share", "plugins"), exist_ok=True)
    binary = bytearray(stream(b"demo-binary", 8 << 20))
    for v in range(2, version + 1):
        for k in range(16):
            at = int.from_bytes(stream(b"edit%d-%d" % (v, k), 4), "little") % len(binary)
            binary[at:at + 8] = stream(b"patch%d-%d" % (v, k), 8)
        binary[4 << 20:4 << 20] = stream(b"insert%d" % v, 1500)
    with open(os.path.join(out, "bin", "demo-app"), "wb") as f:
        f.write(binary)
    launcher = os.path.join(out, "bin", "run")
    with open(launcher, "w") as f:
        f.write("#!/bin/sh\nexec \"$(dirname \"$0\")/demo-app\" \"$@\"\n")
    os.chmod(launcher, 0o755)
    with open(os.path.join(out, "VERSION"), "w") as f:
        f.write(f"1.{version - 1}.0\n")
    with open(os.path.join(out, "share", "config.toml"), "w") as f:
        f.write("[app]\nname = \"demo\"\nthreads = 4\n")
    link = os.path.join(out, "bin", "demo")
    if not os.path.lexists(link):
        os.symlink("demo-app", link)


if __name__ == "__main__":
    main()
