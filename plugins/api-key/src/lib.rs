//! Example third-party plugin: requests must carry one of the configured API keys.
//! `- kind: api_key` / `header: x-api-key` / `keys: [k1, k2]`. Missing or wrong key: 401.

use portcullis_plugin::async_trait;
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
    config: &portcullis_plugin::serde_yaml::Value,
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

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_plugin::testing::{assert_hooks_declared, TestEnv, TestRequest};

    #[test]
    fn checks_the_key_and_declares_its_hooks() {
        let env = TestEnv::new(&["api"]);
        let config = portcullis_plugin::serde_yaml::from_str("keys: [k1]").unwrap();
        let f = factory(&config, &env.context("api")).unwrap();
        assert_hooks_declared(f.as_ref());
        let mut state = RequestState::default();
        let run = |req: TestRequest, state: &mut RequestState| {
            let view = req.view("api");
            let fut = f.on_request(&view, state);
            block_on(fut)
        };
        assert!(matches!(
            run(TestRequest::get("/").header("x-api-key", "k1"), &mut state),
            Decision::Continue
        ));
        assert!(matches!(
            run(TestRequest::get("/"), &mut state),
            Decision::Respond(_)
        ));
    }

    /// The filter's future is ready at once; poll it to completion without a runtime.
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
