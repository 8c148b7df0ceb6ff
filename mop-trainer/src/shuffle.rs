//! Every epoch, a partition's rows in a new order.
//!
//! SGD wants its mini-batches drawn anew each epoch; reading the same rows
//! in the same order every time repeats the same mini-batches, and costs
//! measurable quality (`hopper-bench --bin quality`: PyTorch training the
//! same module over the same rows reshuffled every epoch was ahead by 0.7 %
//! of AUC). A unit cannot hold a whole partition (`cache = "none"` streams
//! it, `"disk"` keeps it off the heap), so rows are shuffled within windows
//! of [`WINDOW`] rows — the whole partition when it is smaller — as
//! `tf.data`'s shuffle buffer does, at a bounded cost in memory and without
//! holding training back until a whole partition is read.
//!
//! The order is a function of the rows as read and of the unit's seed
//! ([`unit_seed`]: model seed, epoch and partition) alone: windows are cut at
//! exact row counts, not at the batches' edges, so every cache mode, every
//! trainer and a sequential reference that reads the same rows train the
//! same mini-batches, and MOP stays bit for bit sequential training.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::error::Result;
use crate::featurize::Featurized;

/// Rows shuffled together. A unit trains nothing until its first window is
/// read, so the window is small enough that reading the rest of a
/// partition overlaps training (`cache = "none"` streams while it trains)
/// and large enough to mix rows from across a good part of a partition:
/// like a `tf.data` shuffle buffer of the usual size. 4 096 rows of 40
/// features are 640 KB.
pub const WINDOW: usize = 4_096;

/// The seed of one unit's random draws — its shuffle, and libtorch's
/// generator for Dropout ([`crate::train::seed_unit`]): model seed, epoch
/// and partition, mixed with SplitMix64's finalizer.
pub fn unit_seed(model_seed: u64, epoch: usize, partition: usize) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(mix(model_seed) ^ epoch as u64) ^ partition as u64)
}

/// `batches` with their rows shuffled within windows of `window` rows, by
/// a generator seeded with `seed`; a read error is passed on where it
/// occurs.
pub fn shuffled<I>(batches: I, seed: u64, window: usize) -> impl Iterator<Item = Result<Featurized>>
where
    I: IntoIterator<Item = Result<Featurized>>,
{
    Shuffled {
        inner: batches.into_iter(),
        // A stream of its own, apart from libtorch's generator.
        rng: ChaCha8Rng::seed_from_u64(seed),
        window: window.max(1),
        carry: None,
        done: false,
    }
}

struct Shuffled<I> {
    inner: I,
    rng: ChaCha8Rng,
    window: usize,
    /// Rows read past the last window.
    carry: Option<Featurized>,
    done: bool,
}

impl<I: Iterator<Item = Result<Featurized>>> Shuffled<I> {
    /// The next window's rows, in read order (fewer at the end).
    fn fill(&mut self) -> Result<Option<Featurized>> {
        let mut parts: Vec<Featurized> = Vec::new();
        let mut rows = 0;
        while rows < self.window {
            let chunk = match self.carry.take() {
                Some(carried) => carried,
                None if self.done => break,
                None => match self.inner.next() {
                    None => {
                        self.done = true;
                        break;
                    }
                    Some(chunk) => chunk?,
                },
            };
            if chunk.is_empty() {
                continue;
            }
            let need = self.window - rows;
            if chunk.len() > need {
                self.carry = Some(chunk.slice(need, chunk.len() - need)?);
                parts.push(chunk.slice(0, need)?);
                rows += need;
            } else {
                rows += chunk.len();
                parts.push(chunk);
            }
        }
        match parts.len() {
            0 => Ok(None),
            1 => Ok(parts.pop()),
            _ => Featurized::concat(&parts).map(Some),
        }
    }
}

impl<I: Iterator<Item = Result<Featurized>>> Iterator for Shuffled<I> {
    type Item = Result<Featurized>;

    fn next(&mut self) -> Option<Self::Item> {
        let rows = match self.fill() {
            Ok(Some(rows)) => rows,
            Ok(None) => return None,
            Err(e) => {
                self.done = true;
                self.carry = None;
                return Some(Err(e));
            }
        };
        let mut order: Vec<i64> = (0..rows.len() as i64).collect();
        order.shuffle(&mut self.rng);
        let index = Tensor::from_slice(&order).to_device(rows.x.device());
        Some(Featurized::new(
            rows.x.index_select(0, &index),
            rows.y.index_select(0, &index),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: i64) -> Featurized {
        let x = Tensor::arange(n, (tch::Kind::Int64, tch::Device::Cpu)).view([n, 1]);
        let y = Tensor::arange(n, (tch::Kind::Float, tch::Device::Cpu));
        Featurized::new(x, y).unwrap()
    }

    fn ids(batches: impl Iterator<Item = Result<Featurized>>) -> Vec<i64> {
        batches
            .flat_map(|b| Vec::<i64>::try_from(b.unwrap().x.view([-1])).unwrap())
            .collect()
    }

    fn chunks(n: i64, sizes: &[i64]) -> Vec<Result<Featurized>> {
        let all = rows(n);
        let mut at = 0;
        let mut out = Vec::new();
        for &s in sizes.iter().cycle() {
            if at >= n {
                break;
            }
            let len = s.min(n - at);
            out.push(Ok(all.slice(at as usize, len as usize).unwrap()));
            at += len;
        }
        out
    }

    #[test]
    fn every_row_once_in_an_order_set_by_the_seed_whatever_the_batches() {
        let a = ids(shuffled(chunks(1000, &[1000]), 7, 256));
        let b = ids(shuffled(chunks(1000, &[3, 250, 17, 1]), 7, 256));
        assert_eq!(a, b, "the batches' edges do not matter");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, ids(shuffled(chunks(1000, &[1000]), 8, 256)));
        // Windows of 256 rows: each window's rows stay in it.
        for (w, rows) in a.chunks(256).enumerate() {
            assert!(rows.iter().all(|&r| r as usize / 256 == w), "window {w}");
        }
        // Labels travel with their rows.
        for b in shuffled(chunks(300, &[64]), 1, 100) {
            let b = b.unwrap();
            let x = Vec::<i64>::try_from(b.x.view([-1])).unwrap();
            let y = Vec::<f32>::try_from(&b.y).unwrap();
            assert!(x.iter().zip(&y).all(|(x, y)| *x as f32 == *y));
        }
    }

    #[test]
    fn another_epoch_or_partition_draws_another_order() {
        let s = unit_seed(5, 0, 0);
        assert_ne!(s, unit_seed(5, 1, 0));
        assert_ne!(s, unit_seed(5, 0, 1));
        assert_ne!(s, unit_seed(6, 0, 0));
        assert_eq!(s, unit_seed(5, 0, 0));
    }

    #[test]
    fn a_read_error_is_passed_on() {
        let batches = vec![
            Ok(rows(10)),
            Err(crate::error::Error::Data("the stream broke".into())),
        ];
        let out: Vec<_> = shuffled(batches, 1, 4).collect();
        assert!(out.iter().any(|b| b.is_err()));
    }
}
