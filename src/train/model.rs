//! Built-in model architectures.

use tch::nn::{self, Module};

use crate::domain::spec::{Activation, ModelSpec};

/// Builds the network a spec describes under `root`, mapping `inputs` features to
/// `outputs` logits.
pub fn build(root: &nn::Path, spec: &ModelSpec, inputs: i64, outputs: i64) -> nn::Sequential {
    match spec {
        ModelSpec::Mlp(spec) => mlp(root, &spec.hidden, spec.activation, inputs, outputs),
    }
}

fn mlp(
    root: &nn::Path,
    hidden: &[u32],
    activation: Activation,
    inputs: i64,
    outputs: i64,
) -> nn::Sequential {
    let mut net = nn::seq();
    let mut width = inputs;
    for (i, h) in hidden.iter().enumerate() {
        let h = i64::from(*h);
        net = net.add(nn::linear(
            root / format!("layer{i}"),
            width,
            h,
            Default::default(),
        ));
        net = match activation {
            Activation::Relu => net.add_fn(|x| x.relu()),
            Activation::Tanh => net.add_fn(|x| x.tanh()),
            Activation::Gelu => net.add_fn(|x| x.gelu("none")),
        };
        width = h;
    }
    net.add(nn::linear(root / "out", width, outputs, Default::default()))
}

/// Runs the network forward (kept here so callers need not import tch's traits).
pub fn forward(net: &nn::Sequential, xs: &tch::Tensor) -> tch::Tensor {
    net.forward(xs)
}
