//! Writing a message body after its head, shared by the server (responses to clients) and
//! the upstream client (request bodies to upstreams).

use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body::Body as HttpBody;

use crate::body::BoxError;
use crate::http1::encode::{self, BodyFraming};

/// Bytes gathered into one write (the head and small body frames that are ready).
pub const WRITE_COALESCE: usize = 16 * 1024;

/// Where the bytes go: a client connection (with its slow-reader timeout) or an upstream one.
pub(crate) trait Sink {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()>;
}

#[derive(Debug)]
pub enum WriteBodyError {
    /// The connection failed.
    Io(io::Error),
    /// The body itself failed (the upstream broke mid-response, the client's body was bad).
    Body(BoxError),
    /// The body yielded more or fewer bytes than its `Content-Length`.
    Length { declared: u64, longer: bool },
}

/// Writes `body` after the head already in `out` (`BodyFraming::None`: only the head; the
/// body is not read). Frames that are ready now are gathered
/// with it (up to [`WRITE_COALESCE`]) and sent before waiting for more, so a small message
/// is one write. On a failure the connection must not be reused; what was gathered and not
/// yet sent is left in `out` (a response's caller sends it, so the client sees the message
/// truncated; a request's caller drops it, so a bad body that failed at once never lets its
/// head reach the upstream). Trailers are dropped: neither side's peer asked for them
/// (`TE: trailers`).
pub(crate) async fn write_body<B, S>(
    body: &mut B,
    out: &mut BytesMut,
    framing: BodyFraming,
    sink: &mut S,
) -> Result<(), WriteBodyError>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    S: Sink,
{
    if framing == BodyFraming::None {
        return sink
            .send(out.split().freeze())
            .await
            .map_err(WriteBodyError::Io);
    }
    let chunked = framing == BodyFraming::Chunked;
    let mut sent: u64 = 0;
    let failure = loop {
        // Take what the body has ready without waiting; send what is gathered before waiting.
        let ready = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Some(f)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let next = match ready {
            Some(f) => f,
            None => {
                if !out.is_empty() {
                    sink.send(out.split().freeze())
                        .await
                        .map_err(WriteBodyError::Io)?;
                }
                std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match next {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue,
            },
            Some(Err(e)) => break WriteBodyError::Body(e),
            None => {
                if let BodyFraming::Length(n) = framing {
                    if sent != n {
                        break WriteBodyError::Length {
                            declared: n,
                            longer: false,
                        };
                    }
                }
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                if !out.is_empty() {
                    sink.send(out.split().freeze())
                        .await
                        .map_err(WriteBodyError::Io)?;
                }
                return Ok(());
            }
        };
        sent += data.len() as u64;
        if let BodyFraming::Length(n) = framing {
            if sent > n {
                break WriteBodyError::Length {
                    declared: n,
                    longer: true,
                };
            }
        }
        if chunked {
            encode::chunk_header(out, data.len());
        }
        if out.len() + data.len() <= WRITE_COALESCE {
            out.extend_from_slice(&data);
        } else {
            if !out.is_empty() {
                sink.send(out.split().freeze())
                    .await
                    .map_err(WriteBodyError::Io)?;
            }
            sink.send(data).await.map_err(WriteBodyError::Io)?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    };
    Err(failure)
}

impl std::fmt::Display for WriteBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteBodyError::Io(e) => write!(f, "write failed: {e}"),
            WriteBodyError::Body(e) => write!(f, "body failed: {e}"),
            WriteBodyError::Length { declared, longer } => write!(
                f,
                "body {} than its content-length {declared}",
                if *longer { "longer" } else { "shorter" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    struct Collect(Vec<Bytes>);
    impl Sink for Collect {
        async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
            self.0.push(bytes);
            Ok(())
        }
    }

    fn body(parts: &[&'static [u8]]) -> crate::body::Body {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    fn joined(c: &Collect) -> Vec<u8> {
        c.0.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[tokio::test]
    async fn ready_frames_go_out_with_the_head_in_one_write() {
        let mut out = BytesMut::from(&b"HEAD\r\n\r\n"[..]);
        let mut sink = Collect(Vec::new());
        let mut b = body(&[b"ab", b"", b"cd"]);
        write_body(&mut b, &mut out, BodyFraming::Chunked, &mut sink)
            .await
            .expect("written");
        assert_eq!(sink.0.len(), 1);
        assert_eq!(
            joined(&sink),
            b"HEAD\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_length_mismatch_fails_and_leaves_what_fits_unsent() {
        let mut sink = Collect(Vec::new());
        let mut b = body(&[b"abc", b"def"]);
        let mut out = BytesMut::new();
        let e = write_body(&mut b, &mut out, BodyFraming::Length(4), &mut sink).await;
        assert!(matches!(
            e,
            Err(WriteBodyError::Length { longer: true, .. })
        ));
        assert!(sink.0.is_empty());
        assert_eq!(&out[..], b"abc");

        let mut sink = Collect(Vec::new());
        let mut b = body(&[b"abc"]);
        let mut out = BytesMut::new();
        let e = write_body(&mut b, &mut out, BodyFraming::Length(4), &mut sink).await;
        assert!(matches!(
            e,
            Err(WriteBodyError::Length { longer: false, .. })
        ));
        assert_eq!(&out[..], b"abc");

        let mut sink = Collect(Vec::new());
        let mut b = body(&[b"ab", b"cd"]);
        write_body(
            &mut b,
            &mut BytesMut::new(),
            BodyFraming::Length(4),
            &mut sink,
        )
        .await
        .expect("written");
        assert_eq!(joined(&sink), b"abcd");
    }

    #[tokio::test]
    async fn a_failed_body_gets_no_terminating_chunk_and_nothing_is_sent() {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"ab"))),
            Err("upstream reset".into()),
        ];
        let mut b = StreamBody::new(futures_util::stream::iter(frames));
        let mut sink = Collect(Vec::new());
        let mut out = BytesMut::from(&b"HEAD\r\n\r\n"[..]);
        let e = write_body(&mut b, &mut out, BodyFraming::Chunked, &mut sink).await;
        assert!(matches!(e, Err(WriteBodyError::Body(_))));
        assert!(sink.0.is_empty(), "nothing sent before the failure");
        assert_eq!(&out[..], b"HEAD\r\n\r\n2\r\nab\r\n");
    }

    #[tokio::test]
    async fn large_frames_are_written_without_copying_into_the_buffer() {
        static BIG: [u8; WRITE_COALESCE + 1] = [b'x'; WRITE_COALESCE + 1];
        let mut sink = Collect(Vec::new());
        let mut b = body(&[b"a", &BIG]);
        let mut out = BytesMut::new();
        write_body(&mut b, &mut out, BodyFraming::Close, &mut sink)
            .await
            .expect("written");
        assert_eq!(sink.0.len(), 2);
        assert_eq!(sink.0[1].len(), BIG.len());
    }
}
