//! Unit tests of `fs::passthrough`: the kernel I/O mode of each open, and idle backing files.

use super::*;

fn version(size: u64) -> ObjectVersion {
    ObjectVersion {
        key: "k".into(),
        etag: "e1".into(),
        size,
    }
}

/// A cache file for an object of `size` bytes, registered with the kernel when `registered`
/// (the edge's id stands in for the kernel's).
fn backing(size: u64, registered: bool) -> Arc<Backing> {
    let b = Backing::new(tempfile::tempfile().unwrap(), version(size));
    if registered {
        *b.edge.lock().unwrap() = Some(Box::new(()));
    }
    b
}

fn file() -> Arc<Backing> {
    backing(100, false)
}

fn modes() -> IoModes {
    IoModes::new(true, IdleBackings::new(4, 1000, 1000))
}

#[test]
fn a_file_open_the_normal_way_is_not_given_passthrough() {
    let m = modes();
    let ReadSlot::Open(ino) = m.reserve_reader(7) else {
        panic!("no handles yet")
    };
    let plain = m.settle(ino, None);
    assert!(plain.backing().is_none());
    plain.bind(1);
    let ReadSlot::Decided(r) = m.reserve_reader(7) else {
        panic!("a plain handle is open")
    };
    assert!(r.backing().is_none(), "joins the plain handle");
    r.bind(2);
    m.release(1);
    m.release(2);
    assert!(matches!(m.reserve_reader(7), ReadSlot::Open(7)));
}

#[test]
fn passthrough_handles_share_one_backing_and_keep_writers_out() {
    let m = modes();
    let first = m.settle(7, Some(file()));
    let b = first.backing().expect("passthrough");
    first.bind(1);
    // A candidate found at the same time as the first loses: one backing per inode.
    let late = m.settle(7, Some(file()));
    assert!(Arc::ptr_eq(&late.backing().unwrap(), &b));
    late.bind(2);
    let ReadSlot::Decided(joined) = m.reserve_reader(7) else {
        panic!("decided by the open handles")
    };
    assert!(Arc::ptr_eq(&joined.backing().unwrap(), &b));
    drop(joined);
    assert_eq!(
        m.passthrough_handles(7),
        2,
        "an unbound reservation gives its place back"
    );
    assert_eq!(m.reserve_writer(7).err(), Some(FsError(libc::ETXTBSY)));
    m.release(1);
    m.release(2);
    drop(b);
    assert!(m.reserve_writer(7).is_ok(), "no readers left");
}

#[test]
fn a_writer_open_keeps_new_readers_off_passthrough() {
    let m = modes();
    m.reserve_writer(7).unwrap().bind(1);
    let ReadSlot::Decided(r) = m.reserve_reader(7) else {
        panic!("a writer is open")
    };
    assert!(r.backing().is_none());
    // A reader that found the file closed and then a writer opened: normal mode.
    let m = modes();
    assert!(matches!(m.reserve_reader(8), ReadSlot::Open(8)));
    m.reserve_writer(8).unwrap().bind(3);
    assert!(m.settle(8, Some(file())).backing().is_none());
}

#[test]
fn a_refused_passthrough_turns_it_off_and_counts_the_handle_as_normal() {
    let m = modes();
    m.settle(7, Some(file())).bind(1);
    assert!(m.refused(1, "no capability"));
    assert!(!m.refused(1, "again"), "a normal handle now");
    assert!(!m.enabled());
    assert_eq!(m.passthrough_handles(7), 0);
    assert!(
        m.reserve_writer(7).is_ok(),
        "the handle is a normal one now"
    );
    let ReadSlot::Decided(r) = m.reserve_reader(9) else {
        panic!("passthrough is off")
    };
    assert!(r.backing().is_none());
}

/// A passthrough handle of `ino` on `b`, opened and bound to `fh`.
fn open_on(m: &IoModes, ino: u64, fh: u64, b: &Arc<Backing>) {
    let r = m.settle(ino, Some(b.clone()));
    assert!(Arc::ptr_eq(&r.backing().unwrap(), b));
    r.bind(fh);
}

#[test]
fn a_backing_goes_idle_with_its_last_handle_and_serves_only_its_version() {
    let m = modes();
    let b = backing(100, true);
    open_on(&m, 7, 1, &b);
    open_on(&m, 7, 2, &b);
    m.release(1);
    assert!(
        m.take_idle(7, &version(100)).is_none(),
        "not idle while a handle is open"
    );
    m.release(2);
    assert_eq!(m.idle_backings(), 1);
    let again = m
        .take_idle(7, &version(100))
        .expect("idle after the last close");
    assert!(Arc::ptr_eq(&again, &b));
    assert_eq!(m.idle_backings(), 0, "taken out while in use");
    open_on(&m, 7, 3, &again);
    m.release(3);
    // Another version of the object (a new ETag, a new size) never gets it, and it goes.
    let mut other = version(100);
    other.etag = "e2".into();
    assert!(m.take_idle(7, &other).is_none());
    assert!(m.take_idle(7, &version(100)).is_none(), "dropped");
    open_on(&m, 7, 4, &b);
    m.release(4);
    assert!(m.take_idle(7, &version(101)).is_none());
    assert!(
        m.take_idle(8, &version(100)).is_none(),
        "kept for its inode only"
    );
}

#[test]
fn a_write_open_or_passthrough_turned_off_drops_idle_backings() {
    let m = modes();
    open_on(&m, 7, 1, &backing(100, true));
    open_on(&m, 8, 2, &backing(100, true));
    m.release(1);
    m.release(2);
    assert_eq!(m.idle_backings(), 2);
    m.reserve_writer(7).unwrap().bind(3);
    assert_eq!(
        m.idle_backings(),
        1,
        "the file being written lost its backing"
    );
    m.release(3);
    assert!(m.take_idle(7, &version(100)).is_none());
    m.disable("test");
    assert_eq!(m.idle_backings(), 0);
}

#[test]
fn idle_backings_are_bounded_by_count_and_bytes_and_unregistered_ones_are_not_kept() {
    let mut idle = IdleBackings::new(2, 1000, 700);
    let (a, b, c) = (backing(100, true), backing(100, true), backing(100, true));
    assert!(idle.keep(1, a.clone()).is_empty());
    assert!(idle.keep(2, b.clone()).is_empty());
    let out = idle.keep(3, c.clone());
    assert!(
        out.len() == 1 && Arc::ptr_eq(&out[0], &a),
        "the least recent goes"
    );
    assert!(idle.take(1).is_none());
    assert!(Arc::ptr_eq(&idle.take(2).unwrap(), &b));
    // Never registered (the kernel refused it): nothing to save by keeping it.
    let u = backing(100, false);
    let out = idle.keep(4, u.clone());
    assert!(out.len() == 1 && Arc::ptr_eq(&out[0], &u));
    assert!(idle.take(4).is_none());
    // Larger than a file may be, or than all may be: not kept.
    assert_eq!(idle.keep(5, backing(701, true)).len(), 1);
    assert_eq!(IdleBackings::new(2, 100, 700).keep(5, c.clone()).len(), 0);
    assert_eq!(IdleBackings::new(2, 99, 700).keep(5, c.clone()).len(), 1);
    // Bytes: 100 + 600 + 600 > 1000, so the least recent goes until it fits.
    let big = backing(600, true);
    assert!(idle.keep(6, big.clone()).is_empty());
    let out = idle.keep(7, backing(600, true));
    assert_eq!(out.len(), 2, "both older ones go to fit 600 more");
    assert_eq!(idle.len(), 1);
    assert!(idle.take(6).is_none() && idle.take(7).is_some());
    assert_eq!(idle.bytes, 0);
}
