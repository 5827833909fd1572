//! Where a Redis Cluster's slots live, as the link's threads learn it: the
//! slot map from `CLUSTER SLOTS`, asked of the nodes the last map listed
//! and then of the seed nodes the operator gave, first answer kept.
//!
//! The link asks again whenever the map is shown wrong: a master redirects
//! (`MOVED`), drops a sharded subscription on its own (its slot moved, or
//! it stopped being a master), or stops answering (after a crash its
//! replica is promoted within a few `cluster-node-timeout`s; until then the
//! nodes still name the dead master, so asking again is how the link finds
//! the new one).
//!
//! Blocking, with a timeout per node: it runs on the link's own threads,
//! never on a shard.

use std::time::Duration;

use super::slot_map::{NodeAddr, SlotMap};

/// How long one node may take to connect and answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster's slot map and how to reach its nodes.
#[derive(Clone)]
pub struct Topology {
    seeds: Vec<NodeAddr>,
    /// Credentials (and TLS) every node shares; the address is replaced per node.
    info: redis::ConnectionInfo,
    /// With `rediss://` and `--redis-tls-ca`: the CA's PEM.
    root_cert: Option<Vec<u8>>,
    map: SlotMap,
    /// The node that gave the last map: asked first next time.
    answered: Option<NodeAddr>,
    /// Nodes that could not answer at the last refresh: asked last (a
    /// dead master costs a connect timeout on a real network).
    failed: Vec<NodeAddr>,
}

impl Topology {
    /// A topology to be learnt from `seeds` (any nodes of the cluster);
    /// `info` carries the username, password and TLS every node takes.
    pub fn new(seeds: Vec<NodeAddr>, info: redis::ConnectionInfo) -> Topology {
        Topology {
            seeds,
            info,
            root_cert: None,
            map: SlotMap::default(),
            answered: None,
            failed: Vec::new(),
        }
    }

    /// The same, trusting the CA in `pem` for `rediss://` nodes.
    pub fn with_ca(mut self, pem: Option<Vec<u8>>) -> Topology {
        self.root_cert = pem;
        self
    }

    /// Whether the nodes speak TLS.
    pub fn tls(&self) -> bool {
        matches!(self.info.addr(), redis::ConnectionAddr::TcpTls { .. })
    }

    /// The username and password every node takes.
    pub fn credentials(&self) -> (Option<&str>, Option<&str>) {
        let s = self.info.redis_settings();
        (s.username(), s.password())
    }

    /// A client for the node at `addr`.
    pub fn client(&self, addr: &NodeAddr) -> redis::RedisResult<redis::Client> {
        let info = self.node_info(addr);
        match &self.root_cert {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }

    /// The last map learnt (empty before the first `refresh`).
    pub fn map(&self) -> &SlotMap {
        &self.map
    }

    /// The connection settings of the node at `addr`.
    pub fn node_info(&self, addr: &NodeAddr) -> redis::ConnectionInfo {
        let node = match self.info.addr() {
            redis::ConnectionAddr::TcpTls {
                insecure, tls_params, ..
            } => redis::ConnectionAddr::TcpTls {
                host: addr.host.clone(),
                port: addr.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => redis::ConnectionAddr::Tcp(addr.host.clone(), addr.port),
        };
        self.info.clone().set_addr(node)
    }

    /// Asks for the map again: the node that gave the last one first,
    /// then the other nodes of the last map (they are the current
    /// cluster), then the seeds; nodes that failed last time go last. `Err`
    /// says why no node gave one (each node's reason), and the last map
    /// stays.
    pub fn refresh(&mut self) -> Result<&SlotMap, String> {
        let mut order: Vec<NodeAddr> = Vec::new();
        let known = self.map.nodes().into_iter().cloned();
        for addr in self
            .answered
            .iter()
            .cloned()
            .chain(known)
            .chain(self.seeds.iter().cloned())
        {
            if !order.contains(&addr) {
                order.push(addr);
            }
        }
        let (mut order, failed): (Vec<NodeAddr>, Vec<NodeAddr>) =
            order.into_iter().partition(|a| !self.failed.contains(a));
        order.extend(failed);
        let mut why = Vec::new();
        let mut failed = Vec::new();
        for addr in order {
            match self.ask(&addr) {
                Ok(map) if map.covered() > 0 => {
                    self.map = map;
                    self.answered = Some(addr);
                    self.failed = failed;
                    return Ok(&self.map);
                }
                Ok(_) => why.push(format!("{addr}: serves no slots yet")),
                Err(e) => {
                    why.push(format!("{addr}: {e}"));
                    failed.push(addr);
                }
            }
        }
        self.failed = failed;
        Err(why.join("; "))
    }

    fn ask(&self, addr: &NodeAddr) -> Result<SlotMap, String> {
        let client = self.client(addr).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(ASK_TIMEOUT)
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(ASK_TIMEOUT)).map_err(|e| e.to_string())?;
        let reply: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        SlotMap::parse(&reply, addr).map_err(|e| e.0.to_string())
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `info`: it holds the password.
        f.debug_struct("Topology")
            .field("seeds", &self.seeds)
            .field("map", &self.map)
            .finish()
    }
}
