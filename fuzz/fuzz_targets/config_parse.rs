//! The config loader never panics on arbitrary input; errors always carry a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Err(errors) = gatehouse_config::load_str(s, &|_| None) {
        for e in errors.iter() {
            assert!(!e.message.is_empty());
        }
    }
});
