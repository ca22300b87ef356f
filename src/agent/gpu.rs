//! GPU detection with `nvidia-smi -L`. No nvidia-smi means no GPUs (a CPU node, a workstation);
//! an nvidia-smi that fails means a broken driver, which a GPU node must not hide.

use std::process::{Command, Stdio};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::config::GpuPolicy;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub uuid: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GpuReport {
    pub gpus: Vec<Gpu>,
    /// `nvidia-smi`, `not found` or `not checked`.
    pub source: String,
}

/// Runs `nvidia_smi -L` as the policy asks.
pub fn detect(nvidia_smi: &str, policy: GpuPolicy) -> Result<GpuReport> {
    if policy == GpuPolicy::None {
        return Ok(GpuReport {
            gpus: Vec::new(),
            source: "not checked".into(),
        });
    }
    let out = match Command::new(nvidia_smi)
        .arg("-L")
        .stdin(Stdio::null())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if policy == GpuPolicy::Require {
                bail!("no GPUs: {nvidia_smi} is not installed (agent.gpus = \"require\")");
            }
            return Ok(GpuReport {
                gpus: Vec::new(),
                source: "not found".into(),
            });
        }
        Err(e) => bail!("cannot run {nvidia_smi}: {e}"),
        Ok(out) => out,
    };
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "{nvidia_smi} -L failed ({}): {}: the GPU driver is not healthy",
            out.status,
            line.trim()
        );
    }
    let gpus = parse_list(&String::from_utf8_lossy(&out.stdout));
    if gpus.is_empty() && policy == GpuPolicy::Require {
        bail!("no GPUs: {nvidia_smi} -L lists none (agent.gpus = \"require\")");
    }
    Ok(GpuReport {
        gpus,
        source: "nvidia-smi".into(),
    })
}

/// Parses `GPU 0: Tesla V100-PCIE-16GB (UUID: GPU-...)` lines; MIG lines below a GPU are
/// parts of it, not GPUs of their own.
pub fn parse_list(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("GPU ")?;
            let (index, rest) = rest.split_once(':')?;
            let index = index.trim().parse().ok()?;
            let rest = rest.trim();
            let (name, uuid) = match rest.rsplit_once("(UUID:") {
                Some((name, uuid)) => (name.trim(), uuid.trim().trim_end_matches(')').trim()),
                None => (rest, ""),
            };
            Some(Gpu {
                index,
                name: name.to_string(),
                uuid: uuid.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gpus_and_ignores_mig_lines() {
        let text = "GPU 0: Tesla V100-PCIE-16GB (UUID: GPU-0a1b2c3d-1111-2222-3333-444455556666)\n\
                    GPU 1: NVIDIA A100 80GB PCIe (UUID: GPU-99999999-aaaa-bbbb-cccc-dddddddddddd)\n  \
                    MIG 3g.40gb     Device  0: (UUID: MIG-12345678-aaaa-bbbb-cccc-dddddddddddd)\n";
        let gpus = parse_list(text);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].name, "Tesla V100-PCIE-16GB");
        assert_eq!(gpus[0].uuid, "GPU-0a1b2c3d-1111-2222-3333-444455556666");
        assert_eq!(gpus[1].name, "NVIDIA A100 80GB PCIe");
    }

    #[test]
    fn no_output_is_no_gpus() {
        assert!(parse_list("").is_empty());
        assert!(parse_list("No devices found.\n").is_empty());
    }

    #[test]
    fn a_missing_nvidia_smi_is_zero_gpus_unless_required() {
        let r = detect("/nonexistent/nvidia-smi", GpuPolicy::Auto).unwrap();
        assert!(r.gpus.is_empty());
        assert_eq!(r.source, "not found");
        let e = detect("/nonexistent/nvidia-smi", GpuPolicy::Require).unwrap_err();
        assert!(e.to_string().contains("no GPUs"), "{e}");
        let r = detect("/nonexistent/nvidia-smi", GpuPolicy::None).unwrap();
        assert_eq!(r.source, "not checked");
    }

    #[test]
    fn a_failing_nvidia_smi_is_an_unhealthy_driver() {
        // `false` stands in for an nvidia-smi that cannot talk to the driver.
        let e = detect("false", GpuPolicy::Auto).unwrap_err();
        assert!(e.to_string().contains("not healthy"), "{e}");
    }
}
