//! An existing install opened to read only, for `relsync status` and `relsync verify`.

use std::path::Path;

use crate::Result;
use crate::install::store::ReadOnlyStore;
use crate::install::{Status, open_install_read_only, status};
use crate::layout::InstallLayout;
use crate::pipeline::verify::{InstallCheck, verify_install};

/// An existing install opened to read only: what `relsync status` and `relsync verify` use.
///
/// Opening it takes no lock and writes nothing, so it works while an update or the daemon
/// holds the install (it reads the store's last commit) and with no write access to
/// `.relsync`. The install is checked as [`Engine`](crate::Engine) checks it (nobody else may
/// write it, nothing is followed through a link); a missing install or store is
/// [`Error::NothingInstalled`](crate::Error::NothingInstalled). An interrupted switch is not finished here (the next writer
/// does that): the release `current` points at is reported as the one the writer will record.
/// A store a killed writer left unclean is recovered in a copy in memory, never in the file.
#[derive(Debug)]
pub struct ReadOnlyInstall {
    layout: InstallLayout,
    store: ReadOnlyStore,
}

impl ReadOnlyInstall {
    /// Opens the install at `install_dir` read-only.
    pub fn open(install_dir: impl AsRef<Path>) -> Result<Self> {
        let layout = InstallLayout::new(install_dir.as_ref());
        let store = open_install_read_only(&layout)?;
        Ok(Self { layout, store })
    }

    /// What the install holds (as [`Engine::status`](crate::Engine::status)).
    pub fn status(&self) -> Result<Status> {
        status(&self.layout, &self.store)
    }

    /// The installed release checked against its signed manifest (as
    /// [`Engine::verify`](crate::Engine::verify)). Blocking: it hashes every file.
    pub fn verify(&self) -> Result<InstallCheck> {
        verify_install(&self.layout, &self.store)
    }

    /// The store, read-only.
    pub fn store(&self) -> &ReadOnlyStore {
        &self.store
    }
}
