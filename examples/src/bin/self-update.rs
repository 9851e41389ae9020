//! `self-update`: a single-executable app that keeps itself updated with relsync.
//!
//! Copy it anywhere, say `~/bin/hello`. relsync keeps its own install of the app elsewhere
//! (`--data DIR`, default `~/bin/hello.relsync/`), where each published release is a
//! directory holding one file named like the executable (`hello`). `update` brings that
//! install up to date, copies the new file over the running executable and re-executes it.
//!
//! ```text
//! hello update --origin URL --trust KEY ─▶ check, download, install into hello.relsync/
//!   ─▶ copy hello.relsync/current/hello to bin/.hello-XXXX ─▶ rename it over bin/hello
//!   ─▶ exec bin/hello run                 ("hello from 2.0.0 (…)", printed by the new code)
//! ```
//!
//! Unix only: see [`replace_exe`]. Windows is out of scope.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use relsync_engine::{CheckOutcome, Engine, Event, PublicKey};

/// The product this app is published as (`cdn-publisher push --product hello`): an app
/// installs only its own releases, whatever else its publisher's key signs.
const PRODUCT: &str = "hello";

/// A tiny app that updates itself with relsync.
#[derive(Debug, Parser)]
struct Cli {
    /// relsync's install of this app (default: `<executable>.relsync`, next to it).
    #[arg(long, env = "SELF_UPDATE_DATA", value_name = "DIR", global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the installed version and a short hash of this executable.
    Run,
    /// Update from the origin, replace this executable, and run the new one.
    Update {
        /// Where releases are published (`http(s)://…`, `file://…` or a folder).
        #[arg(long)]
        origin: String,
        /// A public key releases may be signed with (`ed25519:…`; repeatable).
        #[arg(long, required = true)]
        trust: Vec<PublicKey>,
        /// The channel to follow.
        #[arg(long, default_value = "stable")]
        channel: String,
    },
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    let cli = Cli::parse();
    // Resolved before anything replaces the file: afterwards Linux reports the running
    // executable as "<path> (deleted)".
    let exe = std::env::current_exe().context("locating this executable")?;
    let data = match cli.data {
        Some(dir) => dir,
        None => {
            let mut dir = exe.clone().into_os_string();
            dir.push(".relsync");
            PathBuf::from(dir)
        }
    };
    match cli.command {
        Command::Run => run(&exe, &data),
        Command::Update {
            origin,
            trust,
            channel,
        } => update(&exe, &data, origin, trust, &channel),
    }
}

/// `hello from <version> (<hash>)`: the version relsync installed, or "unmanaged" before the
/// first update; the hash tells which bytes are actually running.
fn run(exe: &Path, data: &Path) -> Result<()> {
    let version = match Engine::local(data)
        .open_blocking()
        .and_then(|engine| engine.status())
    {
        Ok(status) => status.version.map(|v| v.to_string()),
        Err(relsync_engine::Error::NothingInstalled(_)) => None,
        Err(e) => return Err(e).context("reading the install's status"),
    };
    let bytes = fs::read(exe).with_context(|| format!("reading {}", exe.display()))?;
    let hash = blake3::hash(&bytes).to_hex();
    let version = version.as_deref().unwrap_or("unmanaged");
    println!("hello from {version} ({})", &hash[..12]);
    Ok(())
}

fn update(
    exe: &Path,
    data: &Path,
    origin: String,
    trust: Vec<PublicKey>,
    channel: &str,
) -> Result<()> {
    let name = exe.file_name().context("the executable has no file name")?;
    let engine = Engine::builder(origin, trust, data)
        .product(PRODUCT)
        .channel(channel)
        .reporter(Arc::new(print_event))
        .open_blocking()
        .with_context(|| format!("opening {}", data.display()))?;
    match engine.check().context("checking for an update")? {
        CheckOutcome::Available(offer) => {
            eprintln!(
                "update: {} available, {} bytes to download",
                offer.version, offer.bytes_on_wire
            );
            engine.download().context("downloading")?;
            engine.install().context("installing")?;
        }
        CheckOutcome::UpToDate { version } => eprintln!("update: {version} is current"),
        CheckOutcome::Held { offered, hold } => eprintln!("update: not taking {offered}: {hold}"),
        other => eprintln!("update: {other:?}"),
    }
    // Let go of the install (its lock, the engine's runtime) before this process goes away.
    drop(engine);

    // Also when nothing was downloaded: an earlier run may have installed the release and
    // then died before replacing the executable.
    let new = data.join("current").join(name);
    if !new.is_file() {
        bail!("no {}: nothing installed to run", new.display());
    }
    if fs::read(&new)? == fs::read(exe)? {
        return run(exe, data);
    }
    replace_exe(&new, exe)?;
    // The running code is the old one: replace this process with the new executable. exec
    // only returns on failure.
    let error = std::process::Command::new(exe)
        .arg("--data")
        .arg(data)
        .arg("run")
        .exec();
    Err(error).with_context(|| format!("running the new {}", exe.display()))
}

/// Puts a copy of `new` in place of `exe`, atomically.
///
/// A running program holds its executable's inode, not its name. `rename` points the name
/// at another inode in one step; the old inode lives on, unlinked, until the last process
/// running it exits. So the running process is unaffected, and whoever starts `exe` gets
/// the whole old file or the whole new one, never a half-written one (writing into a running
/// executable fails with ETXTBSY anyway). The temporary file sits beside `exe` because
/// `rename` works only within one file system.
///
/// A copy, not a hard link: the file under `data` is relsync's verified copy of the release
/// (relsync may share its inode across releases), and nothing should be able to change it
/// through another name. A copy also works when `data` is on another file system.
///
/// Windows is out of scope: a running executable there cannot be replaced by rename; it has
/// to be moved aside and deleted later.
fn replace_exe(new: &Path, exe: &Path) -> Result<()> {
    let dir = exe.parent().context("the executable has no directory")?;
    // Deleted on drop if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(".self-update-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    io::copy(&mut File::open(new)?, tmp.as_file_mut()).context("copying the new executable")?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(0o755))?;
    // The bytes reach the disk before the name points at them...
    tmp.as_file().sync_all()?;
    tmp.persist(exe)
        .with_context(|| format!("renaming over {}", exe.display()))?;
    // ...and the rename itself survives a crash.
    File::open(dir)?.sync_all()?;
    eprintln!("update: replaced {}", exe.display());
    Ok(())
}

/// Progress, one line per milestone, on stderr.
fn print_event(event: Event) {
    match event {
        Event::Planned {
            bytes_to_fetch,
            bytes_reused,
            ..
        } => eprintln!("update: fetching {bytes_to_fetch} bytes, reusing {bytes_reused}"),
        Event::Applied { version } => eprintln!("update: installed {version}"),
        Event::RestartRequired { version } => eprintln!("update: restart to run {version}"),
        _ => {}
    }
}
