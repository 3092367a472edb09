//! Compiles the eBPF programs (C) with clang into `$OUT_DIR/trellis.bpf.o`.

use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 4] = [
    "bpf/trellis.bpf.c",
    "bpf/trellis_test.bpf.c",
    "bpf/trellis_lb.h",
    "bpf/trellis.h",
];
/// Each program object: the datapath, and the test program of its logic.
const OBJECTS: [&str; 2] = ["trellis", "trellis_test"];

fn main() {
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").ok().or_else(|| {
        ["clang-19", "clang"]
            .into_iter()
            .find(|c| {
                Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(String::from)
    });
    let Some(clang) = clang else {
        panic!(
            "no clang found to compile the eBPF programs: install Debian's clang-19 and libbpf-dev \
             (apt-get install -y clang-19 libbpf-dev), or set CLANG"
        );
    };
    if !std::path::Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        panic!("bpf/bpf_helpers.h is missing: install libbpf-dev (apt-get install -y libbpf-dev)");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    for obj in OBJECTS {
        let src = format!("bpf/{obj}.bpf.c");
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{arch_include}"))
            .args(["-c", &src, "-o"])
            .arg(out_dir.join(format!("{obj}.bpf.o")))
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "{clang} failed to compile {src}");
    }
}
