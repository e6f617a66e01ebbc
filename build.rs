//! Records the git commit the binary is built from (`dinggate --version`); "unknown" outside a
//! git checkout (a source tarball, a crate download).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_owned());
    // Not `DINGGATE_*`: cargo also sets this variable when it runs the binary and the tests,
    // and the configuration reads every `DINGGATE_*` variable as a setting.
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
    // Rebuilt when HEAD moves (a commit, a checkout), not on every build.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
