//! Unit tests of `cache::objfile`: the object file format.

use super::*;

#[test]
fn a_table_made_either_way_lists_its_first_block_and_leaves_no_temporary_file() {
    let key = ObjectKey {
        id: "obj\netag".into(),
        size: 3 * 4096,
        block_size: 4096,
    };
    let data = vec![7u8; 4096];
    for named in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let files = ObjectFiles::new(root.path(), &key.hash());
        let dir = files.sums.parent().unwrap();
        fs::create_dir_all(dir).unwrap();
        fs::write(&files.data, []).unwrap();
        files_data_at(&files, &data, 4096);
        let entry = Entry::of(&key, &data);
        let fill = |f: &File| {
            f.write_all_at(&key.header(), 0)?;
            f.write_all_at(&entry, entry_at(&key, 1))
        };
        if named {
            named_then_linked(dir, &files, fill).unwrap();
            let again = named_then_linked(dir, &files, fill).unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        } else {
            create_table(&files, &key, entry_at(&key, 1), &entry).unwrap();
        }
        assert_eq!(held_blocks(&files, &key).unwrap(), vec![0, 4096, 0]);
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "named: {named}: {names:?}");
    }
}

#[test]
fn a_fresh_read_returns_exactly_the_bytes_there_or_an_error_past_the_end() {
    let f = tempfile::tempfile().unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    f.write_all_at(&data, 0).unwrap();
    for (len, at) in [(0, 0), (1, 0), (4096, 1), (9_000, 1_000), (10_000, 0)] {
        let got = read_fresh(&f, len, at as u64).unwrap();
        assert_eq!(got, &data[at..at + len], "{len} at {at}");
    }
    let e = read_fresh(&f, 2, 9_999).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

fn files_data_at(files: &ObjectFiles, data: &[u8], at: u64) {
    let f = OpenOptions::new().write(true).open(&files.data).unwrap();
    f.write_all_at(data, at).unwrap();
}

#[test]
fn a_file_short_of_its_object_or_with_a_hole_where_no_block_is_listed_is_not_whole() {
    let key = ObjectKey {
        id: "obj\netag".into(),
        size: 3 * 4096,
        block_size: 4096,
    };
    let root = tempfile::tempdir().unwrap();
    let files = ObjectFiles::new(root.path(), &key.hash());
    fs::create_dir_all(files.sums.parent().unwrap()).unwrap();
    let block = |i: u8| vec![i + 1; 4096];
    let data = || File::open(&files.data).unwrap();
    // The first block: the file is shorter than the object.
    write_block(&files, &key, 0, &block(0)).unwrap();
    assert!(!may_be_whole(&files, &key, &data()));
    // The last one too: as long as the object, with a hole where block 1 is missing.
    write_block(&files, &key, 2, &block(2)).unwrap();
    assert!(!may_be_whole(&files, &key, &data()));
    write_block(&files, &key, 1, &block(1)).unwrap();
    assert!(may_be_whole(&files, &key, &data()));
    // A listed block's bytes stored as a hole (file systems that keep written zeros so):
    // still whole, as its table says.
    let d = OpenOptions::new().write(true).open(&files.data).unwrap();
    punch(&d, 4096, 4096).unwrap();
    assert!(may_be_whole(&files, &key, &data()));
    // Its table gone (another mount removing the object): no sign of a partial file.
    fs::remove_file(&files.sums).unwrap();
    assert!(may_be_whole(&files, &key, &data()));
}
