//! Pattern containment against matching: the input is two patterns P and
//! Q and filler segments, one per line. A key K is built from Q (each `*`
//! one filler segment, each `#` zero to two), so Q must match K; and when
//! P contains Q, P must match K too (containment is what grants rest on).
//! For an exact Q, containment and matching must agree both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use olive::live::key::{Key, Pattern};

fuzz_target!(|text: &str| {
    let mut lines = text.splitn(3, '\n');
    let (Some(p), Some(q)) = (lines.next(), lines.next()) else { return };
    let (Ok(p), Ok(q)) = (Pattern::parse(p), Pattern::parse(q)) else { return };
    let fill = lines.next().unwrap_or("");
    let mut fillers = fill.split('.').filter(|s| Key::parse(s).is_ok()).cycle();
    let mut counts = fill.bytes().cycle();
    let mut segments: Vec<&str> = Vec::new();
    for segment in q.as_str().split('.') {
        match segment {
            "*" => segments.push(fillers.next().unwrap_or("x")),
            "#" => {
                for _ in 0..counts.next().unwrap_or(0) % 3 {
                    segments.push(fillers.next().unwrap_or("x"));
                }
            }
            literal => segments.push(literal),
        }
    }
    let Ok(key) = Key::parse(&segments.join(".")) else { return };
    assert!(q.matches(&key), "{q} does not match {key}, built from it");
    if p.contains(&q) {
        assert!(p.matches(&key), "{p} contains {q} but does not match {key}");
    }
    let exact = Pattern::from(key.clone());
    assert_eq!(p.contains(&exact), p.matches(&key), "{p} vs {key}: containment and matching disagree");
});
