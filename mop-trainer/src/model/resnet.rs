//! ResNet-18 for small images (the CIFAR variant).
//!
//! The ImageNet stem (7×7 stride-2 convolution and a max-pool) would shrink a
//! 32×32 image to 8×8 before the first block, so, as usual for CIFAR, the stem
//! is a single 3×3 stride-1 convolution. Then four stages of two basic blocks
//! (64, 128, 256, 512 channels; stride 2 from the second stage on, with a
//! 1×1 projection on the shortcut), global average pooling and `fc`.

use tch::{nn, Tensor};

use super::layers::{BatchNorm, Conv2d, Init, Linear};
use crate::error::Result;

#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        inputs: usize,
        outputs: usize,
        stride: usize,
    ) -> Result<Self> {
        let shortcut = if stride != 1 || inputs != outputs {
            Some((
                Conv2d::new(&(p / "down_conv"), init, inputs, outputs, 1, stride, false)?,
                BatchNorm::new(&(p / "down_bn"), outputs)?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: Conv2d::new(&(p / "conv1"), init, inputs, outputs, 3, stride, false)?,
            bn1: BatchNorm::new(&(p / "bn1"), outputs)?,
            conv2: Conv2d::new(&(p / "conv2"), init, outputs, outputs, 3, 1, false)?,
            bn2: BatchNorm::new(&(p / "bn2"), outputs)?,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self
            .bn1
            .forward_t(&self.conv1.forward(x)?, train)?
            .f_relu()?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x)?, train)?,
            None => x.shallow_clone(),
        };
        Ok(h.f_add(&skip)?.f_relu()?)
    }
}

/// ResNet-18, CIFAR stem.
#[derive(Debug)]
pub(crate) struct ResNet18 {
    stem: Conv2d,
    bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet18 {
    pub(crate) fn new(
        p: &nn::Path<'_>,
        init: &mut Init,
        channels: usize,
        classes: usize,
    ) -> Result<Self> {
        let stem = Conv2d::new(&(p / "stem"), init, channels, 64, 3, 1, false)?;
        let bn = BatchNorm::new(&(p / "bn"), 64)?;
        let mut blocks = Vec::with_capacity(8);
        let mut inputs = 64;
        for (stage, &width) in [64usize, 128, 256, 512].iter().enumerate() {
            for i in 0..2 {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let path = p / format!("layer{}", stage + 1) / i;
                blocks.push(BasicBlock::new(&path, init, inputs, width, stride)?);
                inputs = width;
            }
        }
        let fc = Linear::new(&(p / "fc"), init, 512, classes)?;
        Ok(ResNet18 {
            stem,
            bn,
            blocks,
            fc,
        })
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.bn.forward_t(&self.stem.forward(x)?, train)?.f_relu()?;
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        let pooled = h.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?;
        self.fc.forward(&pooled)
    }
}
