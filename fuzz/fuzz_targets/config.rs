//! Configuration text to the validated config: never a panic (the error
//! reporter slices the text at parser spans), errors always name a field,
//! and an accepted config keeps the invariants the server relies on.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use olive::config::{Action, Config};

fuzz_target!(|text: &str| {
    let path = Path::new("/nonexistent/olive.toml");
    match Config::parse_with_env(text, path, &|_| None) {
        Err(e) => {
            assert!(!e.errors.is_empty());
            let _ = e.to_string();
        }
        Ok(config) => {
            let l = &config.limits;
            assert!(l.body_buffer_bytes <= l.max_body_bytes);
            assert!(l.max_connections > 0 && l.max_headers > 0 && l.max_header_bytes >= 8192);
            assert!(!l.header_read_timeout.is_zero() && !l.body_read_timeout.is_zero());
            assert!(!l.send_timeout.is_zero());
            for route in &config.routes {
                if let Action::Proxy { upstream, .. } = &route.action {
                    assert!(*upstream < config.upstreams.len());
                }
            }
        }
    }
});
