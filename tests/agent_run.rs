//! `lake-agent run` with real parts: podman + runc running a minimal busybox image imported
//! from Debian's busybox-static, the lake mounted by lakemount from Azurite and bind-mounted
//! into the container, the output shipped back to Azurite under runs/.

#[path = "common/agent.rs"]
mod agent_common;
mod common;

use std::path::Path;

use agent_common::{busybox_image, podman_available, stderr, text, Containers, LakeDef, Node};
use agent_common::{PODMAN_ARGS, ULIMITS};
use common::azurite::Azurite;
use common::tree::pseudo_random;
use sha2::{Digest, Sha256};

const CONTAINER: &str = "datasets";

fn podman_config() -> String {
    let quoted = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[container]\nruntime = \"podman\"\nruntime_args = [{}]\nulimits = [{}]\n",
        quoted(PODMAN_ARGS),
        quoted(ULIMITS)
    )
}

/// A lake with one 1 MiB shard, mounted by bootstrap; the framework's view of it at /mnt/lake.
fn lake_node(az: &Azurite, extra: &str) -> (Node, String) {
    az.create_container(CONTAINER);
    let data = pseudo_random(1 << 20, 11);
    az.put_blob(CONTAINER, "train/shard-0.bin", &data);
    let hash = format!("{:x}", Sha256::digest(&data));
    let node = Node::new(
        Some(az),
        &[LakeDef {
            name: "datasets",
            container: CONTAINER,
            extra: "container_path = \"/mnt/lake\"".into(),
        }],
        &format!("{}{extra}", podman_config()),
    );
    node.bootstrap();
    (node, hash)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The script the framework container runs: checks the shard's hash on the read-only lake,
/// records what it sees and writes its output.
fn job_script(hash: &str) -> String {
    format!(
        "set -e\n\
         echo 'hello from the container'\n\
         echo '{hash}  /mnt/lake/train/shard-0.bin' | sha256sum -c - > \"$LAKE_AGENT_OUTPUT_DIR/check.txt\"\n\
         env > \"$LAKE_AGENT_OUTPUT_DIR/env.txt\"\n\
         if touch /mnt/lake/new 2>/dev/null; then echo rw; else echo ro; fi > \"$LAKE_AGENT_OUTPUT_DIR/lake-mode.txt\"\n\
         pwd > \"$LAKE_AGENT_OUTPUT_DIR/pwd.txt\"\n\
         echo 'model weights' > \"$LAKE_AGENT_OUTPUT_DIR/result.txt\"\n"
    )
}

#[test]
fn container_reads_the_lake_checks_its_hash_and_writes_output() {
    if !podman_available() {
        return;
    }
    let image = busybox_image();
    let az = Azurite::start();
    let (node, hash) = lake_node(&az, "");
    let _cleanup = Containers(vec!["lake-agent-job1-task1-0".into()]);
    let task_dir = node.task_dir();
    let script = job_script(&hash);
    let out = node.agent(
        &[
            "run",
            "--image",
            image,
            "--no-upload",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[
            ("AZ_BATCH_TASK_WORKING_DIR", task_dir.to_str().unwrap()),
            ("AZ_BATCH_JOB_ID", "job1"),
            ("AZ_BATCH_TASK_ID", "task1"),
            ("AZ_BATCH_AUTHENTICATION_TOKEN", "batch-token-secret"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The container's log is streamed through the agent.
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from the container"));

    let o = task_dir.join("output");
    assert_eq!(
        read(&o.join("check.txt")).trim(),
        "/mnt/lake/train/shard-0.bin: OK"
    );
    assert_eq!(read(&o.join("lake-mode.txt")).trim(), "ro");
    assert_eq!(read(&o.join("pwd.txt")).trim(), task_dir.to_str().unwrap());
    assert_eq!(read(&o.join("result.txt")), "model weights\n");
    let env = read(&o.join("env.txt"));
    for want in [
        "AZ_BATCH_JOB_ID=job1",
        "LAKE_AGENT_TASK_ID=task1",
        "LAKE_AGENT_OUTPUT_DIR=/mnt/output",
        "NNODES=1",
        "NODE_RANK=0",
        "MASTER_PORT=6105",
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from:\n{env}"
        );
    }
    assert!(
        !env.contains("batch-token-secret"),
        "credentials stay out:\n{env}"
    );
    assert!(
        !env.contains("AZURE_STORAGE"),
        "credentials stay out:\n{env}"
    );
    // The task record sits with the output, and nothing is left of the container.
    let record: serde_json::Value =
        serde_json::from_str(&read(&o.join(".lake-agent/task.json"))).unwrap();
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["image"], image);
    let ps = std::process::Command::new("podman")
        .args(PODMAN_ARGS)
        .args(["ps", "-a", "-q", "--filter", "name=lake-agent-job1-task1-0"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the container was removed");
}

#[test]
fn run_uploads_the_output_to_runs_job_task() {
    if !podman_available() {
        return;
    }
    let image = busybox_image();
    let az = Azurite::start();
    let (node, hash) = lake_node(&az, "");
    let _cleanup = Containers(vec!["lake-agent-job2-task2-0".into()]);
    let task_dir = node.task_dir();
    let out = node.agent(
        &[
            "run",
            "--image",
            image,
            "--",
            "sh",
            "-c",
            &job_script(&hash),
        ],
        &[
            ("AZ_BATCH_TASK_WORKING_DIR", task_dir.to_str().unwrap()),
            ("AZ_BATCH_JOB_ID", "job2"),
            ("AZ_BATCH_TASK_ID", "task2"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("output uploaded to az://devstoreaccount1/datasets/runs/job2/task2"),
        "{}",
        text(&out)
    );
    let names = az.list_blobs(CONTAINER, "runs/job2/task2/");
    for want in ["result.txt", "check.txt", ".lake-agent/task.json"] {
        assert!(
            names.contains(&format!("runs/job2/task2/{want}")),
            "{want} not in {names:?}"
        );
    }
    assert_eq!(
        az.get_blob(CONTAINER, "runs/job2/task2/result.txt"),
        b"model weights\n"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.status_dir().join("tasks/job2/task2.node-0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["uploaded"], true);
}

#[test]
fn a_failed_upload_keeps_the_output_and_says_where() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let mut node = Node::new(
        Some(&az),
        &[],
        &format!(
            "[output]\nlake = \"az://devstoreaccount1/{CONTAINER}\"\nendpoint = \"{}\"\n",
            az.endpoint()
        ),
    );
    // The lake refuses the key, so the upload fails after the command succeeded.
    node.env = vec![(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        az.connection_string().replace(
            common::azurite::KEY,
            "d3Jvbmcga2V5IGZvciB0aGUgdGVzdCBvbmx5Cg==",
        ),
    )];
    let out_dir = node.path().join("out");
    let out = node.agent(
        &[
            "run",
            "--job",
            "j",
            "--task",
            "t",
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo precious > \"$LAKE_AGENT_OUTPUT_DIR/weights.bin\"",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("lake-agent: error: the upload of"))
        .unwrap_or_else(|| panic!("no upload error line:\n{err}"));
    assert!(
        line.ends_with(&format!(
            "the task's output is kept in {}",
            out_dir.display()
        )),
        "{line}"
    );
    assert!(
        line.contains("az://devstoreaccount1/datasets/runs/j/t"),
        "{line}"
    );
    assert!(
        !err.contains("d3Jvbmcga2V5"),
        "the key is never shown: {err}"
    );
    assert_eq!(read(&out_dir.join("weights.bin")), "precious\n");
    assert!(az.list_blobs(CONTAINER, "runs/").is_empty());
}

#[test]
fn a_missing_image_fails_with_status_125_and_says_so() {
    if !podman_available() {
        return;
    }
    let node = Node::new(None, &[], &podman_config());
    let out = node.agent(
        &[
            "run",
            "--image",
            "localhost/lake-agent-test-missing:0",
            "--no-upload",
            "--",
            "true",
        ],
        &[(
            "AZ_BATCH_TASK_WORKING_DIR",
            node.task_dir().to_str().unwrap(),
        )],
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "lake-agent: error: image localhost/lake-agent-test-missing:0 is not on this node and cannot be pulled: podman pull"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn the_containers_exit_status_is_the_agents() {
    if !podman_available() {
        return;
    }
    let image = busybox_image();
    let node = Node::new(None, &[], &podman_config());
    let _cleanup = Containers(vec!["lake-agent-j-failing-0".into()]);
    let task_dir = node.task_dir();
    let out = node.agent(
        &[
            "run",
            "--image",
            image,
            "--job",
            "j",
            "--task",
            "failing",
            "--no-upload",
            "--",
            "sh",
            "-c",
            "echo 'loss is NaN' >&2; exit 3",
        ],
        &[("AZ_BATCH_TASK_WORKING_DIR", task_dir.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(stderr(&out).contains("loss is NaN"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the command exited with status 3"));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.status_dir().join("tasks/j/failing.node-0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["exit_code"], 3);
}

#[test]
fn run_refuses_to_start_when_the_lake_is_not_mounted() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let node = Node::new(
        Some(&az),
        &[LakeDef {
            name: "datasets",
            container: CONTAINER,
            extra: String::new(),
        }],
        "",
    );
    let out = node.agent(&["run", "--no-upload", "--", "true"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("lake \"datasets\" is not mounted at"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("run `lake-agent bootstrap` first"));
}

#[test]
fn a_two_host_batch_task_gets_torchrun_env_and_a_hostfile() {
    // Without an image the command runs on the host, with the env a container would get.
    let node = Node::new(None, &[], "");
    let task_dir = node.task_dir();
    let script = "env > \"$LAKE_AGENT_OUTPUT_DIR/env.txt\"; \
                  cp \"$LAKE_AGENT_HOSTFILE\" \"$LAKE_AGENT_OUTPUT_DIR/hostfile\"; \
                  pwd > \"$LAKE_AGENT_OUTPUT_DIR/pwd.txt\"";
    let run = |task: &str, is_master: &str| {
        let out_dir = node.path().join(task);
        let out = node.agent(
            &[
                "run",
                "--no-upload",
                "--output-dir",
                out_dir.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                script,
            ],
            &[
                ("AZ_BATCH_NODE_ID", "tvmps_node"),
                ("AZ_BATCH_JOB_ID", "train"),
                ("AZ_BATCH_TASK_ID", task),
                ("AZ_BATCH_TASK_WORKING_DIR", task_dir.to_str().unwrap()),
                // Batch's order; the master is the second host, and this node (127.0.0.1)
                // is the other one.
                ("AZ_BATCH_HOST_LIST", "127.0.0.1,127.0.0.2"),
                ("AZ_BATCH_MASTER_NODE", "127.0.0.2:6000"),
                ("AZ_BATCH_IS_CURRENT_NODE_MASTER", is_master),
                ("AZ_BATCH_AUTHENTICATION_TOKEN", "batch-token-secret"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let env: std::collections::BTreeMap<String, String> = read(&out_dir.join("env.txt"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (out_dir, env)
    };

    let (out_dir, env) = run("worker", "false");
    assert_eq!(env["MASTER_ADDR"], "127.0.0.2");
    assert_eq!(env["MASTER_PORT"], "6105", "not Batch's reserved 6000");
    assert_eq!(env["NNODES"], "2");
    assert_eq!(env["NODE_RANK"], "1");
    assert_eq!(env["NPROC_PER_NODE"], "1");
    assert_eq!(env["WORLD_SIZE"], "2");
    assert_eq!(env["AZ_BATCH_JOB_ID"], "train");
    assert!(!env.contains_key("AZ_BATCH_AUTHENTICATION_TOKEN"));
    assert_eq!(
        read(&out_dir.join("hostfile")),
        "127.0.0.2 slots=1\n127.0.0.1 slots=1\n"
    );
    assert_eq!(
        read(&out_dir.join("pwd.txt")).trim(),
        task_dir.to_str().unwrap()
    );

    let (_, env) = run("master", "true");
    assert_eq!(env["NODE_RANK"], "0");
    assert_eq!(env["MASTER_ADDR"], "127.0.0.2");
}

#[test]
fn lake_rw_lets_the_container_write_into_the_lake() {
    if !podman_available() {
        return;
    }
    let image = busybox_image();
    let az = Azurite::start();
    let (node, _) = lake_node(&az, "");
    let _cleanup = Containers(vec!["lake-agent-j-rw-0".into()]);
    let out = node.agent(
        &[
            "run",
            "--image",
            image,
            "--lake-rw",
            "--job",
            "j",
            "--task",
            "rw",
            "--no-upload",
            "--",
            "sh",
            "-c",
            "mkdir -p /mnt/lake/features && echo v2 > /mnt/lake/features/list.txt",
        ],
        &[(
            "AZ_BATCH_TASK_WORKING_DIR",
            node.task_dir().to_str().unwrap(),
        )],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Written through the bind-mounted lake: in the lake once the file is closed.
    assert_eq!(az.get_blob(CONTAINER, "features/list.txt"), b"v2\n");
}

/// A task on a Spot node that is preempted mid-run (the agent and its command killed, as the
/// node vanishing kills them) and run again by Batch on a dedicated node: the second attempt
/// says what happened to the first, the first's output in the lake stays, and `lake-agent
/// cost` over the lake's runs/ prices Spot, dedicated and preempted time in rows of their own.
#[test]
fn a_preempted_spot_attempt_is_named_by_the_next_and_priced_by_cost() {
    use std::os::unix::process::CommandExt;
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let node = Node::new(
        Some(&az),
        &[LakeDef {
            name: "datasets",
            container: CONTAINER,
            extra: String::new(),
        }],
        "[output]\nheartbeat_seconds = 1\n\n[prices]\nStandard_NC24ads_A100_v4 = 3600.0\n\n\
         [prices.spot]\nStandard_NC24ads_A100_v4 = 720.0\n",
    );
    node.bootstrap();
    let task_dir = node.task_dir();
    let env = |node_id: &'static str, dedicated: &'static str| {
        let mut e = vec![
            (
                "AZ_BATCH_TASK_WORKING_DIR",
                task_dir.to_str().unwrap().to_string(),
            ),
            ("AZ_BATCH_JOB_ID", "job9".to_string()),
            ("AZ_BATCH_TASK_ID", "t9".to_string()),
            ("AZ_BATCH_NODE_ID", node_id.to_string()),
            ("AZ_BATCH_NODE_IS_DEDICATED", dedicated.to_string()),
            ("LAKE_AGENT_VM_SIZE", "Standard_NC24ads_A100_v4".to_string()),
        ];
        e.extend(node.env.iter().map(|(k, v)| (k.as_str(), v.clone())));
        e
    };
    // Attempt 1, on a Spot node, in a process group of its own so the "preemption" takes
    // the agent and its command at once.
    let mut first = agent_common::agent(
        &[
            "--config",
            node.config.to_str().unwrap(),
            "run",
            "--host",
            "--",
            "sh",
            "-c",
            "echo partial > \"$LAKE_AGENT_OUTPUT_DIR/p.txt\"; sleep 60",
        ],
        &env("spot-1", "false")
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let mut first = first
        .current_dir(node.path())
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let attempts = || az.list_blobs(CONTAINER, "runs/job9/t9/.lake-agent/attempts/");
    let beat = common::mount::wait_for(std::time::Duration::from_secs(30), || {
        attempts().first().is_some_and(|name| {
            let r: serde_json::Value =
                serde_json::from_slice(&az.get_blob(CONTAINER, name)).unwrap_or_default();
            r["last_seen"] != r["started_at"]
        })
    });
    assert!(
        beat,
        "the attempt is in the lake and its heartbeat moves on"
    );
    // SAFETY: kill(2) of the process group this test started.
    unsafe { libc::kill(-(first.id() as i32), libc::SIGKILL) };
    first.wait().unwrap();

    // Attempt 2, on a dedicated node, runs to the end.
    let e = env("dedicated-1", "true");
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = node.agent(
        &[
            "run",
            "--host",
            "--",
            "sh",
            "-c",
            "echo done > \"$LAKE_AGENT_OUTPUT_DIR/result.txt\"",
        ],
        &e,
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("an earlier attempt of this task on node spot-1 (spot)")
            && said.contains("preempted or lost"),
        "{}",
        text(&out)
    );
    assert_eq!(attempts().len(), 2, "{:?}", attempts());
    assert_eq!(az.get_blob(CONTAINER, "runs/job9/t9/result.txt"), b"done\n");

    // The cost of it all, from the records in the lake (read through the mount).
    // The mount shows the last record once its listing is older than its 1 s TTL.
    let runs = node.lakes[0].join("runs");
    let mut table = String::new();
    common::mount::wait_for(std::time::Duration::from_secs(10), || {
        let out = node.agent(&["cost", runs.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", text(&out));
        table = String::from_utf8_lossy(&out.stdout).into_owned();
        table.contains("dedicated")
    });
    let row = |priority: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with("job9") && l.contains(priority))
            .unwrap_or_else(|| panic!("no {priority} row:\n{table}"))
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    // JOB VM-SIZE PRIORITY NODES TASKS NODE-HOURS PRICE/H COST
    let dedicated = row("dedicated");
    assert_eq!(dedicated[2..5], ["dedicated", "1", "1"], "{table}");
    assert_eq!(dedicated[6], "3600.00", "{table}");
    let lost = row("spot, preempted");
    assert_eq!(lost[2..5], ["spot, preempted", "1", "1"], "{table}");
    assert_eq!(lost[6], "720.00", "the Spot price: {table}");
    let lost_cost: f64 = lost[7].parse().unwrap();
    assert!(
        lost_cost > 0.0,
        "the heartbeats measured the time lost: {table}"
    );
}

/// A lake mounted from a snapshot (`[[lake]] manifest`): bootstrap mounts and warms exactly
/// the snapshot (read-only, later blobs not shown), and the task's record and `lake-agent
/// cost` name the snapshot the job read.
#[test]
fn a_lake_mounted_from_a_snapshot_is_named_by_the_task_record_and_by_cost() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    az.put_blob(CONTAINER, "train/shard-0.bin", &pseudo_random(3000, 7));
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("train.manifest");
    let cs = az.connection_string();
    let endpoint = az.endpoint();
    let out = common::mount::lakemount(
        &[
            "snapshot",
            &format!("az://{}/{CONTAINER}", common::azurite::ACCOUNT),
            "-o",
            manifest.to_str().unwrap(),
            "--endpoint",
            &endpoint,
        ],
        &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let identity: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&manifest)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let identity = identity["identity"].as_str().unwrap().to_string();
    az.put_blob(CONTAINER, "train/shard-1.bin", b"added later");

    let node = Node::new(
        Some(&az),
        &[LakeDef {
            name: "datasets",
            container: CONTAINER,
            extra: format!("manifest = \"{}\"\nwarm = [\"\"]", manifest.display()),
        }],
        "",
    );
    let out = node.bootstrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("warmed"),
        "{}",
        text(&out)
    );
    let mp = &node.lakes[0];
    assert!(mp.join("train/shard-0.bin").exists());
    assert!(
        !mp.join("train/shard-1.bin").exists(),
        "the snapshot's tree"
    );
    assert_eq!(
        common::mount::errno(std::fs::write(mp.join("x"), b"x")),
        Some(libc::EROFS)
    );

    let out_dir = node.path().join("out");
    let out = node.agent(
        &[
            "run",
            "--host",
            "--job",
            "j1",
            "--task",
            "t1",
            "--no-upload",
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--",
            "true",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.status_dir().join("tasks/j1/t1.node-0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["snapshots"][0]["lake"], "datasets");
    assert_eq!(record["snapshots"][0]["identity"], identity.as_str());
    let out = node.agent(&["cost"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("j1 read snapshot datasets: {identity}")),
        "{}",
        text(&out)
    );
}
