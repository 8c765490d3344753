//! Example third-party plugin: requests must carry one of the configured API keys.
//! `- kind: api_key` / `header: x-api-key` / `keys: [k1, k2]`. Missing or wrong key: 401.

use async_trait::async_trait;
use portcullis_plugin::build::parse_config;
use portcullis_plugin::{
    BuildContext, Decision, Filter, FilterError, Hooks, RequestState, RequestView, Response,
};
use std::sync::Arc;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    keys: Vec<String>,
}

fn default_header() -> String {
    "x-api-key".into()
}

/// The filter.
pub struct ApiKey(Config);

/// Factory: register it with `registry.register("api_key", portcullis_api_key::factory)`.
pub fn factory(
    config: &serde_yaml::Value,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn Filter>, FilterError> {
    let c: Config = parse_config(config)?;
    if c.keys.is_empty() {
        return Err(FilterError::at("keys", "list at least one key"));
    }
    Ok(Arc::new(ApiKey(c)))
}

#[async_trait]
impl Filter for ApiKey {
    fn hooks(&self) -> Hooks {
        Hooks::REQUEST
    }

    async fn on_request(&self, req: &RequestView<'_>, _state: &mut RequestState) -> Decision {
        match req.header_str(&self.0.header) {
            Some(k) if self.0.keys.iter().any(|key| key == k) => Decision::Continue,
            _ => Decision::Respond(Response::text(401, "missing or invalid API key\n")),
        }
    }
}
