//! The three request-response protocols and their size limits.
//!
//! Each message is a 4-byte little-endian length and a postcard body. A length over the
//! limit is refused before anything is read, so a peer cannot make us buffer more; a META
//! answer's limit is the asker's limit for the document it asked for, not the protocol's. A
//! body is read as it arrives, never allocated at its declared length up front, so a peer
//! that declares a large body and sends a short one costs what it sent.

use std::io;
use std::marker::PhantomData;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest batch a GET may ask for, in uncompressed chunk bytes.
pub const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Most chunks one GET may name.
pub const MAX_BATCH_CHUNKS: usize = 4096;

/// HAVE: which chunks of a manifest's chunk table a peer holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Have;

/// GET: a batch of chunks, each zstd-compressed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Get;

/// META: a signed document by its origin path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta;

/// A protocol's name, messages and limits.
pub trait Protocol: Send + Sync + Clone + Default + 'static {
    /// The libp2p protocol name.
    const NAME: StreamProtocol;
    /// Largest encoded request.
    const MAX_REQUEST: usize;
    /// Largest encoded response.
    const MAX_RESPONSE: usize;
    /// The request.
    type Request: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug;
    /// The response.
    type Response: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug;

    /// Largest encoded response to `request` (at most `MAX_RESPONSE`).
    fn response_limit(_request: &Self::Request) -> usize {
        Self::MAX_RESPONSE
    }
}

/// A HAVE request: the manifest asked about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaveRequest {
    /// Its id.
    pub manifest: [u8; 32],
}

/// A HAVE answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HaveResponse {
    /// The peer does not know that manifest.
    Unknown,
    /// Its holdings.
    Have {
        /// Chunks in the table (must match the asker's manifest).
        chunks: u32,
        /// One bit per chunk held.
        #[serde(with = "serde_bytes")]
        bits: Vec<u8>,
        /// One bit per chunk on its way from the origin.
        #[serde(with = "serde_bytes")]
        fetching: Vec<u8>,
        /// It is fetching this release now.
        wanting: bool,
    },
}

/// A GET request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest {
    /// The manifest whose chunk table the indexes refer to.
    pub manifest: [u8; 32],
    /// Chunk indexes.
    pub chunks: Vec<u32>,
}

/// A GET answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GetResponse {
    /// At its upload limit: ask later or elsewhere.
    Busy,
    /// The request breaks a limit.
    Refused(String),
    /// One compressed frame per chunk asked, `None` where it has none.
    Frames(#[serde(with = "frames")] Vec<Option<Vec<u8>>>),
}

/// A META request: an origin path (`channels/<name>`, `manifests/<id>`, `keys/root-<n>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaRequest {
    /// The path.
    pub path: String,
    /// The asker's limit for the document, in bytes (`None`: the protocol's). Not sent: the
    /// asker's codec refuses a longer answer before reading it.
    #[serde(skip)]
    pub limit: Option<u64>,
}

/// Bytes a META answer adds to its document: the `Some` tag and the length.
const META_FRAMING: usize = 16;

/// A META answer: the document as signed, if the peer holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaResponse {
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub document: Option<Vec<u8>>,
}

/// `Vec<Option<Vec<u8>>>` as a sequence of optional byte strings (`serde_bytes` covers one
/// `Vec<u8>` or `Option<Vec<u8>>`, not a list of them).
mod frames {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(v: &[Option<Vec<u8>>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|frame| frame.as_deref().map(Bytes::new)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
        let frames = Vec::<Option<ByteBuf>>::deserialize(d)?;
        Ok(frames
            .into_iter()
            .map(|frame| frame.map(ByteBuf::into_vec))
            .collect())
    }
}

impl Protocol for Have {
    const NAME: StreamProtocol = StreamProtocol::new("/relsync/have/1");
    const MAX_REQUEST: usize = 64;
    /// Two bits for each of up to 16M chunks.
    const MAX_RESPONSE: usize = 4 * 1024 * 1024 + 64;
    type Request = HaveRequest;
    type Response = HaveResponse;
}

impl Protocol for Get {
    const NAME: StreamProtocol = StreamProtocol::new("/relsync/get/1");
    const MAX_REQUEST: usize = 64 + 5 * MAX_BATCH_CHUNKS;
    /// A full batch, with room for incompressible chunks and framing.
    const MAX_RESPONSE: usize =
        (MAX_BATCH_BYTES + MAX_BATCH_BYTES / 64) as usize + 16 * MAX_BATCH_CHUNKS + 1024;
    type Request = GetRequest;
    type Response = GetResponse;
}

impl Protocol for Meta {
    const NAME: StreamProtocol = StreamProtocol::new("/relsync/meta/1");
    const MAX_REQUEST: usize = 512;
    /// A compressed manifest of about a million chunks.
    const MAX_RESPONSE: usize = 64 * 1024 * 1024;
    type Request = MetaRequest;
    type Response = MetaResponse;

    fn response_limit(request: &MetaRequest) -> usize {
        request.limit.map_or(Self::MAX_RESPONSE, |limit| {
            usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_add(META_FRAMING)
                .min(Self::MAX_RESPONSE)
        })
    }
}

/// The codec for protocol `P`. libp2p clones it for each stream, and an asker's clone writes
/// the request before it reads the answer, so it carries the request's answer limit.
#[derive(Debug, Clone, Default)]
pub struct Codec<P> {
    /// The limit of the answer to the request this clone wrote.
    response_limit: Option<usize>,
    protocol: PhantomData<P>,
}

/// Initial room for a body: what a short message needs, without trusting the declared length.
const FIRST_READ_BYTES: usize = 64 * 1024;

async fn read<T, M>(io: &mut T, limit: usize, what: &str) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} of {len} bytes exceeds the {limit}-byte limit"),
        ));
    }
    let body = read_body(io, len).await?;
    if body.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{what} ended after {} of {len} bytes", body.len()),
        ));
    }
    postcard::from_bytes(&body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}: {e}")))
}

/// Up to `len` bytes of `io`, fewer if it ends first. The buffer grows with the bytes that
/// arrive, so a declared length costs nothing until it is sent. (Not `read_to_end`: it
/// zero-fills the buffer element by element, which callers built without optimization, as
/// the request-response handler is, pay for dearly.)
async fn read_body<T>(io: &mut T, len: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut body = Vec::with_capacity(len.min(FIRST_READ_BYTES));
    let mut chunk = vec![0u8; len.min(FIRST_READ_BYTES)];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match io.read(&mut chunk[..want]).await {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(body)
}

async fn write<T, M>(io: &mut T, message: &M, limit: usize, what: &str) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: Serialize,
{
    let body = postcard::to_stdvec(message)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if body.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} of {} bytes exceeds the {limit}-byte limit",
                body.len()
            ),
        ));
    }
    io.write_all(&(body.len() as u32).to_le_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl<P: Protocol> libp2p::request_response::Codec for Codec<P> {
    type Protocol = StreamProtocol;
    type Request = P::Request;
    type Response = P::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<P::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read(io, P::MAX_REQUEST, "request").await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<P::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let limit = self.response_limit.unwrap_or(P::MAX_RESPONSE);
        read(io, limit, "response").await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: P::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.response_limit = Some(P::response_limit(&request));
        write(io, &request, P::MAX_REQUEST, "request").await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: P::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write(io, &response, P::MAX_RESPONSE, "response").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::request_response::Codec as _;

    /// The messages as plain serde writes them, byte by byte.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum PlainGetResponse {
        Busy,
        Refused(String),
        Frames(Vec<Option<Vec<u8>>>),
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum PlainHaveResponse {
        Unknown,
        Have {
            chunks: u32,
            bits: Vec<u8>,
            fetching: Vec<u8>,
            wanting: bool,
        },
    }

    #[test]
    fn byte_strings_keep_the_wire_format() {
        let frames = vec![
            Some(vec![1u8; 300]),
            None,
            Some(Vec::new()),
            Some(vec![9; 5]),
        ];
        let ours = postcard::to_stdvec(&GetResponse::Frames(frames.clone())).unwrap();
        let plain = postcard::to_stdvec(&PlainGetResponse::Frames(frames.clone())).unwrap();
        assert_eq!(ours, plain);
        match postcard::from_bytes::<GetResponse>(&plain).unwrap() {
            GetResponse::Frames(back) => assert_eq!(back, frames),
            other => panic!("{other:?}"),
        }

        let ours = postcard::to_stdvec(&HaveResponse::Have {
            chunks: 20,
            bits: vec![0xff, 0x0f, 0x01],
            fetching: vec![0, 0, 0],
            wanting: true,
        })
        .unwrap();
        let plain = postcard::to_stdvec(&PlainHaveResponse::Have {
            chunks: 20,
            bits: vec![0xff, 0x0f, 0x01],
            fetching: vec![0, 0, 0],
            wanting: true,
        })
        .unwrap();
        assert_eq!(ours, plain);

        for document in [None, Some(b"signed".to_vec())] {
            let ours = postcard::to_stdvec(&MetaResponse {
                document: document.clone(),
            })
            .unwrap();
            assert_eq!(ours, postcard::to_stdvec(&document).unwrap());
            let back: MetaResponse = postcard::from_bytes(&ours).unwrap();
            assert_eq!(back.document, document);
        }
    }

    #[test]
    fn oversized_lengths_are_refused_before_reading() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&(Have::MAX_RESPONSE as u32 + 1).to_le_bytes());
        let mut io = libp2p::futures::io::Cursor::new(wire);
        let err =
            block_on(Codec::<Have>::default().read_response(&Have::NAME, &mut io)).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    /// `message` as the codec frames it.
    fn framed(message: &impl Serialize) -> Vec<u8> {
        let body = postcard::to_stdvec(message).unwrap();
        let mut wire = (body.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&body);
        wire
    }

    #[test]
    fn meta_answers_over_the_askers_limit_are_refused_before_reading() {
        let mut codec = Codec::<Meta>::default();
        let mut sent = libp2p::futures::io::Cursor::new(Vec::new());
        let request = MetaRequest {
            path: "channels/stable".into(),
            limit: Some(1000),
        };
        block_on(codec.write_request(&Meta::NAME, &mut sent, request)).unwrap();
        // The limit stays with the asker: the wire carries the path alone.
        assert_eq!(sent.into_inner(), framed(&"channels/stable"));

        // Only the length is there: reading on would fail otherwise than "exceeds".
        let limit = 1000 + META_FRAMING;
        let over = (limit as u32 + 1).to_le_bytes().to_vec();
        let mut io = libp2p::futures::io::Cursor::new(over);
        let err = block_on(codec.read_response(&Meta::NAME, &mut io)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("exceeds the {limit}-byte limit")),
            "{err}"
        );

        let document = Some(vec![7u8; 1000]);
        let wire = framed(&MetaResponse {
            document: document.clone(),
        });
        let mut io = libp2p::futures::io::Cursor::new(wire.clone());
        let back = block_on(codec.read_response(&Meta::NAME, &mut io)).unwrap();
        assert_eq!(back.document, document);

        // One byte over the document limit, within the protocol's: refused for this asker...
        let wire = framed(&MetaResponse {
            document: Some(vec![7u8; limit]),
        });
        let mut io = libp2p::futures::io::Cursor::new(wire.clone());
        assert!(block_on(codec.read_response(&Meta::NAME, &mut io)).is_err());
        // ...and read by one that asked without a limit.
        let mut open = Codec::<Meta>::default();
        let request = MetaRequest {
            path: "channels/stable".into(),
            limit: None,
        };
        let mut sink = libp2p::futures::io::Cursor::new(Vec::new());
        block_on(open.write_request(&Meta::NAME, &mut sink, request)).unwrap();
        let mut io = libp2p::futures::io::Cursor::new(wire);
        assert!(block_on(open.read_response(&Meta::NAME, &mut io)).is_ok());
    }

    #[test]
    fn declared_lengths_are_not_allocated_up_front() {
        // 60 MiB declared, 5 bytes sent: the buffer holds what came, not what was declared.
        let declared = 60usize << 20;
        let mut io = libp2p::futures::io::Cursor::new(b"short".to_vec());
        let body = block_on(read_body(&mut io, declared)).unwrap();
        assert_eq!(body, b"short");
        assert!(
            body.capacity() <= FIRST_READ_BYTES,
            "{} bytes allocated for a 5-byte body",
            body.capacity()
        );
        // Through the codecs: a short body is an error, whatever was declared.
        let short = |declared: usize| {
            let mut wire = (declared as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(b"short");
            libp2p::futures::io::Cursor::new(wire)
        };
        let meta =
            block_on(Codec::<Meta>::default().read_response(&Meta::NAME, &mut short(declared)))
                .unwrap_err();
        let get = block_on(Codec::<Get>::default().read_response(&Get::NAME, &mut short(4 << 20)))
            .unwrap_err();
        for err in [meta, get] {
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
            assert!(err.to_string().contains("ended after 5 of"), "{err}");
        }

        // A body longer than the first read still arrives whole.
        let long = vec![3u8; 3 * FIRST_READ_BYTES + 17];
        let mut io = libp2p::futures::io::Cursor::new(long.clone());
        assert_eq!(block_on(read_body(&mut io, long.len())).unwrap(), long);
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let mut io = libp2p::futures::io::Cursor::new(Vec::new());
        let request = GetRequest {
            manifest: [7; 32],
            chunks: vec![1, 2, 3],
        };
        block_on(Codec::<Get>::default().write_request(&Get::NAME, &mut io, request)).unwrap();
        let mut io = libp2p::futures::io::Cursor::new(io.into_inner());
        let back = block_on(Codec::<Get>::default().read_request(&Get::NAME, &mut io)).unwrap();
        assert_eq!(back.chunks, vec![1, 2, 3]);

        let mut garbage = 3u32.to_le_bytes().to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        let mut io = libp2p::futures::io::Cursor::new(garbage);
        let err = block_on(Codec::<Get>::default().read_response(&Get::NAME, &mut io)).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }
}
