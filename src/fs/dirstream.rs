//! A directory's listing as its pages arrive. readdir hands the kernel the entries of the first
//! page while later pages are not listed yet, so `ls -f` of a million-entry directory shows
//! its first names after one request, not after the whole listing. Readers drive it: the one
//! that needs an entry not listed yet lists the next page; the others wait for it.
//!
//! Invariant: an entry's readdir offset is its index in arrival order, and entries are only
//! ever appended, so an offset the kernel holds stays valid across pages whatever changes in
//! the lake meanwhile (a listing continues from its marker: names added behind it are not
//! shown, names removed ahead of it are not shown, nothing is shown twice).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::listing::{DirListing, EntryKind};
use super::FsResult;
use crate::store::{ListPage, PageGuard};

pub struct DirStream {
    listed: Mutex<Listed>,
    /// Held while a page is being listed: where the listing goes on.
    next: tokio::sync::Mutex<Cursor>,
    /// Pages asked for and answered so far (see `Cursor::failed`); read without the
    /// cursor's lock.
    asked: AtomicU64,
    /// Set when this mount changed the directory after the listing began: the listing then
    /// serves its readers to the end but is not cached for others.
    stale: AtomicBool,
}

#[derive(Default)]
struct Cursor {
    marker: Option<String>,
    guard: PageGuard,
    /// How the last ask for a page failed, if it did: a reader that waited for another's ask
    /// takes its outcome instead of asking again, so readers queued on a hung lake each fail
    /// within one deadline, not one deadline per reader ahead of them.
    failed: Option<super::FsError>,
}

enum Listed {
    Growing(DirListing),
    Complete(Arc<DirListing>),
}

impl Listed {
    fn entries(&self) -> &DirListing {
        match self {
            Listed::Growing(l) => l,
            Listed::Complete(l) => l,
        }
    }
}

impl DirStream {
    /// A listing not begun: the first reader lists its first page.
    pub fn new() -> Self {
        DirStream {
            listed: Mutex::new(Listed::Growing(DirListing::default())),
            next: tokio::sync::Mutex::new(Cursor::default()),
            asked: AtomicU64::new(0),
            stale: AtomicBool::new(false),
        }
    }

    /// A listing already complete (from the metadata cache).
    pub fn complete(listing: Arc<DirListing>) -> Self {
        let s = DirStream::new();
        *s.listed.lock().unwrap() = Listed::Complete(listing);
        s
    }

    pub fn is_complete(&self) -> bool {
        matches!(*self.listed.lock().unwrap(), Listed::Complete(_))
    }

    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// This mount changed the directory after the listing began.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::SeqCst)
    }

    /// Lists pages with `list` (given the marker of the page wanted; `build` makes its
    /// entries; `what` names the listing in errors) until entry `index` exists or the
    /// listing is complete. Returns the listing when this call completed it and nothing
    /// changed meanwhile, for the caller to cache. A failed page fails this call, and the
    /// calls that waited for it: the entries listed so far stay, and the next call asks for
    /// that page again.
    pub async fn reach<F, Fut>(
        &self,
        index: usize,
        mut list: F,
        build: impl Fn(ListPage) -> DirListing,
        what: impl Fn() -> String,
    ) -> FsResult<Option<Arc<DirListing>>>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = FsResult<ListPage>>,
    {
        let reached = || {
            let l = self.listed.lock().unwrap();
            matches!(*l, Listed::Complete(_)) || l.entries().entries.len() > index
        };
        while !reached() {
            let seen = self.asked.load(Ordering::SeqCst);
            let mut cursor = self.next.lock().await;
            // Another reader may have listed it while this one waited, or failed to.
            if reached() {
                break;
            }
            if let (true, Some(e)) = (self.asked.load(Ordering::SeqCst) != seen, cursor.failed) {
                return Err(e);
            }
            let marker = cursor.marker.clone();
            // A store that names markers forever fails the listing instead of hanging it.
            let result = list(marker).await.and_then(|page| {
                let next = cursor.guard.next(&page, &what)?;
                Ok((page, next))
            });
            // Counted once answered: whoever read the count before sees this ask's outcome.
            self.asked.fetch_add(1, Ordering::SeqCst);
            let got = match result {
                Ok(got) => {
                    cursor.failed = None;
                    got
                }
                Err(e) => {
                    cursor.failed = Some(e);
                    return Err(e);
                }
            };
            let (page, next) = (build(got.0), got.1);
            let mut l = self.listed.lock().unwrap();
            let Listed::Growing(growing) = &mut *l else {
                unreachable!("only a growing listing is listed further");
            };
            for name in growing.append(page) {
                tracing::warn!(
                    "{name:?} is both a file and a directory in {}: shown as a directory",
                    what()
                );
            }
            match next {
                Some(m) => cursor.marker = Some(m),
                None => {
                    let done = Arc::new(std::mem::take(growing));
                    *l = Listed::Complete(done.clone());
                    return Ok((!self.is_stale()).then_some(done));
                }
            }
        }
        Ok(None)
    }

    /// Calls `f` with the entries from `index` on, as far as listed, and whether that is all.
    pub fn from<R>(
        &self,
        index: usize,
        f: impl FnOnce(indexmap::map::Iter<'_, String, EntryKind>, bool) -> R,
    ) -> R {
        let l = self.listed.lock().unwrap();
        let entries = &l.entries().entries;
        let rest = entries
            .get_range(index.min(entries.len())..)
            .unwrap_or_default();
        f(rest.iter(), matches!(*l, Listed::Complete(_)))
    }

    /// How many entries are listed so far, and whether `name` is among them.
    pub fn count_and_has(&self, name: Option<&str>) -> (usize, bool) {
        let l = self.listed.lock().unwrap();
        let e = &l.entries().entries;
        (e.len(), name.is_some_and(|n| e.contains_key(n)))
    }
}
