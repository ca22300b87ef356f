//! Third-party programs `./scripts/install-deps` installs with `cargo install`.

use std::path::{Path, PathBuf};

/// `$CARGO_HOME/bin/NAME` (default `~/.cargo/bin`); panics saying how to get it if missing.
pub fn cargo_installed(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    let bin = home.join("bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: ./scripts/install-deps installs {name}",
        bin.display()
    );
    bin
}
