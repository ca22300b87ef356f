//! Multi-node topology from a Batch multi-instance task: the env torchrun needs and an
//! MPI/Horovod hostfile. A single node (no host list) is the one-node case of the same thing.

use std::net::IpAddr;

use anyhow::{bail, Result};

use super::batch_env::BatchEnv;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Node addresses, the master first, then Batch's order.
    pub hosts: Vec<String>,
    pub node_rank: u32,
    pub master_addr: String,
    pub master_port: u16,
    pub nproc_per_node: u32,
}

impl Topology {
    pub fn nnodes(&self) -> u32 {
        self.hosts.len() as u32
    }

    /// What torchrun (`--nnodes $NNODES --node_rank $NODE_RANK --nproc_per_node
    /// $NPROC_PER_NODE --master_addr $MASTER_ADDR --master_port $MASTER_PORT`) and
    /// `torch.distributed` read.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
            ("NNODES", self.nnodes().to_string()),
            ("NODE_RANK", self.node_rank.to_string()),
            ("NPROC_PER_NODE", self.nproc_per_node.to_string()),
            (
                "WORLD_SIZE",
                (self.nnodes() * self.nproc_per_node).to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Open MPI's hostfile format (`HOST slots=N` per line), which Horovod's `--hostfile`
    /// reads too.
    pub fn hostfile(&self) -> String {
        self.hosts
            .iter()
            .map(|h| format!("{h} slots={}\n", self.nproc_per_node))
            .collect()
    }
}

/// Works out this node's place. `rank` overrides the lookup; `local` are this node's addresses
/// (the rank is the position of the first one found in the host list).
pub fn topology(
    env: &BatchEnv,
    master_port: u16,
    nproc_per_node: u32,
    rank: Option<u32>,
    local: &[IpAddr],
) -> Result<Topology> {
    if env.host_list.is_empty() {
        return Ok(Topology {
            hosts: vec!["127.0.0.1".into()],
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port,
            nproc_per_node,
        });
    }
    let (master, batch_port) = match &env.master_node {
        Some(m) => match m.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.parse::<u16>().ok()),
            None => (m.clone(), None),
        },
        None => (env.host_list[0].clone(), None),
    };
    if batch_port == Some(master_port) {
        bail!(
            "container.master_port {master_port} is the port Batch reserves on the master \
             (AZ_BATCH_MASTER_NODE={}): choose another",
            env.master_node.as_deref().unwrap_or_default()
        );
    }
    let mut hosts = vec![master.clone()];
    hosts.extend(env.host_list.iter().filter(|h| **h != master).cloned());
    let node_rank = match rank {
        Some(r) if (r as usize) < hosts.len() => r,
        Some(r) => bail!(
            "--node-rank {r} is out of range: the task has {} nodes",
            hosts.len()
        ),
        None if env.is_master == Some(true) => 0,
        None => {
            let found = hosts
                .iter()
                .position(|h| h.parse::<IpAddr>().is_ok_and(|ip| local.contains(&ip)));
            match found {
                Some(i) => i as u32,
                None => bail!(
                    "cannot tell this node's rank: none of AZ_BATCH_HOST_LIST ({}) is an address \
                     of this node; pass --node-rank",
                    env.host_list.join(",")
                ),
            }
        }
    };
    if env.is_master == Some(true) && node_rank != 0 {
        bail!("--node-rank {node_rank} contradicts AZ_BATCH_IS_CURRENT_NODE_MASTER=true");
    }
    Ok(Topology {
        hosts,
        node_rank,
        master_addr: master,
        master_port,
        nproc_per_node,
    })
}

/// This machine's interface addresses.
pub fn local_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(a.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(a.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(hosts: &str, master: &str, is_master: Option<bool>) -> BatchEnv {
        BatchEnv {
            host_list: hosts.split(',').map(str::to_string).collect(),
            master_node: Some(master.into()),
            is_master,
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_master_is_rank_zero_and_others_follow_in_batch_order() {
        let e = env("10.0.0.5,10.0.0.4,10.0.0.6", "10.0.0.4:6000", Some(false));
        let t = topology(&e, 6105, 4, None, &[ip("127.0.0.1"), ip("10.0.0.6")]).unwrap();
        assert_eq!(t.hosts, ["10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(t.node_rank, 2);
        let m = topology(&e, 6105, 4, None, &[]).map(|t| t.node_rank);
        assert!(m.is_err());
        let e = env("10.0.0.5,10.0.0.4", "10.0.0.4:6000", Some(true));
        assert_eq!(topology(&e, 6105, 4, None, &[]).unwrap().node_rank, 0);
    }

    #[test]
    fn torchrun_env_and_hostfile() {
        let e = env("10.0.0.4,10.0.0.5", "10.0.0.4:6000", Some(false));
        let t = topology(&e, 6105, 4, None, &[ip("10.0.0.5")]).unwrap();
        let vars: std::collections::BTreeMap<_, _> = t.env().into_iter().collect();
        assert_eq!(vars["MASTER_ADDR"], "10.0.0.4");
        assert_eq!(vars["MASTER_PORT"], "6105");
        assert_eq!(vars["NNODES"], "2");
        assert_eq!(vars["NODE_RANK"], "1");
        assert_eq!(vars["WORLD_SIZE"], "8");
        assert_eq!(t.hostfile(), "10.0.0.4 slots=4\n10.0.0.5 slots=4\n");
    }

    #[test]
    fn batchs_own_port_is_refused_as_master_port() {
        let e = env("10.0.0.4,10.0.0.5", "10.0.0.4:6000", Some(true));
        let err = topology(&e, 6000, 1, None, &[]).unwrap_err().to_string();
        assert!(err.contains("reserves"), "{err}");
    }

    #[test]
    fn one_node_without_batch() {
        let t = topology(&BatchEnv::default(), 6105, 1, None, &[]).unwrap();
        assert_eq!((t.nnodes(), t.node_rank), (1, 0));
        assert_eq!(t.master_addr, "127.0.0.1");
    }

    #[test]
    fn loopback_is_among_the_local_addresses() {
        assert!(local_addrs().contains(&ip("127.0.0.1")));
    }
}
