//! An IP address as text on the stack: `IpAddr::to_string` allocates and goes through the
//! generic formatter; this is used several times per request (forwarded headers, access log).

use std::fmt::Write as _;
use std::net::IpAddr;

#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

/// The text's bytes: an `IpText` can own the bytes of a `Bytes` (`Bytes::from_owner`).
impl AsRef<[u8]> for IpText {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 48],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if o >= 100 {
                        t.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.push(b'0' + (o / 10) % 10);
                    }
                    t.push(b'0' + o % 10);
                }
            }
            // An IPv6 address is at most 45 characters: it always fits.
            IpAddr::V6(v6) => {
                let _ = write!(t, "{v6}");
            }
        }
        t
    }

    /// [`IpText::new`], remembering the last address formatted on this thread: a worker sees
    /// the same peers again and again (keep-alive clients, a load balancer in front).
    pub fn cached(ip: IpAddr) -> IpText {
        thread_local! {
            static LAST: std::cell::Cell<Option<(IpAddr, IpText)>> =
                const { std::cell::Cell::new(None) };
        }
        LAST.with(|last| match last.get() {
            Some((seen, text)) if seen == ip => text,
            _ => {
                let text = IpText::new(ip);
                last.set(Some((ip, text)));
                text
            }
        })
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "192.168.100.1",
            "::1",
            "::ffff:1.2.3.4",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
            // The cache answers for the address asked, twice in a row or after another.
            assert_eq!(IpText::cached(ip).as_str(), ip.to_string());
            assert_eq!(IpText::cached(ip).as_str(), ip.to_string());
        }
    }
}
