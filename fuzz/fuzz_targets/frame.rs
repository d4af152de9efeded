//! Client websocket frames: a frame olive accepts is valid JSON, and the
//! key it names re-parses as what it was accepted as.
//!
//! "Valid JSON" is RFC 8259's grammar (`IgnoredAny`), not `Value`: a
//! number such as `1e99999` is valid JSON that `Value` refuses as out of
//! range, and olive passes `data` on as written (JavaScript reads it as
//! `Infinity`). The first version of this target checked with `Value`
//! and the fuzzer found that in a few minutes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use olive::live::key::{Key, Pattern};
use olive::live::protocol::ClientFrame;
use serde::de::IgnoredAny;

fuzz_target!(|text: &str| {
    let Ok(frame) = ClientFrame::parse(text) else { return };
    assert!(serde_json::from_str::<IgnoredAny>(text).is_ok(), "accepted invalid JSON: {text:?}");
    match frame {
        ClientFrame::Subscribe { key, .. } | ClientFrame::Unsubscribe { key } => {
            assert_eq!(Pattern::parse(key.as_str()).unwrap(), key);
        }
        ClientFrame::Publish { key, data, .. } => {
            assert_eq!(Key::parse(key.as_str()).unwrap(), key);
            assert!(serde_json::from_str::<IgnoredAny>(data.get()).is_ok());
        }
        ClientFrame::Presence { key } => assert_eq!(Key::parse(key.as_str()).unwrap(), key),
        ClientFrame::Ping => {}
    }
});
