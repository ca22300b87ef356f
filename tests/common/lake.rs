//! A lake of either kind (a local directory or a container of Azurite), mounted for real
//! and looked at from outside the mount.

use std::time::Duration;

use super::azurite::Azurite;
use super::mount::{mount_azurite, wait_for, Mount};

pub const CONTAINER: &str = "lake";

/// One lake of either kind, with a way to look at it from outside the mount.
pub enum Lake {
    Local(tempfile::TempDir),
    Azure(Azurite),
}

impl Lake {
    pub fn local() -> Lake {
        Lake::Local(tempfile::tempdir().unwrap())
    }

    pub fn azurite() -> Lake {
        let az = Azurite::start();
        az.create_container(CONTAINER);
        Lake::Azure(az)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Lake::Local(_) => "file://",
            Lake::Azure(_) => "Azurite",
        }
    }

    pub fn mount(&self, extra: &[&str]) -> Mount {
        match self {
            Lake::Local(dir) => {
                let url = format!("file://{}", dir.path().display());
                Mount::start(&url, extra, &[]).unwrap_or_else(|o| panic!("mount failed: {o:?}"))
            }
            Lake::Azure(az) => mount_azurite(az, CONTAINER, extra),
        }
    }

    /// The object as another client sees it.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Lake::Local(dir) => std::fs::read(dir.path().join(name)).ok(),
            Lake::Azure(az) => az.try_get_blob(CONTAINER, name),
        }
    }

    pub fn put(&self, name: &str, data: &[u8]) {
        match self {
            Lake::Local(dir) => std::fs::write(dir.path().join(name), data).unwrap(),
            Lake::Azure(az) => az.put_blob_large(CONTAINER, name, data),
        }
    }

    /// Polls (bounded) until the lake holds `want` as `name`.
    pub fn holds(&self, name: &str, want: &[u8]) -> bool {
        wait_for(Duration::from_secs(10), || {
            self.get(name).as_deref() == Some(want)
        })
    }
}

/// Runs `test` against a fresh lake of each kind.
pub fn both(test: impl Fn(&Lake)) {
    for lake in [Lake::local(), Lake::azurite()] {
        eprintln!("lake: {}", lake.name());
        test(&lake);
    }
}
