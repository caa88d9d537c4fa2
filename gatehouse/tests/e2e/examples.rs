//! Every file in `examples/` is a valid config (validated and compiled exactly as `gatehouse
//! validate` does).

use std::path::Path;

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&path).expect("read");
        let env = |k: &str| match k {
            "GATEHOUSE_ADMIN_TOKEN" => Some("example-token".to_string()),
            _ => std::env::var(k).ok(),
        };
        if let Err(errors) = gatehouse_config::compile_str(&text, &dir, &env) {
            panic!("{}:\n{errors}", path.display());
        }
    }
    assert!(n >= 3, "expected example configs in {}", dir.display());
}
