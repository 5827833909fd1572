//! Where the publisher's commands go: one Redis, or the masters of a
//! Redis Cluster (`masters.rs`). The publisher builds each command with the
//! slot of its key or channel and reads one result per command; which
//! connection carries it is decided here.
//!
//! The two differ in what they publish with (`PUBLISH`, or `SPUBLISH` so a
//! channel lives on its slot's master only), how subscribers are counted
//! (`PUBSUB NUMSUB` or `PUBSUB SHARDNUMSUB` on the channel's master), and
//! in how a connection fails: one Redis fails whole, while a cluster loses
//! one master's commands and keeps the others'. A master that lost its
//! script cache (a replica promoted after a failover: scripts are not
//! replicated) answers `NOSCRIPT`; the scripts are loaded on every master
//! again and those commands sent once more.

use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

use super::masters::{Masters, OnMoved};
use super::topology::Topology;

/// How long a connect, read or write to Redis may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach Redis, kept to connect again after a failure.
#[derive(Debug, Clone)]
pub(crate) enum Spec {
    /// One Redis.
    One(redis::Client),
    /// A cluster, from its seed nodes.
    Cluster(Topology),
}

/// A connected target.
pub(crate) enum Target {
    /// One Redis, one connection.
    One(redis::Connection),
    /// A connection per master (boxed: the map is large).
    Cluster(Box<Masters>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::One(_) => f.write_str("Target::One"),
            Target::Cluster(m) => f.debug_tuple("Target::Cluster").field(m).finish(),
        }
    }
}

/// What became of a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Redis ran it.
    Done,
    /// Redis refused it for good (a wrong argument, a missing permission).
    Refused,
    /// Its slot is moving (`MOVED` or `ASK` not followed, `TRYAGAIN`,
    /// `CLUSTERDOWN`): to send again later.
    Wait,
    /// The connection failed: whether it ran is unknown.
    Lost,
}

/// Sorts a command's result.
pub(crate) fn fate(result: &RedisResult<Value>) -> Fate {
    let Err(e) = result else { return Fate::Done };
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown,
        ) => Fate::Wait,
        ErrorKind::Server(_) | ErrorKind::Extension => Fate::Refused,
        _ => Fate::Lost,
    }
}

fn no_script(result: &RedisResult<Value>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
}

impl Target {
    /// Connects (for a cluster: learns the map; masters are connected on
    /// first use) and loads `scripts` everywhere.
    pub fn connect(spec: &Spec, scripts: &[String]) -> RedisResult<Target> {
        let mut target = match spec {
            Spec::One(client) => {
                let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                conn.set_write_timeout(Some(IO_TIMEOUT))?;
                Target::One(conn)
            }
            Spec::Cluster(topology) => {
                Target::Cluster(Box::new(Masters::connect(topology.clone()).map_err(|why| {
                    RedisError::from((ErrorKind::Io, "no cluster node answered", why))
                })?))
            }
        };
        match target.load(scripts) {
            Ok(()) => {}
            // A master down: the others have the scripts, and it gets them
            // when it answers `NOSCRIPT`.
            Err(e) if target.sharded() => tracing::warn!(error = %e, "redis link: a master did not load the scripts"),
            Err(e) => return Err(e),
        }
        Ok(target)
    }

    fn load(&mut self, scripts: &[String]) -> RedisResult<()> {
        for script in scripts {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(script);
            match self {
                Target::One(conn) => cmd.exec(conn)?,
                Target::Cluster(masters) => masters.everywhere(&cmd)?,
            }
        }
        Ok(())
    }

    /// Whether channels are sharded (a cluster).
    pub fn sharded(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// Runs `cmds` (each with the slot of its key), pipelined; one result
    /// per command, in order. `scripts` are loaded again if a master lost
    /// them.
    pub fn run(&mut self, cmds: &[(u16, Cmd)], on_moved: OnMoved, scripts: &[String]) -> Vec<RedisResult<Value>> {
        let mut results = self.run_once(cmds, on_moved);
        if results.iter().any(no_script) {
            tracing::info!("redis link: a master has lost the scripts (failed over?); loading them again");
            if let Err(e) = self.load(scripts) {
                // Loaded where it could be; the commands are tried anyway.
                tracing::warn!(error = %e, "redis link: cannot load the scripts everywhere");
            }
            let again: Vec<usize> = (0..results.len()).filter(|&i| no_script(&results[i])).collect();
            let cmds_again: Vec<(u16, Cmd)> = again.iter().map(|&i| cmds[i].clone()).collect();
            for (i, r) in again.into_iter().zip(self.run_once(&cmds_again, on_moved)) {
                results[i] = r;
            }
        }
        results
    }

    fn run_once(&mut self, cmds: &[(u16, Cmd)], on_moved: OnMoved) -> Vec<RedisResult<Value>> {
        match self {
            Target::Cluster(masters) => masters.run(cmds, on_moved),
            Target::One(conn) => {
                let mut pipe = redis::pipe();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd.clone());
                }
                match pipe.ignore_errors().query::<Vec<RedisResult<Value>>>(conn) {
                    Ok(results) if results.len() == cmds.len() => results,
                    Ok(_) => vec![Err(RedisError::from((ErrorKind::Io, "short pipeline reply"))); cmds.len()],
                    Err(e) => vec![Err(e); cmds.len()],
                }
            }
        }
    }

    /// The publish command for `channel`: `PUBLISH`, or `SPUBLISH` on a
    /// cluster.
    pub fn publish(&self, channel: &[u8], message: &[u8]) -> (u16, Cmd) {
        let mut cmd = redis::cmd(if self.sharded() { "SPUBLISH" } else { "PUBLISH" });
        cmd.arg(channel).arg(message);
        (super::slot::of(channel), cmd)
    }

    /// How many subscribers each of `channels` has now.
    pub fn numsub(&mut self, channels: &[Vec<u8>]) -> RedisResult<Vec<(Vec<u8>, u64)>> {
        let cmds: Vec<(u16, Cmd)> = match self {
            // One command for all: the counts come back as pairs.
            Target::One(_) => {
                let mut cmd = redis::cmd("PUBSUB");
                cmd.arg("NUMSUB").arg(channels);
                vec![(0, cmd)]
            }
            Target::Cluster(_) => channels
                .iter()
                .map(|ch| {
                    let mut cmd = redis::cmd("PUBSUB");
                    cmd.arg("SHARDNUMSUB").arg(ch);
                    (super::slot::of(ch), cmd)
                })
                .collect(),
        };
        let mut counts = Vec::with_capacity(channels.len());
        for result in self.run(&cmds, OnMoved::Follow, &[]) {
            let pairs: Vec<(Vec<u8>, u64)> = redis::from_redis_value(result?)?;
            counts.extend(pairs);
        }
        Ok(counts)
    }
}

/// The publish script `script` as a cluster runs it: `SPUBLISH` (the
/// channel is in the slot of the script's keys).
pub(crate) fn sharded_script(script: &str) -> String {
    script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_sort_into_fates() {
        let server = |code: &str| -> RedisResult<Value> {
            let wire = format!("-{code} 3999 127.0.0.1:7001\r\n");
            match redis::parse_redis_value(wire.as_bytes()).unwrap() {
                Value::ServerError(e) => Err(e.into()),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(fate(&Ok(Value::Int(1))), Fate::Done);
        assert_eq!(fate(&server("MOVED")), Fate::Wait);
        assert_eq!(fate(&server("ASK")), Fate::Wait);
        assert_eq!(fate(&server("TRYAGAIN")), Fate::Wait);
        assert_eq!(fate(&server("CLUSTERDOWN")), Fate::Wait);
        assert_eq!(fate(&server("NOPERM")), Fate::Refused);
        assert_eq!(fate(&server("ERR")), Fate::Refused);
        let io: RedisResult<Value> = Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
        assert_eq!(fate(&io), Fate::Lost);
    }

    #[test]
    fn the_cluster_scripts_publish_sharded() {
        for script in [
            super::super::history::PUBLISH_SCRIPT,
            super::super::presence::PRESENCE_SCRIPT,
        ] {
            let sharded = sharded_script(script);
            assert!(sharded.contains("redis.call('SPUBLISH'"));
            assert!(!sharded.contains("redis.call('PUBLISH'"));
        }
    }
}
