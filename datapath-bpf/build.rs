//! Compiles the eBPF programs (C) with clang into `$OUT_DIR/trellis.bpf.o`.

use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 3] = ["bpf/trellis.bpf.c", "bpf/trellis_lb.h", "bpf/trellis.h"];

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
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("trellis.bpf.o");
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let status = Command::new(&clang)
        .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", "bpf/trellis.bpf.c", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {clang}: {e}"));
    assert!(
        status.success(),
        "{clang} failed to compile bpf/trellis.bpf.c"
    );
}
