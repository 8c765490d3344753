//! `consistent_hash` (alias `ip_hash` for `key: client_ip`): a Ketama ring keyed by a part of
//! the request. Adding or removing a backend moves only the keys of that backend's arcs; when
//! the chosen backend is unavailable, the next distinct backend clockwise takes the key.

use super::ring::Ring;
use crate::balance::{KeySource, Member, PickRequest, Refused, Strategy, StrategyFactory};
use crate::config::{error::from_value, PathError};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `client_ip` (default), `path`, `header:<name>`, `cookie:<name>` or `query:<name>`.
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "client_ip".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Parameters: `key: client_ip | path | header:<name> | cookie:<name> | query:<name>`.
pub fn from_params(params: &serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let p: Params = from_value(params)?;
    let key = KeySource::parse(&p.key).map_err(|e| e.under("key"))?;
    Ok(Arc::new(Factory {
        key,
        name: "consistent_hash",
    }))
}

/// `ip_hash`: consistent hashing on the client IP. Parameters: none.
pub fn ip_hash_from_params(
    params: &serde_yaml::Value,
) -> Result<Arc<dyn StrategyFactory>, PathError> {
    let NoParams {} = from_value(params)?;
    Ok(Arc::new(Factory {
        key: KeySource::ClientIp,
        name: "ip_hash",
    }))
}

#[derive(Debug)]
struct Factory {
    key: KeySource,
    name: &'static str,
}

impl StrategyFactory for Factory {
    fn name(&self) -> &'static str {
        self.name
    }
    fn build(&self, members: &[Member]) -> Box<dyn Strategy> {
        let nodes: Vec<_> = members.iter().map(|m| (m.state.addr(), m.weight)).collect();
        Box::new(ConsistentHash(Ring::new(
            nodes.iter().map(|(a, w)| (a, *w)),
        )))
    }
    fn key_source(&self) -> Option<&KeySource> {
        Some(&self.key)
    }
}

struct ConsistentHash(Ring);

impl Strategy for ConsistentHash {
    #[inline]
    fn pick(&self, _members: &[Member], req: &PickRequest) -> usize {
        self.0.member_at(self.0.position(req.hash))
    }

    /// The first member clockwise from the key's point that was not refused: the keys of a
    /// refused member move to its ring successors, everyone else's stay.
    fn repick(&self, _members: &[Member], req: &PickRequest, refused: &Refused) -> Option<usize> {
        let start = self.0.position(req.hash);
        (1..=self.0.len())
            .map(|step| self.0.member_at(start + step))
            .find(|m| !refused.contains(*m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::strategies::test_support::members;

    fn req(key: &str) -> PickRequest {
        PickRequest {
            hash: crc32fast::hash(key.as_bytes()),
            now: 0,
        }
    }

    #[test]
    fn a_key_always_maps_to_the_same_member() {
        let m = members(&[1, 1, 1]);
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        for k in ["alice", "bob", "carol"] {
            let first = s.pick(&m, &req(k));
            for _ in 0..10 {
                assert_eq!(s.pick(&m, &req(k)), first);
            }
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let m3 = members(&[1, 1, 1]);
        let s3 = from_params(&serde_yaml::Value::Null).unwrap().build(&m3);
        let m2: Vec<Member> = m3[..2].to_vec();
        let s2 = from_params(&serde_yaml::Value::Null).unwrap().build(&m2);
        let mut moved = 0;
        for i in 0..3000 {
            let k = format!("user-{i}");
            let before = s3.pick(&m3, &req(&k));
            let after = s2.pick(&m2, &req(&k));
            if before != 2 {
                assert_eq!(before, after, "key {k} moved although its backend stayed");
            } else {
                moved += 1;
            }
        }
        assert!(
            moved > 600 && moved < 1400,
            "about a third of the keys were on the removed backend: {moved}"
        );
    }

    #[test]
    fn repick_walks_the_ring_visiting_each_other_member_once() {
        let m = members(&[1, 1, 1, 1]);
        let s = from_params(&serde_yaml::Value::Null).unwrap().build(&m);
        let r = req("k");
        let mut refused = Refused::default();
        let mut all = vec![s.pick(&m, &r)];
        refused.insert(all[0]);
        while let Some(i) = s.repick(&m, &r, &refused) {
            all.push(i);
            refused.insert(i);
        }
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3]);
    }

    #[test]
    fn ip_hash_uses_the_client_ip_and_takes_no_params() {
        let f = ip_hash_from_params(&serde_yaml::Value::Null).unwrap();
        assert_eq!(f.key_source(), Some(&KeySource::ClientIp));
        assert!(ip_hash_from_params(&serde_yaml::from_str("key: path").unwrap()).is_err());
    }
}
