//! BLAKE3 content ids.

/// Error parsing a hex id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex characters for a BLAKE3 id, got {0:?}")]
pub struct IdParseError(pub String);

/// Defines a 32-byte BLAKE3 id newtype with hex `Display`/`FromStr`, serde and helpers.
///
/// Used by this crate for [`ChunkId`] and by the engine for its own ids, so that each kind of
/// hash is its own type and they cannot be mixed up across modules.
#[doc(hidden)]
#[macro_export]
macro_rules! blake3_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The BLAKE3 hash of `bytes`.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*$crate::__blake3::hash(bytes).as_bytes())
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 bytes in hex, for logs and directory names.
            pub fn short(&self) -> String {
                $crate::__hex::encode(&self.0[..8])
            }
        }

        impl From<$crate::__blake3::Hash> for $name {
            fn from(hash: $crate::__blake3::Hash) -> Self {
                Self(*hash.as_bytes())
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&$crate::__hex::encode(self.0))
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::IdParseError;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                let mut bytes = [0u8; 32];
                $crate::__hex::decode_to_slice(s, &mut bytes)
                    .map_err(|_| $crate::IdParseError(s.to_owned()))?;
                Ok(Self(bytes))
            }
        }
    };
}

blake3_id! {
    /// The BLAKE3 hash of a chunk's uncompressed bytes: its name everywhere.
    ChunkId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        let text = id.to_string();
        assert_eq!(text, blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(text.parse::<ChunkId>(), Ok(id));
        assert!("zz".parse::<ChunkId>().is_err());
        assert_eq!(id.short().len(), 16);
    }
}
