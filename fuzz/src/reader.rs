//! The targets' byte layouts: little-endian integers and length-prefixed documents.

/// Reads integers and slices off the front of a fuzz input. Past the end it reads zeros and
/// empty slices, so every input parses.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A document: a `u16` length, then that many bytes (fewer at the end of the input).
    pub fn doc(&mut self) -> &'a [u8] {
        let len = self.u16();
        self.bytes(usize::from(len))
    }

    /// Up to `max` documents, until the input ends.
    pub fn docs(&mut self, max: usize) -> Vec<&'a [u8]> {
        let mut docs = Vec::new();
        while !self.is_empty() && docs.len() < max {
            docs.push(self.doc());
        }
        docs
    }
}

/// Appends `doc` as [`Reader::doc`] reads it (documents over 64 KiB are cut).
pub fn put_doc(out: &mut Vec<u8>, doc: &[u8]) {
    let len = u16::try_from(doc.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&doc[..usize::from(len)]);
}
