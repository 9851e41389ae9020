#!/usr/bin/env python3
"""The bandwidth harness's HDiffPatch runner, run by the Python of the virtualenv in which
benches/bandwidth.sh installs PyPI's `hdiffpatch` (a wrapper of the HDiffPatch C++ library).

    hdiffpatch-tool.py diff OLD NEW PATCH    PATCH: HDiffPatch's patch, lzma level 9, 2^27 window
    hdiffpatch-tool.py apply OLD PATCH NEW
    hdiffpatch-tool.py --version             the hdiffpatch package's version

The settings are those ../shared/bench/ANCHORS.md measured HDiffPatch with. The harness applies
every patch back and compares it with NEW, so `diff` does not validate its own output.
"""
import importlib.metadata
import sys

import hdiffpatch

LZMA = hdiffpatch.LzmaConfig(level=9, window=27)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def main(args: list[str]) -> None:
    match args:
        case ["diff", old, new, patch]:
            write(patch, hdiffpatch.diff(read(old), read(new), LZMA, validate=False))
        case ["apply", old, patch, new]:
            write(new, hdiffpatch.apply(read(old), read(patch)))
        case ["--version"]:
            print(f"hdiffpatch {importlib.metadata.version('hdiffpatch')}")
        case _:
            sys.exit("usage: hdiffpatch-tool.py diff OLD NEW PATCH | apply OLD PATCH NEW")


if __name__ == "__main__":
    main(sys.argv[1:])
