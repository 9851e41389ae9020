//! Shared by the relsync fuzz targets in `fuzz_targets/` (see docs/fuzzing.md).
//!
//! - [`keys`]: four fixed signing keys, so a target can sign what the fuzzer writes and get
//!   past signature checks to the parsers and validators behind them;
//! - [`Reader`]: the little-endian byte layouts the targets read (missing bytes read as 0);
//! - [`model`]: manifests and root documents built with `arbitrary`, repaired so that most
//!   pass validation, and a reference model of which root chains must be accepted;
//! - [`check`]: invariants every accepted manifest and every plan must hold;
//! - [`install`]: the `plan` target's install directories, made once per process;
//! - [`sample`]: two small real releases, for the install and the seeds;
//! - [`exe`]: a small synthetic x86-64 executable in two versions and a reference-projection
//!   update between them, for the `refs` target;
//! - [`seeds`]: valid inputs for each target, written by `scripts/fuzz.sh`.
//!
//! Every target's input starts with a mode byte that picks what the rest is.

pub mod check;
pub mod exe;
pub mod install;
pub mod keys;
pub mod model;
mod reader;
pub mod sample;
pub mod seeds;

pub use reader::{Reader, put_doc};
