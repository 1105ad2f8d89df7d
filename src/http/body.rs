//! Request bodies (RFC 9112 §6-§7): a `Content-Length` counter and an
//! incremental chunked decoder that accepts input split anywhere, plus the
//! chunked encoder used by streaming responses.

use super::reply::push_hex;

/// Longest chunk extension accepted (RFC 9112 §7.1.1 lets servers limit
/// them; nobody legitimate sends long ones).
pub const MAX_CHUNK_EXT: u32 = 1024;
/// Longest trailer section accepted.
pub const MAX_TRAILERS: u32 = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    BadChunkSize,
    ChunkSizeOverflow,
    ExtensionTooLong,
    TrailersTooLong,
    BadLineEnding,
}

impl BodyError {
    pub fn why(self) -> &'static str {
        match self {
            BodyError::BadChunkSize => "invalid chunk size",
            BodyError::ChunkSizeOverflow => "chunk size overflows",
            BodyError::ExtensionTooLong => "chunk extension too long",
            BodyError::TrailersTooLong => "trailer section too long",
            BodyError::BadLineEnding => "chunk line not ended by CRLF",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// Reading hex digits; `digits` counts them to reject absurd sizes.
    Size {
        size: u64,
        digits: u8,
    },
    /// After `;`: skipping a chunk extension.
    Ext {
        size: u64,
        len: u32,
    },
    /// Saw CR after the size line, expect LF.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart {
        total: u32,
    },
    TrailerLine {
        total: u32,
    },
    TrailerLf {
        total: u32,
        empty: bool,
    },
}

/// Decodes one request body. `feed` consumes what it can and reports the
/// body bytes found, so the caller can discard or keep them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyDecoder {
    Length { left: u64 },
    Chunked(Chunked),
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes consumed (framing included).
    pub consumed: usize,
    /// The body is complete.
    pub done: bool,
}

impl BodyDecoder {
    pub fn length(n: u64) -> BodyDecoder {
        if n == 0 { BodyDecoder::Done } else { BodyDecoder::Length { left: n } }
    }

    pub fn chunked() -> BodyDecoder {
        BodyDecoder::Chunked(Chunked::Size { size: 0, digits: 0 })
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// Body bytes already announced but not yet seen: the rest of a
    /// `Content-Length`, or of the current chunk. A chunk announcing more
    /// than the body limit allows is refused when its size line arrives,
    /// not once its data has been read.
    pub fn announced(&self) -> u64 {
        match self {
            BodyDecoder::Length { left } | BodyDecoder::Chunked(Chunked::Data { left }) => *left,
            BodyDecoder::Chunked(Chunked::Ext { size, .. } | Chunked::SizeLf { size }) => *size,
            _ => 0,
        }
    }

    /// Consume body framing and data from `input`, handing each run of
    /// body bytes to `data`.
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<Fed, BodyError> {
        match self {
            BodyDecoder::Done => Ok(Fed { consumed: 0, done: true }),
            BodyDecoder::Length { left } => {
                let take = (*left).min(input.len() as u64) as usize;
                data(&input[..take]);
                *left -= take as u64;
                let done = *left == 0;
                if done {
                    *self = BodyDecoder::Done;
                }
                Ok(Fed { consumed: take, done })
            }
            BodyDecoder::Chunked(state) => {
                let (consumed, done) = feed_chunked(state, input, &mut data)?;
                if done {
                    *self = BodyDecoder::Done;
                }
                Ok(Fed { consumed, done })
            }
        }
    }
}

fn feed_chunked(state: &mut Chunked, input: &[u8], data: &mut impl FnMut(&[u8])) -> Result<(usize, bool), BodyError> {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        *state = match *state {
            Chunked::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 16 {
                        return Err(BodyError::ChunkSizeOverflow);
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0);
                    Chunked::Size { size: size << 4 | u64::from(v), digits: digits + 1 }
                }
                _ if digits == 0 => return Err(BodyError::BadChunkSize),
                b';' => Chunked::Ext { size, len: 0 },
                b'\r' => Chunked::SizeLf { size },
                // RFC 9112 §7.1.1 allows BWS before the extension.
                b' ' | b'\t' => Chunked::Ext { size, len: 0 },
                _ => return Err(BodyError::BadChunkSize),
            },
            Chunked::Ext { size, len } => match b {
                b'\r' => Chunked::SizeLf { size },
                b'\n' => return Err(BodyError::BadLineEnding),
                0..=8 | 10..=31 | 127 => return Err(BodyError::BadChunkSize),
                _ if len >= MAX_CHUNK_EXT => return Err(BodyError::ExtensionTooLong),
                _ => Chunked::Ext { size, len: len + 1 },
            },
            Chunked::SizeLf { size } => match b {
                b'\n' if size == 0 => Chunked::TrailerStart { total: 0 },
                b'\n' => Chunked::Data { left: size },
                _ => return Err(BodyError::BadLineEnding),
            },
            Chunked::Data { left } => {
                let take = left.min((input.len() - i) as u64) as usize;
                data(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                *state = if left == 0 { Chunked::DataCr } else { Chunked::Data { left } };
                continue;
            }
            Chunked::DataCr => match b {
                b'\r' => Chunked::DataLf,
                _ => return Err(BodyError::BadLineEnding),
            },
            Chunked::DataLf => match b {
                b'\n' => Chunked::Size { size: 0, digits: 0 },
                _ => return Err(BodyError::BadLineEnding),
            },
            Chunked::TrailerStart { total } => match b {
                b'\r' => Chunked::TrailerLf { total, empty: true },
                _ => trailer_byte(b, total)?,
            },
            Chunked::TrailerLine { total } => match b {
                b'\r' => Chunked::TrailerLf { total, empty: false },
                _ => trailer_byte(b, total)?,
            },
            Chunked::TrailerLf { total, empty } => match b {
                b'\n' if empty => return Ok((i + 1, true)),
                b'\n' => Chunked::TrailerStart { total },
                _ => return Err(BodyError::BadLineEnding),
            },
        };
        i += 1;
    }
    Ok((i, false))
}

fn trailer_byte(b: u8, total: u32) -> Result<Chunked, BodyError> {
    if total >= MAX_TRAILERS {
        return Err(BodyError::TrailersTooLong);
    }
    if b == b'\n' || b == 0 {
        return Err(BodyError::BadLineEnding);
    }
    Ok(Chunked::TrailerLine { total: total + 1 })
}

/// Frame `data` as one chunk (RFC 9112 §7.1). Empty data writes nothing:
/// an empty chunk would end the stream.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    push_hex(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut d = BodyDecoder::chunked();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut done = false;
        for piece in [&input[..split], &input[split..]] {
            let mut off = 0;
            while off < piece.len() && !done {
                let fed = d.feed(&piece[off..], |b| body.extend_from_slice(b))?;
                off += fed.consumed;
                pos += fed.consumed;
                done = fed.done;
                if fed.consumed == 0 {
                    break;
                }
            }
        }
        Ok((body, pos, done))
    }

    #[test]
    fn chunked_at_every_split() {
        let input = b"5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..=input.len() {
            let (body, pos, done) = decode_all(input, split).unwrap();
            assert!(done, "split {split}");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(&input[pos..], b"NEXT");
        }
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(decode_all(b"x\r\n", 0).unwrap_err(), BodyError::BadChunkSize);
        assert_eq!(decode_all(b"11111111111111111\r\n", 0).unwrap_err(), BodyError::ChunkSizeOverflow);
        assert_eq!(decode_all(b"5\nhello", 0).unwrap_err(), BodyError::BadChunkSize);
        assert_eq!(decode_all(b"5\r\nhelloXX", 0).unwrap_err(), BodyError::BadLineEnding);
        let ext = format!("1;{}\r\n", "e".repeat(2000));
        assert_eq!(decode_all(ext.as_bytes(), 0).unwrap_err(), BodyError::ExtensionTooLong);
        let trailers = format!("0\r\nX: {}\r\n\r\n", "t".repeat(9000));
        assert_eq!(decode_all(trailers.as_bytes(), 0).unwrap_err(), BodyError::TrailersTooLong);
    }

    #[test]
    fn length_counts_down() {
        let mut d = BodyDecoder::length(5);
        assert_eq!(d.feed(b"abc", |_| {}).unwrap(), Fed { consumed: 3, done: false });
        assert_eq!(d.feed(b"deNEXT", |_| {}).unwrap(), Fed { consumed: 2, done: true });
        assert!(d.is_done());
    }

    #[test]
    fn encoder_frames() {
        let mut out = Vec::new();
        encode_chunk(&mut out, b"hello world, this is 27 b.");
        encode_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(out, b"1a\r\nhello world, this is 27 b.\r\n0\r\n\r\n");
    }
}
