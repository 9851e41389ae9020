//! The update pipeline, one stage a module, in order:
//! check → plan → fetch → assemble → verify → apply.
//!
//! Each stage takes the previous stage's output type and is the only place that builds its own,
//! so a release can reach `apply` only through every stage before it. A stage imports only
//! earlier stages and the support modules (install, source, runtime, layout, platform,
//! progress, peers, config); never a later stage or the front door.

pub(crate) mod apply;
pub(crate) mod assemble;
pub(crate) mod check;
pub(crate) mod fetch;
pub(crate) mod plan;
pub(crate) mod verify;

#[cfg(test)]
mod tests;
