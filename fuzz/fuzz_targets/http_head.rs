//! Request heads and targets, differentially: what the HTTP/1.1 path takes
//! as canonical must be canonical to the full path too, parse the same way
//! with `http`, and come out unchanged in the head sent to the target; any
//! origin-form target the full path makes canonical must be a fixed point
//! that `http` parses to the same path and query, with no dot-segment left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_node::canonical::{PathRules, is_canonical, origin};

fuzz_target!(|data: &[u8]| {
    if let Some((target, out)) = trellis_node::fuzzing::head(data) {
        assert_eq!(origin(&target, PathRules::default()).unwrap(), target.as_str());
        let uri: http::Uri = target.parse().expect("a canonical target is a URI");
        assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some(target.as_str()));
        let line = format!(" {target} HTTP/1.1\r\n");
        assert!(out.windows(line.len()).any(|w| w == line.as_bytes()));
    }
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    // The fast path's check is sound (it may pass over canonical targets
    // with `%` in them, never take a non-canonical one).
    if is_canonical(raw) {
        assert_eq!(origin(raw, PathRules::default()).unwrap(), raw);
    }
    for rules in [
        PathRules::default(),
        PathRules {
            merge_slashes: false,
            keep_escaped_slashes: true,
        },
    ] {
        let Ok(canonical) = origin(raw, rules) else {
            continue;
        };
        assert_eq!(origin(&canonical, rules).unwrap(), canonical, "not a fixed point");
        let uri: http::Uri = canonical.parse().expect("canonical parses");
        let (path, query) = canonical.split_once('?').unwrap_or((&canonical, ""));
        assert_eq!(uri.path(), path);
        assert_eq!(uri.query().unwrap_or(""), query);
        // No dot-segment survives, so no reader can climb with it.
        assert!(!path.split('/').any(|s| s == "." || s == ".."));
    }
});
