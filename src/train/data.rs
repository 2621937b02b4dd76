//! Built-in data sets, materialized as tensors on the run's device.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use crate::domain::spec::DataSpec;

/// Features and integer class labels, already on the training device.
#[derive(Debug)]
pub struct Dataset {
    /// `[samples, features]`, `f32`.
    pub features: Tensor,
    /// `[samples]`, `i64` class indexes.
    pub labels: Tensor,
    /// Number of classes.
    pub classes: i64,
}

impl Dataset {
    /// Builds the data set a spec describes.
    pub fn load(spec: &DataSpec, device: Device) -> Result<Self, tch::TchError> {
        match spec {
            DataSpec::Synthetic(s) => synthetic(s.samples, s.features, s.classes, s.seed, device),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    /// Whether the data set has no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features per example.
    pub fn feature_count(&self) -> i64 {
        self.features.size().get(1).copied().unwrap_or(0)
    }
}

/// Gaussian features labelled by a random linear teacher with a little label noise:
/// learnable, but not trivially. The same seed gives bit-identical data on any
/// machine, because it is drawn with a portable generator, not torch's.
fn synthetic(
    samples: u32,
    features: u32,
    classes: u32,
    seed: u64,
    device: Device,
) -> Result<Dataset, tch::TchError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, f, c) = (i64::from(samples), i64::from(features), i64::from(classes));
    let mut draw = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect::<Vec<f32>>()
    };
    let xs = Tensor::f_from_slice(&draw((n * f) as usize))?.f_reshape([n, f])?;
    let teacher = Tensor::f_from_slice(&draw((f * c) as usize))?.f_reshape([f, c])?;
    let noise = Tensor::f_from_slice(&draw((n * c) as usize))?.f_reshape([n, c])?;
    let scores = xs.f_matmul(&teacher)?.f_add(&noise.f_mul_scalar(0.5)?)?;
    let labels = scores.f_argmax(-1, false)?.f_to_kind(Kind::Int64)?;
    Ok(Dataset {
        features: xs.f_to_device(device)?,
        labels: labels.f_to_device(device)?,
        classes: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_deterministic_and_shaped() {
        let spec = DataSpec::Synthetic(crate::domain::spec::SyntheticSpec {
            samples: 100,
            features: 8,
            classes: 3,
            seed: 42,
        });
        let a = Dataset::load(&spec, Device::Cpu).expect("a");
        let b = Dataset::load(&spec, Device::Cpu).expect("b");
        assert_eq!(a.features.size(), [100, 8]);
        assert_eq!(a.labels.size(), [100]);
        assert!(a.features.equal(&b.features));
        assert!(a.labels.equal(&b.labels));
        let max = a.labels.max().int64_value(&[]);
        assert!((0..3).contains(&max));
    }
}
