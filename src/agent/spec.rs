//! Batch pool, job and task specs as the Batch REST API (and so `az batch pool create
//! --json-file`, `az batch job create --json-file`, `az batch task create --json-file`) takes
//! them. A pool starts nodes with `lake-agent bootstrap`, pre-fetches the images and scales to
//! zero nodes when no task is pending.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use super::config::AgentConfig;

/// Where a start task's resource files land, and so where tasks find them.
const START_WD: &str = "$AZ_BATCH_NODE_STARTUP_DIR/wd";

/// Quotes `s` for /bin/sh: Batch runs command lines without a shell.
pub fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn sh_c(script: &str) -> String {
    format!("/bin/sh -c {}", sh_quote(script))
}

/// Scales to the nodes pending tasks need, down to zero when none is pending; nodes go only
/// once their task is done.
pub fn autoscale_formula(max_nodes: u32, spot_nodes: u32, nodes_per_task: u32) -> String {
    // Spot nodes take the pending work first (up to `spot_nodes`), dedicated ones the rest.
    format!(
        "$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5);\n\
         $tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) : max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 5)));\n\
         $wanted = $tasks * {nodes_per_task};\n\
         $TargetLowPriorityNodes = min({spot_nodes}, $wanted);\n\
         $TargetDedicatedNodes = min({max_nodes}, max(0, $wanted - $TargetLowPriorityNodes));\n\
         $NodeDeallocationOption = taskcompletion;"
    )
}

/// The node agent of an image: given, else from an `ubuntu-hpc` SKU (`2404`: Ubuntu 24.04).
pub fn node_agent_sku(p: &super::config::PoolConfig) -> Result<String> {
    if let Some(id) = &p.node_agent_sku_id {
        return Ok(id.clone());
    }
    let sku = p.image_sku.as_str();
    match (sku.len(), sku.chars().all(|c| c.is_ascii_digit())) {
        (4, true) => Ok(format!("batch.node.ubuntu {}.{}", &sku[..2], &sku[2..])),
        _ => bail!(
            "pool.image_sku {sku:?} names no Ubuntu release: set pool.node_agent_sku_id \
             (e.g. \"batch.node.ubuntu 24.04\")"
        ),
    }
}

/// An ISO 8601 duration as Batch writes it back: `PT2H`, `PT1H30M`, `PT45M`.
pub fn iso_minutes(minutes: u64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("PT{m}M"),
        (h, 0) => format!("PT{h}H"),
        (h, m) => format!("PT{h}H{m}M"),
    }
}

fn env_settings(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Array(
        pairs
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

fn admin() -> Value {
    json!({"autoUser": {"scope": "pool", "elevationLevel": "admin"}})
}

pub fn pool_spec(cfg: &AgentConfig) -> Result<Value> {
    let p = &cfg.pool;
    let need = |key: &str, v: &Option<String>| -> Result<String> {
        match v {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => bail!(
                "pool.{key} is not set: put the file where nodes can fetch it (e.g. a blob \
                 readable by pool.resource_identity, or with a SAS) and set its URL"
            ),
        }
    };
    let identity = p
        .resource_identity
        .as_ref()
        .map(|id| json!({"resourceId": id}));
    let file = |url: String, path: &str, mode: &str| {
        let mut f = json!({"httpUrl": url, "filePath": path, "fileMode": mode});
        if let Some(id) = &identity {
            f["identityReference"] = id.clone();
        }
        f
    };
    let resource_files = vec![
        file(need("agent_url", &p.agent_url)?, "lake-agent", "0755"),
        file(
            need("lakemount_url", &p.lakemount_url)?,
            "lakemount",
            "0755",
        ),
        file(
            need("config_url", &p.config_url)?,
            "lake-agent.toml",
            "0644",
        ),
    ];
    let mut env = vec![("LAKE_AGENT_VM_SIZE".to_string(), p.vm_size.clone())];
    env.extend(p.env.clone());
    let start_task = json!({
        "commandLine": sh_c(&format!(
            "exec \"{START_WD}/lake-agent\" bootstrap --config \"{START_WD}/lake-agent.toml\""
        )),
        "resourceFiles": resource_files,
        "environmentSettings": env_settings(env),
        "userIdentity": admin(),
        "maxTaskRetryCount": 2,
        // A node whose mount is not ready must take no task.
        "waitForSuccess": true,
    });

    let mut container = Map::new();
    container.insert("type".into(), json!(p.container_type));
    let images = cfg.container.all_images();
    if !images.is_empty() {
        container.insert("containerImageNames".into(), json!(images));
    }
    if let Some(server) = &p.registry_server {
        let Some(id) = &identity else {
            bail!("pool.registry_server needs pool.resource_identity (the identity that may pull)");
        };
        container.insert(
            "containerRegistries".into(),
            json!([{"registryServer": server, "identityReference": id}]),
        );
    }

    let mut pool = json!({
        "id": p.id,
        "vmSize": p.vm_size,
        "virtualMachineConfiguration": {
            "imageReference": {
                "publisher": p.image_publisher,
                "offer": p.image_offer,
                "sku": p.image_sku,
                "version": p.image_version,
            },
            "nodeAgentSKUId": node_agent_sku(p)?,
            "containerConfiguration": container,
        },
        "enableAutoScale": true,
        "autoScaleFormula": autoscale_formula(p.max_nodes, p.spot_nodes, p.nodes_per_task),
        "autoScaleEvaluationInterval": "PT5M",
        "taskSlotsPerNode": 1,
        "startTask": start_task,
    });
    if p.nodes_per_task > 1 {
        pool["enableInterNodeCommunication"] = json!(true);
    }
    Ok(pool)
}

pub fn job_spec(cfg: &AgentConfig, id: Option<&str>) -> Value {
    let j = &cfg.job;
    json!({
        "id": id.unwrap_or(&j.id),
        "priority": j.priority,
        "poolInfo": {"poolId": cfg.pool.id},
        "constraints": {"maxTaskRetryCount": j.max_task_retries},
        // Tasks are added after the job exists: terminating when "all" (none yet) are done
        // would end it at once. Set onAllTasksComplete after adding them.
        "onAllTasksComplete": "noaction",
    })
}

pub struct TaskRequest<'a> {
    pub id: &'a str,
    pub image: Option<&'a str>,
    pub nodes: Option<u32>,
    pub command: &'a [String],
}

pub fn task_spec(cfg: &AgentConfig, t: &TaskRequest) -> Result<Value> {
    let nodes = t.nodes.unwrap_or(cfg.pool.nodes_per_task);
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let most = cfg.pool.max_nodes + cfg.pool.spot_nodes;
    if nodes > most {
        bail!(
            "--nodes {nodes} is more than the pool may have (pool.max_nodes + pool.spot_nodes = {most})"
        );
    }
    let mut agent =
        format!("\"{START_WD}/lake-agent\" run --config \"{START_WD}/lake-agent.toml\"");
    if let Some(image) = t.image {
        agent.push_str(&format!(" --image {}", sh_quote(image)));
    }
    if !t.command.is_empty() {
        agent.push_str(" --");
        for a in t.command {
            agent.push(' ');
            agent.push_str(&sh_quote(a));
        }
    }
    let mut constraints = json!({"maxTaskRetryCount": cfg.job.max_task_retries});
    if cfg.job.max_task_minutes > 0 {
        constraints["maxWallClockTime"] = json!(iso_minutes(cfg.job.max_task_minutes));
    }
    let mut task = json!({
        "id": t.id,
        "commandLine": sh_c(&format!("exec {agent}")),
        // The agent runs the container runtime and reads the node's status: admin.
        "userIdentity": admin(),
        "constraints": constraints,
    });
    if nodes > 1 {
        // Batch runs the command line on the primary only; the coordination command runs on
        // every node first, and starts the other ranks in the background.
        task["multiInstanceSettings"] = json!({
            "numberOfInstances": nodes,
            "coordinationCommandLine": sh_c(&format!(
                "if [ \"$AZ_BATCH_IS_CURRENT_NODE_MASTER\" != true ]; then nohup {agent} \
                 > \"$AZ_BATCH_TASK_WORKING_DIR/lake-agent-rank.log\" 2>&1 & fi"
            )),
        });
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig::parse(
            r#"
[container]
image = "myacr.azurecr.io/train:1"

[pool]
agent_url = "https://acct.blob.core.windows.net/bin/lake-agent"
lakemount_url = "https://acct.blob.core.windows.net/bin/lakemount"
config_url = "https://acct.blob.core.windows.net/bin/lake-agent.toml"
nodes_per_task = 2
"#,
        )
        .unwrap()
    }

    #[test]
    fn durations_are_written_as_batch_writes_them() {
        assert_eq!(iso_minutes(45), "PT45M");
        assert_eq!(iso_minutes(120), "PT2H");
        assert_eq!(iso_minutes(90), "PT1H30M");
    }

    #[test]
    fn shell_quoting_survives_odd_arguments() {
        assert_eq!(sh_quote("plain-arg_1.py"), "plain-arg_1.py");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b$c"), "'a b$c'");
    }

    #[test]
    fn the_pool_bootstraps_with_the_agent_and_scales_to_zero() {
        let p = pool_spec(&cfg()).unwrap();
        let st = &p["startTask"];
        assert!(st["commandLine"]
            .as_str()
            .unwrap()
            .contains("lake-agent\" bootstrap --config"));
        assert_eq!(st["waitForSuccess"], json!(true));
        assert_eq!(st["userIdentity"]["autoUser"]["elevationLevel"], "admin");
        assert_eq!(st["resourceFiles"].as_array().unwrap().len(), 3);
        assert_eq!(
            p["virtualMachineConfiguration"]["containerConfiguration"]["containerImageNames"],
            json!(["myacr.azurecr.io/train:1"])
        );
        let f = p["autoScaleFormula"].as_str().unwrap();
        assert!(
            f.contains("$wanted = $tasks * 2;")
                && f.contains("$TargetLowPriorityNodes = min(0, $wanted);")
                && f.contains(
                    "$TargetDedicatedNodes = min(4, max(0, $wanted - $TargetLowPriorityNodes));"
                ),
            "{f}"
        );
        assert_eq!(p["enableInterNodeCommunication"], json!(true));
    }

    #[test]
    fn a_pool_without_binary_urls_is_refused_with_the_key() {
        let e = pool_spec(&AgentConfig::default()).unwrap_err().to_string();
        assert!(e.contains("pool.agent_url"), "{e}");
    }

    #[test]
    fn multi_node_tasks_start_the_other_ranks_from_the_coordination_command() {
        let cmd = ["torchrun".to_string(), "train.py".to_string()];
        let t = task_spec(
            &cfg(),
            &TaskRequest {
                id: "t1",
                image: None,
                nodes: None,
                command: &cmd,
            },
        )
        .unwrap();
        assert_eq!(t["multiInstanceSettings"]["numberOfInstances"], json!(2));
        let coord = t["multiInstanceSettings"]["coordinationCommandLine"]
            .as_str()
            .unwrap();
        assert!(coord.contains("AZ_BATCH_IS_CURRENT_NODE_MASTER"), "{coord}");
        assert!(t["commandLine"]
            .as_str()
            .unwrap()
            .ends_with("-- torchrun train.py'"));
        let one = task_spec(
            &cfg(),
            &TaskRequest {
                id: "t2",
                image: Some("img:1"),
                nodes: Some(1),
                command: &cmd,
            },
        )
        .unwrap();
        assert!(one.get("multiInstanceSettings").is_none());
        assert!(one["commandLine"]
            .as_str()
            .unwrap()
            .contains("--image img:1"));
    }
}
