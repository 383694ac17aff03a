#![no_main]
//! Any bytes as the node's `config.toml`: the result is the file layer or an error that names the file,
//! never a panic; what parses goes through everything the node does with it at start (defaults, layers,
//! checks, derived limits, `streamr-node config`) and writes back to the same layer.

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use streamr_node::config::{self, Config, FileConfig};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/data/streamr-node/config.toml");
    let file = match config::parse_file(path, data) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("/data/streamr-node/config.toml"), "{msg}");
            return;
        }
    };
    let text = toml::to_string(&file).expect("a parsed layer writes back");
    let again: FileConfig = toml::from_str(&text).expect("a written layer parses");
    assert_eq!(again, file, "the layer round-trips:\n{text}");
    let mut c = Config::defaults(path.parent().unwrap().to_path_buf());
    c.apply_file(file);
    if c.validate().is_ok() {
        let _ = c.relay_limits();
        let _ = c.publish_key_required();
        let _ = toml::to_string_pretty(&c);
    }
});
