//! Strategy names → factories. Adding a strategy: one file in `strategies/`, one line here.

use super::strategies::{
    adaptive, consistent_hash, fastest_response, least_conn, random, round_robin,
    weighted_round_robin,
};
use super::StrategyFactory;
use crate::config::PathError;
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

/// Names of the registered strategies, for error messages and docs.
pub fn strategy_names() -> impl Iterator<Item = &'static str> {
    STRATEGIES.iter().map(|(n, _)| *n)
}

/// Build the named strategy from its parameters.
pub fn build_strategy(
    kind: &str,
    params: &serde_yaml::Value,
) -> Result<Arc<dyn StrategyFactory>, PathError> {
    match STRATEGIES.iter().find(|(n, _)| *n == kind) {
        Some((_, build)) => build(params),
        None => Err(PathError::at(
            "kind",
            format!(
                "unknown strategy `{kind}` (allowed: {})",
                strategy_names().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
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
    fn unknown_parameter_is_named() {
        let params: serde_yaml::Value = serde_yaml::from_str("choise: all").unwrap();
        let e = build_strategy("least_conn", &params).unwrap_err();
        assert!(e.message.contains("choise"), "{e}");
    }
}
