//! The gateway's HTTP/1 request-head parser and chunked decoder never panic on arbitrary
//! bytes; a parsed head never reports both framings, and a decoded body is never longer than
//! its input.
#![no_main]

use bytes::BytesMut;
use gatehouse_proxy::http1::decode::{Decoded, Decoder};
use gatehouse_proxy::http1::head::{find_head_end, parse_request, Framing, HeadLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Some(end) = find_head_end(&buf, 0) {
        if let Ok(Some(head)) = parse_request(&mut buf, end, &HeadLimits::default()) {
            let h = &head.parts.headers;
            if head.framing == Framing::Chunked {
                assert!(!h.contains_key("content-length"));
            }
        }
    }
    let mut body = BytesMut::from(data);
    let mut d = Decoder::chunked();
    let mut out = 0usize;
    loop {
        match d.decode(&mut body, 1 << 16) {
            Ok(Decoded::Data(b)) => out += b.len(),
            Ok(Decoded::Done) | Ok(Decoded::NeedMore) | Err(_) => break,
        }
    }
    assert!(out <= data.len());
});
