//! `lake-agent bootstrap`, a Batch pool's start task: GPUs, cache disk, lake mounts (ready
//! before it returns), warm datasets, images, and a status file. Idempotent: a rerun after a
//! reboot or re-image keeps what still works and redoes what does not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::batch_env::BatchEnv;
use super::config::AgentConfig;
use super::container::ContainerRuntime;
use super::disks::{self, Disk};
use super::gpu;
use super::lakemount::{Lakemount, MountSpec};
use super::mounts::{Mode, Mounter};
use super::status::{
    self, BootstrapStatus, CacheStatus, ImageStatus, NodeInfo, WarmStatus, BOOTSTRAP_KIND,
};
use super::volume::{self, Volume};

pub fn run(cfg: &AgentConfig) -> Result<()> {
    let env = BatchEnv::from_process();
    let dir = status::status_dir(cfg, &env);
    let start = Instant::now();
    let mut st = BootstrapStatus {
        kind: BOOTSTRAP_KIND.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: status::now(),
        node: NodeInfo::new(&env, cfg),
        ..Default::default()
    };
    say(&format!(
        "bootstrap of node {}{}",
        st.node.node_id,
        st.node
            .pool_id
            .as_ref()
            .map(|p| format!(" in pool {p}"))
            .unwrap_or_default()
    ));
    let result = steps(cfg, &dir, &mut st);
    st.ok = result.is_ok();
    st.error = result.as_ref().err().map(|e| format!("{e:#}"));
    st.finished_at = status::now();
    st.timings.total_ms = ms(start);
    let file = status::bootstrap_file(&dir);
    let written = status::write_json(&file, &st);
    result?;
    written?;
    say(&format!(
        "ready in {:.1}s; status in {}",
        start.elapsed().as_secs_f64(),
        file.display()
    ));
    Ok(())
}

fn say(line: &str) {
    println!("lake-agent: {line}");
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn steps(cfg: &AgentConfig, dir: &Path, st: &mut BootstrapStatus) -> Result<()> {
    let t = Instant::now();
    st.gpus = gpu::detect(&cfg.agent.nvidia_smi, cfg.agent.gpus)?;
    st.timings.gpus_ms = ms(t);
    say(&match st.gpus.gpus.len() {
        0 => format!("no GPUs ({})", st.gpus.source),
        n => format!(
            "{n} GPU(s): {}",
            st.gpus
                .gpus
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });

    let t = Instant::now();
    let volume = if cfg.cache.disabled {
        None
    } else {
        volume::prepare(
            &cfg.cache.devices,
            &cfg.cache.volume_mount(),
            st.node.in_batch,
        )?
    };
    if let Some(v) = &volume {
        say(&format!(
            "cache volume: {} over {} disk(s) at {} ({})",
            v.fstype,
            v.devices.len(),
            v.mountpoint.display(),
            if v.created { "made now" } else { "found" }
        ));
    }
    st.disks = disks::scan();
    st.cache = choose_cache(cfg, &st.disks, volume.as_ref());
    if let Some(cache) = &st.cache.dir {
        std::fs::create_dir_all(cache)
            .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
        // Cached blocks are lake data: only the mount (root) reads them.
        std::fs::set_permissions(cache, std::fs::Permissions::from_mode(0o700))?;
        st.cache.free_bytes = disks::statvfs(cache).map(|(_, free)| free);
        say(&format!(
            "cache in {} ({})",
            cache.display(),
            st.cache.source
        ));
    } else {
        say(&format!("no disk cache ({})", st.cache.source));
    }
    st.timings.disks_ms = ms(t);

    let t = Instant::now();
    if !cfg.lakes.is_empty() {
        let lakemount = Lakemount::find(cfg)?;
        let mounter = Mounter {
            cfg,
            lakemount: &lakemount,
            status_dir: dir,
            mode: Mode::resolve(cfg),
        };
        let cache_dir = st.cache.dir.clone();
        let size = cfg.cache.size.as_deref();
        for lake in &cfg.lakes {
            let spec = MountSpec::new(lake, cache_dir.as_deref(), size);
            let m = mounter.ensure(lake, &spec)?;
            say(&format!(
                "{} {} at {} ({}, {:.1}s)",
                m.state,
                lake.url,
                lake.mountpoint.display(),
                m.mode,
                m.ready_ms as f64 / 1000.0
            ));
            st.mounts.push(m);
        }
        st.timings.mounts_ms = ms(t);

        let t = Instant::now();
        for lake in &cfg.lakes {
            // A snapshot's warm is the whole snapshot, once.
            let paths = match &lake.manifest {
                Some(_) => &lake.warm[..lake.warm.len().min(1)],
                None => &lake.warm[..],
            };
            for path in paths {
                let Some(cache) = &cache_dir else {
                    bail!(
                        "lake {:?}: warm needs a disk cache, but none is configured or found \
                         (set cache.dir)",
                        lake.name
                    );
                };
                let url = join_url(&lake.url, path);
                say(&format!("warming {url}"));
                let w = Instant::now();
                lakemount.warm(lake, &url, cache, size)?;
                st.warm.push(WarmStatus {
                    lake: lake.name.clone(),
                    url,
                    ms: ms(w),
                });
            }
        }
        st.timings.warm_ms = ms(t);
    }

    let t = Instant::now();
    let images = cfg.container.all_images();
    if !images.is_empty() {
        let rt = ContainerRuntime::new(&cfg.container);
        for image in images {
            let i = Instant::now();
            let action = rt.ensure_image(image, cfg.container.pull)?;
            say(&format!("image {image}: {action}"));
            st.images.push(ImageStatus {
                image: image.clone(),
                action: action.into(),
                ms: ms(i),
            });
        }
    }
    st.timings.images_ms = ms(t);
    Ok(())
}

/// The cache directory: configured, else `lakecache` on the cache volume (local NVMe disks),
/// else on the largest local non-OS disk.
pub fn choose_cache(cfg: &AgentConfig, disks: &[Disk], volume: Option<&Volume>) -> CacheStatus {
    if cfg.cache.disabled {
        return CacheStatus {
            source: "disabled".into(),
            ..Default::default()
        };
    }
    if let Some(d) = &cfg.cache.dir {
        return CacheStatus {
            dir: Some(d.clone()),
            source: "configured".into(),
            free_bytes: None,
        };
    }
    if let Some(v) = volume {
        let devices: Vec<String> = v.devices.iter().map(|d| d.display().to_string()).collect();
        return CacheStatus {
            dir: Some(v.mountpoint.join("lakecache")),
            source: format!(
                "cache volume, {} over {} at {}",
                v.fstype,
                devices.join(", "),
                v.mountpoint.display()
            ),
            free_bytes: None,
        };
    }
    match disks::choose_cache_disk(disks) {
        Some(d) => CacheStatus {
            dir: Some(d.mountpoint.join("lakecache")),
            source: format!(
                "largest local disk, {} on {}",
                d.mountpoint.display(),
                d.device
            ),
            free_bytes: Some(d.free_bytes),
        },
        None => CacheStatus {
            source: "no local disk besides the OS disk".into(),
            ..Default::default()
        },
    }
}

/// `az://a/c/prefix` + `train/x` -> `az://a/c/prefix/train/x`.
pub fn join_url(base: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        base.trim_end_matches('/').to_string()
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_without_doubled_slashes() {
        assert_eq!(join_url("az://a/c/", "/train/"), "az://a/c/train");
        assert_eq!(join_url("az://a/c", ""), "az://a/c");
    }

    #[test]
    fn the_cache_is_configured_or_on_the_temp_disk() {
        let disks = vec![
            Disk {
                mountpoint: "/".into(),
                device: "/dev/sda1".into(),
                fstype: "ext4".into(),
                total_bytes: 30,
                free_bytes: 10,
                os_disk: true,
            },
            Disk {
                mountpoint: "/mnt".into(),
                device: "/dev/sdb1".into(),
                fstype: "ext4".into(),
                total_bytes: 700,
                free_bytes: 690,
                os_disk: false,
            },
        ];
        let mut cfg = AgentConfig::default();
        let c = choose_cache(&cfg, &disks, None);
        assert_eq!(c.dir.as_deref(), Some(Path::new("/mnt/lakecache")));
        assert!(c.source.contains("/dev/sdb1"));
        cfg.cache.dir = Some("/data/cache".into());
        assert_eq!(choose_cache(&cfg, &disks, None).source, "configured");
        cfg.cache.disabled = true;
        assert_eq!(choose_cache(&cfg, &disks, None).dir, None);
        assert_eq!(
            choose_cache(&AgentConfig::default(), &disks[..1], None).dir,
            None
        );
        // A cache volume of local NVMe disks wins over the temp disk.
        let nvme = Volume {
            mountpoint: "/mnt/nvme".into(),
            devices: vec!["/dev/nvme0n1".into(), "/dev/nvme1n1".into()],
            fstype: "btrfs".into(),
            created: true,
        };
        let c = choose_cache(&AgentConfig::default(), &disks, Some(&nvme));
        assert_eq!(c.dir.as_deref(), Some(Path::new("/mnt/nvme/lakecache")));
        assert!(
            c.source.contains("btrfs over /dev/nvme0n1, /dev/nvme1n1"),
            "{}",
            c.source
        );
    }
}
