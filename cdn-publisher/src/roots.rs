//! The origin's root documents (`keys/root-<n>`): the chain from `keys/root-1`, checked link
//! by link, whose newest root names the keys clients trust for each role.

use anyhow::{Context, Result, bail};
use relsync_format::paths::root_path;
use relsync_format::root::Root;

use crate::origin::Origin;

/// The newest root on the origin, walked from `keys/root-1` and checked link by link.
pub fn newest(origin: &Origin) -> Result<Option<(Root, Vec<u8>)>> {
    Ok(chain(origin)?.pop())
}

/// Every root on the origin, oldest first, walked from `keys/root-1` and checked link by link;
/// the walk ends at the first version missing.
pub fn chain(origin: &Origin) -> Result<Vec<(Root, Vec<u8>)>> {
    let Some(first) = origin.read(&root_path(1))? else {
        return Ok(Vec::new());
    };
    let root = Root::open_pinned(&first).context("keys/root-1 on the origin")?;
    if root.version != 1 {
        bail!("keys/root-1 on the origin claims version {}", root.version);
    }
    let mut chain = vec![(root, first)];
    while let Some((root, _)) = chain.last()
        && let Some(path) = root.version.checked_add(1).map(root_path)
        && let Some(next) = origin.read(&path)?
    {
        let root = root
            .open_next(&next)
            .with_context(|| format!("{path} on the origin"))?;
        chain.push((root, next));
    }
    Ok(chain)
}
