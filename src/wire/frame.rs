use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WireError;

/// Bytes in a frame's length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Frames of the form `[u32 big-endian length][length bytes]`.
///
/// The length is compared with `max_frame_len` as soon as the four prefix bytes are present,
/// before any buffer is grown for the body. Implements tokio-util's `Decoder`/`Encoder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec accepting frame bodies of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.min(u32::MAX as usize),
        }
    }

    /// The limit.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Reads a length prefix and checks it against the limit.
    pub fn decode_header(&self, header: [u8; FRAME_HEADER_LEN]) -> Result<usize, WireError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame_len {
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len as u64,
            });
        }
        Ok(len)
    }

    /// The length prefix for a body of `len` bytes.
    pub fn encode_header(&self, len: usize) -> Result<[u8; FRAME_HEADER_LEN], WireError> {
        if len > self.max_frame_len {
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len as u64,
            });
        }
        Ok((len as u32).to_be_bytes())
    }

    /// Appends one frame holding `payload` to `dst`.
    pub fn encode(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        let header = self.encode_header(payload.len())?;
        dst.reserve(FRAME_HEADER_LEN + payload.len());
        dst.put_slice(&header);
        dst.put_slice(payload);
        Ok(())
    }

    /// Takes one complete frame from the front of `src`: `Ok(None)` if more bytes are needed.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        let Some(header) = src.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(header);
        let len = self.decode_header(h)?;
        if src.len() < FRAME_HEADER_LEN + len {
            // Ask for exactly the remainder of a frame we already know is within the limit.
            src.reserve(FRAME_HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(FRAME_HEADER_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }

    /// Decodes every complete frame in `data`; the trailing incomplete part, if any, is
    /// returned as the remainder. Used by fuzzers and tests.
    pub fn decode_all<'a>(
        &self,
        mut data: &'a [u8],
    ) -> Result<(Vec<&'a [u8]>, &'a [u8]), WireError> {
        let mut frames = Vec::new();
        loop {
            let Some((header, rest)) = data.split_first_chunk::<FRAME_HEADER_LEN>() else {
                return Ok((frames, data));
            };
            let len = self.decode_header(*header)?;
            let Some((body, rest)) = rest.split_at_checked(len) else {
                return Ok((frames, data));
            };
            frames.push(body);
            data = rest;
        }
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, std::io::Error> {
        FrameCodec::decode(self, src).map_err(Into::into)
    }
}

impl tokio_util::codec::Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        FrameCodec::encode(self, &item, dst).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_prefix_is_refused_before_allocation() {
        let codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let cap_before = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn partial_then_complete() {
        let codec = FrameCodec::new(1024);
        let mut out = BytesMut::new();
        codec.encode(b"hello", &mut out).unwrap();
        codec.encode(b"", &mut out).unwrap();
        let mut partial = out.split_to(6);
        assert_eq!(codec.decode(&mut partial).unwrap(), None);
        partial.unsplit(out);
        assert_eq!(codec.decode(&mut partial).unwrap().unwrap(), &b"hello"[..]);
        assert_eq!(codec.decode(&mut partial).unwrap().unwrap(), &b""[..]);
        assert_eq!(codec.decode(&mut partial).unwrap(), None);
    }
}
