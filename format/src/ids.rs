//! Content ids: each kind of BLAKE3 hash is its own type.

pub use relsync_chunker::ChunkId;

relsync_chunker::blake3_id! {
    /// BLAKE3 of a signed manifest envelope, as stored at `manifests/<id>`.
    ManifestId
}

relsync_chunker::blake3_id! {
    /// BLAKE3 of a pack, as stored at `packs/<id>`.
    PackId
}

relsync_chunker::blake3_id! {
    /// BLAKE3 of a whole file's bytes.
    FileHash
}
