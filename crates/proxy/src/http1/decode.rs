//! Message-body decoding (RFC 9112 §6, §7): exact length, chunked, or until close. The
//! decoders work on the connection's read buffer and hand out data as zero-copy `Bytes`
//! split off its front. Chunked framing is parsed strictly (the CVE-2025-55315 class and
//! SECURITY-TESTS S7/S8): a bare CR or LF anywhere in framing, a size that is not plain hex
//! (no sign, no `0x`, at most 15 digits), data longer or shorter than its size, or a chunk
//! extension over 4 KiB ends the message with an error. Extensions are skipped and trailer
//! fields are read and dropped, so neither ever reaches the other side.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk extension accepted on one chunk-size line.
pub const MAX_CHUNK_EXT: usize = 4096;
/// Largest trailer section read (and discarded) after the last chunk.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// More hex digits than this in a chunk size is an overflow attempt.
const MAX_SIZE_DIGITS: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Chunked framing is malformed.
    Chunked(&'static str),
    /// The connection ended before the message did.
    Truncated,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Chunked(why) => write!(f, "malformed chunked body: {why}"),
            DecodeError::Truncated => f.write_str("connection closed before the body ended"),
        }
    }
}
impl std::error::Error for DecodeError {}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no (more) complete framing: read more.
    NeedMore,
    /// The body is complete; anything left in the buffer belongs to the next message.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// `remaining` bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes (responses only).
    Eof,
    Done,
}

impl Decoder {
    pub fn length(n: u64) -> Decoder {
        if n == 0 {
            Decoder::Done
        } else {
            Decoder::Length(n)
        }
    }

    pub fn chunked() -> Decoder {
        Decoder::Chunked(Chunked::default())
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes still expected, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Decodes from the front of `buf`. At most `max` data bytes are returned at once.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Decoded, DecodeError> {
        match self {
            Decoder::Done => Ok(Decoded::Done),
            Decoder::Length(rem) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*rem).min(buf.len() as u64).min(max as u64) as usize;
                *rem -= n as u64;
                let data = buf.split_to(n).freeze();
                if *rem == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(data))
            }
            Decoder::Eof => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = buf.len().min(max);
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::Chunked(c) => {
                let out = c.decode(buf, max)?;
                if out == Decoded::Done {
                    *self = Decoder::Done;
                }
                Ok(out)
            }
        }
    }

    /// The connection reached EOF: the end of an `Eof` body, an error for the others.
    pub fn eof(&mut self) -> Result<(), DecodeError> {
        match self {
            Decoder::Eof | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(DecodeError::Truncated),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    ext_len: usize,
    trailer_len: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size.
    #[default]
    Size,
    /// Whitespace after the size: only `;` or CR may follow.
    SizeWs,
    /// Inside a chunk extension, until CR.
    Ext,
    /// CR seen after the size line; LF must follow.
    SizeLf,
    Data,
    /// After the data: CR, then LF.
    DataCr,
    DataLf,
    /// Start of a trailer line (or the empty line that ends the message).
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    EndLf,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Decoded, DecodeError> {
        loop {
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = self.size.min(buf.len() as u64).min(max as u64) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.step(b)?;
            if self.state == State::Data && self.size == 0 {
                // The last chunk (size 0): the trailer section follows.
                self.state = State::TrailerStart;
            }
            if self.state == State::EndLf && b == b'\n' {
                return Ok(Decoded::Done);
            }
        }
    }

    fn step(&mut self, b: u8) -> Result<(), DecodeError> {
        use State::*;
        let bad = DecodeError::Chunked;
        match self.state {
            Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(bad("chunk size too large"));
                    }
                    self.digits += 1;
                    let v = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => b - b'A' + 10,
                    };
                    self.size = (self.size << 4) | u64::from(v);
                }
                _ if self.digits == 0 => return Err(bad("missing chunk size")),
                b' ' | b'\t' => self.state = SizeWs,
                b';' => {
                    self.state = Ext;
                    self.ext_len = 0;
                }
                b'\r' => self.state = SizeLf,
                _ => return Err(bad("invalid chunk size")),
            },
            SizeWs => match b {
                b' ' | b'\t' => {}
                b';' => {
                    self.state = Ext;
                    self.ext_len = 0;
                }
                b'\r' => self.state = SizeLf,
                _ => return Err(bad("invalid chunk size")),
            },
            Ext => match b {
                b'\r' => self.state = SizeLf,
                b'\n' => return Err(bad("bare LF in chunk extension")),
                0x00..=0x08 | 0x0a..=0x1f | 0x7f => {
                    return Err(bad("control character in chunk extension"))
                }
                _ => {
                    self.ext_len += 1;
                    if self.ext_len > MAX_CHUNK_EXT {
                        return Err(bad("chunk extension too long"));
                    }
                }
            },
            SizeLf => {
                if b != b'\n' {
                    return Err(bad("bare CR after chunk size"));
                }
                self.state = Data;
                self.digits = 0;
            }
            DataCr => {
                if b != b'\r' {
                    return Err(bad("chunk data longer than its size"));
                }
                self.state = DataLf;
            }
            DataLf => {
                if b != b'\n' {
                    return Err(bad("bare CR after chunk data"));
                }
                self.state = Size;
                self.size = 0;
            }
            TrailerStart => match b {
                b'\r' => self.state = EndLf,
                b'\n' => return Err(bad("bare LF in trailers")),
                _ => {
                    self.state = Trailer;
                    self.count_trailer()?;
                }
            },
            Trailer => match b {
                b'\r' => self.state = TrailerLf,
                b'\n' => return Err(bad("bare LF in trailers")),
                _ => self.count_trailer()?,
            },
            TrailerLf => {
                if b != b'\n' {
                    return Err(bad("bare CR in trailers"));
                }
                self.state = TrailerStart;
            }
            EndLf => {
                if b != b'\n' {
                    return Err(bad("bare CR at the end of the body"));
                }
            }
            Data => {}
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), DecodeError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(DecodeError::Chunked("trailer section too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body or the error, and how
    /// many input bytes the body took.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), DecodeError> {
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf, 3)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::Done => return Ok((out, fed - buf.len())),
                Decoded::NeedMore => {
                    if fed >= input.len() {
                        d.eof()?;
                        return Ok((out, fed - buf.len()));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn valid_chunked_bodies_in_any_split() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"5 ;x\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", b""),
            (b"000\r\n\r\n", b""),
        ];
        for (input, body) in cases {
            for step in [1, 2, 7, 100] {
                let mut with_next = input.to_vec();
                with_next.extend_from_slice(b"GET /next");
                let (got, used) = run(&with_next, step).expect("valid");
                assert_eq!(
                    &got,
                    body,
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
                // Exactly the body's bytes: nothing of the next message is consumed.
                assert_eq!(
                    used,
                    input.len(),
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn malformed_framing_is_an_error() {
        let ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_EXT + 1));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("overflow", b"FFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n".to_vec()),
            ("0x", b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n".to_vec()),
            ("negative", b"-5\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("plus", b"+5\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("longer", b"3\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("no CRLF after data", b"5\r\nhello0\r\n\r\n".to_vec()),
            ("inner space", b"5 5\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("empty size", b"\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("LF after size", b"5\nhello\r\n0\r\n\r\n".to_vec()),
            ("CR alone", b"5\rhello\r\n0\r\n\r\n".to_vec()),
            ("LF in ext", b"5;a\nb\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("CR in ext", b"5;a\rb\r\nhello\r\n0\r\n\r\n".to_vec()),
            ("LF after data", b"5\r\nhello\n0\r\n\r\n".to_vec()),
            ("LF last chunk", b"5\r\nhello\r\n0\n\r\n".to_vec()),
            ("long ext", ext.into_bytes()),
            ("bare LF trailer", b"0\r\nX: 1\n\r\n".to_vec()),
            ("truncated", b"5\r\nhel".to_vec()),
        ];
        for (name, input) in cases {
            for step in [1, 5, 1000] {
                assert!(run(&input, step).is_err(), "{name} step {step}");
            }
        }
    }

    #[test]
    fn length_and_eof() {
        let mut d = Decoder::length(5);
        let mut buf = BytesMut::from(&b"helloGET"[..]);
        assert_eq!(
            d.decode(&mut buf, 3),
            Ok(Decoded::Data(Bytes::from_static(b"hel")))
        );
        assert_eq!(
            d.decode(&mut buf, 3),
            Ok(Decoded::Data(Bytes::from_static(b"lo")))
        );
        assert!(d.is_done());
        assert_eq!(&buf[..], b"GET");
        assert_eq!(Decoder::length(0), Decoder::Done);
        let mut d = Decoder::length(3);
        assert_eq!(d.eof(), Err(DecodeError::Truncated));
        let mut d = Decoder::Eof;
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            d.decode(&mut buf, 10),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.eof(), Ok(()));
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    /// A valid chunked encoding of `body`, chunked at `cuts`, with optional extensions.
    fn encode(body: &[u8], cuts: &[usize], ext: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        points.push(body.len());
        points.sort_unstable();
        for p in points {
            if p <= start {
                continue;
            }
            out.extend_from_slice(format!("{:x}", p - start).as_bytes());
            if ext {
                out.extend_from_slice(b";a=b");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body[start..p]);
            out.extend_from_slice(b"\r\n");
            start = p;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any valid encoding, fed in any pieces, decodes to the body and stops exactly at
        /// its end (what follows is the next message, untouched).
        #[test]
        fn chunked_round_trips_in_any_split(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            ext in any::<bool>(),
            step in 1usize..64,
            max in 1usize..128,
        ) {
            let mut wire = encode(&body, &cuts, ext);
            let enc_len = wire.len();
            wire.extend_from_slice(b"NEXT");
            let mut d = Decoder::chunked();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut fed = 0;
            loop {
                match d.decode(&mut buf, max).expect("valid encoding") {
                    Decoded::Data(b) => got.extend_from_slice(&b),
                    Decoded::Done => break,
                    Decoded::NeedMore => {
                        prop_assert!(fed < wire.len(), "needs more after all input");
                        let end = (fed + step).min(wire.len());
                        buf.extend_from_slice(&wire[fed..end]);
                        fed = end;
                    }
                }
            }
            prop_assert_eq!(got, body);
            prop_assert_eq!(fed - buf.len(), enc_len);
        }

        /// Arbitrary bytes never panic, and never yield more data than was fed.
        #[test]
        fn chunked_never_panics(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut d = Decoder::chunked();
            let mut buf = BytesMut::from(&input[..]);
            let mut out = 0usize;
            while let Ok(Decoded::Data(b)) = d.decode(&mut buf, 64) {
                out += b.len();
            }
            prop_assert!(out <= input.len());
        }
    }
}
