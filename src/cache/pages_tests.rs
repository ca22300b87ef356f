use super::*;
use crate::cache::objfile;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fs::OpenOptions;

const BLOCK: u64 = 64 << 10;

/// Three full blocks of 16 pages and a short last one (two pages, the second partial).
fn object() -> (ObjectKey, Vec<u8>) {
    let size = 3 * BLOCK + 5000;
    let data = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 | 1)
        .collect();
    let key = ObjectKey {
        id: "obj\n\"etag\"".into(),
        size,
        block_size: BLOCK,
    };
    (key, data)
}

fn data_file(files: &ObjectFiles) -> File {
    File::open(&files.data).unwrap()
}

fn pages_in(key: &ObjectKey, index: u64) -> u64 {
    key.block_len(index).div_ceil(PAGE)
}

/// Bytes of block `index` of `data`, pages `first..first + n` (clamped to the block).
fn page_bytes(key: &ObjectKey, data: &[u8], index: u64, first: u64, n: u64) -> (u64, Vec<u8>) {
    let len = key.block_len(index);
    let from = (first * PAGE).min(len);
    let to = ((first + n) * PAGE).min(len);
    let at = (index * key.block_size) as usize;
    (from, data[at + from as usize..at + to as usize].to_vec())
}

#[derive(Debug, Clone)]
enum Op {
    Pages { index: u64, first: u64, n: u64 },
    Whole { index: u64 },
    Punch { index: u64 },
    Flip { index: u64, page: u64 },
    Read { index: u64, start: u64, len: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let index = 0..4u64;
    prop_oneof![
        4 => (index.clone(), 0..16u64, 1..5u64).prop_map(|(index, first, n)| Op::Pages { index, first, n }),
        1 => index.clone().prop_map(|index| Op::Whole { index }),
        1 => index.clone().prop_map(|index| Op::Punch { index }),
        1 => (index.clone(), 0..16u64).prop_map(|(index, page)| Op::Flip { index, page }),
        6 => (index, 0..BLOCK, 1..20_000u64).prop_map(|(index, start, len)| Op::Read { index, start, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of page writes, whole-block writes, evictions and flipped bytes, a
    /// read of kept pages returns the object's bytes, a miss, or (only over a flipped byte)
    /// an error; it finds every range whose pages were kept; and the scan a restart does
    /// counts exactly the pages kept.
    #[test]
    fn kept_pages_read_back_right_or_not_at_all(ops in prop::collection::vec(op(), 1..40)) {
        let (key, data) = object();
        let root = tempfile::tempdir().unwrap();
        let files = ObjectFiles::new(root.path(), &key.hash());
        let mut held: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 4];
        let mut flipped: BTreeSet<(u64, u64)> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Pages { index, first, n } => {
                    let first = first.min(pages_in(&key, index) - 1);
                    let (from, bytes) = page_bytes(&key, &data, index, first, n);
                    let added = write(&files, &key, index, from, &bytes).unwrap();
                    let mut new = 0;
                    for p in first..(first + n).min(pages_in(&key, index)) {
                        if held[index as usize].insert(p) {
                            new += (key.block_len(index) - p * PAGE).min(PAGE);
                        }
                        flipped.remove(&(index, p));
                    }
                    prop_assert_eq!(added, new);
                }
                Op::Whole { index } => {
                    let (_, bytes) = page_bytes(&key, &data, index, 0, BLOCK / PAGE);
                    objfile::write_block(&files, &key, index, &bytes).unwrap();
                    held[index as usize].clear();
                    flipped.retain(|(i, _)| *i != index);
                }
                Op::Punch { index } => {
                    match OpenOptions::new().write(true).open(&files.data) {
                        Ok(d) => objfile::punch_block(&files, &key, index, &d).unwrap(),
                        // Nothing written yet: nothing to punch.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => panic!("{e}"),
                    }
                    held[index as usize].clear();
                    flipped.retain(|(i, _)| *i != index);
                }
                Op::Flip { index, page } => {
                    let page = page.min(pages_in(&key, index) - 1);
                    if held[index as usize].contains(&page) {
                        let f = OpenOptions::new().read(true).write(true).open(&files.data).unwrap();
                        let at = index * key.block_size + page * PAGE + 17.min(key.block_len(index) - page * PAGE - 1);
                        let mut b = [0u8];
                        f.read_exact_at(&mut b, at).unwrap();
                        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
                        // The same byte flipped twice is right again.
                        if !flipped.insert((index, page)) {
                            flipped.remove(&(index, page));
                        }
                    }
                }
                Op::Read { index, start, len } => {
                    let block_len = key.block_len(index);
                    let start = start.min(block_len - 1);
                    let range = start..(start + len).min(block_len);
                    let pages = range.start / PAGE..range.end.div_ceil(PAGE);
                    let kept = pages.clone().all(|p| held[index as usize].contains(&p));
                    let bad = pages.clone().any(|p| flipped.contains(&(index, p)));
                    let at = (index * key.block_size) as usize;
                    let Ok(d) = File::open(&files.data) else {
                        prop_assert!(!kept, "kept pages without a data file");
                        continue;
                    };
                    match read(&files, &d, &key, index, range.clone()) {
                        Ok(Some((b, _))) => {
                            prop_assert!(!bad, "a flipped byte was served");
                            prop_assert_eq!(&b[..], &data[at + range.start as usize..at + range.end as usize]);
                        }
                        Ok(None) => prop_assert!(!kept, "kept pages {:?} of block {} not found", pages, index),
                        Err(e) => prop_assert!(kept && bad, "error without a flipped byte: {}", e),
                    }
                }
            }
        }
        let counted: Vec<u64> = (0..4)
            .map(|i| held[i as usize].iter().map(|p| (key.block_len(i) - p * PAGE).min(PAGE)).sum())
            .collect();
        prop_assert_eq!(super::held(&files, &key).unwrap(), counted);
    }
}

#[test]
fn a_word_left_over_a_punched_hole_never_passes_off_zeros_as_the_bytes() {
    let (key, data) = object();
    let root = tempfile::tempdir().unwrap();
    let files = ObjectFiles::new(root.path(), &key.hash());
    let (from, bytes) = page_bytes(&key, &data, 1, 2, 3);
    write(&files, &key, 1, from, &bytes).unwrap();
    assert!(
        read(&files, &data_file(&files), &key, 1, from..from + 3 * PAGE)
            .unwrap()
            .is_some()
    );
    // The bytes go but the words stay: what a race with another process's eviction can leave.
    let d = OpenOptions::new().write(true).open(&files.data).unwrap();
    punch(&d, key.block_size + from, 3 * PAGE).unwrap();
    let err = read(&files, &data_file(&files), &key, 1, from + 100..from + 200).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn pages_off_their_boundaries_are_refused() {
    let (key, data) = object();
    let root = tempfile::tempdir().unwrap();
    let files = ObjectFiles::new(root.path(), &key.hash());
    for (index, from, len) in [
        (0, 100, PAGE),
        (0, 0, 100),
        (3, 4096, 100),
        (0, BLOCK - PAGE, 2 * PAGE),
    ] {
        let at = (index * BLOCK + from) as usize;
        let bytes = &data[at..(at + len as usize).min(data.len())];
        let e = write(&files, &key, index, from, bytes).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{index} {from} {len}");
    }
    // The short last block ends in a short page.
    let (from, bytes) = page_bytes(&key, &data, 3, 0, 2);
    assert_eq!(write(&files, &key, 3, from, &bytes).unwrap(), 5000);
}
