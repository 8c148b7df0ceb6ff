//! Repeated measurements: the median and the spread (min–max) of a figure
//! over samples, as the benchmarks `end-to-end` and `hops` print them.
//!
//! On a shared 2-core machine one run of a leg moves by 10 % or more from
//! the next; a figure is its median over several samples, printed with the
//! smallest and largest sample so the reader sees how far to trust it.

/// Figures of one quantity over samples.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, x: f64) {
        self.0.push(x);
    }

    /// Whether no sample was taken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The samples, sorted (NaNs last).
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (the mean of the middle two for an even count); NaN
    /// without samples.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The smallest sample.
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    /// The largest sample.
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// `median [min–max]` with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            self.median(),
            self.min(),
            self.max(),
            d = decimals
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn median_of_odd_and_even_counts_and_spread() {
        let s = Samples(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median(), s.min(), s.max()), (2.0, 1.0, 3.0));
        let s = Samples(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median(), 2.5);
        assert_eq!(s.show(1), "2.5 [1.0–4.0]");
        assert!(Samples::default().median().is_nan());
    }
}
