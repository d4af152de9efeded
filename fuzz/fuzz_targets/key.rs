//! Keys and patterns from one string: whatever parses is kept exactly as
//! written, re-parses to itself, and means what it says (an exact pattern
//! matches its key, every pattern contains itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use olive::live::key::{Key, MAX_LEN, MAX_SEGMENTS, Pattern};

fuzz_target!(|text: &str| {
    if let Ok(key) = Key::parse(text) {
        assert_eq!(key.as_str(), text);
        assert_eq!(Key::parse(key.as_str()).unwrap(), key);
        assert!(text.len() <= MAX_LEN);
        assert!(key.segments().count() <= MAX_SEGMENTS);
        for segment in key.segments() {
            assert!(!segment.is_empty(), "{text:?}");
            assert!(segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{text:?}");
        }
        // A key is also a pattern that matches exactly it.
        let exact = Pattern::parse(text).expect("a key is a pattern");
        assert_eq!(exact.is_exact(), Some(key.clone()));
        assert!(exact.matches(&key));
        assert_eq!(Pattern::from(key.clone()), exact);
    }
    if let Ok(pattern) = Pattern::parse(text) {
        assert_eq!(pattern.as_str(), text);
        assert_eq!(Pattern::parse(pattern.as_str()).unwrap(), pattern);
        assert!(pattern.contains(&pattern), "{text:?} does not contain itself");
        if let Some(key) = pattern.is_exact() {
            assert!(pattern.matches(&key));
            assert_eq!(Key::parse(text).as_ref(), Ok(&key));
        } else {
            assert!(Key::parse(text).is_err(), "{text:?}: a wildcard pattern parsed as a key");
        }
    }
});
