//! Alias routing: a primary version plus extra versions with weights.
//!
//! A weight is the share of invocations that go to an extra version; the primary version takes
//! what is left. `pick` is a pure function of a uniform random number so tests can drive it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::MAX_ROUTING_EXTRA_VERSIONS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// The primary version: receives `1 - sum(weights)` of the traffic.
    pub version: u64,
    /// Extra versions and their share of traffic, each in [0, 1], summing to at most 1.
    #[serde(default)]
    pub weights: BTreeMap<u64, f64>,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum RoutingError {
    #[error("version numbers start at 1")]
    ZeroVersion,
    #[error("weight for version {version} must be within [0, 1], got {weight}")]
    WeightOutOfRange { version: u64, weight: f64 },
    #[error("weights sum to {0}, which is over 1")]
    WeightsOverOne(f64),
    #[error("version {0} is the primary version and cannot also carry a weight")]
    PrimaryWeighted(u64),
    #[error("at most {MAX_ROUTING_EXTRA_VERSIONS} extra version may carry a weight, got {0}")]
    TooManyExtraVersions(usize),
}

impl Routing {
    pub fn single(version: u64) -> Self {
        Routing { version, weights: BTreeMap::new() }
    }

    pub fn validate(&self) -> Result<(), RoutingError> {
        if self.version == 0 || self.weights.contains_key(&0) {
            return Err(RoutingError::ZeroVersion);
        }
        if self.weights.len() > MAX_ROUTING_EXTRA_VERSIONS {
            return Err(RoutingError::TooManyExtraVersions(self.weights.len()));
        }
        if self.weights.contains_key(&self.version) {
            return Err(RoutingError::PrimaryWeighted(self.version));
        }
        let mut sum = 0.0;
        for (&version, &weight) in &self.weights {
            if !(0.0..=1.0).contains(&weight) || weight.is_nan() {
                return Err(RoutingError::WeightOutOfRange { version, weight });
            }
            sum += weight;
        }
        // Allow for binary rounding of weights such as 0.1 + 0.2 + 0.7.
        if sum > 1.0 + 1e-9 {
            return Err(RoutingError::WeightsOverOne(sum));
        }
        Ok(())
    }

    /// Every version this routing can send traffic to.
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.version).chain(self.weights.keys().copied())
    }

    /// Picks a version for one invocation given `u`, a uniform sample from [0, 1).
    pub fn pick(&self, u: f64) -> u64 {
        let mut threshold = 0.0;
        for (&version, &weight) in &self.weights {
            threshold += weight;
            if u < threshold {
                return version;
            }
        }
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(version: u64, weights: &[(u64, f64)]) -> Routing {
        Routing { version, weights: weights.iter().copied().collect() }
    }

    #[test]
    fn validation() {
        assert!(routing(1, &[]).validate().is_ok());
        assert!(routing(1, &[(2, 0.2)]).validate().is_ok());
        assert!(routing(1, &[(2, 1.0)]).validate().is_ok());
        assert_eq!(
            routing(1, &[(2, 1.5)]).validate(),
            Err(RoutingError::WeightOutOfRange { version: 2, weight: 1.5 })
        );
        assert!(matches!(routing(1, &[(2, -0.1)]).validate(), Err(RoutingError::WeightOutOfRange { .. })));
        assert_eq!(routing(1, &[(1, 0.5)]).validate(), Err(RoutingError::PrimaryWeighted(1)));
        assert_eq!(routing(0, &[]).validate(), Err(RoutingError::ZeroVersion));
        assert!(matches!(
            routing(1, &[(2, 0.6), (3, 0.6)]).validate(),
            Err(RoutingError::TooManyExtraVersions(2))
        ));
        assert!(routing(1, &[(2, f64::NAN)]).validate().is_err());
    }

    #[test]
    fn pick_splits_by_weight() {
        let r = routing(1, &[(2, 0.2)]);
        assert_eq!(r.pick(0.0), 2);
        assert_eq!(r.pick(0.1999), 2);
        assert_eq!(r.pick(0.2), 1);
        assert_eq!(r.pick(0.9999), 1);
        let n = 10_000;
        let extra = (0..n).filter(|i| r.pick(*i as f64 / n as f64) == 2).count();
        assert_eq!(extra, 2_000);
        assert_eq!(routing(1, &[(2, 0.0)]).pick(0.0), 1);
        assert_eq!(routing(1, &[(2, 1.0)]).pick(0.99), 2);
    }
}
