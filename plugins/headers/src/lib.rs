//! `headers`: add, set and remove headers on the request sent upstream and on the response.
//!
//! ```yaml
//! - kind: headers
//!   request:
//!     set: { x-env: prod }        # replace
//!     add: { x-via: portcullis }  # append
//!     remove: [x-debug]
//!   response:
//!     set: { cache-control: no-store }
//!     remove: [server]
//! ```
//!
//! Within a side: `remove`, then `set`, then `add`.

use portcullis_plugin::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::http::{HeaderName, HeaderValue};
use portcullis_plugin::{
    BuildContext, Filter, FilterError, HeaderEdit, Hooks, RequestState, RequestView,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SideConfig {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: SideConfig,
    #[serde(default)]
    response: SideConfig,
}

#[derive(Debug, Default)]
struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    fn compile(side: &str, c: &SideConfig) -> Result<Self, FilterError> {
        let name = |key: String, n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| FilterError::at(key, format!("`{n}` is not a valid header name")))
        };
        let pairs = |op: &str,
                     m: &BTreeMap<String, String>|
         -> Result<Vec<(HeaderName, HeaderValue)>, FilterError> {
            m.iter()
                .map(|(k, v)| {
                    let key = format!("{side}.{op}.{k}");
                    let value = HeaderValue::from_str(v)
                        .map_err(|_| FilterError::at(key.clone(), "not a valid header value"))?;
                    Ok((name(key, k)?, value))
                })
                .collect()
        };
        Ok(Edits {
            set: pairs("set", &c.set)?,
            add: pairs("add", &c.add)?,
            remove: c
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| name(format!("{side}.remove[{i}]"), n))
                .collect::<Result<_, _>>()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    fn apply(&self, h: &mut dyn HeaderEdit) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.set(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// The filter.
pub struct Headers {
    request: Edits,
    response: Edits,
}

/// Factory: `kind: headers`.
pub fn factory(
    config: &portcullis_plugin::serde_yaml::Value,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    let c: Config = parse_config(config)?;
    Ok(Arc::new(Headers {
        request: Edits::compile("request", &c.request)?,
        response: Edits::compile("response", &c.response)?,
    }))
}

#[async_trait]
impl Filter for Headers {
    fn hooks(&self) -> Hooks {
        let mut h = Hooks::NONE;
        if !self.request.is_empty() {
            h = h | Hooks::UPSTREAM_REQUEST;
        }
        if !self.response.is_empty() {
            h = h | Hooks::RESPONSE;
        }
        h
    }

    fn on_upstream_request(
        &self,
        _req: &RequestView<'_>,
        headers: &mut dyn HeaderEdit,
        _state: &mut RequestState,
    ) {
        self.request.apply(headers);
    }

    fn on_response(
        &self,
        _req: &RequestView<'_>,
        _status: u16,
        headers: &mut dyn HeaderEdit,
        _state: &mut RequestState,
    ) {
        self.response.apply(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin::testing::{TestEnv, TestRequest};

    #[test]
    fn a_full_config_declares_every_hook_it_implements() {
        let env = TestEnv::new(&[]);
        let yaml = "{request: {set: {x-a: '1'}}, response: {set: {x-b: '2'}}}";
        let f = factory(
            &portcullis_plugin::serde_yaml::from_str(yaml).unwrap(),
            &env.context("r"),
        )
        .unwrap();
        portcullis_plugin::testing::assert_hooks_declared(f.as_ref());
    }

    #[test]
    fn edits_request_and_response_headers() {
        let env = TestEnv::new(&[]);
        let f = factory(
            &portcullis_plugin::serde_yaml::from_str("{request: {set: {x-env: prod}, add: {x-via: pc}, remove: [x-debug]}, response: {set: {server: pc}}}").unwrap(),
            &env.context("r"),
        )
        .unwrap();
        assert!(f
            .hooks()
            .contains(Hooks::UPSTREAM_REQUEST | Hooks::RESPONSE));
        let req = TestRequest::get("/");
        let mut h = portcullis_plugin::http::HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        h.insert("x-env", HeaderValue::from_static("dev"));
        h.insert("x-via", HeaderValue::from_static("lb"));
        f.on_upstream_request(&req.view("r"), &mut h, &mut RequestState::default());
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h.get_all("x-via").iter().count(), 2);
        let mut r = portcullis_plugin::http::HeaderMap::new();
        f.on_response(&req.view("r"), 200, &mut r, &mut RequestState::default());
        assert_eq!(r["server"], "pc");
    }

    #[test]
    fn only_the_needed_hooks_are_declared_and_bad_names_are_reported() {
        let env = TestEnv::new(&[]);
        let f = factory(
            &portcullis_plugin::serde_yaml::from_str("{response: {remove: [server]}}").unwrap(),
            &env.context("r"),
        )
        .unwrap();
        assert_eq!(f.hooks(), Hooks::RESPONSE);
        let e = factory(
            &portcullis_plugin::serde_yaml::from_str("{request: {set: {'bad name': x}}}").unwrap(),
            &env.context("r"),
        )
        .err()
        .unwrap();
        assert_eq!(e.path, "request.set.bad name");
    }
}
