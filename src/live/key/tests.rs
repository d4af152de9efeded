use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn key(text: &str) -> Key {
    Key::parse(text).unwrap()
}

fn pat(text: &str) -> Pattern {
    Pattern::parse(text).unwrap()
}

#[test]
fn key_parse_errors() {
    let long = ["a"; 128].join("."); // 255 bytes, 128 segments
    let cases: &[(&str, KeyError)] = &[
        ("", KeyError::Empty),
        (".a", KeyError::EmptySegment { segment: 1 }),
        ("a..b", KeyError::EmptySegment { segment: 2 }),
        ("a.b.", KeyError::EmptySegment { segment: 3 }),
        ("a.b c", KeyError::BadCharacter { ch: ' ', segment: 2 }),
        ("olive.notes.é", KeyError::BadCharacter { ch: 'é', segment: 3 }),
        ("a/b", KeyError::BadCharacter { ch: '/', segment: 1 }),
        ("a.*.c", KeyError::WildcardInKey { segment: 2 }),
        ("a.#", KeyError::WildcardInKey { segment: 2 }),
        ("a.b*", KeyError::WildcardInKey { segment: 2 }),
        (&long, KeyError::TooManySegments { count: 128 }),
        (&"x".repeat(256), KeyError::TooLong { len: 256 }),
    ];
    for (text, want) in cases {
        assert_eq!(Key::parse(text).as_ref(), Err(want), "{text:?}");
    }
    assert_eq!(
        KeyError::WildcardInKey { segment: 2 }.to_string(),
        "wildcard in segment 2: a publish names a key, never a pattern"
    );
}

#[test]
fn key_limits_are_inclusive() {
    let max_len = "x".repeat(MAX_LEN);
    assert_eq!(key(&max_len).as_str(), max_len);
    let max_segments = ["s"; MAX_SEGMENTS].join(".");
    assert_eq!(key(&max_segments).segments().count(), MAX_SEGMENTS);
    assert!(Pattern::parse(&["#"; MAX_SEGMENTS].join(".")).is_ok());
    assert_eq!(
        Pattern::parse(&["#"; MAX_SEGMENTS + 1].join(".")),
        Err(KeyError::TooManySegments { count: MAX_SEGMENTS + 1 })
    );
}

#[test]
fn key_accessors() {
    let k = key("olive.notes.note.17");
    assert_eq!(k.to_string(), "olive.notes.note.17");
    assert_eq!(k.segments().collect::<Vec<_>>(), ["olive", "notes", "note", "17"]);
    assert_eq!("A_b-9".parse::<Key>(), Ok(key("A_b-9")));
    assert!(Arc::ptr_eq(&k.0, &k.clone().0), "clone shares the text");
}

#[test]
fn pattern_parse_errors() {
    let cases: &[(&str, KeyError)] = &[
        ("", KeyError::Empty),
        ("a..#", KeyError::EmptySegment { segment: 2 }),
        ("a.b*", KeyError::PartialWildcard { segment: 2 }),
        ("#a", KeyError::PartialWildcard { segment: 1 }),
        ("a.**", KeyError::PartialWildcard { segment: 2 }),
        ("a.$", KeyError::BadCharacter { ch: '$', segment: 2 }),
    ];
    for (text, want) in cases {
        assert_eq!(Pattern::parse(text).as_ref(), Err(want), "{text:?}");
    }
}

#[test]
fn exact_patterns_are_keys() {
    assert_eq!(pat("olive.notes.note.17").is_exact(), Some(key("olive.notes.note.17")));
    assert_eq!(pat("olive.notes.*.17").is_exact(), None);
    assert_eq!(pat("olive.#").is_exact(), None);
    let from_key = Pattern::from(key("a.b"));
    assert_eq!(from_key, pat("a.b"));
    assert!(from_key.matches(&key("a.b")));
}

/// The bindings and routing keys of the RabbitMQ topics tutorial (part 5),
/// plus the `#`-matches-nothing cases.
#[test]
fn matching_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("*.orange.*", "quick.orange.rabbit", true),
        ("*.*.rabbit", "quick.orange.rabbit", true),
        ("*.orange.*", "lazy.orange.elephant", true),
        ("lazy.#", "lazy.orange.elephant", true),
        ("*.orange.*", "quick.orange.fox", true),
        ("lazy.#", "quick.orange.fox", false),
        ("lazy.#", "lazy.brown.fox", true),
        ("*.*.rabbit", "lazy.pink.rabbit", true),
        ("lazy.#", "lazy.pink.rabbit", true),
        ("*.orange.*", "quick.brown.fox", false),
        ("*.orange.*", "orange", false),
        ("*.orange.*", "quick.orange.new.rabbit", false),
        ("*.*.rabbit", "quick.orange.new.rabbit", false),
        ("lazy.#", "lazy.orange.new.rabbit", true),
        ("*.orange.*", "quick.orange.male.rabbit", false),
        ("lazy.#", "lazy", true),
        ("#", "a", true),
        ("#.a", "a", true),
        ("a.#.b", "a.b", true),
        ("a.#.b", "a.x.y.b", true),
        ("a.#.b", "a.x.y.c", false),
        ("a.*.b", "a.b", false),
        ("#.*", "a", true),
        ("*.#.*", "a", false),
        ("olive.notes.note.17", "olive.notes.note.17", true),
        ("olive.notes.note.17", "olive.notes.note.170", false),
        ("Olive", "olive", false),
    ];
    for (p, k, want) in cases {
        assert_eq!(pat(p).matches(&key(k)), *want, "{p} ~ {k}");
    }
}

#[test]
fn containment_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("a.#", "a.b.*", true),
        ("a.#", "a", true),
        ("a.*", "a.#", false),
        ("#", "a.*.#.b", true),
        ("#", "#", true),
        ("*.b", "#.b", false),
        ("#.#", "#", true),
        ("#", "#.#", true),
        ("#.*", "*.#", true),
        ("*.#", "#.*", true),
        // `#` also matches the empty routing key, which `*.#` does not.
        ("*.#", "#", false),
        ("a.b", "a.b", true),
        ("a.b", "a.c", false),
        ("a.*", "a.b", true),
        ("a.b", "a.*", false),
        ("#.a.*.#", "a.#.b", true),
        ("#.a.*.a.#", "#.a.#.a.#", false),
        ("#.a.#", "#.a.#.a.#", true),
        ("olive.notes.#", "olive.notes.note.*", true),
        ("olive.notes.*.17", "olive.notes.note.17", true),
        ("olive.notes.*.17", "olive.*.note.17", false),
    ];
    for (p, q, want) in cases {
        assert_eq!(pat(p).contains(&pat(q)), *want, "{p} ⊇ {q}");
    }
}

/// Inputs that would make a backtracking matcher go exponential finish at
/// once; so does containment against a grant built to blow up its state
/// sets (it answers "no", the safe side, when it gives up).
#[test]
fn adversarial_inputs_are_fast() {
    let start = Instant::now();
    let hashes = pat(&["#"; MAX_SEGMENTS].join("."));
    let stars = pat(&[&["#"; 15][..], &["*"; 16][..], &["b"][..]].concat().join("."));
    let a32 = key(&["a"; MAX_SEGMENTS].join("."));
    assert!(hashes.matches(&a32));
    assert!(!stars.matches(&a32));
    assert!(hashes.contains(&stars));
    assert!(!stars.contains(&hashes));
    let grant = pat(&[&["#", "a"][..], &["*"; 30][..]].concat().join("."));
    let wants = pat(&["#", "a"].repeat(16).join("."));
    assert!(!grant.contains(&wants));
    let wants = pat(&[&["#", "a"].repeat(8)[..], &["#"][..]].concat().join("."));
    assert!(!grant.contains(&wants));
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

/// The obvious recursive matcher, exponential in the worst case but
/// clearly right; used on short inputs only.
fn reference(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
        Some((lit, rest)) => key.first() == Some(lit) && reference(rest, &key[1..]),
    }
}

fn pattern_segs(max: usize) -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "#"]), 1..=max)
}

/// Every key over `alphabet` with at most `max_len` segments, the empty
/// one included.
fn all_keys(alphabet: &[&'static str], max_len: usize) -> Vec<Vec<&'static str>> {
    let mut all = vec![vec![]];
    let mut last = vec![vec![]];
    for _ in 0..max_len {
        last = last
            .iter()
            .flat_map(|k: &Vec<_>| alphabet.iter().map(move |s| [&k[..], &[*s]].concat()))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

proptest! {
    #[test]
    fn matches_agrees_with_reference(
        p in pattern_segs(6),
        k in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=7),
    ) {
        let pattern = pat(&p.join("."));
        prop_assert_eq!(pattern.matches(&key(&k.join("."))), reference(&p, &k));
    }

    /// `p.contains(q)` iff no key matched by `q` is missed by `p`, checked
    /// on every key up to a length that is sure to hold a counterexample
    /// when there is one:
    ///
    /// - Patterns use the literals `a` and `b` only, so a segment outside
    ///   them behaves like `z` in both patterns: keys over {a, b, z} stand
    ///   for all keys.
    /// - If some key matched by `q` fails `p`, so does the key with each
    ///   segment that came from a wildcard of `q` replaced by `z` (`p` could
    ///   only have matched `z` with `*` or `#`, which match anything).
    /// - In such a key, a run of `z` from one `#` of `q` can be cut to
    ///   `len(p) + 1` segments: reading `n` z's, a path through `p` moves
    ///   forward at most `len(p)` times, so for `n > len(p)` it stays on a
    ///   `#` at least once, and one such stay can be added or removed; the
    ///   positions of `p` live after the run are then the same for every
    ///   `n >= len(p) + 1`, and so is the verdict on the rest of the key.
    ///
    /// So a shortest counterexample has at most
    /// `fixed(q) + hashes(q) * (len(p) + 1)` segments.
    #[test]
    fn contains_agrees_with_brute_force(p in pattern_segs(3), q in pattern_segs(3)) {
        let hashes = q.iter().filter(|s| **s == "#").count();
        let bound = (q.len() - hashes) + hashes * (p.len() + 1);
        let max_len = bound.max(q.len() + 1);
        prop_assume!(max_len <= 9);
        let brute = all_keys(&["a", "b", "z"], max_len)
            .iter()
            .all(|k| !reference(&q, k) || reference(&p, k));
        prop_assert_eq!(pat(&p.join(".")).contains(&pat(&q.join("."))), brute);
    }

    /// On longer patterns than brute force reaches: containment never
    /// contradicts matching, and is reflexive.
    #[test]
    fn contains_is_consistent_with_matches(
        p in pattern_segs(6),
        q in pattern_segs(6),
        k in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=8),
    ) {
        let (p, q, k) = (pat(&p.join(".")), pat(&q.join(".")), key(&k.join(".")));
        prop_assert!(p.contains(&p));
        if p.contains(&q) && q.matches(&k) {
            prop_assert!(p.matches(&k));
        }
    }
}
