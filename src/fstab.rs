//! `mount.lakemount`, the helper mount(8) runs for file systems of type `lakemount` (or
//! `fuse.lakemount`), so a lake mounts from /etc/fstab, with `mount -a`, `mount /mnt/lake`
//! and systemd's generated `.mount` units:
//!
//! ```text
//! az://acct/data  /mnt/lake  lakemount  _netdev,allow_other,cache_dir=/mnt/nvme/lakecache  0 0
//! ```
//!
//! mount(8) calls `mount.lakemount SOURCE DIR [-sfnv] [-N NS] [-o OPTIONS]`. Each option is a
//! `lakemount mount` flag, one to one (`cache_dir=X` is `--cache-dir X`, `allow_other` is
//! `--allow-other`, `ro` is `--read-only`); options that are mount(8)'s or systemd's own
//! (`_netdev`, `nofail`, `noauto`, `x-systemd.*`, `defaults`, ...) are left to them.

/// Names under which this binary is the mount helper (a symlink in /sbin).
const HELPER_NAMES: [&str; 2] = ["mount.lakemount", "mount.fuse.lakemount"];

/// What `lakemount mount` takes as `--NAME`, read from its own definition (so a new flag is
/// an fstab option at once): the names with `_` for `-`, and whether each takes a value.
fn mount_flags() -> Vec<(String, bool)> {
    use clap::Args;
    crate::cli::MountArgs::augment_args(clap::Command::new("mount"))
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            Some((long.replace('-', "_"), a.get_action().takes_values()))
        })
        .collect()
}

/// Options that are mount(8)'s, the kernel's generic ones, or systemd's: not ours to act on.
const NOT_OURS: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "sync",
    "async",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "silent",
    "loud",
];

/// What the helper was asked: the `lakemount` command line, or nothing to do (`-f`, fake).
#[derive(Debug, PartialEq, Eq)]
pub enum Helper {
    Mount(Vec<String>),
    Fake,
}

/// Whether `argv` is a mount helper's call: this binary run as `mount.lakemount` (type
/// `lakemount`), or as `lakemount SOURCE DIR -o ...` (type `fuse.lakemount`, which mount(8)
/// hands to fuse's `mount.fuse`, which runs `lakemount` so). A lake URL is never a
/// subcommand.
pub fn is_helper(argv: &[String]) -> bool {
    let Some(program) = argv.first() else {
        return false;
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    HELPER_NAMES.contains(&name) || argv.get(1).is_some_and(|a| a.contains("://"))
}

/// The `lakemount mount` command line for a mount(8) helper invocation (`args` after argv\[0\]).
pub fn command_line(args: &[String]) -> Result<Helper, String> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut verbose = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.push(it.next().ok_or("-o needs a value")?.clone()),
            "-t" | "-N" => {
                it.next().ok_or_else(|| format!("{a} needs a value"))?;
            }
            "-f" => fake = true,
            "-v" => verbose = true,
            "-s" | "-n" => {}
            s if s.starts_with("-o") => options.push(s[2..].to_string()),
            s if s.starts_with('-') => return Err(format!("unknown argument {s:?}")),
            s => positional.push(s.to_string()),
        }
    }
    let [source, dir] = positional.as_slice() else {
        return Err("usage: mount.lakemount LAKE_URL MOUNTPOINT [-o OPTIONS]".into());
    };
    let mut line = vec![
        "lakemount".to_string(),
        "mount".into(),
        source.clone(),
        dir.clone(),
    ];
    if verbose {
        line.insert(1, "-v".into());
    }
    let flags = mount_flags();
    let takes_value = |k: &str| flags.iter().find(|(f, _)| f == k).map(|(_, v)| *v);
    for opt in options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if NOT_OURS.contains(&key) || key.starts_with("x-") || key == "comment" {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        // `foreground` would keep mount(8) waiting for the daemon to exit.
        let known = takes_value(key).filter(|_| key != "foreground");
        match (key, value, known) {
            ("ro", None, _) => line.push("--read-only".into()),
            (_, None, Some(false)) => line.push(flag),
            (_, Some(v), Some(true)) => line.extend([flag, v.to_string()]),
            (k, None, Some(true)) => return Err(format!("option {k} needs a value ({k}=...)")),
            (k, Some(_), Some(false)) => return Err(format!("option {k} takes no value")),
            _ => {
                return Err(format!(
                    "unknown option {opt:?}: options are `lakemount mount` flags with `_` for `-` \
                     (cache_dir=DIR, allow_other, ro, ...), see `lakemount mount --help`"
                ))
            }
        }
    }
    Ok(if fake {
        Helper::Fake
    } else {
        Helper::Mount(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn fstab_options_map_to_mount_flags_one_to_one() {
        let got = command_line(&args(
            "az://acct/data /mnt/lake -o rw,_netdev,allow_other,cache_dir=/mnt/nvme/lakecache,x-systemd.requires=network-online.target,commit_interval=10,nofail",
        ))
        .unwrap();
        assert_eq!(
            got,
            Helper::Mount(args(
                "lakemount mount az://acct/data /mnt/lake --allow-other --cache-dir /mnt/nvme/lakecache --commit-interval 10"
            ))
        );
        assert_eq!(
            command_line(&args("file:///d /m -s -n -o ro -t lakemount")).unwrap(),
            Helper::Mount(args("lakemount mount file:///d /m --read-only"))
        );
        assert_eq!(
            command_line(&args("x /m -f -o defaults")).unwrap(),
            Helper::Fake
        );
        // Every mount flag is an option, the ones added later too.
        assert_eq!(
            command_line(&args(
                "x /m -o read_only,manifest=/m.jsonl,metadata_budget=2G"
            ))
            .unwrap(),
            Helper::Mount(args(
                "lakemount mount x /m --read-only --manifest /m.jsonl --metadata-budget 2G"
            ))
        );
        assert!(is_helper(&args("/sbin/mount.lakemount x /m")));
        assert!(is_helper(&args("mount.fuse.lakemount")));
        assert!(is_helper(&args("lakemount az://a/c /mnt/lake -o ro")));
        assert!(!is_helper(&args("lakemount mount az://a/c /mnt/lake")));
        assert!(!is_helper(&args("lakemount")));
    }

    #[test]
    fn options_that_are_no_flag_are_one_clear_error() {
        for (line, want) in [
            ("x /m -o cache_dri=/c", "unknown option \"cache_dri=/c\""),
            ("x /m -o cache_dir", "needs a value"),
            ("x /m -o allow_other=1", "takes no value"),
            ("x /m -o foreground", "unknown option \"foreground\""),
            ("x", "usage"),
            ("x /m -q", "unknown argument"),
            ("x /m -o", "-o needs a value"),
        ] {
            let e = command_line(&args(line)).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{line}: {e}");
        }
    }
}
