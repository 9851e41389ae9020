//! `relsync-zucchini gen OLD NEW PATCH` writes Zucchini's patch from OLD to NEW (executables it
//! finds inside, such as ELF files in a tar, are diffed as code); `relsync-zucchini apply OLD
//! PATCH NEW` applies one. The bandwidth harness (benches/bandwidth.py) compresses the patch with
//! `xz -9e`, and applies it back to check that it round-trips.

use std::process::ExitCode;

const USAGE: &str = "usage: relsync-zucchini gen OLD NEW PATCH | apply OLD PATCH NEW";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("relsync-zucchini: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    match *args {
        ["gen", old, new, patch] => {
            let patch_bytes = zucchini::generate(&read(old)?, &read(new)?)
                .map_err(|e| format!("generating {old} -> {new}: {e}"))?;
            write(patch, &patch_bytes)
        }
        ["apply", old, patch, new] => {
            let new_bytes = zucchini::apply(&read(old)?, &read(patch)?)
                .map_err(|e| format!("applying {patch} to {old}: {e}"))?;
            write(new, &new_bytes)
        }
        ["--version"] => {
            // The harness keys its cached results by the last word.
            println!(
                "relsync-zucchini {}, zucchini 0.1.1",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))
}

fn write(path: &str, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {path}: {e}"))
}
