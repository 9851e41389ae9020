//! Golden chunk lists, kept as text in `tests/golden/`.
//!
//! They pin the boundaries and ids that published manifests depend on, so a change in FastCDC
//! or in our parameters shows up here. Set `RELSYNC_UPDATE_GOLDEN=1` to rewrite them.

use std::fmt::Write as _;
use std::path::PathBuf;

use relsync_chunker::{ChunkParams, chunk_slice};

use crate::support::{KIB, MIB, WORDS, small_params, text_like, xof};

enum Input {
    Xof(&'static str, usize),
    Text(&'static str, usize),
}

impl Input {
    fn bytes(&self) -> Vec<u8> {
        match *self {
            Input::Xof(seed, len) => xof(seed, len),
            Input::Text(seed, len) => text_like(seed, len),
        }
    }

    fn describe(&self) -> String {
        match *self {
            Input::Xof(seed, len) => format!("{len} bytes of BLAKE3 XOF of seed {seed:?}"),
            Input::Text(seed, len) => format!(
                "{len} bytes of text: word i is WORDS[xof[i] % {}] where xof is the BLAKE3 XOF \
                 of seed {seed:?}, then '\\n' after every 10th word, else ' ' \
                 (WORDS in tests/chunking/support.rs)",
                WORDS.len()
            ),
        }
    }
}

fn render(input: &Input, params: ChunkParams) -> String {
    let data = input.bytes();
    let mut out = format!(
        "# input: {}, params: min {} avg {} max {}\n# offset length blake3\n",
        input.describe(),
        params.min_bytes,
        params.avg_bytes,
        params.max_bytes
    );
    for c in chunk_slice(&data, params).unwrap() {
        writeln!(out, "{} {} {}", c.offset, c.len, c.id).unwrap();
    }
    out
}

fn check(name: &str, input: Input, params: ChunkParams) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.txt"));
    let actual = render(&input, params);
    if std::env::var_os("RELSYNC_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with RELSYNC_UPDATE_GOLDEN=1", path.display()));
    let expected: Vec<&str> = expected.lines().map(str::trim_end).collect();
    let actual: Vec<&str> = actual.lines().collect();
    for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(
            want,
            got,
            "{} line {}: golden differs (RELSYNC_UPDATE_GOLDEN=1 rewrites it)",
            path.display(),
            i + 1
        );
    }
    assert_eq!(
        expected.len(),
        actual.len(),
        "{}: line count",
        path.display()
    );
}

#[test]
fn golden_xof_2mib_default() {
    check(
        "xof-2mib-default",
        Input::Xof("relsync/golden/xof", 2 * MIB),
        ChunkParams::default(),
    );
}

#[test]
fn golden_text_1mib_default() {
    check(
        "text-1mib-default",
        Input::Text("relsync/golden/text", MIB),
        ChunkParams::default(),
    );
}

#[test]
fn golden_xof_512kib_small() {
    check(
        "xof-512kib-small",
        Input::Xof("relsync/golden/small", 512 * KIB),
        small_params(),
    );
}
