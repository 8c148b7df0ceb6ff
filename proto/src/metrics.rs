//! The metric payloads on the wire: a pass's [`ScoreCounts`] and
//! [`RegressionSums`] (`hopper.proto`) to and from their
//! [`mop_core::metrics`] types, which the runner merges over partitions.

use mop_core::metrics as core;
use mop_core::Result;

use crate::{RegressionSums, ScoreCounts};

impl From<&core::ScoreCounts> for ScoreCounts {
    fn from(c: &core::ScoreCounts) -> Self {
        ScoreCounts {
            score: c.scores().to_vec(),
            positives: c.positives().to_vec(),
            negatives: c.negatives().to_vec(),
        }
    }
}

impl TryFrom<ScoreCounts> for core::ScoreCounts {
    type Error = mop_core::Error;

    /// Checks what the message cannot: equal lengths, distinct ascending
    /// scores.
    fn try_from(m: ScoreCounts) -> Result<Self> {
        core::ScoreCounts::from_parts(m.score, m.positives, m.negatives)
    }
}

impl From<core::RegressionSums> for RegressionSums {
    fn from(r: core::RegressionSums) -> Self {
        RegressionSums {
            abs_error: r.abs_error,
            squared_error: r.squared_error,
            label: r.label,
            label_squared: r.label_squared,
        }
    }
}

impl From<RegressionSums> for core::RegressionSums {
    fn from(r: RegressionSums) -> Self {
        core::RegressionSums {
            abs_error: r.abs_error,
            squared_error: r.squared_error,
            label: r.label,
            label_squared: r.label_squared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_counts_and_sums_cross_the_wire_unchanged() {
        let c = core::ScoreCounts::from_rows([(0.5, true), (-2.0, false), (0.5, false)]);
        let wire = ScoreCounts::from(&c);
        let decoded = <ScoreCounts as prost::Message>::decode(
            prost::Message::encode_to_vec(&wire).as_slice(),
        )
        .unwrap();
        assert_eq!(core::ScoreCounts::try_from(decoded).unwrap(), c);
        let unsorted = ScoreCounts {
            score: vec![1.0, 0.0],
            positives: vec![1, 0],
            negatives: vec![0, 1],
        };
        assert!(core::ScoreCounts::try_from(unsorted).is_err());
        let r = core::RegressionSums {
            abs_error: 1.5,
            squared_error: 2.25,
            label: 3.0,
            label_squared: 9.0,
        };
        assert_eq!(core::RegressionSums::from(RegressionSums::from(r)), r);
    }
}
