//! Fixed test keys. Their secrets are public (this file), so nothing they sign means anything
//! outside the fuzz targets.

use std::sync::LazyLock;

use relsync_engine::{PublicKey, SecretKey};

/// How many fixed keys there are.
pub const COUNT: usize = 4;

static KEYS: LazyLock<Vec<SecretKey>> = LazyLock::new(|| {
    (1..=COUNT as u8)
        .map(|n| {
            let seed = format!("{:02x}", n * 0x11).repeat(32);
            SecretKey::from_file_text(&format!("relsync-ed25519-secret:{seed}"))
                .expect("a fixed key parses")
        })
        .collect()
});

/// Fixed key `i` (modulo [`COUNT`]): seed bytes `0x11`, `0x22`, `0x33` or `0x44`.
pub fn secret(i: usize) -> &'static SecretKey {
    &KEYS[i % COUNT]
}

/// The public half of [`secret`]`(i)`.
pub fn public(i: usize) -> PublicKey {
    secret(i).public()
}

/// The fixed keys that sign, picked by the low [`COUNT`] bits of `mask`; bit 4 adds the first
/// of them again (a repeated signature, which must count once).
pub fn signers(mask: u8) -> Vec<usize> {
    let mut picked: Vec<usize> = (0..COUNT).filter(|i| mask & (1 << i) != 0).collect();
    if mask & 0x10 != 0
        && let Some(&first) = picked.first()
    {
        picked.push(first);
    }
    picked
}

/// The secret keys for `signers`.
pub fn secrets(signers: &[usize]) -> Vec<&'static SecretKey> {
    signers.iter().map(|&i| secret(i)).collect()
}
