//! Training workflows through a real FUSE mount of a flat (Blob) account served by Azurite,
//! run the way training code runs them (Python's `os.replace`, `mv`, `rsync -a`), checked
//! through a second client (Azurite's REST API).

mod common;

use std::path::Path;
use std::process::Command;

use common::azurite::Azurite;
use common::mount::{errno, mount_azurite};
use common::tree::{pseudo_random, sha256, snapshot};

const CONTAINER: &str = "lake";

fn python(script: &str, args: &[&Path]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A checkpoint saver of the "write a temporary directory, then rename it" kind (Orbax,
/// Lightning): 40 shards and a nested metadata directory, then `os.replace` onto the final name.
const SAVE: &str = r#"
import os, sys
root, step = sys.argv[1], sys.argv[2]
tmp = os.path.join(root, f"ckpt-{step}.tmp")
os.makedirs(os.path.join(tmp, "meta"))
for i in range(40):
    with open(os.path.join(tmp, f"shard-{i:03}.bin"), "wb") as f:
        f.write(bytes([(i * 7 + j) % 251 for j in range(1000 + i * 997)]))
with open(os.path.join(tmp, "meta", "index.json"), "w") as f:
    f.write('{"step": %s}' % step)
os.makedirs(os.path.join(tmp, "empty"))
os.replace(tmp, os.path.join(root, f"ckpt-{step}"))
"#;

#[test]
fn a_checkpoint_directory_saved_then_renamed_with_os_replace_lands_whole_on_a_flat_account() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let m = mount_azurite(&az, CONTAINER, &[]);
    let mp = m.path();
    std::fs::create_dir(mp.join("run")).unwrap();
    for step in ["100", "200"] {
        let out = Command::new("python3")
            .arg("-c")
            .arg(SAVE)
            .arg(mp.join("run"))
            .arg(step)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for step in ["100", "200"] {
        let names = az.list_files(CONTAINER, &format!("run/ckpt-{step}/"));
        assert_eq!(names.len(), 41, "step {step}: {names:?}");
        assert!(az
            .list_files(CONTAINER, &format!("run/ckpt-{step}.tmp/"))
            .is_empty());
        let shard = az.get_blob(CONTAINER, &format!("run/ckpt-{step}/shard-039.bin"));
        let want: Vec<u8> = (0..1000 + 39 * 997)
            .map(|j| ((39 * 7 + j) % 251) as u8)
            .collect();
        assert_eq!(sha256(&shard), sha256(&want));
        assert!(az.is_dir_marker(CONTAINER, &format!("run/ckpt-{step}/empty")));
    }
    let listed: Vec<String> = std::fs::read_dir(mp.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, ["ckpt-100", "ckpt-200"]);
    // A directory renamed again, by an evaluator that keeps the best one.
    python(
        "import os, sys; os.replace(sys.argv[1], sys.argv[2])",
        &[&mp.join("run/ckpt-200"), &mp.join("run/best")],
    );
    assert_eq!(
        std::fs::read_to_string(mp.join("run/best/meta/index.json")).unwrap(),
        r#"{"step": 200}"#
    );
    // rename(2) keeps POSIX's answers: onto a directory that is not empty, ENOTEMPTY.
    assert_eq!(
        errno(std::fs::rename(
            mp.join("run/ckpt-100"),
            mp.join("run/best")
        )),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        az.list_files(CONTAINER, "run/ckpt-100/").len(),
        41,
        "nothing moved"
    );
}

#[test]
fn past_the_rename_dir_limit_rename_is_exdev_and_mv_still_moves_the_tree() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    for i in 0..12 {
        az.put_blob(
            CONTAINER,
            &format!("a/f{i}"),
            &pseudo_random(100 + i, i as u64),
        );
    }
    let src = tempfile::tempdir().unwrap();
    let m = mount_azurite(&az, CONTAINER, &["--rename-dir-limit", "10"]);
    let mp = m.path();
    let before = snapshot(&mp.join("a"));
    assert_eq!(
        errno(std::fs::rename(mp.join("a"), mp.join("b"))),
        Some(libc::EXDEV)
    );
    let st = Command::new("mv")
        .arg(mp.join("a"))
        .arg(mp.join("b"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(snapshot(&mp.join("b")), before);
    assert!(az.list_files(CONTAINER, "a/").is_empty());
    drop(src);
}
