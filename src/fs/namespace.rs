//! Changes to the tree itself: mkdir, rmdir, unlink and rename, with what flat accounts need
//! to look like POSIX (directory markers that keep emptied directories, copy + delete for a
//! file rename; a directory rename is `rename_tree`'s).

use std::time::SystemTime;

use super::listing::EntryKind;
use super::{Attr, FsError, FsResult, LakeFs};
use crate::store::StoreError;

impl LakeFs {
    /// mkdir(2): a directory marker in the lake (what hierarchical accounts hold natively).
    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.writable()?;
        let (dir, key) = self.new_name(parent, name)?;
        if self.existing(parent, &dir, name).await?.is_some() {
            return Err(FsError(libc::EEXIST));
        }
        self.store.make_dir(&key, &Default::default()).await?;
        let kind = EntryKind::Dir {
            mtime: Some(SystemTime::now()),
        };
        self.changed(&key, Some(kind.clone())).await;
        Ok(self.entered(parent, name, key, kind))
    }

    /// unlink(2). A file still being written is dropped when its last handle closes.
    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let (dir, key) = self.new_name(parent, name)?;
        let pending = self.pending_child(parent, name);
        match self.existing(parent, &dir, name).await? {
            None => return Err(FsError(libc::ENOENT)),
            Some(k) if k.is_dir() => return Err(FsError(libc::EISDIR)),
            Some(_) => {}
        }
        if let Some(ino) = pending {
            if let Some(w) = self.writer(ino) {
                w.mark_unlinked().await;
            }
        }
        self.retain_readers(&key).await;
        match self.store.delete(&key).await {
            Err(StoreError::NotFound(_)) if pending.is_some() => {}
            r => r?,
        }
        self.inodes.lock().unwrap().unlink(parent, name);
        self.changed(&key, None).await;
        self.keep_dir(&dir.key).await
    }

    /// rmdir(2): ENOTEMPTY while anything is below it.
    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writable()?;
        let (dir, key) = self.new_name(parent, name)?;
        match self.existing(parent, &dir, name).await? {
            Some(k) if !k.is_dir() => return Err(FsError(libc::ENOTDIR)),
            None => return Err(FsError(libc::ENOENT)),
            _ => {}
        }
        if !self.is_empty_dir(&key).await? {
            return Err(FsError(libc::ENOTEMPTY));
        }
        self.store.remove_dir(&key).await?;
        self.inodes.lock().unwrap().unlink(parent, name);
        self.changed(&key, None).await;
        self.dir_changed(&format!("{key}/")).await;
        self.keep_dir(&dir.key).await
    }

    async fn is_empty_dir(&self, key: &str) -> FsResult<bool> {
        let page = self.store.list_page(&format!("{key}/"), None).await?;
        if !page.objects.is_empty() || !page.prefixes.is_empty() {
            return Ok(false);
        }
        let sub = format!("{key}/");
        let inodes = self.inodes.lock().unwrap();
        let writing = self
            .writers
            .lock()
            .unwrap()
            .keys()
            .any(|ino| inodes.get(*ino).is_some_and(|n| n.key.starts_with(&sub)));
        Ok(!writing)
    }

    /// On a flat account a directory exists only while something is in it: when the last
    /// entry of `key` goes, a marker keeps the directory, as POSIX (and HNS) would.
    async fn keep_dir(&self, key: &str) -> FsResult<()> {
        if key.is_empty() || self.store.hierarchical().await {
            return Ok(());
        }
        if !self.store.dir_exists(&format!("{key}/")).await? {
            if self
                .store
                .head(key)
                .await?
                .is_some_and(|h| !h.is_dir_marker)
            {
                // A file of the same name was hidden by the directory: it shows again.
                return Ok(());
            }
            self.store.make_dir(key, &Default::default()).await?;
            self.changed(
                key,
                Some(EntryKind::Dir {
                    mtime: Some(SystemTime::now()),
                }),
            )
            .await;
        }
        Ok(())
    }

    /// rename(2). Hierarchical stores rename files and directories atomically; flat ones
    /// rename a file by copy + delete and a directory as `rename_tree` says.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        noreplace: bool,
    ) -> FsResult<()> {
        self.writable()?;
        let (dir, from) = self.new_name(parent, name)?;
        let (newdir, to) = self.new_name(newparent, newname)?;
        let src = self
            .existing(parent, &dir, name)
            .await?
            .ok_or(FsError(libc::ENOENT))?;
        if from == to {
            return Ok(());
        }
        let dst = self.existing(newparent, &newdir, newname).await?;
        if noreplace && dst.is_some() {
            return Err(FsError(libc::EEXIST));
        }
        let hierarchical = self.store.hierarchical().await;
        match (&src, &dst) {
            (EntryKind::File { .. }, Some(EntryKind::Dir { .. })) => {
                return Err(FsError(libc::EISDIR))
            }
            (EntryKind::Dir { .. }, Some(EntryKind::File { .. })) => {
                return Err(FsError(libc::ENOTDIR))
            }
            (EntryKind::Dir { .. }, _) if to.starts_with(&format!("{from}/")) => {
                return Err(FsError(libc::EINVAL))
            }
            (EntryKind::Dir { .. }, Some(EntryKind::Dir { .. }))
                if self.writing_below(&to) || hierarchical && !self.is_empty_dir(&to).await? =>
            {
                return Err(FsError(libc::ENOTEMPTY))
            }
            (EntryKind::Dir { .. }, Some(EntryKind::Dir { .. })) if hierarchical => {
                self.store.remove_dir(&to).await?;
            }
            _ => {}
        }
        if src.is_dir() {
            return self
                .rename_dir(
                    parent,
                    name,
                    newparent,
                    newname,
                    (&dir, &from, &to),
                    hierarchical,
                )
                .await;
        }
        // A file being written goes up under its old name first, then moves like any other.
        let writer = self
            .pending_child(parent, name)
            .and_then(|ino| self.writer(ino).map(|w| (ino, w)));
        let mut in_lake = true;
        if let Some((ino, w)) = &writer {
            // Its blocks still only in the lake are read in: the object under the new name
            // may not keep them.
            w.read_in_all().await.map_err(|e| FsError(e.errno()))?;
            self.commit(*ino, w).await?;
            in_lake = self.store.head(&from).await?.is_some();
        }
        if in_lake {
            self.retain_readers(&to).await;
            self.retain_readers(&from).await;
            if hierarchical {
                self.store.rename(&from, &to).await?;
            } else {
                self.store.copy(&from, &to).await?;
                self.store.delete(&from).await?;
            }
        }
        if let Some((_, w)) = &writer {
            w.retarget(&to);
        }
        self.inodes
            .lock()
            .unwrap()
            .rename(parent, name, newparent, newname, &to);
        {
            let moved = if in_lake {
                self.store.head(&to).await?
            } else {
                None
            };
            let kind = moved.map(|h| EntryKind::file(&h));
            if let Some(k) = &kind {
                let mut t = self.inodes.lock().unwrap();
                if let Some(n) = t.child(newparent, newname).and_then(|i| t.get_mut(i)) {
                    n.kind = k.clone();
                    n.checked = std::time::Instant::now();
                }
            }
            self.changed(&to, kind).await;
        }
        self.changed(&from, None).await;
        self.keep_dir(&dir.key).await
    }

    /// Whether a file below directory `key` is open for writing on this mount.
    fn writing_below(&self, key: &str) -> bool {
        !self.writers_below(key).is_empty()
    }

    /// The files below directory `key` being written on this mount, with their keys.
    fn writers_below(&self, key: &str) -> Vec<(u64, std::sync::Arc<super::WriteHandle>, String)> {
        let sub = format!("{key}/");
        let inodes = self.inodes.lock().unwrap();
        let writers = self.writers.lock().unwrap();
        writers
            .iter()
            .filter_map(|(ino, w)| {
                let k = &inodes.get(*ino)?.key;
                k.starts_with(&sub).then(|| (*ino, w.w.clone(), k.clone()))
            })
            .collect()
    }

    /// The directory half of rename(2): files being written below go up first (so the move
    /// takes them along) and write on under their new names.
    async fn rename_dir(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        (dir, from, to): (&super::inode::Node, &str, &str),
        hierarchical: bool,
    ) -> FsResult<()> {
        let writers = self.writers_below(from);
        for (ino, w, _) in &writers {
            w.read_in_all().await.map_err(|e| FsError(e.errno()))?;
            self.commit(*ino, w).await?;
        }
        if hierarchical {
            self.store.rename(from, to).await?;
        } else {
            self.rename_dir_flat(from, to).await?;
        }
        for (_, w, key) in &writers {
            w.retarget(&format!("{to}{}", &key[from.len()..]));
        }
        {
            let mut t = self.inodes.lock().unwrap();
            t.rename(parent, name, newparent, newname, to);
            // A flat account's copies have ETags of their own, and a hierarchical one need
            // not keep them: what is below is asked for again at its next use.
            t.expire_below(to);
        }
        // Every cached name below moved.
        self.all_dirs_changed();
        self.changed(from, None).await;
        self.keep_dir(&dir.key).await
    }
}
