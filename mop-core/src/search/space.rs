//! One hyper-parameter's values in `[grid]`: a list, or a distribution that
//! random search draws from.
//!
//! ```toml
//! lr = [1e-3, 1e-4]                    # a list: every value (grid) or a uniform choice (random)
//! lr = { loguniform = [1e-5, 1e-1] }   # random search only
//! l2 = { uniform = [0.0, 1e-3] }
//! batch_size = { log_int = [32, 512] } # integers, log-uniform; { int = [a, b] } is uniform
//! ```
//!
//! Draws use the run's seeded, portable RNG (ChaCha8), so the same seed
//! gives the same configurations on every machine.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A hyper-parameter's values: a list, or a distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of values, or a distribution like { loguniform = [1e-5, 1e-1] }, \
                 { uniform = [a, b] }, { int = [a, b] } or { log_int = [a, b] }"
)]
pub enum Param<T> {
    /// These values: all of them in a grid, one at random per sample.
    List(Vec<T>),
    /// A distribution (random search only).
    Dist(Distribution),
}

/// A distribution over an interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// Uniform over `[low, high]`.
    Uniform([f64; 2]),
    /// `exp` of a uniform draw over `[ln low, ln high]` (`low > 0`): as
    /// likely between 1e-5 and 1e-4 as between 1e-2 and 1e-1.
    Loguniform([f64; 2]),
    /// A uniform integer in `low..=high`.
    Int([u64; 2]),
    /// An integer drawn log-uniformly from `low..=high` (`low ≥ 1`).
    LogInt([u64; 2]),
}

impl<T> Default for Param<T> {
    /// No values: a list to fill in (or a grid read from a table).
    fn default() -> Self {
        Param::List(Vec::new())
    }
}

impl<T> From<Vec<T>> for Param<T> {
    fn from(v: Vec<T>) -> Self {
        Param::List(v)
    }
}

impl<T: Clone> Param<T> {
    /// Every value, for a grid; a distribution is an error naming `name`.
    pub fn values(&self, name: &str) -> Result<Vec<T>> {
        match self {
            Param::List(v) => Ok(v.clone()),
            Param::Dist(_) => Err(Error::Config(format!(
                "grid.{name} is a distribution: set search.samples = N to draw N \
                 configurations at random (kind = \"random\", \"asha\" or \"hyperband\"), \
                 or give grid.{name} as a list"
            ))),
        }
    }
}

impl Param<f64> {
    /// One draw of a real-valued hyper-parameter.
    pub fn sample_f64(&self, name: &str, rng: &mut impl Rng) -> Result<f64> {
        match self {
            Param::List(v) => {
                nonempty(v, name)?;
                Ok(v[rng.random_range(0..v.len())])
            }
            Param::Dist(d) => d.sample(name, rng),
        }
    }
}

impl Param<usize> {
    /// One draw of an integer hyper-parameter.
    pub fn sample_usize(&self, name: &str, rng: &mut impl Rng) -> Result<usize> {
        match self {
            Param::List(v) => {
                nonempty(v, name)?;
                Ok(v[rng.random_range(0..v.len())])
            }
            Param::Dist(d @ (Distribution::Int(_) | Distribution::LogInt(_))) => {
                Ok(d.sample(name, rng)? as usize)
            }
            Param::Dist(_) => Err(Error::Config(format!(
                "grid.{name} takes integers: use {{ int = [low, high] }} or \
                 {{ log_int = [low, high] }}, or a list"
            ))),
        }
    }
}

/// Picks one element of a list (architectures, optimizers).
pub fn choose<'a, T>(v: &'a [T], name: &str, rng: &mut impl Rng) -> Result<&'a T> {
    nonempty(v, name)?;
    Ok(&v[rng.random_range(0..v.len())])
}

/// Checks that a list has something to draw from.
fn nonempty<T>(v: &[T], name: &str) -> Result<()> {
    if v.is_empty() {
        return Err(Error::Config(format!(
            "grid.{name} is empty: give at least one value"
        )));
    }
    Ok(())
}

impl Distribution {
    /// One draw; an empty or reversed interval is an error naming `name`.
    pub fn sample(&self, name: &str, rng: &mut impl Rng) -> Result<f64> {
        let bad = |what: &str| {
            Err(Error::Config(format!(
                "grid.{name} = {}: {what}",
                self.describe()
            )))
        };
        match *self {
            Distribution::Uniform([lo, hi]) => {
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return bad("needs finite bounds with low ≤ high");
                }
                Ok(if lo == hi {
                    lo
                } else {
                    rng.random_range(lo..=hi)
                })
            }
            Distribution::Loguniform([lo, hi]) => {
                if !(lo > 0.0 && hi.is_finite() && lo <= hi) {
                    return bad("needs 0 < low ≤ high (it draws the logarithm uniformly)");
                }
                Ok(if lo == hi {
                    lo
                } else {
                    rng.random_range(lo.ln()..=hi.ln()).exp()
                })
            }
            Distribution::Int([lo, hi]) => {
                if lo > hi {
                    return bad("needs low ≤ high");
                }
                Ok(rng.random_range(lo..=hi) as f64)
            }
            Distribution::LogInt([lo, hi]) => {
                if !(lo >= 1 && lo <= hi) {
                    return bad("needs 1 ≤ low ≤ high (it draws the logarithm uniformly)");
                }
                // Uniform in log space over [lo, hi + 1), floored: every
                // integer gets the mass of its stretch of the log axis.
                let x = rng
                    .random_range((lo as f64).ln()..((hi + 1) as f64).ln())
                    .exp()
                    .floor() as u64;
                Ok(x.clamp(lo, hi) as f64)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Distribution::Uniform([a, b]) => format!("{{ uniform = [{a}, {b}] }}"),
            Distribution::Loguniform([a, b]) => format!("{{ loguniform = [{a}, {b}] }}"),
            Distribution::Int([a, b]) => format!("{{ int = [{a}, {b}] }}"),
            Distribution::LogInt([a, b]) => format!("{{ log_int = [{a}, {b}] }}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn distributions_stay_in_their_interval_and_loguniform_spreads_over_decades() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = Distribution::Loguniform([1e-5, 1e-1]);
        let xs: Vec<f64> = (0..4000)
            .map(|_| d.sample("lr", &mut rng).unwrap())
            .collect();
        assert!(xs.iter().all(|x| (1e-5..=1e-1).contains(x)));
        // Four decades, about a quarter of the draws in each.
        for decade in 0..4 {
            let lo = 1e-5 * 10f64.powi(decade);
            let share = xs.iter().filter(|&&x| x >= lo && x < lo * 10.0).count() as f64 / 4000.0;
            assert!((0.2..0.3).contains(&share), "decade {decade}: {share}");
        }
        let b = Param::<usize>::Dist(Distribution::LogInt([32, 512]));
        let ys: Vec<usize> = (0..2000)
            .map(|_| b.sample_usize("batch_size", &mut rng).unwrap())
            .collect();
        assert!(ys.iter().all(|y| (32..=512).contains(y)));
        assert!(ys.contains(&32) && ys.contains(&512), "both ends are drawn");
        let i = Distribution::Int([3, 5]);
        let zs: Vec<f64> = (0..200).map(|_| i.sample("n", &mut rng).unwrap()).collect();
        assert!(zs.iter().all(|z| [3.0, 4.0, 5.0].contains(z)));
    }

    #[test]
    fn bad_intervals_and_kinds_are_config_errors_naming_the_parameter() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (d, needle) in [
            (Distribution::Loguniform([0.0, 1.0]), "0 < low"),
            (Distribution::Uniform([2.0, 1.0]), "low ≤ high"),
            (Distribution::LogInt([0, 4]), "1 ≤ low"),
        ] {
            match d.sample("lr", &mut rng) {
                Err(Error::Config(m)) => {
                    assert!(m.contains(needle) && m.contains("grid.lr"), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
        let p = Param::<usize>::Dist(Distribution::Uniform([1.0, 2.0]));
        assert!(
            matches!(p.sample_usize("batch_size", &mut rng), Err(Error::Config(m)) if m.contains("integers"))
        );
        let p = Param::<f64>::Dist(Distribution::Uniform([1.0, 2.0]));
        assert!(matches!(p.values("lr"), Err(Error::Config(m)) if m.contains("search.samples")));
    }
}
