//! The SigV4 `Authorization` parser and the canonical request's pieces:
//! any input is refused or read, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_node::auth::sigv4;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(auth) = sigv4::Authorization::parse(s) {
        let _ = auth.scope();
        let _ = auth.signature();
    }
    let (path, query) = s.split_once('?').unwrap_or((s, ""));
    for double_encode in [false, true] {
        let form = sigv4::PathForm {
            normalize: true,
            double_encode,
        };
        let _ = sigv4::canonical_path(path, form);
    }
    let _ = sigv4::canonical_query(Some(query));
    let _ = sigv4::parse_timestamp(s);
});
