//! `ip_acl`: allow and deny lists of CIDRs, checked against the client's IP (the TCP peer).
//!
//! ```yaml
//! - kind: ip_acl
//!   allow: [10.0.0.0/8, 192.168.1.7]   # if set, only these may pass
//!   deny: [10.9.0.0/16]                # never these (deny wins over allow)
//! ```
//!
//! A refused client gets `403`. A bare address is a /32 (or /128).

use ipnet::IpNet;
use portcullis_plugin::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::{
    BuildContext, Decision, Filter, FilterError, Hooks, RequestState, RequestView, Response,
};
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// The filter.
pub struct IpAcl {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

fn parse_list(key: &str, list: &[String]) -> Result<Vec<IpNet>, FilterError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    FilterError::at(
                        format!("{key}[{i}]"),
                        format!("`{s}` is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

/// Factory: `kind: ip_acl`.
pub fn factory(
    config: &portcullis_plugin::serde_yaml::Value,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    let c: Config = parse_config(config)?;
    if c.allow.is_empty() && c.deny.is_empty() {
        return Err(FilterError::here("set `allow`, `deny` or both"));
    }
    Ok(Arc::new(IpAcl {
        allow: parse_list("allow", &c.allow)?,
        deny: parse_list("deny", &c.deny)?,
    }))
}

impl IpAcl {
    /// Whether `ip` may pass.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }) else {
            return self.allow.is_empty();
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[async_trait]
impl Filter for IpAcl {
    fn hooks(&self) -> Hooks {
        Hooks::REQUEST
    }

    async fn on_request(&self, req: &RequestView<'_>, _state: &mut RequestState) -> Decision {
        if self.permits(req.client_ip) {
            Decision::Continue
        } else {
            Decision::Respond(Response::text(403, "forbidden\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin::testing::{TestEnv, TestRequest};

    #[test]
    fn declares_every_hook_it_implements() {
        let f = build("{allow: [10.0.0.0/8], deny: [10.9.0.0/16]}").unwrap();
        portcullis_plugin::testing::assert_hooks_declared(f.as_ref());
    }

    fn build(yaml: &str) -> Result<Arc<dyn Filter>, FilterError> {
        factory(
            &portcullis_plugin::serde_yaml::from_str(yaml).unwrap(),
            &TestEnv::new(&[]).context("r"),
        )
    }

    #[tokio::test]
    async fn allow_and_deny_lists() {
        let f = build("{allow: [10.0.0.0/8, 192.168.1.7], deny: [10.9.0.0/16]}").unwrap();
        let check = |ip: &'static str| {
            let f = Arc::clone(&f);
            async move {
                f.on_request(
                    &TestRequest::get("/").from_ip(ip).view("r"),
                    &mut RequestState::default(),
                )
                .await
            }
        };
        assert_eq!(check("10.1.2.3").await, Decision::Continue);
        assert_eq!(check("192.168.1.7").await, Decision::Continue);
        assert!(
            matches!(check("10.9.0.1").await, Decision::Respond(r) if r.status == 403),
            "deny wins"
        );
        assert!(
            matches!(check("8.8.8.8").await, Decision::Respond(r) if r.status == 403),
            "not allowed"
        );
        assert_eq!(
            check("::ffff:10.1.1.1").await,
            Decision::Continue,
            "v4-mapped v6"
        );
    }

    #[test]
    fn deny_only_lets_everyone_else_through() {
        let f = build("{deny: ['2001:db8::/32']}").unwrap();
        let acl = IpAcl {
            allow: vec![],
            deny: parse_list("deny", &["2001:db8::/32".into()]).unwrap(),
        };
        assert!(acl.permits("2001:db9::1".parse().ok()));
        assert!(!acl.permits("2001:db8::1".parse().ok()));
        assert_eq!(f.hooks(), Hooks::REQUEST);
    }

    #[test]
    fn bad_entries_are_named() {
        let e = build("{allow: [10.0.0.0/8, nonsense]}").err().unwrap();
        assert_eq!(e.path, "allow[1]");
        assert!(build("{}").is_err());
    }
}
