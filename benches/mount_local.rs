//! The mount over the embedded default (a local directory as the lake) against the same files
//! read directly, in one run so the ratios hold on a noisy machine:
//!
//!   cargo bench --bench mount_local            (needs FUSE rights)
//!
//! e. `ls -lR` and `find` over 5,000 files (mount cold and warm vs local), plus a sequential
//!    read through the daemon and its peak RSS.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{drop_pages, drop_tree, read_all, timed, Daemon, MIB};

const BIG: u64 = 512 * MIB;
const FILES: usize = 5_000;

fn run(tool: &str, args: &[&str]) {
    let ok = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "{tool} {args:?} failed");
}

fn main() {
    lakemount::tune_allocator();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("lake");
    let mp = work.path().join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("big.bin"),
        common::tree::pseudo_random(BIG as usize, 1),
    )
    .unwrap();
    for i in 0..FILES {
        let d = src.join(format!("tree/d{:02}", i % 50));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i:05}.bin")),
            common::tree::pseudo_random(4096, i as u64),
        )
        .unwrap();
    }
    let d = Daemon::lakemount(&format!("file://{}", src.display()), &mp, &[], &[]);

    let cat = |dir: &Path| {
        drop_pages(&dir.join("big.bin"));
        timed(|| read_all(&dir.join("big.bin"))).1
    };
    let local_read = cat(&src);
    let mount_read = cat(&mp);
    let mib = (BIG / MIB) as f64;
    println!(
        "sequential read {mib} MiB, page cache dropped: local {:.0} MiB/s, mount {:.0} MiB/s, ratio {:.2}",
        mib / local_read,
        mib / mount_read,
        local_read / mount_read
    );

    for (name, tool, flags) in [("ls -lR", "ls", &["-lR"][..]), ("find", "find", &[][..])] {
        let go = |dir: &Path| {
            drop_tree(&dir.join("tree"));
            let tree = dir.join("tree");
            let mut args: Vec<&str> = flags.to_vec();
            args.insert(if tool == "ls" { 1 } else { 0 }, tree.to_str().unwrap());
            timed(|| run(tool, &args)).1
        };
        let local = go(&src);
        let cold = go(&mp);
        let warm = go(&mp);
        println!(
            "e. {name} over {FILES} files: local {:.0} ms, mount cold {:.0} ms (x{:.1}), warm {:.0} ms (x{:.1}) (target <= x5)",
            local * 1e3,
            cold * 1e3,
            cold / local,
            warm * 1e3,
            warm / local
        );
    }
    println!(
        "daemon peak RSS: {:.1} MiB",
        d.peak_rss() as f64 / MIB as f64
    );
}
