//! A deliberately small, lenient HTTP/1.x message splitter for the raw fakes and the raw
//! client. It is not a conformance parser: it only finds where one message ends so the
//! recorder can answer per request and tests can split a byte stream into responses.

/// A parsed message head (request or status line plus header fields, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request line or status line, without the line terminator.
    pub start_line: String,
    /// Header fields in received order, names as sent, values trimmed of OWS.
    pub headers: Vec<(String, String)>,
    /// Bytes taken by the head including the blank line.
    pub len: usize,
}

impl Head {
    /// First value of `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn is_chunked(&self) -> bool {
        self.header_all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
    }
}

/// End of the head (index just past the blank line). Accepts CRLF and bare-LF endings so
/// the recorder also notices heads a broken peer sends with bare LF.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parse a head at the start of `buf`, or `None` if incomplete.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let len = find_head_end(buf)?;
    let text = String::from_utf8_lossy(&buf[..len]);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim_matches([' ', '\t']).to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    Some(Head {
        start_line,
        headers,
        len,
    })
}

/// Length of the complete request at the start of `buf`, or `None` if more bytes are needed.
/// Framing: chunked wins over Content-Length (as RFC 9112 says), no framing means no body.
pub fn request_len(buf: &[u8]) -> Option<usize> {
    let head = parse_head(buf)?;
    let body = &buf[head.len..];
    let body_len = if head.is_chunked() {
        chunked_len(body)?
    } else if let Some(cl) = head.content_length() {
        let cl = usize::try_from(cl).ok()?;
        if body.len() < cl {
            return None;
        }
        cl
    } else {
        0
    };
    Some(head.len + body_len)
}

/// Length of a chunked body (through the final CRLF after trailers), `None` if incomplete.
/// A malformed chunk line falls back to "up to the next `0\r\n\r\n`", which is what a naive
/// upstream would do and is good enough for a recorder.
pub fn chunked_len(body: &[u8]) -> Option<usize> {
    match walk_chunks(body, None) {
        Walk::Done(n) => Some(n),
        Walk::Incomplete => None,
        Walk::Malformed => find(body, b"0\r\n\r\n").map(|i| i + 5),
    }
}

enum Walk {
    Done(usize),
    Incomplete,
    Malformed,
}

fn walk_chunks(body: &[u8], mut out: Option<&mut Vec<u8>>) -> Walk {
    let mut pos = 0usize;
    loop {
        let Some(line_end) = find(&body[pos..], b"\r\n") else {
            return Walk::Incomplete;
        };
        let line = &body[pos..pos + line_end];
        let size_txt = line.split(|b| *b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(size_txt)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            return Walk::Malformed;
        };
        pos += line_end + 2;
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                let Some(end) = find(&body[pos..], b"\r\n") else {
                    return Walk::Incomplete;
                };
                pos += end + 2;
                if end == 0 {
                    return Walk::Done(pos);
                }
            }
        }
        let Some(data_end) = pos.checked_add(size) else {
            return Walk::Malformed;
        };
        if body.len() < data_end + 2 {
            return Walk::Incomplete;
        }
        if let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(&body[pos..data_end]);
        }
        if &body[data_end..data_end + 2] != b"\r\n" {
            return Walk::Malformed;
        }
        pos = data_end + 2;
    }
}

/// Length of the complete response at the start of `buf`, or `None` if more bytes (or, for a
/// close-delimited body, EOF) are needed.
pub fn response_len(buf: &[u8], head_request: bool) -> Option<usize> {
    let head = parse_head(buf)?;
    let status = status_of(&head);
    let body = &buf[head.len..];
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some(head.len);
    }
    if head.is_chunked() {
        return match walk_chunks(body, None) {
            Walk::Done(n) => Some(head.len + n),
            Walk::Incomplete | Walk::Malformed => None,
        };
    }
    let cl = usize::try_from(head.content_length()?).ok()?;
    (body.len() >= cl).then_some(head.len + cl)
}

fn status_of(head: &Head) -> u16 {
    head.start_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0)
}

/// One HTTP/1.x response split out of a raw byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub head: Head,
    /// The body after de-chunking.
    pub body: Vec<u8>,
    /// True if the body was cut short by the end of the stream (truncated CL or missing
    /// terminating chunk): what F4 expects after an upstream reset.
    pub truncated: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.head.header_all(name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Split `bytes` (everything read from one connection) into responses. `head_request` says
/// the request was HEAD (no body). Interim 1xx responses come out as their own entries.
/// Anything that does not start with `HTTP/` ends the split.
pub fn parse_responses(bytes: &[u8], head_request: bool) -> Vec<RawResponse> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(head) = parse_head(rest) else {
            break;
        };
        if !head.start_line.starts_with("HTTP/") {
            break;
        }
        let status = status_of(&head);
        let body = &rest[head.len..];
        let no_body =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        let (decoded, used, truncated) = if no_body {
            (Vec::new(), 0, false)
        } else if head.is_chunked() {
            let mut data = Vec::new();
            match walk_chunks(body, Some(&mut data)) {
                Walk::Done(n) => (data, n, false),
                Walk::Incomplete | Walk::Malformed => (data, body.len(), true),
            }
        } else if let Some(cl) = head.content_length() {
            let cl = usize::try_from(cl).unwrap_or(usize::MAX);
            if body.len() >= cl {
                (body[..cl].to_vec(), cl, false)
            } else {
                (body.to_vec(), body.len(), true)
            }
        } else {
            // Close-delimited.
            (body.to_vec(), body.len(), false)
        };
        let consumed = head.len + used;
        out.push(RawResponse {
            status,
            head,
            body: decoded,
            truncated,
        });
        rest = &rest[consumed..];
    }
    out
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Non-overlapping occurrences of `needle` in `hay`.
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = hay;
    while let Some(i) = find(rest, needle) {
        if needle.is_empty() {
            return 0;
        }
        n += 1;
        rest = &rest[i + needle.len()..];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_framing() {
        assert_eq!(
            request_len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET"),
            Some(27)
        );
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET";
        assert_eq!(request_len(post), Some(post.len() - 3));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            None
        );
        let ch = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nX";
        assert_eq!(request_len(ch), Some(ch.len() - 1));
        assert_eq!(
            request_len(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"),
            None
        );
    }

    #[test]
    fn responses_split() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n1\r\n!\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        let r = parse_responses(bytes, false);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].status, 100);
        assert_eq!((r[1].status, r[1].body_str().as_str()), (200, "hi"));
        assert_eq!((r[2].status, r[2].body_str().as_str()), (404, "no!"));
        assert!(!r[2].truncated);
        assert!(r[3].truncated);
        assert_eq!(r[1].header("content-length"), Some("2"));
        assert_eq!(count(bytes, b"HTTP/1.1 "), 4);
    }
}
