//! A small convolutional net for image input.
//!
//! `conv1` (C→32, 3×3) → ReLU → 2×2 max-pool → `conv2` (32→64, 3×3) → ReLU →
//! 2×2 max-pool → `fc1` (→128) → ReLU → `fc2` (→classes). Big enough to beat
//! an MLP on small images, small enough to train on a CPU in tests.

use tch::{nn, Tensor};

use super::layers::{Conv2d, Init, Linear};
use crate::error::Result;

/// The small CNN.
#[derive(Debug)]
pub(crate) struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl Cnn {
    pub(crate) fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        [channels, height, width]: [usize; 3],
        classes: usize,
    ) -> Result<Self> {
        let flat = 64 * (height / 4) * (width / 4);
        Ok(Cnn {
            conv1: Conv2d::new(&(p / "conv1"), init, channels, 32, 3, 1, true)?,
            conv2: Conv2d::new(&(p / "conv2"), init, 32, 64, 3, 1, true)?,
            fc1: Linear::new(&(p / "fc1"), init, flat, 128)?,
            fc2: Linear::new(&(p / "fc2"), init, 128, classes)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pool = |t: Tensor| t.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let h = pool(self.conv1.forward(x)?.f_relu()?)?;
        let h = pool(self.conv2.forward(&h)?.f_relu()?)?;
        let h = self.fc1.forward(&h.f_flatten(1, -1)?)?.f_relu()?;
        self.fc2.forward(&h)
    }
}
