//! The YAML front end and the validator behind `trellis apply`: any text is
//! refused with located errors or applied, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_api::manifest;
use trellis_control_plane::state::{Settings, State};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = manifest::parse("fuzz.yaml", text) else {
        return;
    };
    let values: Vec<serde_json::Value> = docs.into_iter().map(|d| d.value).collect();
    let settings = Settings {
        zone: "trellis.internal".into(),
        vip_pool_v4: "169.254.171.0/24".parse().unwrap(),
        vip_pool_v6: "fd00:7472:6c73::/112".parse().unwrap(),
        vip_hold_secs: 60,
        max_state_bytes: 1 << 20,
    };
    let _ = State::empty(&settings).apply(&values, &settings, 1_800_000_000, false);
});
