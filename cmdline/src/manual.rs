//! Shell completions and man pages, generated from the command line's own definition, so
//! they always list the options this binary takes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Command;
use clap_complete::Shell;

/// `completions SHELL`: the completion script on stdout.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

/// `man --out DIR`: one page per command.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write the pages (created if missing), e.g. /usr/local/share/man/man1.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(mut command: Command, args: &CompletionsArgs) {
    let name = command.get_name().to_owned();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
}

/// Writes `NAME.1` and `NAME-SUBCOMMAND.1` for every subcommand (nested ones too) into
/// `args.out`, and prints the path of each (not of other pages already there).
pub fn man(command: Command, args: &ManArgs) -> Result<()> {
    let out = &args.out;
    let name = command.get_name().to_owned();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    clap_mangen::generate_to(command, out)
        .with_context(|| format!("writing the man pages to {}", out.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == format!("{name}.1") || n.starts_with(&format!("{name}-")))
                && path.extension().is_some_and(|e| e == "1")
        })
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(())
}
