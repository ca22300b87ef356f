//! What lake-agent writes for the submit side, checked by the real consumers: pool, job and
//! task JSON by the `azure-batch==14.2.0` SDK models (from the venv `scripts/install-deps`
//! makes), unit files by `systemd-analyze verify`; and `lake-agent cost` over real task records.

#[path = "common/agent.rs"]
mod agent_common;
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agent_common::{agent, require, stderr, text, Node};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The venv `scripts/install-deps` creates with azure-batch (LAKE_AGENT_TEST_PYTHON overrides).
fn batch_python() -> Option<PathBuf> {
    let p = std::env::var_os("LAKE_AGENT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target/agent-venv/bin/python"));
    let usable = Command::new(&p)
        .args(["-c", "import azure.batch.models"])
        .output()
        .is_ok_and(|o| o.status.success());
    require("python with azure-batch (target/agent-venv)", usable).then_some(p)
}

/// Runs the SDK validation; panics with its findings.
fn validate(python: &Path, kind: &str, json: &[u8]) {
    let mut child = Command::new(python)
        .arg(Path::new(REPO).join("tests/common/validate_batch_spec.py"))
        .arg(kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(json).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{kind} spec rejected by the azure-batch models:\n{}\n{}",
        text(&out),
        String::from_utf8_lossy(json)
    );
}

const SUBMIT_CONFIG: &str = r#"
[container]
image = "myacr.azurecr.io/pytorch-lake:2.4"
images = ["myacr.azurecr.io/eval:1"]
command = ["torchrun", "train.py"]

[pool]
id = "train-gpu"
vm_size = "Standard_NC24s_v3"
max_nodes = 8
spot_nodes = 6
nodes_per_task = 2
agent_url = "https://acct.blob.core.windows.net/bin/lake-agent"
lakemount_url = "https://acct.blob.core.windows.net/bin/lakemount"
config_url = "https://acct.blob.core.windows.net/bin/lake-agent.toml"
resource_identity = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/batch-nodes"
registry_server = "myacr.azurecr.io"
env = { AZURE_CLIENT_ID = "00000000-0000-0000-0000-000000000000" }

[job]
id = "resnet-42"
max_task_minutes = 90
max_task_retries = 1
"#;

fn spec(config: &Path, args: &[&str]) -> Vec<u8> {
    let mut a = vec!["--config", config.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = agent(&a, &[]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    out.stdout
}

#[test]
fn pool_job_and_task_specs_pass_the_azure_batch_models() {
    let Some(python) = batch_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lake-agent.toml");
    std::fs::write(&cfg, SUBMIT_CONFIG).unwrap();

    let pool = spec(&cfg, &["pool-spec"]);
    validate(&python, "pool", &pool);
    let p: serde_json::Value = serde_json::from_slice(&pool).unwrap();
    assert_eq!(p["vmSize"], "Standard_NC24s_v3");
    assert_eq!(p["enableAutoScale"], true);
    let formula = p["autoScaleFormula"].as_str().unwrap();
    assert!(formula.contains("$wanted = $tasks * 2;"), "{formula}");
    assert!(
        formula.contains("$TargetLowPriorityNodes = min(6, $wanted);"),
        "Spot nodes take the work first: {formula}"
    );
    assert!(
        formula
            .contains("$TargetDedicatedNodes = min(8, max(0, $wanted - $TargetLowPriorityNodes));"),
        "{formula}"
    );
    let image = &p["virtualMachineConfiguration"];
    assert_eq!(image["imageReference"]["offer"], "ubuntu-hpc");
    assert_eq!(image["imageReference"]["sku"], "2404");
    assert_eq!(image["nodeAgentSKUId"], "batch.node.ubuntu 24.04");
    assert_eq!(p["startTask"]["waitForSuccess"], true);
    assert_eq!(p["enableInterNodeCommunication"], true);

    validate(&python, "job", &spec(&cfg, &["job-spec"]));
    let job: serde_json::Value =
        serde_json::from_slice(&spec(&cfg, &["job-spec", "--id", "resnet-43"])).unwrap();
    assert_eq!(job["id"], "resnet-43");
    assert_eq!(job["poolInfo"]["poolId"], "train-gpu");

    // A two-node task from the config's command, and a one-node task with its own.
    let multi = spec(&cfg, &["task-spec", "--id", "t1"]);
    validate(&python, "task", &multi);
    let t: serde_json::Value = serde_json::from_slice(&multi).unwrap();
    assert_eq!(t["multiInstanceSettings"]["numberOfInstances"], 2);
    assert_eq!(t["constraints"]["maxWallClockTime"], "PT1H30M");
    let single = spec(
        &cfg,
        &[
            "task-spec",
            "--id",
            "t2",
            "--nodes",
            "1",
            "--",
            "python",
            "eval.py",
            "--name",
            "it's",
        ],
    );
    validate(&python, "task", &single);

    // A pool of a minimal config (defaults everywhere but the binaries' URLs) is valid too.
    let minimal = dir.path().join("minimal.toml");
    let urls: String = SUBMIT_CONFIG
        .lines()
        .filter(|l| l.contains("_url ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&minimal, format!("[pool]\n{urls}")).unwrap();
    validate(&python, "pool", &spec(&minimal, &["pool-spec"]));

    // Ubuntu 22.04 stays selectable: its node agent follows the SKU.
    let jammy = dir.path().join("jammy.toml");
    std::fs::write(&jammy, format!("[pool]\nimage_sku = \"2204\"\n{urls}")).unwrap();
    let pool = spec(&jammy, &["pool-spec"]);
    validate(&python, "pool", &pool);
    let p: serde_json::Value = serde_json::from_slice(&pool).unwrap();
    assert_eq!(
        p["virtualMachineConfiguration"]["nodeAgentSKUId"],
        "batch.node.ubuntu 22.04"
    );
}

#[test]
fn a_pool_spec_without_the_binaries_urls_says_which_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[pool]\nvm_size = \"Standard_NC24s_v3\"\n").unwrap();
    let out = agent(&["--config", cfg.to_str().unwrap(), "pool-spec"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("lake-agent: error: pool.agent_url is not set"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert!(out.stdout.is_empty(), "no half spec on stdout");
}

#[test]
fn cost_adds_up_node_hours_per_job_from_task_records() {
    let node = Node::new(None, &[], "[prices]\nStandard_NC24s_v3 = 3600.0\n");
    // The VM size comes from the pool spec's start task environment.
    let vm = [("LAKE_AGENT_VM_SIZE", "Standard_NC24s_v3")];
    for (job, task, cmd) in [
        ("train", "t1", "sleep 1"),
        ("train", "t2", "true"),
        ("eval", "e1", "true"),
    ] {
        let out_dir = node.path().join(format!("out-{task}"));
        let out = node.agent(
            &[
                "run",
                "--job",
                job,
                "--task",
                task,
                "--no-upload",
                "--output-dir",
                out_dir.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                cmd,
            ],
            &vm,
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let seconds = |job: &str| -> f64 {
        std::fs::read_dir(node.status_dir().join("tasks").join(job))
            .unwrap()
            .map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
                v["seconds"].as_f64().unwrap()
            })
            .sum()
    };
    let (train, eval) = (seconds("train"), seconds("eval"));
    assert!(train >= 1.0);

    let out = node.agent(&["cost"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |job: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(job))
            .unwrap_or_else(|| panic!("no {job} row:\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert!(table.starts_with("JOB"), "{table}");
    // JOB VM-SIZE PRIORITY NODES TASKS NODE-HOURS PRICE/H COST; 3600 an hour: a second
    // costs 1. Outside Batch the priority is not known (`-`).
    let r = row("train");
    assert_eq!(r[1..5], ["Standard_NC24s_v3", "-", "1", "2"], "{table}");
    assert_eq!(r[7], format!("{train:.2}"), "{table}");
    assert_eq!(row("eval")[7], format!("{eval:.2}"), "{table}");
    assert_eq!(row("TOTAL")[2], format!("{:.2}", train + eval), "{table}");

    // The records that travel with each task's output give the same sums.
    let out = node.agent(
        &[
            "cost",
            node.path().join("out-t1").to_str().unwrap(),
            node.path().join("out-t2").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let from_outputs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        from_outputs.contains(&format!("{train:.2}")),
        "{from_outputs}"
    );

    let out = node.agent(&["cost", "/nonexistent/runs"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/runs is not a directory"));
}

/// `systemd-analyze verify` of a unit from `systemd/`, its binaries pointed at the ones built
/// here (verify insists they exist).
fn verify_unit(file: &str, instance: Option<&str>) {
    let unit = std::fs::read_to_string(Path::new(REPO).join("systemd").join(file)).unwrap();
    let unit = unit
        .replace("/usr/local/bin/lakemount", common::mount::lakemount_bin())
        .replace("/usr/local/bin/lake-agent", agent_common::agent_bin());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), unit).unwrap();
    let name = match instance {
        Some(i) => {
            let n = file.replace("@.", &format!("@{i}."));
            std::os::unix::fs::symlink(file, dir.path().join(&n)).unwrap();
            n
        }
        None => file.to_string(),
    };
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join(&name))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{name}: {}",
        text(&out)
    );
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let present = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require("systemd-analyze", present) {
        return;
    }
    verify_unit("lakemount@.service", Some("datasets"));
    verify_unit("lake-agent.service", None);
}

#[test]
fn the_framework_image_recipe_copies_files_that_exist_and_parse() {
    let dir = Path::new(REPO).join("docker/pytorch");
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let copies: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(copies.len(), 2, "{dockerfile}");
    for src in copies {
        assert!(
            Path::new(REPO).join(src).is_file(),
            "COPY {src}: no such file"
        );
    }
    assert!(dockerfile.contains("/mnt/lake"));
    let out = Command::new("sh")
        .arg("-n")
        .arg(dir.join("torchrun-lake"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Compiled, not run: the image has torch, this machine need not.
    let out = Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(dir.join("train.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// The configuration shown in the README's "Running on Azure Batch" section.
fn readme_config() -> String {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Running on Azure Batch")
        .expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..];
    let end = block.find("```").unwrap();
    block[..end]
        .lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_configuration_loads_and_gives_valid_specs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lake-agent.toml");
    std::fs::write(&cfg, readme_config()).unwrap();
    let pool = spec(&cfg, &["pool-spec"]);
    let job = spec(&cfg, &["job-spec"]);
    let task = spec(
        &cfg,
        &[
            "task-spec",
            "--id",
            "epoch-1",
            "--",
            "torchrun-lake",
            "/workspace/train.py",
        ],
    );
    let Some(python) = batch_python() else {
        return;
    };
    validate(&python, "pool", &pool);
    validate(&python, "job", &job);
    validate(&python, "task", &task);
}
