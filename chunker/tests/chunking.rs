//! Integration tests for relsync-chunker: one binary, one module per theme.

#[path = "chunking/boundaries.rs"]
mod boundaries;
#[path = "chunking/frames.rs"]
mod frames;
#[path = "chunking/golden.rs"]
mod golden;
#[path = "chunking/props.rs"]
mod props;
#[path = "chunking/resync.rs"]
mod resync;
#[path = "chunking/sizes.rs"]
mod sizes;
#[path = "chunking/support.rs"]
mod support;
