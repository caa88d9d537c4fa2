//! The path normalizer never panics, is idempotent, and never emits `.`/`..` segments or `//`.
#![no_main]

use gatehouse_core::normalize::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = normalize_path(s) {
        let forward = n.forward.to_string();
        assert!(forward.starts_with('/'));
        assert!(!forward.contains("//"));
        for seg in forward.split('/') {
            assert!(seg != "." && seg != "..", "{forward}");
        }
        let again = normalize_path(&forward).expect("normalized output is accepted");
        assert_eq!(again.forward, forward);
    }
});
