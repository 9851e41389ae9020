//! Forging hostile origin content: metadata signed by the test's own keys but with hostile
//! content, and unsigned damage (truncation, flipped bytes, oversized or sparse files), every
//! change recorded so [`Forge::restore`] can put the origin back byte for byte.
//!
//! A forged release is the origin's current pointer and manifest, decoded with the engine's own
//! types ([`Forge::release`]), edited by the test, then re-sealed ([`Forge::publish`]): the
//! manifest gets a new id and is written to `manifests/<id>`, and the pointer is updated to name
//! it (`manifest`, `manifest_len`), with its `manifest_deltas` cleared, and signed again.
//!
//! Some hostile values cannot be built with the engine's types at all: a [`RelPath`] refuses
//! `..` when constructed and when decoded. [`manifest_body_replacing`] serializes a manifest
//! with harmless placeholder paths and swaps the hostile text into the encoded body, so the
//! client meets the hostile bytes under a valid signature.
//!
//! [`RelPath`]: relsync_engine::RelPath

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use relsync_engine::envelope::{self, Kind};
use relsync_engine::manifest::{
    Manifest, PackRef, Pointer, compress_envelope, decompress_envelope,
};
use relsync_engine::paths::{channel_path, manifest_path, pack_path};
use relsync_engine::{ManifestId, PackId, SecretKey};

/// Reads a secret key file as written by `cdn-publisher keygen`.
pub fn read_secret_key(path: &Path) -> SecretKey {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("read key {}: {e}", path.display()));
    SecretKey::from_file_text(&text).unwrap_or_else(|e| panic!("key {}: {e}", path.display()))
}

/// Writes `key` as a key file `cdn-publisher` reads (mode 0600), and its public key next to
/// it (`<path>.pub`), as keygen does.
pub fn write_secret_key(key: &SecretKey, path: &Path) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    fs::write(path, key.to_file_text()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    // The publisher refuses a secret key others can read.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    let public = path.with_extension("key.pub");
    fs::write(&public, format!("{}\n", key.public()))
        .unwrap_or_else(|e| panic!("write {}: {e}", public.display()));
}

/// Edits an origin folder with the signing keys of its publisher. Every file it writes,
/// truncates or removes is saved first, so [`Forge::restore`] undoes all of it.
#[derive(Debug)]
pub struct Forge {
    origin: PathBuf,
    channel: String,
    release_keys: Vec<SecretKey>,
    channel_keys: Vec<SecretKey>,
    /// Origin-relative path -> its bytes before the first change (`None`: it did not exist).
    saved: BTreeMap<String, Option<Vec<u8>>>,
}

impl Forge {
    /// A forge for `channel` of `origin`, signing manifests with `release_keys` and pointers
    /// with `channel_keys`.
    pub fn new(
        origin: &Path,
        channel: &str,
        release_keys: Vec<SecretKey>,
        channel_keys: Vec<SecretKey>,
    ) -> Self {
        Self {
            origin: origin.to_path_buf(),
            channel: channel.to_owned(),
            release_keys,
            channel_keys,
            saved: BTreeMap::new(),
        }
    }

    /// A forge signing everything with the one key in `key_file` (what `push --key` does).
    pub fn with_key_file(origin: &Path, channel: &str, key_file: &Path) -> Self {
        Self::new(
            origin,
            channel,
            vec![read_secret_key(key_file)],
            vec![read_secret_key(key_file)],
        )
    }

    /// The origin folder.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The channel pointer's origin path.
    pub fn pointer_path(&self) -> String {
        channel_path(&self.channel)
    }

    /// The bytes of an origin file.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        let path = self.origin.join(rel);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The origin's current channel pointer, decoded without checking its signature.
    pub fn pointer(&self) -> Pointer {
        relsync_engine::dangerous::pointer(&self.read(&self.pointer_path()))
            .expect("decode the pointer")
    }

    /// The signed envelope of manifest `id` (from `manifests/<id>`).
    pub fn envelope(&self, id: &ManifestId) -> Vec<u8> {
        decompress_envelope(&self.read(&manifest_path(id)), None).expect("decompress a manifest")
    }

    /// Manifest `id`, decoded without checking its signature.
    pub fn manifest(&self, id: &ManifestId) -> Manifest {
        relsync_engine::dangerous::manifest(&self.envelope(id)).expect("decode a manifest")
    }

    /// The channel's current release: its pointer and manifest, ready to edit.
    pub fn release(&self) -> (Pointer, Manifest) {
        let pointer = self.pointer();
        let manifest = self.manifest(&pointer.manifest);
        (pointer, manifest)
    }

    /// The release keys.
    pub fn release_keys(&self) -> Vec<&SecretKey> {
        self.release_keys.iter().collect()
    }

    /// The channel keys.
    pub fn channel_keys(&self) -> Vec<&SecretKey> {
        self.channel_keys.iter().collect()
    }

    /// Signs `manifest` with the release keys; returns the envelope.
    pub fn seal_manifest(&self, manifest: &Manifest) -> Vec<u8> {
        manifest
            .seal_by(&self.release_keys())
            .expect("seal a manifest")
            .1
    }

    /// Signs an encoded manifest body with the release keys; returns the envelope.
    pub fn seal_manifest_body(&self, body: &[u8]) -> Vec<u8> {
        envelope::seal(Kind::Manifest, body, &self.release_keys()).expect("seal a manifest body")
    }

    /// Signs `manifest` and publishes it under `pointer` (see [`Forge::publish_envelope`]).
    pub fn publish(&mut self, pointer: Pointer, manifest: &Manifest) -> ManifestId {
        let envelope = self.seal_manifest(manifest);
        self.publish_envelope(pointer, &envelope)
    }

    /// Signs an encoded manifest body and publishes it under `pointer`.
    pub fn publish_body(&mut self, pointer: Pointer, body: &[u8]) -> ManifestId {
        let envelope = self.seal_manifest_body(body);
        self.publish_envelope(pointer, &envelope)
    }

    /// Writes `envelope` to `manifests/<id>` as a publisher does, then points `pointer` at it
    /// (`manifest`, `manifest_len`, no deltas) and writes the pointer, signed by the channel
    /// keys. Returns the new manifest id.
    pub fn publish_envelope(&mut self, mut pointer: Pointer, envelope: &[u8]) -> ManifestId {
        let id = ManifestId::of(envelope);
        let file = compress_envelope(envelope).expect("compress a manifest");
        self.put(&manifest_path(&id), &file);
        pointer.manifest = id;
        pointer.manifest_len = file.len() as u64;
        pointer.manifest_deltas.clear();
        self.write_pointer(&pointer);
        id
    }

    /// Writes `pointer` signed by the channel keys.
    pub fn write_pointer(&mut self, pointer: &Pointer) {
        let keys: Vec<&SecretKey> = self.channel_keys.iter().collect();
        let sealed = pointer.seal(&keys).expect("seal the pointer");
        let path = self.pointer_path();
        self.put(&path, &sealed);
    }

    /// Writes `pointer` signed by exactly `keys` (none, an attacker's, one key twice...).
    pub fn write_pointer_signed_by(&mut self, pointer: &Pointer, keys: &[&SecretKey]) {
        let sealed = pointer.seal(keys).expect("seal the pointer");
        let path = self.pointer_path();
        self.put(&path, &sealed);
    }

    /// Writes a new pack holding `frames` back to back; returns its reference for a manifest.
    pub fn add_pack(&mut self, frames: &[&[u8]]) -> PackRef {
        let bytes: Vec<u8> = frames.concat();
        let id = PackId::of(&bytes);
        self.put(&pack_path(&id), &bytes);
        PackRef {
            id,
            len: bytes.len() as u64,
        }
    }

    fn save(&mut self, rel: &str) {
        if self.saved.contains_key(rel) {
            return;
        }
        let path = self.origin.join(rel);
        let before = match fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        self.saved.insert(rel.to_owned(), before);
    }

    /// Writes (replaces) an origin file.
    pub fn put(&mut self, rel: &str, bytes: &[u8]) {
        self.save(rel);
        let path = self.origin.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        let _ = fs::remove_file(&path);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }

    /// Makes `rel` a sparse file of `len` zero bytes (free on disk, however large).
    pub fn put_sparse(&mut self, rel: &str, len: u64) {
        self.put(rel, b"");
        let path = self.origin.join(rel);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len))
            .unwrap_or_else(|e| panic!("grow {}: {e}", path.display()));
    }

    /// Removes an origin file.
    pub fn remove(&mut self, rel: &str) {
        self.save(rel);
        let path = self.origin.join(rel);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
    }

    /// Cuts an origin file to its first `len` bytes.
    pub fn truncate(&mut self, rel: &str, len: u64) {
        let mut bytes = self.read(rel);
        bytes.truncate(usize::try_from(len).expect("len fits usize"));
        self.put(rel, &bytes);
    }

    /// Appends `extra` to an origin file.
    pub fn append(&mut self, rel: &str, extra: &[u8]) {
        let mut bytes = self.read(rel);
        bytes.extend_from_slice(extra);
        self.put(rel, &bytes);
    }

    /// Flips (XOR 0xff) the byte at `offset` of an origin file.
    pub fn flip_byte(&mut self, rel: &str, offset: u64) {
        let mut bytes = self.read(rel);
        let i = usize::try_from(offset).expect("offset fits usize");
        assert!(
            i < bytes.len(),
            "flip_byte: {rel} has {} bytes",
            bytes.len()
        );
        bytes[i] ^= 0xff;
        self.put(rel, &bytes);
    }

    /// The origin paths changed since the last restore.
    pub fn touched(&self) -> Vec<String> {
        self.saved.keys().cloned().collect()
    }

    /// Puts every changed file back as it was (and removes the files that were added).
    pub fn restore(&mut self) {
        for (rel, before) in std::mem::take(&mut self.saved) {
            let path = self.origin.join(&rel);
            let _ = fs::remove_file(&path);
            if let Some(bytes) = before {
                fs::write(&path, &bytes)
                    .unwrap_or_else(|e| panic!("restore {}: {e}", path.display()));
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            }
        }
    }
}

/// postcard's unsigned varint (LEB128) encoding of `n`.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// postcard's encoding of a string: its length as a varint, then its bytes.
fn encoded_str(s: &[u8]) -> Vec<u8> {
    let mut out = varint(s.len() as u64);
    out.extend_from_slice(s);
    out
}

/// The postcard body of `manifest` with each placeholder string (which must occur exactly
/// once in the encoding, as a whole string) replaced by hostile bytes. The hostile text need
/// not be a valid [`relsync_engine::RelPath`], nor even valid UTF-8.
pub fn manifest_body_replacing(manifest: &Manifest, swaps: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = postcard::to_stdvec(manifest).expect("encode a manifest");
    for (placeholder, hostile) in swaps {
        let needle = encoded_str(placeholder.as_bytes());
        let hits: Vec<usize> = body
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_slice())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "placeholder {placeholder:?} must occur exactly once in the encoded manifest"
        );
        let at = hits[0];
        body.splice(at..at + needle.len(), encoded_str(hostile));
    }
    body
}

/// The postcard body of `manifest` cut right after the length of its chunk table, which is
/// replaced by `declared`: a few hundred bytes that claim `declared` chunks follow.
pub fn manifest_body_claiming_chunks(manifest: &Manifest, declared: u64) -> Vec<u8> {
    // The encodings with no chunk and with one first differ at the chunk table's length,
    // whatever fields come before it.
    let mut none = manifest.clone();
    none.chunks.clear();
    let mut one = none.clone();
    one.chunks
        .push(*manifest.chunks.first().expect("a manifest with chunks"));
    let none = postcard::to_stdvec(&none).expect("encode a manifest");
    let one = postcard::to_stdvec(&one).expect("encode a manifest");
    let at = none
        .iter()
        .zip(&one)
        .position(|(a, b)| a != b)
        .expect("the encodings differ");
    assert_eq!((none[at], one[at]), (0, 1), "not a length prefix");
    let mut body = none[..at].to_vec();
    body.extend(varint(declared));
    body
}

/// A valid zstd frame of `len` zero bytes made of RLE blocks: about 4 bytes per 128 KiB, so a
/// few KiB decode to GiBs. With `declare_size` its header states `len` (single segment);
/// without, it states only a 128 KiB window, so a decoder learns the size by decoding.
pub fn zstd_zero_bomb(len: u64, declare_size: bool) -> Vec<u8> {
    const BLOCK: u64 = 128 * 1024;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    if declare_size {
        // Frame header descriptor: 8-byte content size, single segment, no checksum, no dict.
        out.push(0xe0);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        // No content size, not single segment; window descriptor: 2^(10 + 7) = 128 KiB.
        out.push(0x00);
        out.push(7 << 3);
    }
    let mut left = len;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        let last = u32::from(left == 0);
        // Block header: last flag, type 1 (RLE), size; then the byte to repeat.
        let header = last | (1 << 1) | ((size as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard() {
        for n in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX)] {
            assert_eq!(varint(n), postcard::to_stdvec(&n).unwrap(), "{n}");
        }
        assert_eq!(
            encoded_str(b"abc"),
            postcard::to_stdvec(&"abc".to_string()).unwrap()
        );
    }

    #[test]
    fn zero_bombs_decode_to_their_length() {
        let declared = zstd_zero_bomb(300 * 1024 + 5, true);
        let data = relsync_chunker::frame::decompress(&declared, 300 * 1024 + 5).unwrap();
        assert!(data.len() == 300 * 1024 + 5 && data.iter().all(|&b| b == 0));
        let open = zstd_zero_bomb(200 * 1024, false);
        let data = relsync_chunker::frame::decompress(&open, 200 * 1024).unwrap();
        assert_eq!(data.len(), 200 * 1024);
        // A GiB in a few KiB.
        assert!(zstd_zero_bomb(1 << 30, false).len() < 40 * 1024);
    }
}
