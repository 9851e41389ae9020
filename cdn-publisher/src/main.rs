//! `cdn-publisher`: publish releases to a relsync origin.
//!
//! This file parses the command line and dispatches to [`commands`]. A release is built by
//! [`build`] into packs on an [`origin::Origin`], which stores objects in a [`target::Target`]
//! (a folder or a bucket); [`publish`] signs it into the channel.
#![forbid(unsafe_code)]

mod build;
mod commands;
#[cfg(test)]
mod fixture;
mod history;
mod keys;
mod lifecycle;
mod operate;
mod origin;
mod publish;
mod roots;
mod target;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::{gc, ls, promote, push, root, sign, verify, yank};

/// The exit codes, as `--help` lists them.
const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    error: the message on stderr says what went wrong and what to do
       (verify: a problem on the origin, listed above it)
  2    usage error: unknown command or option, missing or bad argument";

/// Publish releases as signed, content-addressed chunk packs to a relsync origin.
#[derive(Debug, Parser)]
#[command(name = "cdn-publisher", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an ed25519 signing key (KEY, mode 0600) and its public key (KEY.pub).
    ///
    /// Prints the public key; give that line to clients as `relsync update --trust`.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Publish directory DIR as VERSION on a channel of an origin (a folder or a bucket).
    Push(Box<push::PushArgs>),
    /// Manage the root documents that name the keys of each role (root, release, channel).
    Root {
        #[command(subcommand)]
        command: root::RootCommand,
    },
    /// Add a signature to a signed document file (a manifest from `push --unsigned-out`, a
    /// pointer from `--unsigned-pointer-out`, a rollback directive from `yank
    /// --unsigned-directive-out`, or a root): with a secret key, or a detached signature made
    /// elsewhere (HSM, cloud KMS) over the message `show` prints.
    Sign(sign::SignArgs),
    /// Print a signed document file: what it says, who signed it, and the message to sign.
    Show {
        /// The document.
        file: PathBuf,
    },
    /// Publish a manifest signed elsewhere (see `push --unsigned-out`), then the channel
    /// pointer naming it.
    Publish(commands::publish::PublishArgs),
    /// Publish or re-sign a channel pointer.
    Channel {
        #[command(subcommand)]
        command: commands::publish::ChannelCommand,
    },
    /// Change the share of installs a channel's release is offered to (a staged rollout):
    /// re-signs the channel pointer with the new percentage and fresh issue and expiry times.
    ///
    /// Raise it step by step (5, 25, 100); lower it, down to 0, to halt a rollout. Installs
    /// that already took the release keep it. Critical releases reach every install anyway.
    Promote(promote::PromoteArgs),
    /// Withdraw a version from a channel: re-signs the channel pointer with the version added
    /// to its yanked list.
    ///
    /// If the channel offers that version, it moves back to the newest earlier release of the
    /// channel that is not yanked, offered to every install. Installs running a yanked version
    /// download nothing new of it and keep running it; with --roll-back, and a rollback
    /// directive the release role signs, they go back to the channel's release.
    Yank(yank::YankArgs),
    /// List an origin: its channels (version offered, rollout, yanked versions, expiry), its
    /// releases (size, packs, which channels offer them) and the bytes of each kind of object.
    Ls(ls::LsArgs),
    /// Delete the releases no channel keeps, and the manifests, deltas and packs only they
    /// need. A dry run unless --delete.
    ///
    /// Each channel keeps the release its pointer names and the --keep releases before it
    /// along its history. Channel pointers and root documents are never deleted. It refuses to
    /// delete anything if a pointer or a kept manifest does not verify.
    Gc(gc::GcArgs),
    /// Check every object of an origin: packs and manifests hash to their names, manifests
    /// and pointers verify, deltas decode to their targets, and everything named exists.
    ///
    /// Prints each problem with the object's path; exits 1 if there is any.
    Verify(verify::VerifyArgs),
    /// Print a shell completion script for cdn-publisher (e.g. `cdn-publisher completions
    /// bash > /etc/bash_completion.d/cdn-publisher`).
    Completions(relsync_cmdline::manual::CompletionsArgs),
    /// Write cdn-publisher's man pages (cdn-publisher.1, cdn-publisher-push.1, …) into a
    /// directory.
    Man(relsync_cmdline::manual::ManArgs),
}

fn main() -> ExitCode {
    relsync_cmdline::exit_quietly_on_a_closed_stdout();
    // Warnings and errors unless RUST_LOG says otherwise; colour only on a terminal, and
    // never with NO_COLOR set.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
                .from_env_lossy(),
        )
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let public = keys::keygen(&out)?;
            println!("{public}");
            Ok(())
        }
        Command::Push(args) => push::run(*args),
        Command::Root { command } => root::run(command),
        Command::Sign(args) => sign::sign(&args),
        Command::Show { file } => sign::show(&file),
        Command::Publish(args) => commands::publish::run(&args),
        Command::Channel { command } => commands::publish::run_channel(&command),
        Command::Promote(args) => promote::run(&args),
        Command::Yank(args) => yank::run(&args),
        Command::Ls(args) => ls::run(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Completions(args) => {
            relsync_cmdline::manual::completions(Cli::command(), &args);
            Ok(())
        }
        Command::Man(args) => relsync_cmdline::manual::man(Cli::command(), &args),
    }
}
