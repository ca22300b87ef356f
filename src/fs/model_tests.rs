//! The filesystem core against a reference model: random sequences of POSIX operations
//! (create/write, append, read, mkdir, rmdir, unlink, rename) and out-of-band changes (another
//! client's put and delete) run through `LakeFs` over the in-memory store and through a
//! model of the store's keys; every result (data or errno) and the whole visible tree must
//! agree after every step. The metadata TTL is zero, so out-of-band changes show at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::reader::DirectReadPath;
use crate::store::memory::MemoryStore;

/// What the model store holds at a key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Obj {
    File(Vec<u8>),
    Marker,
}

/// The store's keys, and the POSIX view derived from them the way the core derives it.
#[derive(Default)]
struct Model {
    keys: BTreeMap<String, Obj>,
    hierarchical: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum View {
    File(Vec<u8>),
    Dir,
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Model {
    fn has_below(&self, path: &str) -> bool {
        let sub = format!("{path}/");
        self.keys
            .range(sub.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&sub))
    }

    fn view(&self, path: &str) -> Option<View> {
        if path.is_empty() || self.has_below(path) {
            return Some(View::Dir);
        }
        match self.keys.get(path)? {
            Obj::Marker => Some(View::Dir),
            Obj::File(d) => Some(View::File(d.clone())),
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        self.view(path) == Some(View::Dir)
    }

    /// A directory emptied on a flat store keeps existing through a marker (unless a file
    /// of its name would be clobbered).
    fn keep_dir(&mut self, dir: &str) {
        if dir.is_empty() || self.hierarchical || self.has_below(dir) {
            return;
        }
        if !matches!(self.keys.get(dir), Some(Obj::File(_))) {
            self.keys.insert(dir.to_string(), Obj::Marker);
        }
    }

    fn write(&mut self, path: &str, data: &[u8], append: bool) -> Result<(), i32> {
        if !self.is_dir(parent(path)) {
            return Err(libc::ENOENT);
        }
        match self.view(path) {
            Some(View::Dir) => Err(libc::EISDIR),
            Some(View::File(mut old)) if append => {
                old.extend_from_slice(data);
                self.keys.insert(path.into(), Obj::File(old));
                Ok(())
            }
            None if append => Err(libc::ENOENT),
            _ => {
                self.keys.insert(path.into(), Obj::File(data.to_vec()));
                Ok(())
            }
        }
    }

    fn mkdir(&mut self, path: &str) -> Result<(), i32> {
        if !self.is_dir(parent(path)) {
            return Err(libc::ENOENT);
        }
        if self.view(path).is_some() {
            return Err(libc::EEXIST);
        }
        self.keys.insert(path.into(), Obj::Marker);
        Ok(())
    }

    fn unlink(&mut self, path: &str) -> Result<(), i32> {
        match self.view(path) {
            None => Err(libc::ENOENT),
            Some(View::Dir) => Err(libc::EISDIR),
            Some(View::File(_)) => {
                self.keys.remove(path);
                self.keep_dir(parent(path));
                Ok(())
            }
        }
    }

    fn rmdir(&mut self, path: &str) -> Result<(), i32> {
        match self.view(path) {
            None => Err(libc::ENOENT),
            Some(View::File(_)) => Err(libc::ENOTDIR),
            Some(View::Dir) if self.has_below(path) => Err(libc::ENOTEMPTY),
            Some(View::Dir) => {
                self.keys.remove(path);
                self.keep_dir(parent(path));
                Ok(())
            }
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        if !self.is_dir(parent(from)) || !self.is_dir(parent(to)) {
            return Err(libc::ENOENT);
        }
        let src = self.view(from).ok_or(libc::ENOENT)?;
        if from == to {
            return Ok(());
        }
        let dst = self.view(to);
        match (&src, &dst) {
            (View::File(_), Some(View::Dir)) => return Err(libc::EISDIR),
            (View::Dir, Some(View::File(_))) => return Err(libc::ENOTDIR),
            (View::Dir, _) if to.starts_with(&format!("{from}/")) => return Err(libc::EINVAL),
            (View::Dir, Some(View::Dir)) if self.has_below(to) => return Err(libc::ENOTEMPTY),
            (View::Dir, Some(View::Dir)) => {
                self.keys.remove(to);
            }
            _ => {}
        }
        let sub = format!("{from}/");
        // On a flat account a file the directory hid is not part of it: it stays, and shows.
        let hidden_file = |k: &str| {
            matches!(src, View::Dir)
                && !self.hierarchical
                && matches!(self.keys.get(k), Some(Obj::File(_)))
        };
        let moving: Vec<String> = self
            .keys
            .keys()
            .filter(|k| (*k == from && !hidden_file(k)) || k.starts_with(&sub))
            .cloned()
            .collect();
        for k in moving {
            let obj = self.keys.remove(&k).expect("listed");
            self.keys.insert(format!("{to}{}", &k[from.len()..]), obj);
        }
        if matches!(src, View::Dir) && !self.hierarchical {
            // The copy leaves a marker: the moved directory stays one when it empties.
            self.keys.insert(to.to_string(), Obj::Marker);
        }
        self.keep_dir(parent(from));
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write { path: String, data: Vec<u8> },
    Append { path: String, data: Vec<u8> },
    Read { path: String },
    Mkdir { path: String },
    Rmdir { path: String },
    Unlink { path: String },
    Rename { from: String, to: String },
    OutOfBandPut { path: String, data: Vec<u8> },
    OutOfBandDelete { path: String },
}

fn path() -> impl Strategy<Value = String> {
    // Few names and shallow trees, so operations collide often.
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..=2).prop_map(|v| v.join("/"))
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..20)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), data()).prop_map(|(path, data)| Op::Write { path, data }),
        1 => (path(), data()).prop_map(|(path, data)| Op::Append { path, data }),
        2 => path().prop_map(|path| Op::Read { path }),
        2 => path().prop_map(|path| Op::Mkdir { path }),
        1 => path().prop_map(|path| Op::Rmdir { path }),
        1 => path().prop_map(|path| Op::Unlink { path }),
        2 => (path(), path()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => (path(), data()).prop_map(|(path, data)| Op::OutOfBandPut { path, data }),
        1 => path().prop_map(|path| Op::OutOfBandDelete { path }),
    ]
}

/// Drives the core like the kernel would: a path is looked up one name at a time.
struct Driver {
    fs: LakeFs,
    store: Arc<MemoryStore>,
    _staging: tempfile::TempDir,
}

type R<T> = Result<T, i32>;

impl Driver {
    fn new(hierarchical: bool) -> Driver {
        let store = Arc::new(if hierarchical {
            MemoryStore::hierarchical()
        } else {
            MemoryStore::new()
        });
        let staging = tempfile::tempdir().unwrap();
        let cfg = FsConfig {
            metadata_ttl: Duration::ZERO,
            write: WriteConfig {
                staging_dir: staging.path().to_path_buf(),
                block_size: 8,
            },
            ..FsConfig::default()
        };
        let fs = LakeFs::new(store.clone(), DirectReadPath::new(store.clone()), cfg);
        Driver {
            fs,
            store,
            _staging: staging,
        }
    }

    async fn dir_ino(&self, path: &str) -> R<u64> {
        let mut ino = ROOT_INO;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let a = self.fs.lookup(ino, name).await.map_err(|e| e.0)?;
            if a.kind != Kind::Dir {
                return Err(libc::ENOTDIR);
            }
            ino = a.ino;
        }
        Ok(ino)
    }

    async fn split(&self, path: &str) -> R<(u64, String)> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        // A parent that is a file or missing: the kernel's path walk fails with ENOENT
        // (or ENOTDIR); the model folds both into ENOENT.
        let ino = self.dir_ino(dir).await.map_err(|_| libc::ENOENT)?;
        Ok((ino, name.to_string()))
    }

    async fn write(&self, path: &str, data: &[u8], append: bool) -> R<()> {
        let (dir, name) = self.split(path).await?;
        let fh = if append {
            let a = self.fs.lookup(dir, &name).await.map_err(|e| e.0)?;
            if a.kind == Kind::Dir {
                return Err(libc::EISDIR);
            }
            let mode = OpenMode {
                write: true,
                truncate: false,
                pid: 0,
            };
            self.fs.open(a.ino, mode).await.map_err(|e| e.0)?.0
        } else {
            self.fs
                .create(dir, &name, false, 0)
                .await
                .map_err(|e| e.0)?
                .1
        };
        let offset = if append {
            self.fs
                .getattr(self.fs.lookup(dir, &name).await.map_err(|e| e.0)?.ino)
                .await
                .map_err(|e| e.0)?
                .size
        } else {
            0
        };
        let w = self.fs.write(fh, offset, data).await.map_err(|e| e.0);
        let f = self.fs.flush(fh).await.map_err(|e| e.0);
        self.fs.release(fh).await;
        w?;
        f
    }

    async fn read(&self, path: &str) -> R<Vec<u8>> {
        let (dir, name) = self.split(path).await?;
        let a = self.fs.lookup(dir, &name).await.map_err(|e| e.0)?;
        if a.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        let (fh, _) = self.fs.open(a.ino, OpenMode::READ).await.map_err(|e| e.0)?;
        let r = self.fs.read(fh, 0, 1 << 20).await.map_err(|e| e.0);
        self.fs.release(fh).await;
        r.map(|b| b.to_vec())
    }

    async fn apply(&self, op: &Op) -> R<Option<Vec<u8>>> {
        match op {
            Op::Write { path, data } => self.write(path, data, false).await.map(|_| None),
            Op::Append { path, data } => self.write(path, data, true).await.map(|_| None),
            Op::Read { path } => self.read(path).await.map(Some),
            Op::Mkdir { path } => {
                let (dir, name) = self.split(path).await?;
                self.fs
                    .mkdir(dir, &name)
                    .await
                    .map(|_| None)
                    .map_err(|e| e.0)
            }
            Op::Rmdir { path } => {
                let (dir, name) = self.split(path).await?;
                self.fs
                    .rmdir(dir, &name)
                    .await
                    .map(|_| None)
                    .map_err(|e| e.0)
            }
            Op::Unlink { path } => {
                let (dir, name) = self.split(path).await?;
                self.fs
                    .unlink(dir, &name)
                    .await
                    .map(|_| None)
                    .map_err(|e| e.0)
            }
            Op::Rename { from, to } => {
                let (d1, n1) = self.split(from).await?;
                let (d2, n2) = self.split(to).await?;
                self.fs
                    .rename(d1, &n1, d2, &n2, false)
                    .await
                    .map(|_| None)
                    .map_err(|e| e.0)
            }
            Op::OutOfBandPut { path, data } => {
                self.store.put(path, data.clone());
                Ok(None)
            }
            Op::OutOfBandDelete { path } => {
                self.store.remove(path);
                Ok(None)
            }
        }
    }

    /// The visible tree: path -> view, by readdir and read from the root.
    async fn tree(&self) -> BTreeMap<String, View> {
        let mut out = BTreeMap::new();
        let mut todo = vec![(ROOT_INO, String::new())];
        while let Some((ino, prefix)) = todo.pop() {
            let fh = self.fs.opendir(ino).await.unwrap();
            let entries: Vec<_> = super::readdir::read_all(&self.fs, fh, false, usize::MAX)
                .await
                .into_iter()
                .filter(|(name, _, _)| name != "." && name != "..")
                .map(|(name, _, attr)| (name, attr.kind))
                .collect();
            self.fs.releasedir(fh);
            for (name, kind) in entries {
                let path = format!("{prefix}{name}");
                if kind == Kind::Dir {
                    let child = self.fs.lookup(ino, &name).await.unwrap().ino;
                    todo.push((child, format!("{path}/")));
                    out.insert(path, View::Dir);
                } else {
                    out.insert(path.clone(), View::File(self.read(&path).await.unwrap()));
                }
            }
        }
        out
    }
}

impl Model {
    fn apply(&mut self, op: &Op) -> R<Option<Vec<u8>>> {
        match op {
            Op::Write { path, data } => self.write(path, data, false).map(|_| None),
            Op::Append { path, data } => self.write(path, data, true).map(|_| None),
            Op::Read { path } => {
                if !self.is_dir(parent(path)) {
                    return Err(libc::ENOENT);
                }
                match self.view(path) {
                    None => Err(libc::ENOENT),
                    Some(View::Dir) => Err(libc::EISDIR),
                    Some(View::File(d)) => Ok(Some(d)),
                }
            }
            Op::Mkdir { path } => self.mkdir(path).map(|_| None),
            Op::Rmdir { path } => {
                if !self.is_dir(parent(path)) {
                    return Err(libc::ENOENT);
                }
                self.rmdir(path).map(|_| None)
            }
            Op::Unlink { path } => {
                if !self.is_dir(parent(path)) {
                    return Err(libc::ENOENT);
                }
                self.unlink(path).map(|_| None)
            }
            Op::Rename { from, to } => self.rename(from, to).map(|_| None),
            Op::OutOfBandPut { path, data } => {
                self.keys.insert(path.clone(), Obj::File(data.clone()));
                Ok(None)
            }
            Op::OutOfBandDelete { path } => {
                self.keys.remove(path);
                Ok(None)
            }
        }
    }

    fn tree(&self) -> BTreeMap<String, View> {
        let mut out = BTreeMap::new();
        for key in self.keys.keys() {
            let parts: Vec<&str> = key.split('/').collect();
            for i in 1..=parts.len() {
                let p = parts[..i].join("/");
                if let Some(v) = self.view(&p) {
                    out.insert(p, v);
                }
            }
        }
        out
    }
}

fn check(hierarchical: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = Driver::new(hierarchical);
        let mut m = Model {
            hierarchical,
            ..Model::default()
        };
        for (i, op) in ops.iter().enumerate() {
            let want = m.apply(op);
            let got = d.apply(op).await;
            prop_assert_eq!(&got, &want, "step {}: {:?}", i, op);
            prop_assert_eq!(d.tree().await, m.tree(), "tree after step {}: {:?}", i, op);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_core_matches_the_model_on_a_flat_store(ops in proptest::collection::vec(op(), 1..40)) {
        check(false, &ops)?;
    }

    #[test]
    fn the_core_matches_the_model_on_a_hierarchical_store(ops in proptest::collection::vec(op(), 1..40)) {
        check(true, &ops)?;
    }
}
