//! SPDY/3.1 frames (what the kubelet's streaming protocols use): the 8-byte frame header, the
//! control frames a session needs, and header blocks compressed with zlib and SPDY's
//! dictionary. One [`Codec`] per connection: each direction's zlib stream spans every header
//! block of the connection.

use std::io;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::dictionary;

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Decompressed header blocks larger than this are refused (a zlib bomb guard).
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Header names (lower case) and values, in order.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) entries.
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type this implementation ignores (CREDENTIAL, NOOP, …).
    Other(u16),
}

/// The value of header `name` (names are compared in lower case, as SPDY sends them).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spdy: {}", msg.into()))
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad("frame too short"))
}

/// The zlib streams of one connection (one per direction).
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Codec {
    /// A codec that only decodes (no compressor is set up).
    pub fn new_reader() -> Codec {
        Codec {
            deflate: Compress::new(Compression::none(), true),
            inflate: Decompress::new(true),
        }
    }

    pub fn new() -> io::Result<Codec> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary::get())
            .map_err(|e| bad(format!("zlib dictionary: {e}")))?;
        Ok(Codec {
            deflate,
            inflate: Decompress::new(true),
        })
    }

    fn compress(&mut self, raw: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let done = (self.deflate.total_in() - start) as usize;
            self.deflate
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| bad(format!("deflate: {e}")))?;
            let done = (self.deflate.total_in() - start) as usize;
            // A sync flush is complete once it stops short of the space it had.
            if done == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn decompress(&mut self, z: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(z.len() * 4 + 256);
        let start = self.inflate.total_in();
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity());
            }
            let done = (self.inflate.total_in() - start) as usize;
            match self
                .inflate
                .decompress_vec(&z[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary::get())
                        .map_err(|e| bad(format!("zlib dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(bad(format!("inflate header block: {e}"))),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(bad("header block too large"));
            }
            let done = (self.inflate.total_in() - start) as usize;
            if done == z.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn encode_headers(&mut self, h: &Headers) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(h.len() as u32).to_be_bytes());
        for (k, v) in h {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        self.compress(&raw)
    }

    fn decode_headers(&mut self, z: &[u8]) -> io::Result<Headers> {
        let raw = self.decompress(z)?;
        let n = u32_at(&raw, 0)? as usize;
        let mut at = 4;
        let mut h = Vec::with_capacity(n.min(64));
        let string = |at: &mut usize| -> io::Result<String> {
            let len = u32_at(&raw, *at)? as usize;
            let s = raw
                .get(*at + 4..*at + 4 + len)
                .ok_or_else(|| bad("header block truncated"))?;
            *at += 4 + len;
            String::from_utf8(s.to_vec()).map_err(|_| bad("header is not UTF-8"))
        };
        for _ in 0..n {
            let k = string(&mut at)?;
            let v = string(&mut at)?;
            h.push((k.to_ascii_lowercase(), v));
        }
        Ok(h)
    }

    /// The frame's bytes on the wire.
    pub fn encode(&mut self, f: &Frame) -> io::Result<Vec<u8>> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| -> io::Result<Vec<u8>> {
            if body.len() >= 1 << 24 {
                return Err(bad("frame too large"));
            }
            let mut out = Vec::with_capacity(8 + body.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&body);
            Ok(out)
        };
        let pair = |a: u32, b: u32| [a.to_be_bytes(), b.to_be_bytes()].concat();
        match f {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut body = pair(stream_id & 0x7fff_ffff, associated_to & 0x7fff_ffff);
                body.extend_from_slice(&[(priority & 7) << 5, 0]);
                body.extend(self.encode_headers(headers)?);
                control(SYN_STREAM, *flags, body)
            }
            // The same layout; only the type differs.
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(f, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend(self.encode_headers(headers)?);
                control(kind, *flags, body)
            }
            Frame::RstStream { stream_id, status } => {
                control(RST_STREAM, 0, pair(stream_id & 0x7fff_ffff, *status))
            }
            Frame::Settings(entries) => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (flags, id, value) in entries {
                    body.push(*flags);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(SETTINGS, 0, body)
            }
            Frame::Ping(id) => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_stream_id,
                status,
            } => control(GOAWAY, 0, pair(last_stream_id & 0x7fff_ffff, *status)),
            Frame::WindowUpdate { stream_id, delta } => control(
                WINDOW_UPDATE,
                0,
                pair(stream_id & 0x7fff_ffff, delta & 0x7fff_ffff),
            ),
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() >= 1 << 24 {
                    return Err(bad("data frame too large"));
                }
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(out)
            }
            Frame::Other(kind) => Err(bad(format!("cannot encode control frame type {kind}"))),
        }
    }

    /// A frame from its 8-byte header and body.
    pub fn decode(&mut self, head: [u8; 8], body: Vec<u8>) -> io::Result<Frame> {
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            return Ok(Frame::Data {
                stream_id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
                flags,
                data: Bytes::from(body),
            });
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(bad(format!("unsupported version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let id = |b: &[u8]| u32_at(b, 0).map(|v| v & 0x7fff_ffff);
        Ok(match kind {
            SYN_STREAM => Frame::SynStream {
                stream_id: id(&body)?,
                associated_to: u32_at(&body, 4)? & 0x7fff_ffff,
                priority: body.get(8).map_or(0, |p| p >> 5),
                flags,
                headers: self.decode_headers(body.get(10..).unwrap_or_default())?,
            },
            SYN_REPLY => Frame::SynReply {
                stream_id: id(&body)?,
                flags,
                headers: self.decode_headers(body.get(4..).unwrap_or_default())?,
            },
            HEADERS => Frame::Headers {
                stream_id: id(&body)?,
                flags,
                headers: self.decode_headers(body.get(4..).unwrap_or_default())?,
            },
            RST_STREAM => Frame::RstStream {
                stream_id: id(&body)?,
                status: u32_at(&body, 4)?,
            },
            SETTINGS => {
                let n = u32_at(&body, 0)? as usize;
                let mut entries = Vec::with_capacity(n.min(16));
                for i in 0..n {
                    let at = 4 + i * 8;
                    let e = u32_at(&body, at)?;
                    entries.push(((e >> 24) as u8, e & 0xff_ffff, u32_at(&body, at + 4)?));
                }
                Frame::Settings(entries)
            }
            PING => Frame::Ping(u32_at(&body, 0)?),
            GOAWAY => Frame::GoAway {
                last_stream_id: id(&body)?,
                status: u32_at(&body, 4).unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: id(&body)?,
                delta: u32_at(&body, 4)? & 0x7fff_ffff,
            },
            other => Frame::Other(other),
        })
    }

    /// Reads the next frame; `Ok(None)` at a clean end of the connection.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        self.decode(head, body).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame]) {
        let (mut tx, mut rx) = (Codec::new().unwrap(), Codec::new().unwrap());
        let mut wire = Vec::new();
        for f in frames {
            wire.extend(tx.encode(f).unwrap());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut r = &wire[..];
        for f in frames {
            let got = rt.block_on(rx.read(&mut r)).unwrap().unwrap();
            assert_eq!(&got, f);
        }
        assert!(rt.block_on(rx.read(&mut r)).unwrap().is_none());
    }

    #[test]
    fn frames_roundtrip_with_a_shared_zlib_stream() {
        let h = |v: &str| vec![("streamtype".to_string(), v.to_string())];
        roundtrip(&[
            Frame::Settings(vec![(0, 7, 65536)]),
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h("error"),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: h("stdout"),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 5,
            },
            Frame::Ping(7),
            Frame::RstStream {
                stream_id: 1,
                status: 5,
            },
            Frame::GoAway {
                last_stream_id: 3,
                status: 0,
            },
        ]);
    }

    /// A SYN_STREAM whose header block another zlib (Python's, with the same dictionary) made:
    /// `{"streamtype": "stdin"}`, stream 5.
    #[test]
    fn decodes_a_header_block_from_another_zlib() {
        let z = hex::decode(PY_BLOCK).unwrap();
        let mut body = vec![0, 0, 0, 5, 0, 0, 0, 0, 0, 0];
        body.extend(z);
        let mut head = [0x80, 3, 0, 1, 0, 0, 0, 0];
        head[5..8].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        let f = Codec::new().unwrap().decode(head, body).unwrap();
        assert_eq!(
            f,
            Frame::SynStream {
                stream_id: 5,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            }
        );
    }

    const PY_BLOCK: &str = "78bbe3c6a7c202a62346703a2b294a4dcc851625acc525c03c01000000ffff";

    /// The zlib header names SPDY/3's dictionary by its Adler-32 (0xe3c6a7c2), as every
    /// SPDY/3 peer expects.
    #[test]
    fn header_blocks_name_spdy3s_dictionary() {
        let mut c = Codec::new().unwrap();
        let z = c.encode_headers(&vec![("a".into(), "b".into())]).unwrap();
        assert_eq!(&z[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
    }

    #[test]
    fn refuses_bad_frames() {
        let mut c = Codec::new().unwrap();
        assert!(c.decode([0x80, 2, 0, 1, 0, 0, 0, 0], vec![]).is_err());
        assert!(c.decode([0x80, 3, 0, 3, 0, 0, 0, 2], vec![0, 1]).is_err());
        assert!(c
            .decode([0x80, 3, 0, 2, 0, 0, 0, 6], vec![0, 0, 0, 1, 0xff, 0xff])
            .is_err());
    }
}
