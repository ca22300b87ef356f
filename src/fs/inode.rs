//! The inode table: stable inode numbers for the names the kernel holds, with FUSE lookup
//! counting so that forgotten names are dropped and memory stays bounded on huge trees.

use std::collections::HashMap;
use std::time::Instant;

use super::listing::EntryKind;

pub const ROOT_INO: u64 = 1;

#[derive(Clone, Debug)]
pub struct Node {
    pub parent: u64,
    pub name: String,
    /// Key relative to the lake root: `a/b.txt` for a file, `a/b` for a directory, `` for root.
    pub key: String,
    pub kind: EntryKind,
    /// When `kind` was last confirmed against the store or a listing.
    pub checked: Instant,
    /// The ETag this file was last opened under: the kernel's page cache holds its bytes.
    pub opened_etag: Option<String>,
    lookups: u64,
}

impl Node {
    /// The listing prefix of this directory: `a/b/`, or `` for the root.
    pub fn dir_prefix(&self) -> String {
        if self.key.is_empty() {
            String::new()
        } else {
            format!("{}/", self.key)
        }
    }
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, String), u64>,
    next: u64,
}

impl InodeTable {
    pub fn new(root_mtime: std::time::SystemTime) -> Self {
        let root = Node {
            parent: ROOT_INO,
            name: String::new(),
            key: String::new(),
            kind: EntryKind::Dir {
                mtime: Some(root_mtime),
            },
            checked: Instant::now(),
            opened_etag: None,
            lookups: 1,
        };
        InodeTable {
            nodes: HashMap::from([(ROOT_INO, root)]),
            children: HashMap::new(),
            next: ROOT_INO + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The inode of `name` in `parent`, if the kernel currently holds it.
    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.children.get(&(parent, name.to_string())).copied()
    }

    /// Records that `name` in `parent` is `kind` and adds `lookups` kernel references.
    /// A name that changed between file and directory gets a new inode number: the kernel
    /// must not see a directory turn into a file under the same inode.
    pub fn upsert(
        &mut self,
        parent: u64,
        name: &str,
        key: String,
        kind: EntryKind,
        lookups: u64,
    ) -> u64 {
        let now = Instant::now();
        if let Some(ino) = self.child(parent, name) {
            let node = self
                .nodes
                .get_mut(&ino)
                .expect("child map points at a live node");
            if node.kind.is_dir() == kind.is_dir() {
                node.kind = kind;
                node.checked = now;
                node.lookups += lookups;
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        let node = Node {
            parent,
            name: name.to_string(),
            key,
            kind,
            checked: now,
            opened_etag: None,
            lookups,
        };
        self.nodes.insert(ino, node);
        self.children.insert((parent, name.to_string()), ino);
        ino
    }

    pub fn add_lookup(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
    }

    /// Drops `n` kernel references; the inode goes away when none are left, and the tables
    /// give memory back once they are mostly empty (a walk of a million files leaves a
    /// million inodes until the kernel forgets them). Says whether the inode went.
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return false;
        }
        let node = self.nodes.remove(&ino).expect("present");
        let k = (node.parent, node.name);
        if self.children.get(&k) == Some(&ino) {
            self.children.remove(&k);
        }
        // Halve the capacity when a quarter is used: amortized, like the growth.
        if self.nodes.capacity() > 4096 && self.nodes.len() * 4 < self.nodes.capacity() {
            self.nodes.shrink_to(self.nodes.len() * 2);
        }
        if self.children.capacity() > 4096 && self.children.len() * 4 < self.children.capacity() {
            self.children.shrink_to(self.children.len() * 2);
        }
        true
    }

    /// The name is gone (unlink, rmdir); the inode lives on until the kernel forgets it.
    pub fn unlink(&mut self, parent: u64, name: &str) {
        self.children.remove(&(parent, name.to_string()));
    }

    /// Moves `name` in `parent` to `newname` in `newparent` (key `newkey`), replacing what
    /// was there; keys of everything below a moved directory follow.
    pub fn rename(&mut self, parent: u64, name: &str, newparent: u64, newname: &str, newkey: &str) {
        self.children.remove(&(newparent, newname.to_string()));
        let Some(ino) = self.children.remove(&(parent, name.to_string())) else {
            return;
        };
        self.children.insert((newparent, newname.to_string()), ino);
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        let old = std::mem::replace(&mut node.key, newkey.to_string());
        node.parent = newparent;
        node.name = newname.to_string();
        let old_sub = format!("{old}/");
        for n in self.nodes.values_mut() {
            if let Some(rest) = n.key.strip_prefix(&old_sub) {
                n.key = format!("{newkey}/{rest}");
            }
        }
    }

    /// Makes every node below `key/` ask the store again at its next use (its object was
    /// replaced by a copy with another ETag).
    pub fn expire_below(&mut self, key: &str) {
        let sub = format!("{key}/");
        // Longer ago than the longest metadata TTL (a year); Linux's monotonic clock takes
        // instants before its start.
        let Some(long_ago) = Instant::now().checked_sub(std::time::Duration::from_secs(2 << 25))
        else {
            return;
        };
        for n in self.nodes.values_mut().filter(|n| n.key.starts_with(&sub)) {
            n.checked = long_ago;
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn file() -> EntryKind {
        EntryKind::File {
            size: 1,
            mtime: SystemTime::UNIX_EPOCH,
            etag: "e".into(),
            posix: None,
        }
    }

    /// A walk that left 100,000 inodes, then the kernel forgetting them: the tables give
    /// their memory back, whatever the order of the forgets.
    #[test]
    fn forgotten_inodes_give_the_tables_memory_back() {
        for reverse in [false, true] {
            let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
            let inos: Vec<u64> = (0..100_000)
                .map(|i| t.upsert(ROOT_INO, &format!("f{i}"), format!("f{i}"), file(), 1))
                .collect();
            let full = (t.nodes.capacity(), t.children.capacity());
            assert!(full.0 >= 100_000 && full.1 >= 100_000);
            let order: Vec<u64> = if reverse {
                inos.iter().rev().copied().collect()
            } else {
                inos.clone()
            };
            for (i, ino) in order.iter().enumerate() {
                assert!(t.forget(*ino, 1));
                if i == 50_000 {
                    assert!(t.child(ROOT_INO, "f99999").is_some() != reverse);
                }
            }
            assert_eq!(t.nodes.len(), 1, "the root stays");
            assert!(
                t.nodes.capacity() <= 4096 && t.children.capacity() <= 4096,
                "{:?} -> {:?}",
                full,
                (t.nodes.capacity(), t.children.capacity())
            );
        }
    }

    #[test]
    fn forget_drops_an_inode_after_its_last_reference() {
        let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
        let a = t.upsert(ROOT_INO, "a", "a".into(), file(), 1);
        assert_eq!(
            t.upsert(ROOT_INO, "a", "a".into(), file(), 1),
            a,
            "same name, same inode"
        );
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "one reference left");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.child(ROOT_INO, "a"), None);
        t.forget(ROOT_INO, 99);
        assert!(t.get(ROOT_INO).is_some(), "root is never forgotten");
    }

    #[test]
    fn a_name_that_changes_kind_gets_a_new_inode() {
        let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
        let f = t.upsert(ROOT_INO, "x", "x".into(), file(), 1);
        let d = t.upsert(ROOT_INO, "x", "x".into(), EntryKind::Dir { mtime: None }, 1);
        assert_ne!(f, d);
        assert_eq!(t.child(ROOT_INO, "x"), Some(d));
        t.forget(f, 1);
        assert_eq!(
            t.child(ROOT_INO, "x"),
            Some(d),
            "forgetting the old inode keeps the new name"
        );
    }
}
