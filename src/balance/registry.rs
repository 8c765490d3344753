//! Strategy names → factories. Adding a built-in strategy: one file in `strategies/`, one line
//! in [`STRATEGIES`]. A custom binary adds its own with [`StrategyRegistry::register`] (see
//! `examples/custom_gateway.rs`), as it adds filters.

use super::strategies::{
    adaptive, consistent_hash, fastest_response, least_conn, random, round_robin,
    weighted_round_robin,
};
use super::StrategyFactory;
use crate::config::PathError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds a factory from the strategy's parameters (the config map without `kind`).
pub type StrategyBuilder = fn(&serde_yaml::Value) -> Result<Arc<dyn StrategyFactory>, PathError>;

/// Every registered strategy.
pub static STRATEGIES: &[(&str, StrategyBuilder)] = &[
    ("round_robin", round_robin::from_params),
    ("weighted_round_robin", weighted_round_robin::from_params),
    ("random", random::from_params),
    ("least_conn", least_conn::from_params),
    ("fastest_response", fastest_response::from_params),
    ("adaptive", adaptive::from_params),
    ("consistent_hash", consistent_hash::from_params),
    ("ip_hash", consistent_hash::ip_hash_from_params),
];

/// Strategy names → builders: the built-in ones, plus any a custom binary registers.
#[derive(Clone)]
pub struct StrategyRegistry {
    builders: BTreeMap<String, StrategyBuilder>,
}

impl std::fmt::Debug for StrategyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.builders.keys()).finish()
    }
}

impl Default for StrategyRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl StrategyRegistry {
    /// Every built-in strategy.
    pub fn builtin() -> Self {
        StrategyRegistry {
            builders: STRATEGIES
                .iter()
                .map(|(n, b)| (n.to_string(), *b))
                .collect(),
        }
    }

    /// Register `builder` under `name` (replacing a strategy of that name).
    pub fn register(&mut self, name: &str, builder: StrategyBuilder) -> &mut Self {
        self.builders.insert(name.to_string(), builder);
        self
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.builders.keys().map(String::as_str)
    }

    /// Build the named strategy from its parameters.
    pub fn build(
        &self,
        kind: &str,
        params: &serde_yaml::Value,
    ) -> Result<Arc<dyn StrategyFactory>, PathError> {
        match self.builders.get(kind) {
            Some(build) => build(params),
            None => Err(PathError::at(
                "kind",
                format!(
                    "unknown strategy `{kind}` (allowed: {})",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}

/// Build the named built-in strategy from its parameters.
pub fn build_strategy(
    kind: &str,
    params: &serde_yaml::Value,
) -> Result<Arc<dyn StrategyFactory>, PathError> {
    StrategyRegistry::builtin().build(kind, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_builds_with_defaults() {
        let empty = serde_yaml::Value::Mapping(Default::default());
        for (name, _) in STRATEGIES {
            build_strategy(name, &empty).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn unknown_strategy_lists_the_allowed_ones() {
        let e = build_strategy("fastest", &serde_yaml::Value::Null).unwrap_err();
        assert_eq!(e.path, "kind");
        assert!(e.message.contains("least_conn"), "{e}");
    }

    #[test]
    fn a_registered_strategy_is_built_and_listed() {
        let mut r = StrategyRegistry::builtin();
        r.register("mine", super::round_robin::from_params);
        assert!(r.build("mine", &serde_yaml::Value::Null).is_ok());
        let e = r.build("nope", &serde_yaml::Value::Null).unwrap_err();
        assert!(e.message.contains("mine"), "{e}");
    }

    #[test]
    fn unknown_parameter_is_named() {
        let params: serde_yaml::Value = serde_yaml::from_str("choise: all").unwrap();
        let e = build_strategy("least_conn", &params).unwrap_err();
        assert!(e.message.contains("choise"), "{e}");
    }
}
