//! `lake-agent bootstrap` / `stop` on this machine with real parts: Azurite as the lake, real
//! FUSE mounts by lakemount, the supervised-daemon path (no systemd here) and the systemd path
//! through a stand-in `systemctl` that does what the unit would.

#[path = "common/agent.rs"]
mod agent_common;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use agent_common::{agent, alive, stderr, text, LakeDef, Node};
use common::azurite::Azurite;
use common::mount::{is_mounted, wait_for};
use common::tree::pseudo_random;

const CONTAINER: &str = "datasets";

fn lake(extra: &str) -> LakeDef {
    LakeDef {
        name: "datasets",
        container: CONTAINER,
        extra: extra.into(),
    }
}

fn azurite_with_data() -> (Azurite, Vec<u8>) {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let data = pseudo_random(3 << 20, 7);
    az.put_blob(CONTAINER, "train/shard-0.bin", &data);
    az.put_blob(CONTAINER, "train/labels.csv", b"id,label\n1,cat\n");
    az.put_blob(CONTAINER, "val/shard-0.bin", b"val");
    (az, data)
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn bootstrap_mounts_the_lake_warms_it_and_reports_status() {
    let (az, data) = azurite_with_data();
    // A stand-in nvidia-smi, as on an NC-series node with four GPUs.
    let tools = tempfile::tempdir().unwrap();
    let smi = tools.path().join("nvidia-smi");
    write_script(
        &smi,
        "[ \"$1\" = -L ] || exit 2\nfor i in 0 1 2 3; do echo \"GPU $i: Tesla V100-SXM2-16GB (UUID: GPU-0000000$i-1111-2222-3333-444455556666)\"; done\n",
    );
    let node = Node::new(Some(&az), &[lake("warm = [\"train\"]")], "");
    // GPU policy and nvidia-smi for this test only.
    let cfg = std::fs::read_to_string(&node.config).unwrap().replace(
        "gpus = \"none\"",
        &format!("gpus = \"require\"\nnvidia_smi = \"{}\"", smi.display()),
    );
    std::fs::write(&node.config, cfg).unwrap();

    let out = node.bootstrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 GPU(s)"), "{}", text(&out));
    assert!(
        stdout.contains("warming az://devstoreaccount1/datasets/train"),
        "{}",
        text(&out)
    );

    // The mount answers with the lake's bytes.
    let mp = &node.lakes[0];
    assert!(is_mounted(mp));
    assert_eq!(std::fs::read(mp.join("train/shard-0.bin")).unwrap(), data);

    let st = node.status();
    assert_eq!(st["ok"], true, "{st:#}");
    assert_eq!(st["kind"], "lake-agent/bootstrap");
    assert_eq!(st["gpus"]["gpus"].as_array().unwrap().len(), 4);
    assert_eq!(st["gpus"]["gpus"][3]["name"], "Tesla V100-SXM2-16GB");
    assert_eq!(st["cache"]["source"], "configured");
    assert_eq!(st["mounts"][0]["state"], "mounted");
    assert_eq!(st["mounts"][0]["mode"], "daemon");
    assert_eq!(st["mounts"][0]["mountpoint"], mp.to_str().unwrap());
    assert_eq!(st["warm"][0]["url"], "az://devstoreaccount1/datasets/train");
    assert!(
        st["timings"]["total_ms"].as_u64().unwrap() >= st["timings"]["mounts_ms"].as_u64().unwrap()
    );
    assert!(st["disks"].is_array());

    // Warm filled the cache: the 3 MiB shard is in it before anyone read it through the mount.
    let cached: u64 = walk_size(&node.path().join("cache"));
    assert!(cached >= data.len() as u64, "cache holds {cached} bytes");

    // `status` prints the same file.
    let out = node.agent(&["status"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, st);
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            walk_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

#[test]
fn bootstrap_rerun_keeps_a_working_mount() {
    let (az, _) = azurite_with_data();
    let node = Node::new(Some(&az), &[lake("")], "");
    node.bootstrap();
    let pid = node.supervisor_pid("datasets").expect("a supervisor runs");
    let first_started = node.status()["started_at"].clone();

    let out = node.bootstrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already mounted"),
        "{}",
        text(&out)
    );
    let st = node.status();
    assert_eq!(st["mounts"][0]["state"], "already mounted");
    assert_ne!(
        st["started_at"], first_started,
        "the status file is rewritten"
    );
    assert_eq!(
        node.supervisor_pid("datasets"),
        Some(pid),
        "the same daemon serves"
    );
    assert!(node.lakes[0].join("val/shard-0.bin").exists());
}

#[test]
fn a_killed_mount_daemon_is_restarted_by_its_supervisor() {
    let (az, data) = azurite_with_data();
    let node = Node::new(Some(&az), &[lake("")], "");
    node.bootstrap();
    let mp = &node.lakes[0];
    let daemon = node.mount_state("datasets")["daemon_pid"].as_u64().unwrap() as u32;
    // SAFETY: kill(2) of the lakemount daemon this test's node started.
    unsafe { libc::kill(daemon as libc::pid_t, libc::SIGKILL) };
    assert!(
        wait_for(Duration::from_secs(10), || !alive(daemon)),
        "the daemon did not die"
    );
    // The supervisor starts a new daemon, which clears the dead mount and mounts again.
    let back = wait_for(Duration::from_secs(30), || {
        let st = node.mount_state("datasets");
        st["state"] == "ready" && st["daemon_pid"].as_u64() != Some(daemon.into())
    });
    assert!(back, "not remounted: {:#}", node.mount_state("datasets"));
    assert_eq!(node.mount_state("datasets")["attempt"], 2);
    let got = std::fs::read(mp.join("train/shard-0.bin")).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(node.status_dir().join("mounts/datasets.log"));
        panic!("{e}; mount log: {log:?}")
    });
    assert_eq!(got, data);
}

#[test]
fn stop_unmounts_and_ends_the_supervisor() {
    let (az, _) = azurite_with_data();
    let node = Node::new(Some(&az), &[lake("")], "");
    node.bootstrap();
    let pid = node.supervisor_pid("datasets").unwrap();
    let out = node.agent(&["stop"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(&node.lakes[0]));
    assert!(!alive(pid), "the supervisor is gone");
    assert_eq!(node.mount_state("datasets")["state"], "stopped");
}

#[test]
fn bootstrap_fails_visibly_when_the_mount_never_answers() {
    // A lakemount that starts and then never mounts anything.
    let tools = tempfile::tempdir().unwrap();
    let stub = tools.path().join("lakemount");
    write_script(&stub, "echo 'waiting for the lake'\nexec sleep 300\n");
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let node = Node::new(Some(&az), &[lake("")], "");
    let cfg = std::fs::read_to_string(&node.config)
        .unwrap()
        .replace(common::mount::lakemount_bin(), stub.to_str().unwrap())
        .replace("mount_timeout = 60", "mount_timeout = 2");
    std::fs::write(&node.config, cfg).unwrap();

    let started = std::time::Instant::now();
    let out = node.agent(&["bootstrap"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("lake-agent: error: cannot mount lake \"datasets\""),
        "{err}"
    );
    assert!(err.contains("did not answer within 2s"), "{err}");
    assert!(
        err.contains("waiting for the lake"),
        "the log's last line: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(started.elapsed() < Duration::from_secs(40));
    // Nothing is left running, and the status file records the failure.
    assert_eq!(node.supervisor_pid("datasets"), None);
    let st = node.status();
    assert_eq!(st["ok"], false);
    assert!(st["error"].as_str().unwrap().contains("did not answer"));
}

#[test]
fn bootstrap_reports_why_lakemount_could_not_mount() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let mut node = Node::new(Some(&az), &[lake("")], "");
    // A wrong key: lakemount refuses at once, and the supervisor does not retry a daemon that
    // never mounted.
    node.env = vec![(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        az.connection_string().replace(
            common::azurite::KEY,
            "d3Jvbmcga2V5IGZvciB0aGUgdGVzdCBvbmx5Cg==",
        ),
    )];
    let out = node.agent(&["bootstrap"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot mount lake \"datasets\""), "{err}");
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    assert!(
        !err.contains("d3Jvbmcga2V5"),
        "the key is never shown: {err}"
    );
    assert_eq!(node.mount_state("datasets")["state"], "failed");
    assert!(!is_mounted(&node.lakes[0]));
}

#[test]
fn bootstrap_under_systemd_writes_the_instance_and_starts_the_unit() {
    let (az, data) = azurite_with_data();
    let node = Node::new(Some(&az), &[lake("")], "");
    let d = node.path();
    let etc = d.join("etc-lakemount");
    let units = d.join("units");
    let calls = d.join("systemctl.calls");
    // A stand-in for systemctl that does what lakemount@.service does: start runs
    // `lakemount mount --config /etc/lakemount/NAME.toml` with NAME.env's variables (and, like
    // a Type=notify start, returns once the mount answers); stop unmounts.
    let systemctl = d.join("systemctl");
    write_script(
        &systemctl,
        &format!(
            "echo \"$@\" >> {calls}\n\
             [ \"$1\" = daemon-reload ] && exit 0\n\
             name=${{2#lakemount@}}; name=${{name%.service}}\n\
             mp=$(sed -n 's/^mountpoint = \"\\(.*\\)\"$/\\1/p' {etc}/$name.toml)\n\
             mounted() {{ grep -qF \" $mp fuse\" /proc/self/mounts; }}\n\
             case \"$1\" in\n\
             start|restart) if [ \"$1\" = start ] && mounted; then exit 0; fi\n\
               set -a; . {etc}/$name.env; set +a\n\
               exec {lm} mount --config {etc}/$name.toml --log-file {d}/$name.log ;;\n\
             stop) if mounted; then {lm} unmount \"$mp\"; fi; exit 0 ;;\n\
             esac\nexit 1\n",
            calls = calls.display(),
            etc = etc.display(),
            lm = common::mount::lakemount_bin(),
            d = d.display(),
        ),
    );
    let cfg = std::fs::read_to_string(&node.config).unwrap().replace(
        "mount_mode = \"daemon\"",
        &format!(
            "mount_mode = \"systemd\"\nsystemctl = \"{}\"\nsystemd_unit_dir = \"{}\"\nlakemount_config_dir = \"{}\"",
            systemctl.display(),
            units.display(),
            etc.display()
        ),
    );
    std::fs::write(&node.config, cfg).unwrap();

    node.bootstrap();
    assert_eq!(
        std::fs::read(node.lakes[0].join("train/shard-0.bin")).unwrap(),
        data
    );
    assert_eq!(node.status()["mounts"][0]["mode"], "systemd");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["daemon-reload", "restart lakemount@datasets.service"]
    );
    // The unit is installed with this node's lakemount; the instance files are as the unit
    // reads them, credentials readable by root only.
    let unit = std::fs::read_to_string(units.join("lakemount@.service")).unwrap();
    assert!(unit.contains(&format!(
        "ExecStart={} mount --config /etc/lakemount/%i.toml --foreground",
        common::mount::lakemount_bin()
    )));
    let toml = std::fs::read_to_string(etc.join("datasets.toml")).unwrap();
    assert!(
        toml.contains("lake = \"az://devstoreaccount1/datasets\""),
        "{toml}"
    );
    assert!(toml.contains(&format!("cache_dir = \"{}\"", d.join("cache").display())));
    let env = etc.join("datasets.env");
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&env)
        .unwrap()
        .contains("AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;"));

    // A rerun with nothing changed only makes sure the unit is started.
    node.bootstrap();
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(log.lines().last(), Some("start lakemount@datasets.service"));
    assert_eq!(node.status()["mounts"][0]["state"], "already mounted");
    // Node's drop: `lake-agent stop` goes through `systemctl stop`.
}

#[test]
fn bad_configs_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    for (toml, want) in [
        ("[container]\nimgae = \"x\"\n", "unknown field `imgae`"),
        ("[agent]\nmount_timeout = \"soon\"\n", "mount_timeout"),
        (
            "[[lake]]\nname = \"d\"\nurl = \"s3://bucket\"\nmountpoint = \"/mnt/lake\"\n",
            "invalid lake URL",
        ),
        ("[container]\nruntime = \"lxc\"\n", "unknown variant `lxc`"),
    ] {
        std::fs::write(&cfg, toml).unwrap();
        let out = agent(&["bootstrap", "--config", cfg.to_str().unwrap()], &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{toml:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.starts_with("lake-agent: error: config file"), "{err}");
        assert!(err.contains(want), "{toml:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let out = agent(&["bootstrap"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pass --config FILE"),
        "{}",
        text(&out)
    );
    let out = agent(&["bootstrap", "--config", "/nonexistent.toml"], &[])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("cannot read config file /nonexistent.toml"));
}

#[test]
fn bootstrap_rerun_replaces_a_mount_whose_daemon_and_supervisor_died() {
    let (az, data) = azurite_with_data();
    let node = Node::new(Some(&az), &[lake("")], "");
    node.bootstrap();
    let supervisor = node.supervisor_pid("datasets").unwrap();
    let daemon = node.mount_state("datasets")["daemon_pid"].as_u64().unwrap() as u32;
    // As after an out-of-memory kill of both: the mount stays behind, dead.
    for pid in [supervisor, daemon] {
        // SAFETY: kill(2) of processes this test's node started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert!(wait_for(Duration::from_secs(10), || !alive(pid)));
    }
    let mp = &node.lakes[0];
    assert!(is_mounted(mp));
    let err = std::fs::read_dir(mp).map(|_| ()).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "the mount is dead: {err}"
    );

    let out = node.bootstrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mounted az://"),
        "{}",
        text(&out)
    );
    assert_eq!(node.status()["mounts"][0]["state"], "mounted");
    assert_eq!(std::fs::read(mp.join("train/shard-0.bin")).unwrap(), data);
    assert_ne!(node.supervisor_pid("datasets"), Some(supervisor));
}
