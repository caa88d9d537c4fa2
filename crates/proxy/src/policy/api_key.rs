//! API keys: read from the configured header or query parameter, hashed with SHA-256 and
//! looked up by digest (K1: no secret is compared with `==`; the map lookup compares
//! digests, which reveals nothing useful about the key). Unknown and revoked keys take the
//! same path and give the same 401 (K2). More than one presented key is ambiguous (K3).

use sha2::{Digest, Sha256};

use gatehouse_core::auth::{ApiKeyProvider, KeySource};
use gatehouse_core::Snapshot;

use super::auth::{consumer_headers, AuthFailure, AuthRequest, Identity};

/// The longest key considered (longer ones are refused before hashing).
pub const MAX_KEY_LEN: usize = 512;

/// Hashes a presented key.
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Looks a presented key up; `None` for unknown and revoked keys alike.
pub fn lookup(snap: &Snapshot, key: &[u8]) -> Option<usize> {
    snap.auth.api_keys.get(&digest(key)).copied()
}

pub fn authenticate(
    k: &ApiKeyProvider,
    req: &AuthRequest<'_>,
    snap: &Snapshot,
) -> Result<Identity, AuthFailure> {
    let mut found: Option<Vec<u8>> = None;
    let mut count = 0usize;
    for src in &k.sources {
        match src {
            KeySource::Header(name) => {
                for v in req.headers.get_all(name) {
                    count += 1;
                    found = Some(v.as_bytes().to_vec());
                }
            }
            KeySource::Query(name) => {
                for v in query_values(req.uri.query(), name) {
                    count += 1;
                    found = Some(v);
                }
            }
        }
    }
    let key = match (count, found) {
        (0, _) | (_, None) => return Err(AuthFailure::Missing),
        // Two keys (two headers, header and query...): the gateway and the upstream could
        // pick different ones (K3).
        (1, Some(k)) => k,
        _ => return Err(AuthFailure::Invalid),
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(AuthFailure::Invalid);
    }
    let consumer = lookup(snap, &key).ok_or(AuthFailure::Invalid)?;
    let mut id = Identity {
        consumer: Some(consumer),
        ..Identity::default()
    };
    consumer_headers(snap, consumer, &mut id.headers);
    if k.hide_credentials {
        id.hide.extend(k.sources.iter().cloned());
    }
    Ok(id)
}

/// Percent-decoded values of query parameter `name`.
pub fn query_values(query: Option<&str>, name: &str) -> Vec<Vec<u8>> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k.as_bytes()) == name.as_bytes()).then(|| percent_decode(v.as_bytes()))
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => {
                let hex = std::str::from_utf8(&s[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The query without parameter `name` (`hide_credentials`); `None` when nothing is left.
pub fn remove_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(k.as_bytes()) != name.as_bytes()
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

/// The access-log path with parameter `name`'s value replaced (K4).
pub fn redact_log_param(log_path: &str, name: &str) -> String {
    let Some((path, q)) = log_path.split_once('?') else {
        return log_path.to_string();
    };
    let q: Vec<String> = q
        .split('&')
        .map(|pair| {
            let k = pair.split_once('=').map_or(pair, |(k, _)| k);
            if percent_decode(k.as_bytes()) == name.as_bytes() && pair.contains('=') {
                format!("{k}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", q.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers() {
        assert_eq!(
            query_values(Some("a=1&k=s%20x&k2=3"), "k"),
            vec![b"s x".to_vec()]
        );
        assert_eq!(
            remove_query_param("a=1&k=2&b=3", "k").as_deref(),
            Some("a=1&b=3")
        );
        assert_eq!(remove_query_param("k=2", "k"), None);
        assert_eq!(
            redact_log_param("/p?k=secret&a=1", "k"),
            "/p?k=REDACTED&a=1"
        );
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4".to_vec());
    }
}
